"""Frozen pretrained backbone: the no-training baseline of every leaderboard.

Sketches and photos are embedded by the same ImageNet-pretrained backbone (pooled features);
nothing is trained. It measures how much a method adds over its starting point.
"""

from __future__ import annotations

from torch import Tensor

from zsbench.methods.base import MethodMetadata, RetrievalMethod


class Frozen(RetrievalMethod):
    """Frozen pretrained backbone features, no training (baseline)."""

    metadata = MethodMetadata(
        title="Frozen backbone",
        task="sbir",
        inputs="features",
        trains=False,
        paper="baseline",
        year=None,
        code=None,
        backbone="efficientnet_lite0 (ImageNet-1k)",
        side_information=None,
    )

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str = "default") -> None:
        super().__init__()
        self.save_hyperparameters()

    def encode_query(self, batch: dict) -> Tensor:
        return batch["feature"]

    def encode_gallery(self, batch: dict) -> Tensor:
        return batch["feature"]
