"""Frozen pretrained backbone: the no-training baselines of every leaderboard.

`frozen`: sketches and photos are embedded by the same ImageNet-pretrained backbone (pooled
features); nothing is trained. It measures how much a method adds over its starting point.

`frozen-centred`: the same features with each domain centred by its mean over the seen-class
*training* items (no unseen data, no validation items, no training). Centring removes the
component every sketch (or every photo) shares, which dominates cosine similarity between
the domains: on sketchy21-mini it lifts mAP@all from 0.291 to 0.381 (issue 29), above several
trained heads, so it is the stronger reference a trained head must beat (`vs centred`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from zsbench.errors import ZsbenchError
from zsbench.methods.base import FeatureMethod, MethodMetadata

SKETCH, PHOTO = 0, 1  # zsbench.datamodules.base's domain ids
CENTRES = ("domain", "shared")


class Frozen(FeatureMethod):
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

    def encode_query(self, batch: dict) -> Tensor:
        return batch["feature"]

    def encode_gallery(self, batch: dict) -> Tensor:
        return batch["feature"]


class FrozenCentred(Frozen):
    """Frozen features centred per domain by seen-class training means (baseline)."""

    metadata = dataclasses.replace(Frozen.metadata, title="Frozen backbone, centred")

    def __init__(self, center: str = "domain", **kwargs) -> None:
        super().__init__(**kwargs)  # backbone, weights
        if center not in CENTRES:
            raise ZsbenchError(
                f"center={center!r}: use 'domain' (sketches and photos each centred by their "
                "own seen-class training mean) or 'shared' (one mean of both)."
            )
        self.center = center
        self.register_buffer("sketch_mean", torch.zeros(0))
        self.register_buffer("photo_mean", torch.zeros(0))

    def fit_statistics(self, dm) -> dict:
        """The centring means from the features of the seen-class training partition only
        (`dm.partitions["train"]`: no validation item, no unseen class); what the result
        records of them."""
        if dm.features is None:
            raise ZsbenchError("frozen-centred needs the datamodule's cached features.")
        train = np.asarray(dm.partitions["train"], dtype=np.int64)
        domains = np.array([dm.items[i].domain for i in train])
        feats = np.asarray(dm.features[train], dtype=np.float64)
        counts = {"sketch": int((domains == SKETCH).sum()), "photo": int((domains == PHOTO).sum())}
        if min(counts.values()) == 0:
            raise ZsbenchError(
                f"frozen-centred needs seen-class training sketches and photos; the training "
                f"partition has {counts['sketch']} sketches and {counts['photo']} photos."
            )
        if self.center == "shared":
            sketch = photo = feats.mean(0)
        else:
            sketch, photo = feats[domains == SKETCH].mean(0), feats[domains == PHOTO].mean(0)
        self.sketch_mean = torch.tensor(sketch, dtype=torch.float32)
        self.photo_mean = torch.tensor(photo, dtype=torch.float32)
        return {
            "center": self.center,
            "from": "seen-class training items",
            "n_items": counts,
            "mean_norm": {
                "sketch": float(np.linalg.norm(sketch)),
                "photo": float(np.linalg.norm(photo)),
            },
        }

    def _require_fitted(self) -> None:
        if self.sketch_mean.numel() == 0:
            raise ZsbenchError("frozen-centred: fit_statistics(dm) was not called before encoding.")

    def encode_query(self, batch: dict) -> Tensor:
        self._require_fitted()
        return batch["feature"] - self.sketch_mean.to(batch["feature"].device)

    def encode_gallery(self, batch: dict) -> Tensor:
        self._require_fitted()
        return batch["feature"] - self.photo_mean.to(batch["feature"].device)
