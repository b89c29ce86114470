"""Zero-shot composed image retrieval metrics: exact, chunked torch functions over a score matrix.

A CIR query is (reference image, modification text); it is scored against a gallery of images
by a score matrix ``scores`` [Q, G] (higher = more similar). Relevance is given by gallery
indices: one main ``target`` per query, optionally several ground truths ``gt`` (CIRCO), the
``reference`` to remove from the gallery (CIRR) and the query's image set ``members`` (CIRR
subset recall). Index tensors are int64 with ``-1`` as padding / "none".

Definitions (the official evaluation code of SEARLE / LinCIR, the CIRR server, CIRCO's
``src/evaluation.py``):

* rank of an item: its 1-based position in the gallery sorted by descending score, after the
  excluded items are removed. Inside a tie group (items of equal score) the order follows
  ``ties``, as for SBIR (zsbench.metrics.ranking, whose exact formulas these metrics share):
  ``expected`` (default) the expected value over a uniformly random order, ``pessimistic`` /
  ``optimistic`` the other (the relevant) items first. The official code ranks with
  ``argsort``/``topk``, whose tie order is unspecified; without ties all three agree with it
  exactly. :func:`target_ranks` / :func:`subset_ranks` give pessimistic ranks.
* ``R@k`` (recall at k, one target): the fraction of queries whose target's rank is <= k.
* CIRR ``R@k``: the same with the query's reference image removed from the gallery.
* CIRR ``R_subset@k``: the rank of the target among the query's ``img_set`` members, with the
  reference removed (5 candidates in CIRR), <= k; k in 1, 2, 3.
* CIRR ``Avg``: (R@5 + R_subset@1) / 2, the single number most CIRR tables print (CIRR's
  paper; SEARLE, LinCIR), present when both parts are computed.
* CIRCO ``mAP@k``: per query ``AP@k = sum over ground truths ranked <= k of precision at their
  rank, divided by min(#gt, k)``; averaged over queries. CIRCO does not remove the reference.
  CIRCO ``R@k`` uses the main target only (``target_img_id``, the first of ``gt_img_ids``).
* FashionIQ ``R@10`` / ``R@50`` per category (gallery = that category's split images, reference
  kept), and their unweighted mean over dress / shirt / toptee (:func:`fashioniq_mean`).

All metrics are fractions in [0, 1] (papers print them x100).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zsbench.errors import ZsbenchError
from zsbench.metrics import ranking

__all__ = [
    "CIRCO_KS",
    "CIRR_KS",
    "CIRR_SUBSET_KS",
    "FASHIONIQ_KS",
    "PROTOCOLS",
    "CIRLabels",
    "ap_at_k",
    "cir_metrics",
    "circo_metrics",
    "cirr_metrics",
    "combine_caption_orders",
    "fashioniq_mean",
    "fashioniq_metrics",
    "index_tensor",
    "recall_from_ranks",
    "subset_hits",
    "subset_ranks",
    "target_hits",
    "target_ranks",
]

CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
CIRCO_KS = (5, 10, 25, 50)
FASHIONIQ_KS = (10, 50)
PROTOCOLS = ("fashioniq", "cirr", "circo")
DEFAULT_CHUNK = 256


# --------------------------------------------------------------------------- inputs


def index_tensor(x, name: str, ndim: int) -> Tensor:
    """Gallery indices as an int64 tensor of ``ndim`` dims (``-1`` = padding / none)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ZsbenchError(f"{name} must hold integer gallery indices, got dtype {t.dtype}.")
    t = t.to(torch.int64)
    if t.ndim != ndim:
        raise ZsbenchError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}.")
    return t


def _scores(scores) -> Tensor:
    s = scores if isinstance(scores, Tensor) else torch.as_tensor(np.asarray(scores))
    if s.ndim != 2:
        raise ZsbenchError(f"scores must be [queries, gallery], got shape {tuple(s.shape)}.")
    if not torch.is_floating_point(s):
        s = s.to(torch.float64)
    return s


def _check_range(idx: Tensor, n_gallery: int, name: str) -> None:
    if idx.numel() and (int(idx.max()) >= n_gallery or int(idx.min()) < -1):
        raise ZsbenchError(
            f"{name} holds gallery indices outside [-1, {n_gallery - 1}] "
            f"(min {int(idx.min())}, max {int(idx.max())}); the gallery has {n_gallery} items."
        )


def _exclude_tensor(exclude, s: Tensor) -> Tensor:
    """Excluded gallery indices as int64 [C, E] (a 1-D [C] input is one per query)."""
    ex = torch.as_tensor(np.asarray(exclude) if not isinstance(exclude, Tensor) else exclude)
    ex = index_tensor(ex[:, None] if ex.ndim == 1 else ex, "exclude", 2).to(s.device)
    if ex.shape[0] != s.shape[0]:
        raise ZsbenchError(f"exclude must have one row per query ({s.shape[0]}).")
    _check_range(ex, s.shape[1], "exclude")
    return ex


def _excluded_to_neg_inf(s: Tensor, exclude: Tensor) -> Tensor:
    """A copy of ``s`` with each row's excluded items set to -inf (never counted)."""
    s = s.clone()
    valid = exclude >= 0
    rows = torch.arange(s.shape[0], device=s.device)[:, None].expand_as(exclude)
    s[rows[valid], exclude[valid]] = float("-inf")
    return s


def _count_ge(s: Tensor, values: Tensor) -> Tensor:
    """Per row, how many entries of ``s`` [C, G] are >= each of ``values`` [C, M] (exact)."""
    asc = torch.sort(s, dim=1).values
    below = torch.searchsorted(asc, values.contiguous(), right=False)
    return s.shape[1] - below


def _check_finite(s: Tensor) -> None:
    if not torch.isfinite(s).all():
        raise ZsbenchError("scores contain NaN or inf; fix the features that produced them.")


# --------------------------------------------------------------------------- per-query values


def _target_inputs(scores, target, exclude) -> tuple[Tensor, Tensor]:
    """The checked scores [C, G] (excluded items at -inf) and target indices [C] of
    :func:`target_ranks` / :func:`target_hits`."""
    s = _scores(scores)
    _check_finite(s)
    t = index_tensor(target, "target", 1).to(s.device)
    if t.shape[0] != s.shape[0] or (t < 0).any():
        raise ZsbenchError(f"target must give one gallery index >= 0 per query ({s.shape[0]}).")
    _check_range(t, s.shape[1], "target")
    if exclude is not None:
        ex = _exclude_tensor(exclude, s)
        hit = ex == t[:, None]
        if hit.any():
            q = int(hit.any(1).nonzero()[0])
            raise ZsbenchError(f"query {q}: its target is also excluded from the gallery.")
        s = _excluded_to_neg_inf(s, ex)
    return s, t


def target_ranks(scores, target, exclude=None) -> Tensor:
    """Pessimistic 1-based rank of each query's target among the non-excluded gallery items.

    ``scores`` [C, G]; ``target`` [C] gallery indices (>= 0); ``exclude`` None, [C] or [C, E]
    gallery indices removed from the ranking (``-1`` = none), e.g. CIRR's reference image.
    rank = number of non-excluded items whose score is >= the target's score (itself included).
    Returns int64 [C].
    """
    s, t = _target_inputs(scores, target, exclude)
    own = s.gather(1, t[:, None])
    return _count_ge(s, own)[:, 0]


def _subset_inputs(scores, target, members, reference) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The checked target scores [C, 1], member scores [C, S], the members that count (valid,
    not the reference) and which of them is the target, both bool [C, S], of
    :func:`subset_ranks` / :func:`subset_hits`."""
    s = _scores(scores)
    _check_finite(s)
    t = index_tensor(target, "target", 1).to(s.device)
    m = index_tensor(members, "members", 2).to(s.device)
    if m.shape[0] != s.shape[0] or t.shape[0] != s.shape[0]:
        raise ZsbenchError("target and members must have one row per query.")
    _check_range(m, s.shape[1], "members")
    valid = m >= 0
    if reference is not None:
        r = index_tensor(reference, "reference", 1).to(s.device)
        valid &= m != r[:, None]
    is_target = valid & (m == t[:, None])
    if not is_target.any(1).all():
        q = int((~is_target.any(1)).nonzero()[0])
        raise ZsbenchError(f"query {q}: the target is not among its image-set members.")
    return s.gather(1, t[:, None]), s.gather(1, m.clamp(min=0)), valid, is_target


def subset_ranks(scores, target, members, reference=None) -> Tensor:
    """Pessimistic 1-based rank of the target among the query's ``members`` minus ``reference``.

    CIRR's subset protocol: ``members`` [C, S] are the gallery indices of the query's
    ``img_set`` (``-1`` padding), the reference is removed, and the target must be a member.
    Returns int64 [C].
    """
    own, ms, valid, _ = _subset_inputs(scores, target, members, reference)
    return ((ms >= own) & valid).sum(1)


def _neg_inf_outside(s: Tensor, keep: Tensor) -> Tensor:
    """``s`` with every entry outside ``keep`` (bool, same shape) at -inf: below any finite
    score, so those items never count as ranked above or tied with a relevant one."""
    return torch.where(keep, s, s.new_tensor(float("-inf")))


def _hits(st: ranking.RankStats, ks: Sequence[int], ties: str) -> dict[int, Tensor]:
    """{k: probability [C] that the one relevant item is among the first k}."""
    return {int(k): ranking.inclusion(st, int(k), ties)[:, 0] for k in ks}


def target_hits(scores, target, ks: Sequence[int], exclude=None, ties: str = "expected"):
    """{k: [C] float64}: whether (the probability under ``ties`` that) each query's target is
    among the first k of the non-excluded gallery; the mean over queries is R@k."""
    ranking.check_ties(ties)
    s, t = _target_inputs(scores, target, exclude)  # excluded items at -inf: never above
    others = s.scatter(1, t[:, None], float("-inf"))  # every item but the target
    return _hits(ranking.rank_stats(s.gather(1, t[:, None]), others), ks, ties)


def subset_hits(scores, target, members, reference=None, ks: Sequence[int] = CIRR_SUBSET_KS,
                ties: str = "expected"):  # fmt: skip
    """{k: [C] float64}: the target among the first k of the query's ``members`` minus the
    reference (CIRR's R_subset@k per query), ties by ``ties``."""
    ranking.check_ties(ties)
    own, ms, valid, is_target = _subset_inputs(scores, target, members, reference)
    others = _neg_inf_outside(ms, valid & ~is_target)
    return _hits(ranking.rank_stats(own, others), ks, ties)


def ap_at_k(
    scores, gt, ks: Sequence[int] = CIRCO_KS, exclude=None, ties: str = "expected"
) -> dict[int, Tensor]:
    """CIRCO's AP@k per query, for several ground truths: {k: float64 [C]}.

    ``gt`` [C, M] gallery indices of each query's ground truths (``-1`` padding, at least one
    per query, no repeats). With ground truths in descending score order, the j-th (1-based) has
    rank r_j = j + #non-ground-truth items scoring >= it (pessimistic ties); then
    AP@k = sum_{r_j <= k} (j / r_j) / min(#gt, k), exactly CIRCO's server formula. That sum is
    ``ranking.precision_sum``, so ``ties`` works as for SBIR (``expected``: its exact
    expectation over the orders inside tie groups).
    """
    s = _scores(scores)
    _check_finite(s)
    g = index_tensor(gt, "gt", 2).to(s.device)
    if g.shape[0] != s.shape[0]:
        raise ZsbenchError(f"gt must have one row per query ({s.shape[0]}), got {g.shape[0]}.")
    _check_range(g, s.shape[1], "gt")
    valid = g >= 0
    n_gt = valid.sum(1)
    if (n_gt == 0).any():
        q = int((n_gt == 0).nonzero()[0])
        raise ZsbenchError(f"query {q} has no ground truth; CIRCO's AP@k needs at least one.")
    # a valid index (>= 0) never equals the -1 padding, so only real repeats add matches
    if ((g[:, :, None] == g[:, None, :]) & valid[:, :, None]).sum((1, 2)).gt(n_gt).any():
        raise ZsbenchError("gt lists a gallery item twice for a query; list each once.")
    if exclude is not None:
        s = _excluded_to_neg_inf(s, _exclude_tensor(exclude, s))
    g_scores = _neg_inf_outside(s.gather(1, g.clamp(min=0)), valid)
    if (valid & torch.isinf(g_scores)).any():
        raise ZsbenchError("a ground truth is also excluded from the gallery.")
    ranking.check_ties(ties)
    neg = _excluded_to_neg_inf(s, g)  # every item but the ground truths (-1: padding)
    out = {int(k): torch.zeros(s.shape[0], dtype=torch.float64, device=s.device) for k in ks}
    # ranking.rank_stats takes queries with one number of positives: one block per count
    for r in torch.unique(n_gt).tolist():
        sel = (n_gt == r).nonzero()[:, 0]
        pos = torch.sort(g_scores[sel], dim=1, descending=True).values[:, :r]
        st = ranking.rank_stats(pos, neg[sel])
        for k in ks:
            out[int(k)][sel] = ranking.precision_sum(st, int(k), ties) / min(r, int(k))
    return out


def recall_from_ranks(ranks: Tensor, ks: Sequence[int], prefix: str = "R@") -> dict[str, float]:
    """{f"{prefix}{k}": fraction of queries with rank <= k}."""
    r = torch.as_tensor(ranks)
    if r.numel() == 0:
        raise ZsbenchError("no queries to score.")
    return {f"{prefix}{k}": float((r <= k).to(torch.float64).mean()) for k in ks}


# --------------------------------------------------------------------------- dataset protocols


def _chunks(n: int, chunk_size: int):
    if chunk_size < 1:
        raise ZsbenchError(f"chunk_size must be >= 1, got {chunk_size}.")
    for lo in range(0, n, chunk_size):
        yield slice(lo, min(n, lo + chunk_size))


def _rows(x: Tensor | None, sl: slice) -> Tensor | None:
    return None if x is None else x[sl]


def _chunk_scores(scores, sl: slice) -> Tensor:
    return _scores(scores[sl])


def _mean_hits(parts: list[dict[int, Tensor]], prefix: str = "R@") -> dict[str, float]:
    """{f"{prefix}{k}": mean over all queries} of per-chunk {k: [C]} hit tensors."""
    if not parts:
        raise ZsbenchError("no queries to score.")
    return {f"{prefix}{k}": float(torch.cat([p[k] for p in parts]).mean()) for k in parts[0]}


def fashioniq_metrics(
    scores,
    target,
    *,
    ks: Sequence[int] = FASHIONIQ_KS,
    chunk_size: int = DEFAULT_CHUNK,
    ties: str = "expected",
) -> dict[str, float]:
    """FashionIQ R@10 / R@50 for one category (reference kept in the gallery, as in SEARLE)."""
    t = index_tensor(target, "target", 1)
    return _mean_hits(
        [
            target_hits(_chunk_scores(scores, sl), t[sl], ks, ties=ties)
            for sl in _chunks(len(t), chunk_size)
        ]
    )


def fashioniq_mean(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Flatten {category: {R@10, R@50}} to ``<category>/R@k`` plus the unweighted ``mean/R@k``.

    The mean is over categories (SEARLE's ``average_fiq_recall_at10``), not over queries.
    """
    if not per_category:
        raise ZsbenchError("fashioniq_mean needs at least one category.")
    keys = list(next(iter(per_category.values())))
    out: dict[str, float] = {}
    for cat, vals in per_category.items():
        if list(vals) != keys:
            raise ZsbenchError(f"category {cat!r} has metrics {list(vals)}, expected {keys}.")
        out.update({f"{cat}/{k}": float(v) for k, v in vals.items()})
    for k in keys:
        out[f"mean/{k}"] = float(np.mean([v[k] for v in per_category.values()]))
    return out


def cirr_metrics(
    scores,
    target,
    reference,
    members,
    *,
    ks: Sequence[int] = CIRR_KS,
    subset_ks: Sequence[int] = CIRR_SUBSET_KS,
    chunk_size: int = DEFAULT_CHUNK,
    ties: str = "expected",
) -> dict[str, float]:
    """CIRR R@1/5/10/50 with the reference removed, R_subset@1/2/3 within ``img_set``, and
    their ``Avg`` (R@5 + R_subset@1) / 2."""
    t = index_tensor(target, "target", 1)
    r = index_tensor(reference, "reference", 1)
    m = index_tensor(members, "members", 2)
    full, sub = [], []
    for sl in _chunks(len(t), chunk_size):
        s = _chunk_scores(scores, sl)
        full.append(target_hits(s, t[sl], ks, exclude=r[sl], ties=ties))
        sub.append(subset_hits(s, t[sl], m[sl], r[sl], subset_ks, ties=ties))
    out = _mean_hits(full)
    out.update(_mean_hits(sub, prefix="R_subset@"))
    if "R@5" in out and "R_subset@1" in out:
        out["Avg"] = (out["R@5"] + out["R_subset@1"]) / 2
    return out


def circo_metrics(
    scores,
    gt,
    *,
    target=None,
    exclude=None,
    ks: Sequence[int] = CIRCO_KS,
    chunk_size: int = DEFAULT_CHUNK,
    ties: str = "expected",
) -> dict[str, float]:
    """CIRCO mAP@5/10/25/50 over all ground truths and R@k on the main target.

    ``target`` defaults to the first ground truth of each row (CIRCO's ``target_img_id``).
    ``exclude`` (default none, as in CIRCO) removes items such as the reference.
    """
    g = index_tensor(gt, "gt", 2)
    t = g[:, 0] if target is None else index_tensor(target, "target", 1)
    ex = None if exclude is None else torch.as_tensor(exclude)
    aps: dict[int, list[Tensor]] = {int(k): [] for k in ks}
    hits = []
    for sl in _chunks(len(g), chunk_size):
        s = _chunk_scores(scores, sl)
        for k, v in ap_at_k(s, g[sl], ks, exclude=_rows(ex, sl), ties=ties).items():
            aps[k].append(v)
        hits.append(target_hits(s, t[sl], ks, exclude=_rows(ex, sl), ties=ties))
    out = {f"mAP@{k}": float(torch.cat(v).mean()) for k, v in aps.items()}
    out.update(_mean_hits(hits))
    return out


@dataclass(frozen=True)
class CIRLabels:
    """Relevance of every query of a CIR split as gallery indices (built by the readers).

    ``protocol`` picks the metric set: ``fashioniq`` (R@10/50, reference kept), ``cirr``
    (R@1/5/10/50 without the reference, R_subset@1/2/3) or ``circo`` (mAP@k over ``gt`` and
    R@k on ``target``, reference kept). ``target`` [Q]; ``reference`` [Q] (-1 when the
    reference is not in the gallery); ``members`` [Q, S] and ``gt`` [Q, M] with -1 padding.
    """

    protocol: str
    target: Tensor
    reference: Tensor
    members: Tensor | None = None
    gt: Tensor | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ZsbenchError(f"unknown CIR protocol {self.protocol!r}; one of {PROTOCOLS}.")
        if self.protocol == "cirr" and self.members is None:
            raise ZsbenchError("the cirr protocol needs members (each query's img_set).")
        if self.protocol == "circo" and self.gt is None:
            raise ZsbenchError("the circo protocol needs gt (each query's ground truths).")

    def __len__(self) -> int:
        return len(self.target)

    @property
    def n_without_positive(self) -> int:
        """Queries with nothing relevant in the gallery (no target; CIRCO: no ground truth).
        The metrics refuse them, so a scored split has 0: recorded like SBIR's count."""
        if self.protocol == "circo":
            return int(((self.gt >= 0).sum(1) == 0).sum())
        return int((self.target < 0).sum())


def cir_metrics(
    scores, labels: CIRLabels, *, chunk_size: int = DEFAULT_CHUNK, ties: str = "expected"
) -> dict[str, float]:
    """The metrics of ``labels.protocol`` for a score matrix [Q, G] (see the module docstring);
    ``ties``: the order inside tie groups (expected | pessimistic | optimistic)."""
    if len(scores) != len(labels):
        raise ZsbenchError(f"scores have {len(scores)} rows but there are {len(labels)} queries.")
    ranking.check_ties(ties)
    kw = {"chunk_size": chunk_size, "ties": ties}
    if labels.protocol == "fashioniq":
        return fashioniq_metrics(scores, labels.target, **kw)
    if labels.protocol == "cirr":
        return cirr_metrics(scores, labels.target, labels.reference, labels.members, **kw)
    return circo_metrics(scores, labels.gt, target=labels.target, **kw)


def combine_caption_orders(features_a: Tensor, features_b: Tensor) -> Tensor:
    """FashionIQ query features from both caption orders, as SEARLE / LinCIR do.

    ``features_a`` encodes "a photo of $ that {c1} and {c2}", ``features_b`` the reversed
    "{c2} and {c1}"; the query is normalize((normalize(a) + normalize(b)) / 2). For cosine
    scores this ranks the gallery exactly as the mean of the two orders' cosine scores.
    """
    if features_a.shape != features_b.shape:
        raise ZsbenchError(
            f"both caption orders need features of one shape, got {tuple(features_a.shape)} "
            f"and {tuple(features_b.shape)}."
        )
    return F.normalize(
        (F.normalize(features_a, dim=-1) + F.normalize(features_b, dim=-1)) / 2, dim=-1
    )
