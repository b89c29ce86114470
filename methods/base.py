"""The method contract: a LightningModule that embeds queries and gallery items.

A method implements `encode_query(batch)` and `encode_gallery(batch)` (and, if it trains,
`training_step` / `configure_optimizers`). Hyperparameters are its `__init__` arguments with
the paper's defaults; arguments named in `DATA_PROVIDED` are filled in by the runner from the
datamodule. The base class owns embedding collection and its checks; metrics are computed only
by `zsbench.evaluation`, never by a method.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import lightning as L
import torch
from torch import Tensor

from zsbench.errors import ZsbenchError

# __init__ arguments the runner provides from the datamodule (never set in YAML or --set).
# `class_embeddings`: {source: float array [num_classes, dim]} for the seen classes, computed by
# zsbench.semantics from the sources named in the method's `semantics` argument.
DATA_PROVIDED = ("num_classes", "seen_class_names", "feature_dim", "class_embeddings")


@dataclasses.dataclass(frozen=True)
class MethodMetadata:
    """What a method is; recorded in every result and checked by one test over all methods."""

    title: str  # human-readable name
    task: str  # "sbir" or "cir"
    inputs: str  # "features" (cached frozen-backbone features) or "images"
    trains: bool
    paper: str  # citation: authors, title, venue
    year: int | None
    code: str | None  # official repository, "owner/name"
    backbone: str
    side_information: str | None  # e.g. "word2vec + WordNet", None when the method uses none
    deviations: tuple[str, ...] = ()  # where zsbench differs from the paper, and why

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RetrievalMethod(L.LightningModule):
    """Base class of every method; subclasses set `metadata` and the encoders."""

    metadata: ClassVar[MethodMetadata]
    similarity: ClassVar[str] = "cosine"  # how the evaluator compares embeddings
    # what training batches hold: "items" (image/feature, label, domain), "pairs" (sketch,
    # photo, label) or "triplets" (sketch, photo, negative, label, negative_label); see
    # datamodules.base. Methods with inputs="images" set `self.backbone_info` (BackboneInfo).
    train_on: ClassVar[str] = "items"

    def encode_query(self, batch: dict) -> Tensor:
        raise NotImplementedError

    def encode_gallery(self, batch: dict) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, loader, side: str) -> tuple[Tensor, Tensor]:
        """Embeddings and labels of every batch of `loader`, with `side` 'query' or 'gallery'."""
        encode = self.encode_query if side == "query" else self.encode_gallery
        was_training = self.training
        self.eval()
        embs, labels = [], []
        for batch in loader:
            batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            z = encode(batch)
            if z.ndim != 2 or z.shape[0] != len(batch["label"]):
                raise ZsbenchError(
                    f"{type(self).__name__}.encode_{side} returned shape {tuple(z.shape)}; "
                    f"expected [batch={len(batch['label'])}, dim]."
                )
            embs.append(z.float().cpu())
            labels.append(batch["label"].cpu())
        self.train(was_training)
        return torch.cat(embs), torch.cat(labels)
