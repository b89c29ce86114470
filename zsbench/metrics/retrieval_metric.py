"""zsbench's exact evaluator as torchmetrics ``Metric`` objects, for your own Lightning loops.

:class:`SBIRRetrieval` collects query and gallery embeddings over ``update`` calls and scores
them with :func:`zsbench.evaluation.evaluate_sbir` in ``compute``; :class:`CIRRetrieval` does
the same for composed image retrieval with :func:`zsbench.evaluation.evaluate_cir`. Why a
Metric and not a function: under DDP each rank sees a shard of the data (a DistributedSampler),
and a metric's states are gathered across ranks before ``compute``, so every rank scores the
whole set. The DistributedSampler pads the shards with repeated items to equal length; pass
each item's dataset index as ``indexes`` and the repeats are dropped (the first copy is kept),
so the numbers equal a single-process evaluation exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from zsbench.errors import ZsbenchError

__all__ = ["CIRRetrieval", "SBIRRetrieval"]

_DOMAINS = {"query": 0, "sketch": 0, "gallery": 1, "photo": 1}


def _as_long(x, name: str, n: int) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim == 0:
        t = t.expand(n)
    if t.ndim != 1 or len(t) != n:
        raise ZsbenchError(f"{name} must be one value per embedding ({n}), got {tuple(t.shape)}.")
    if t.is_floating_point():
        raise ZsbenchError(f"{name} must be integers, got {t.dtype}.")
    return t.long()


def _embeddings(x) -> Tensor:
    t = torch.as_tensor(x).detach()
    if t.ndim != 2:
        raise ZsbenchError(f"embeddings must be [N, D], got shape {tuple(t.shape)}.")
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _indexes(indexes, n: int) -> Tensor:
    """Dataset indices of a batch; -1 (never deduplicated) when not given."""
    if indexes is None:
        return torch.full((n,), -1, dtype=torch.long)
    idx = _as_long(indexes, "indexes", n)
    if bool((idx < 0).any()):
        raise ZsbenchError("indexes must be >= 0 (the items' positions in their dataset).")
    return idx


def _first_copies(indexes: Tensor) -> Tensor:
    """Positions to keep, in a canonical order: the first copy of each index, by index (the
    dataset's order, whatever order the ranks' shards arrived in), then the items without an
    index in the order they came. A canonical order matters: float scores of tied items can
    differ in the last bit with the position of a column in a matrix product."""
    unnamed = torch.nonzero(indexes < 0).flatten()
    named = torch.nonzero(indexes >= 0).flatten()
    if not len(named):
        return unnamed
    uniq, inv = torch.unique(indexes[named], return_inverse=True)  # uniq is sorted
    first = torch.full((len(uniq),), len(indexes), dtype=torch.long, device=indexes.device)
    first.scatter_reduce_(0, inv, named, reduce="amin")
    return torch.cat([first, unnamed])


class SBIRRetrieval(Metric):
    """Exact, tie-aware SBIR metrics (mAP@all, Prec@100, ... of a zsbench metric spec).

    ``update(embeddings, labels, domain, indexes=None)``: ``domain`` is ``"query"`` /
    ``"gallery"`` for the whole batch or a per-item tensor (0 = query/sketch, 1 =
    gallery/photo, the convention of zsbench's datamodules); ``indexes``: each item's dataset
    index, to drop the DistributedSampler's padding repeats. ``compute()`` returns
    ``{metric key: scalar tensor}`` (keys of the spec plus their ``.class_mean``) and keeps
    the evaluator's full result (per class, tie fraction, counts) in ``self.result``.

    Example (in a LightningModule)::

        self.val_map = SBIRRetrieval(spec="default", similarity="cosine")
        # validation_step:
        self.val_map.update(self(batch), batch["label"], batch["domain"], batch["index"])
        # on_validation_epoch_end:
        self.log("val/mAP", self.val_map.compute()["mAP@all"]); self.val_map.reset()
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        spec="default",
        similarity: str = "cosine",
        ties: str | None = None,
        chunk_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        from zsbench.evaluation import _check_similarity
        from zsbench.metrics import get_spec

        self.spec = get_spec(spec, ties)  # fails now on an unknown spec or tie rule
        self.similarity = _check_similarity(similarity)
        self.chunk_size = chunk_size
        self.result: dict | None = None
        for side in ("query", "gallery"):
            for part in ("", "_labels", "_index"):
                self.add_state(side + part, default=[], dist_reduce_fx="cat")

    def update(self, embeddings, labels, domain, indexes=None) -> None:
        z = _embeddings(embeddings)
        n = len(z)
        y = _as_long(labels, "labels", n).to(z.device)
        idx = _indexes(indexes, n).to(z.device)
        if isinstance(domain, str):
            if domain not in _DOMAINS:
                raise ZsbenchError(f"domain {domain!r}: one of 'query' or 'gallery' (or 0 / 1).")
            d = torch.full((n,), _DOMAINS[domain], dtype=torch.long, device=z.device)
        else:
            d = _as_long(domain, "domain", n).to(z.device)
            if bool(((d != 0) & (d != 1)).any()):
                raise ZsbenchError("domain values must be 0 (query / sketch) or 1 (gallery).")
        for side, value in (("query", 0), ("gallery", 1)):
            keep = d == value
            if bool(keep.any()):
                getattr(self, side).append(z[keep])
                getattr(self, side + "_labels").append(y[keep])
                getattr(self, side + "_index").append(idx[keep])

    def _side(self, side: str) -> tuple[Tensor, Tensor]:
        z = getattr(self, side)
        if isinstance(z, list) and not z:
            raise ZsbenchError(
                f"SBIRRetrieval has no {side} embeddings: call update(..., domain={side!r}) "
                "before compute()."
            )
        z = dim_zero_cat(z)
        keep = _first_copies(dim_zero_cat(getattr(self, side + "_index")))
        return z[keep], dim_zero_cat(getattr(self, side + "_labels"))[keep]

    def compute(self) -> dict[str, Tensor]:
        from zsbench.evaluation import evaluate_sbir

        q, ql = self._side("query")
        g, gl = self._side("gallery")
        self.result = evaluate_sbir(
            q, ql, g, gl, spec=self.spec, similarity=self.similarity,
            chunk_size=self.chunk_size, device=q.device,
        )  # fmt: skip
        return {
            k: torch.tensor(v, dtype=torch.float64, device=q.device)
            for k, v in self.result["metrics"].items()
        }


class CIRRetrieval(Metric):
    """Exact CIR metrics (FashionIQ R@10/50, CIRR R@k / R_subset@k / Avg, CIRCO mAP@k).

    Gallery items and queries arrive in separate calls: ``update_gallery(embeddings,
    indexes)`` with each image's gallery index, and ``update(embeddings, target,
    reference=None, members=None, gt=None, indexes=None)`` for queries, where ``target``,
    ``reference``, ``members`` [B, S] and ``gt`` [B, M] are gallery indices (-1 = none /
    padding) and ``indexes`` the queries' dataset indices (to drop DDP padding repeats).
    Padded rows are widened to ``max_members`` / ``max_gt`` so shards gather under DDP.
    ``compute()`` returns ``{metric key: scalar tensor}``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        protocol: str,
        similarity: str = "cosine",
        max_members: int = 8,
        max_gt: int = 32,
        chunk_size: int | None = None,
        ties: str = "expected",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        from zsbench.evaluation import _check_similarity
        from zsbench.metrics.cir import PROTOCOLS
        from zsbench.metrics.ranking import check_ties

        if protocol not in PROTOCOLS:
            raise ZsbenchError(f"unknown CIR protocol {protocol!r}; one of {PROTOCOLS}.")
        self.protocol = protocol
        self.similarity = _check_similarity(similarity)
        self.widths = {"members": max_members, "gt": max_gt}
        self.chunk_size = chunk_size
        self.ties = check_ties(ties)
        for name in ("query", "query_index", "target", "reference", "members", "gt"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("gallery", default=[], dist_reduce_fx="cat")
        self.add_state("gallery_index", default=[], dist_reduce_fx="cat")

    def update_gallery(self, embeddings, indexes) -> None:
        z = _embeddings(embeddings)
        self.gallery.append(z)
        self.gallery_index.append(_indexes(indexes, len(z)).to(z.device))

    def _padded(self, name: str, x, n: int, device) -> Tensor:
        width = self.widths[name]
        if x is None:
            return torch.full((n, width), -1, dtype=torch.long, device=device)
        t = torch.as_tensor(x).long().to(device)
        if t.ndim != 2 or len(t) != n:
            raise ZsbenchError(f"{name} must be [B, S] gallery indices, got {tuple(t.shape)}.")
        if t.shape[1] > width:
            if bool((t[:, width:] >= 0).any()):
                raise ZsbenchError(
                    f"{name} has {t.shape[1]} columns, more than max_{name}={width}: "
                    f"construct CIRRetrieval(max_{name}={t.shape[1]})."
                )
            t = t[:, :width]
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=-1)

    def update(self, embeddings, target, reference=None, members=None, gt=None, indexes=None):
        z = _embeddings(embeddings)
        n, dev = len(z), z.device
        self.query.append(z)
        self.query_index.append(_indexes(indexes, n).to(dev))
        self.target.append(_as_long(target, "target", n).to(dev))
        ref = torch.full((n,), -1) if reference is None else reference
        self.reference.append(_as_long(ref, "reference", n).to(dev))
        self.members.append(self._padded("members", members, n, dev))
        self.gt.append(self._padded("gt", gt, n, dev))

    def compute(self) -> dict[str, Tensor]:
        from zsbench.evaluation import evaluate_cir
        from zsbench.metrics.cir import CIRLabels

        if any(isinstance(x, list) and not x for x in (self.query, self.gallery)):
            raise ZsbenchError("CIRRetrieval needs update() and update_gallery() before compute().")
        g = dim_zero_cat(self.gallery)
        g_index = dim_zero_cat(self.gallery_index)
        if bool((g_index < 0).any()):
            raise ZsbenchError("update_gallery needs each image's gallery index (indexes=...).")
        keep = _first_copies(g_index)
        g, g_index = g[keep], g_index[keep]
        order = torch.argsort(g_index)
        g, g_index = g[order], g_index[order]

        def to_position(x: Tensor) -> Tensor:
            """Gallery indices -> rows of the deduplicated, sorted gallery (-1 stays -1)."""
            pos = torch.searchsorted(g_index, x.clamp(min=0))
            pos = pos.clamp(max=len(g_index) - 1)
            found = g_index[pos] == x
            if bool(((x >= 0) & ~found).any()):
                missing = sorted({int(v) for v in x[(x >= 0) & ~found].flatten()[:5]})
                raise ZsbenchError(f"gallery indices {missing} are referenced but never updated.")
            return torch.where(x >= 0, pos, torch.full_like(pos, -1))

        q_keep = _first_copies(dim_zero_cat(self.query_index))
        q = dim_zero_cat(self.query)[q_keep]
        parts = {
            name: to_position(dim_zero_cat(getattr(self, name))[q_keep])
            for name in ("target", "reference", "members", "gt")
        }
        labels = CIRLabels(
            self.protocol,
            parts["target"].cpu(),
            parts["reference"].cpu(),
            members=parts["members"].cpu() if self.protocol == "cirr" else None,
            gt=parts["gt"].cpu() if self.protocol == "circo" else None,
        )
        out = evaluate_cir(q, g, labels, similarity=self.similarity, chunk_size=self.chunk_size,
                           ties=self.ties)  # fmt: skip
        return {k: torch.tensor(v, dtype=torch.float64, device=q.device) for k, v in out.items()}
