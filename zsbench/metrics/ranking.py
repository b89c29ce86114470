"""Pure, exact, tie-aware ranking metrics computed from per-positive counts.

Everything here works on one *block* of queries that share the same number ``R`` of relevant
gallery items: ``pos`` [C, R] holds each query's scores of its relevant items and ``neg``
[C, N] its scores of the non-relevant ones (higher score = retrieved earlier). No metric needs
the full ranking; each needs, for every positive, how many items score at least / strictly
more than it. :func:`rank_stats` gets those counts with one sort of the R positive scores, one
``searchsorted`` of the N negative scores into them and a histogram (O(N log R) per query,
instead of the O((N + R) log(N + R)) of a full sort). All metric functions are exact.

Tie conventions (a "tie group" is a set of gallery items with equal score for one query):

* ``expected`` (the default spec): sklearn's convention for AP (a tie group is one threshold,
  every positive in it gets the precision at the *end* of the group), and for anything cut at
  rank K the *expected value under a uniformly random order inside each tie group*: a group
  straddling rank K contributes the fraction (K - #items above the group) / (group size) of
  its positives. Without ties all of this is the usual definition.
* ``pessimistic`` (the paper variants, whose official code ranks with ``np.argsort`` and so
  breaks ties in an unspecified order): inside a tie group, non-relevant items are ranked
  before relevant ones. Without ties this equals the official code exactly.

Functions return float64 tensors [C]; they assume R >= 1 (queries without any relevant item
are handled by the caller according to the metric's ``no_positive`` policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "RankStats",
    "rank_stats",
    "ap",
    "ap_at_k_expected",
    "hits_expected",
    "precision_expected",
    "ranks_pessimistic",
    "hits_pessimistic",
    "precision_pessimistic",
    "window_precision",
    "voc_ap",
    "sempcyc_ap_at_k",
    "yelamarthi_ap_at_k",
]


@dataclass
class RankStats:
    """Per-positive counts for a block of C queries with R positives and N negatives each.

    All count tensors are float64 [C, R], positives ordered by descending score:

    * ``tp_ge`` / ``tp_gt``: positives with score >= / > this positive's score.
    * ``neg_ge``: negatives with score >= this positive's score (exact).
    * ``neg_gt``: negatives with score > this positive's score, exact when smaller than
      ``gt_cap`` and clipped to ``gt_cap`` otherwise (``gt_cap`` None: always exact). Every
      metric cut at K <= ``gt_cap`` is exact with the clipped value.
    """

    pos: Tensor
    tp_ge: Tensor
    tp_gt: Tensor
    neg_ge: Tensor
    neg_gt: Tensor
    n_neg: int
    gt_cap: int | None

    @property
    def n_pos(self) -> int:
        return self.pos.shape[1]

    @property
    def n_gallery(self) -> int:
        return self.n_pos + self.n_neg

    def k_index(self) -> Tensor:
        """1-based index of each positive in descending order, float64 [1, R]."""
        return torch.arange(1, self.n_pos + 1, device=self.pos.device, dtype=torch.float64)[None]


def _order_key(x: Tensor) -> Tensor:
    """float32 -> int64 key in [0, 2^32) with the same order (and -0.0 equal to +0.0)."""
    bits = (x + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31


def _searchsorted_right(asc: Tensor, neg: Tensor, buckets_per_pos: int = 8) -> Tensor:
    """``torch.searchsorted(asc, neg, right=True, out_int32=True)``, exact, faster on CPU.

    Binary search over R positives mispredicts branches on every step. Instead, each row's
    range [min, max] of positives is cut into B = 8R equal buckets by the monotone map
    f(v) = floor((v - min) * B / (max - min)) (+1, clamped; monotone in floating point
    too, so f(v) < f(p) implies v < p). A negative whose bucket holds no positive gets its
    insertion point from a per-bucket prefix count (one gather); only the few negatives that
    share a bucket with a positive are searched exactly, all rows at once, through a 1-D
    ``searchsorted`` over (row, order-preserving integer key) pairs. float32 only.
    """
    c, r = asc.shape
    n = neg.shape[1]
    nb = buckets_per_pos * r
    lo, hi = asc[:, :1], asc[:, -1:]
    span = hi - lo
    scale = (nb * (1 - 1e-6)) / span
    scale = torch.where(torch.isfinite(scale) & (span > 0), scale, torch.zeros_like(scale))

    def bucket(x: Tensor) -> Tensor:
        t = torch.nan_to_num((x - lo) * scale, nan=0.0, posinf=nb + 1.0, neginf=-1.0)
        return t.floor_().clamp_(-1.0, float(nb)).add_(1.0).to(torch.int32)  # 0 .. nb + 1

    width = nb + 2
    rows32 = torch.arange(c, device=asc.device, dtype=torch.int32)[:, None]
    pos_keys = (bucket(asc) + rows32 * width).view(-1)
    counts = torch.bincount(pos_keys, minlength=c * width).view(c, width)
    before = counts.cumsum(1) - counts  # positives in lower buckets (all < any v here)
    lut = torch.where(counts > 0, torch.full_like(before, -1), before).to(torch.int32)
    neg_keys = bucket(neg).add_(rows32 * width)
    ins = lut.view(-1).index_select(0, neg_keys.view(-1)).view(c, n)
    del neg_keys
    flat = ins.view(-1)
    sel = (flat < 0).nonzero().squeeze(1)
    if sel.numel():
        rows = torch.div(sel, n, rounding_mode="floor")
        global_pos = (torch.arange(c, device=asc.device)[:, None] << 32) + _order_key(asc)
        vals = (rows << 32) + _order_key(neg.view(-1).index_select(0, sel))
        gp = torch.searchsorted(global_pos.view(-1), vals, right=True)
        flat.index_copy_(0, sel, (gp - rows * r).to(torch.int32))
    return ins


def _count_negatives_at_least(asc: Tensor, neg: Tensor, right: bool) -> Tensor:
    """For each positive (ascending order) the number of negatives >= it (right=True) or > it.

    A negative v is >= asc[j] for exactly the j < searchsorted(asc, v, right=True); histogram
    those insertion points and take suffix sums.
    """
    c, r = asc.shape
    if right and asc.dtype == torch.float32 and asc.device.type == "cpu":
        ins = _searchsorted_right(asc, neg)
    else:
        ins = torch.searchsorted(asc, neg, right=right, out_int32=True)  # [C, N] in 0..R
    offsets = torch.arange(c, device=asc.device, dtype=torch.int32)[:, None] * (r + 1)
    ins.add_(offsets)
    hist = torch.bincount(ins.view(-1), minlength=c * (r + 1)).view(c, r + 1)
    suffix = hist.flip(1).cumsum(1).flip(1)  # suffix[b] = sum_{b' >= b} hist[b']
    return suffix[:, 1:].to(torch.float64)


def rank_stats(pos: Tensor, neg: Tensor, gt_cap: int | None = None) -> RankStats:
    """Counts needed by every metric here, without sorting the gallery.

    ``pos`` [C, R] (R >= 1) and ``neg`` [C, N] scores. ``gt_cap``: the largest cut-off K of a
    tie-``expected`` metric that will be asked of these stats; with it, ``neg_gt`` comes from a
    ``topk(gt_cap)`` of the negatives instead of a second full ``searchsorted`` pass.
    """
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[0] != neg.shape[0]:
        raise ValueError(
            f"pos [C, R] and neg [C, N] expected, got {tuple(pos.shape)}, {tuple(neg.shape)}"
        )
    c, r = pos.shape
    n = neg.shape[1]
    if r == 0:
        raise ValueError("rank_stats needs at least one positive per query")
    asc = torch.sort(pos, dim=1).values.contiguous()
    # tie groups among positives: first / one-past-last index of each value in ascending order
    first = torch.searchsorted(asc, asc, right=False)
    last = torch.searchsorted(asc, asc, right=True)
    tp_ge = (r - first).to(torch.float64)
    tp_gt = (r - last).to(torch.float64)
    if n == 0:
        zeros = torch.zeros(c, r, dtype=torch.float64, device=pos.device)
        neg_ge, neg_gt = zeros, zeros.clone()
    else:
        neg = neg.contiguous()
        neg_ge = _count_negatives_at_least(asc, neg, right=True)
        if gt_cap is None or gt_cap >= n:
            neg_gt = _count_negatives_at_least(asc, neg, right=False)
        else:
            k = max(int(gt_cap), 1)
            top_asc = torch.topk(neg, k, dim=1, sorted=True).values.flip(1).contiguous()
            le = torch.searchsorted(top_asc, asc, right=True)  # top negatives <= positive
            neg_gt = (k - le).to(torch.float64)
    return RankStats(
        pos=asc.flip(1),
        tp_ge=tp_ge.flip(1),
        tp_gt=tp_gt.flip(1),
        neg_ge=neg_ge.flip(1),
        neg_gt=neg_gt.flip(1),
        n_neg=n,
        gt_cap=None if gt_cap is None or gt_cap >= n else int(gt_cap),
    )


def _check_cap(st: RankStats, k: int) -> None:
    if st.gt_cap is not None and k > st.gt_cap:
        raise ValueError(f"cut-off K={k} exceeds the gt_cap={st.gt_cap} these stats were built for")


# ----------------------------------------------------------------------------- tie: expected


def ap(st: RankStats) -> Tensor:
    """Non-interpolated average precision over the whole gallery, identical to sklearn.

    ``AP = (1/R) * sum over positives p of TP(>= s_p) / (TP(>= s_p) + NEG(>= s_p))``, i.e.
    ``sklearn.metrics.average_precision_score(relevant, scores)``: every distinct score is one
    threshold, so all items of a tie group are retrieved together and each positive gets the
    precision at the end of its group. Not interpolated.
    """
    prec = st.tp_ge / (st.tp_ge + st.neg_ge)
    return prec.mean(dim=1)


def _weights_at_k(st: RankStats, k: int) -> Tensor:
    """Probability that each positive lands in the top K under random order within ties."""
    _check_cap(st, k)
    above = st.tp_gt + st.neg_gt
    group = (st.tp_ge - st.tp_gt) + (st.neg_ge - st.neg_gt)
    return ((k - above) / group).clamp(0.0, 1.0)


def hits_expected(st: RankStats, k: int) -> Tensor:
    """Expected number of positives in the top K (random order inside tie groups).

    Items scoring strictly above the K-th highest score count fully; the tie group at the
    boundary contributes (K - #items above it) / (its size) per positive in it.
    """
    return _weights_at_k(st, k).sum(dim=1)


def precision_expected(st: RankStats, k: int, denominator: str = "k") -> Tensor:
    """P@K = expected hits in the top K / denominator.

    ``denominator``: ``"k"`` (K, even when the gallery is smaller than K) or ``"min_k_r"``
    (min(K, R), so that a perfect ranking scores 1 even when R < K).
    """
    hits = hits_expected(st, k)
    if denominator == "k":
        return hits / k
    if denominator == "min_k_r":
        return hits / min(k, st.n_pos)
    raise ValueError(f"unknown precision denominator {denominator!r}")


def ap_at_k_expected(st: RankStats, k: int) -> Tensor:
    """AP over the top K, non-interpolated, divided by min(K, R).

    ``AP@K = (1/min(K, R)) * sum over positives p of w_p * TP(>= s_p) / (TP(>= s_p) +
    NEG(>= s_p))`` where w_p is the probability that p is ranked within the top K under random
    order inside tie groups (1 or 0 without ties), and the precision is sklearn's tie-group
    precision. Without ties: the usual (1/min(K, R)) * sum_{i <= K, rel_i} P@i; with K >= G
    it equals :func:`ap`.
    """
    prec = st.tp_ge / (st.tp_ge + st.neg_ge)
    return (_weights_at_k(st, k) * prec).sum(dim=1) / min(k, st.n_pos)


# -------------------------------------------------------------------------- tie: pessimistic


def ranks_pessimistic(st: RankStats) -> Tensor:
    """1-based rank of each positive when negatives are placed first inside tie groups."""
    return st.k_index() + st.neg_ge


def hits_pessimistic(st: RankStats, k: int | Tensor) -> Tensor:
    """Number of positives among the first K ranks (negatives first inside tie groups)."""
    ranks = ranks_pessimistic(st)
    if isinstance(k, Tensor):
        k = k.to(torch.float64).reshape(-1, 1)
    return (ranks <= k).sum(dim=1).to(torch.float64)


def precision_pessimistic(st: RankStats, k: int, denominator: str = "min_k_g") -> Tensor:
    """P@K = hits in the first K ranks / denominator (SAKE, DRCPL, SEM-PCYC, Yelamarthi).

    ``denominator``: ``"min_k_g"`` = min(K, G) (SAKE ``eval_precision``, SEM-PCYC ``prec``) or
    ``"k"`` (Yelamarthi: mean over the 200 retrieved items).
    """
    hits = hits_pessimistic(st, k)
    if denominator == "min_k_g":
        return hits / min(k, st.n_gallery)
    if denominator == "k":
        return hits / k
    raise ValueError(f"unknown precision denominator {denominator!r}")


def window_precision(st: RankStats, k: int) -> Tensor:
    """ZSE-SBIR's P@K: hits within the first m = min(K, R) ranks, divided by m.

    (``utils/ap.py::precision_eval`` truncates the ranking at min(K, R), not at K.)
    """
    m = min(k, st.n_pos)
    return hits_pessimistic(st, m) / m


def voc_ap(st: RankStats, k: int | None = None) -> Tensor:
    """VOC-style interpolated AP as in SAKE ``VOCap`` / ZSE-SBIR ``voc_ap`` / DRCPL ``voc_ap``.

    Ranking cut at the first K ranks (K None: whole gallery); recall denominator
    R' = min(K, R) (R when K is None). Precision at each retrieved positive is replaced by the
    maximum precision at any rank at or after it inside the cut list (the monotone envelope),
    and ``AP = (1/R') * sum over retrieved positives of that interpolated precision`` (the
    recall steps of VOCap are exactly 1/R' at each positive, and 0 at negatives).
    """
    kk = st.k_index()
    ranks = kk + st.neg_ge
    prec = kk / ranks
    if k is None:
        inside = torch.ones_like(prec, dtype=torch.bool)
        denom = st.n_pos
    else:
        inside = ranks <= k
        denom = min(k, st.n_pos)
    prec = torch.where(inside, prec, torch.zeros_like(prec))
    interp = prec.flip(1).cummax(dim=1).values.flip(1)
    return (interp * inside).sum(dim=1) / denom


def sempcyc_ap_at_k(st: RankStats, k: int) -> Tensor:
    """SEM-PCYC ``apsak(sim, str_sim, k)``: sklearn AP computed on the top-K list only.

    The first K ranks are cut out and ``average_precision_score`` is applied to them, so the
    recall denominator is H = the number of positives *inside the top K* (not R, not
    min(K, R)); a query with H = 0 scores 0. Ties inside the list follow sklearn (tie group =
    one threshold); which items of a tie group straddling rank K are in the list follows the
    pessimistic rule (negatives first).
    """
    h = hits_pessimistic(st, k)[:, None]
    tp = torch.minimum(st.tp_ge, h)
    prec = tp / (tp + st.neg_ge)
    inside = st.k_index() <= h
    total = (prec * inside).sum(dim=1)
    h = h.squeeze(1)
    return torch.where(h > 0, total / h.clamp_min(1.0), torch.zeros_like(total))


def yelamarthi_ap_at_k(st: RankStats, k: int) -> Tensor:
    """Yelamarthi et al. (ECCV 2018) mAP@K: ``(1/K) * sum_{i <= K, rel_i} P@i``.

    Non-interpolated precision at each relevant rank among the first K, divided by K itself
    (not by R or min(K, R)), as in ``trainCVAE_pre.py::find_precision`` (``mapChange`` and
    ``np.mean`` over the 200 neighbours).
    """
    kk = st.k_index()
    ranks = kk + st.neg_ge
    inside = ranks <= k
    return ((kk / ranks) * inside).sum(dim=1) / k
