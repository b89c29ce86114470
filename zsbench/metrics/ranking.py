"""Pure, exact, tie-aware ranking metrics computed from per-positive counts.

Everything here works on one *block* of queries that share the same number ``R`` of relevant
gallery items: ``pos`` [C, R] holds each query's scores of its relevant items and ``neg``
[C, N] its scores of the non-relevant ones (higher score = retrieved earlier). No metric needs
the full ranking; each needs, for every positive, how many items score at least / strictly
more than it. :func:`rank_stats` gets those counts with one sort of the R positive scores, one
``searchsorted`` of the N negative scores into them and a histogram (O(N log R) per query,
instead of the O((N + R) log(N + R)) of a full sort).

Ties. A *tie group* is a set of gallery items with equal score for one query; only groups that
hold both relevant and non-relevant items change any metric. Every metric that depends on the
order inside such a group takes ``ties``:

* ``expected`` (default): the expected value under a uniformly random order inside every tie
  group. The official paper code ranks with ``np.argsort``, whose order inside a tie group is
  arbitrary; averaged over queries it behaves like this random order, so ``expected`` is what
  the official code gives in expectation. Exact closed forms here (McSherry & Najork, ECIR
  2008); the VOC-interpolated AP has none and is estimated by sampling
  (:mod:`zsbench.metrics.tie_sampling`).
* ``pessimistic`` / ``optimistic``: non-relevant (relevant) items first inside a tie group --
  the lower and upper bound of what an arbitrary tie order can give.

Without ties all three are the same number, equal to the official code's. :func:`ap` is
sklearn's AP, whose definition (a tie group is one threshold) involves no order.

Functions return float64 tensors [C]; they assume R >= 1 (queries without any relevant item
are handled by the caller according to the metric's ``no_positive`` policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "TIES",
    "RankStats",
    "rank_stats",
    "ap",
    "ap_at_k",
    "inclusion",
    "hits",
    "precision",
    "window_precision",
    "precision_sum",
    "yelamarthi_ap_at_k",
    "sempcyc_ap_at_k",
    "voc_ap",
    "check_ties",
]

TIES = ("expected", "pessimistic", "optimistic")


def check_ties(ties: str) -> str:
    if ties not in TIES:
        raise ValueError(f"unknown tie rule {ties!r}; one of {', '.join(TIES)}")
    return ties


@dataclass
class RankStats:
    """Per-positive counts for a block of C queries with R positives and N negatives each.

    Count tensors are float64 [C, R], positives ordered by descending score:

    * ``tp_ge`` / ``tp_gt``: positives with score >= / > this positive's score.
    * ``neg_ge`` / ``neg_gt``: negatives with score >= / > this positive's score.

    ``n_tied_neg`` [C]: negatives whose score equals some positive's score. ``neg``: the raw
    negative scores when kept (``keep_scores``), for tie sampling.
    """

    pos: Tensor
    tp_ge: Tensor
    tp_gt: Tensor
    neg_ge: Tensor
    neg_gt: Tensor
    n_neg: int
    n_tied_neg: Tensor
    neg: Tensor | None = None

    @property
    def n_pos(self) -> int:
        return self.pos.shape[1]

    @property
    def n_gallery(self) -> int:
        return self.n_pos + self.n_neg

    def k_index(self) -> Tensor:
        """1-based index of each positive in descending order, float64 [1, R]."""
        return torch.arange(1, self.n_pos + 1, device=self.pos.device, dtype=torch.float64)[None]

    def above(self) -> Tensor:
        """Items scoring strictly above each positive (the start of its tie group)."""
        return self.tp_gt + self.neg_gt

    def group_pos(self) -> Tensor:
        """Positives in each positive's tie group (itself included)."""
        return self.tp_ge - self.tp_gt

    def group_size(self) -> Tensor:
        """Items in each positive's tie group (itself included)."""
        return self.group_pos() + self.neg_ge - self.neg_gt

    def n_tied(self) -> Tensor:
        """Items per query whose score equals the score of an item of the other relevance."""
        return (self.neg_ge > self.neg_gt).sum(dim=1).to(torch.float64) + self.n_tied_neg

    def select(self, rows: Tensor) -> RankStats:
        """The stats of a subset of the queries."""
        return RankStats(
            pos=self.pos[rows],
            tp_ge=self.tp_ge[rows],
            tp_gt=self.tp_gt[rows],
            neg_ge=self.neg_ge[rows],
            neg_gt=self.neg_gt[rows],
            n_neg=self.n_neg,
            n_tied_neg=self.n_tied_neg[rows],
            neg=None if self.neg is None else self.neg[rows],
        )


def _order_key(x: Tensor) -> Tensor:
    """float32 -> int64 key in [0, 2^32) with the same order (and -0.0 equal to +0.0)."""
    bits = (x + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31


def _bucketed_insertion(asc: Tensor, neg: Tensor, buckets_per_pos: int = 8):
    """``torch.searchsorted(asc, neg, right=True)`` and the negatives equal to a positive.

    Binary search over R positives mispredicts branches on every step. Instead, each row's
    range [min, max] of positives is cut into B = 8R equal buckets by the monotone map
    f(v) = floor((v - min) * B / (max - min)) (+1, clamped; monotone in floating point
    too, so f(v) < f(p) implies v < p). A negative whose bucket holds no positive gets its
    insertion point from a per-bucket prefix count (one gather) and equals no positive; only
    the few negatives that share a bucket with a positive are searched exactly (left and
    right), all rows at once, through a 1-D ``searchsorted`` over (row, order-preserving
    integer key) pairs. float32 only. Returns (insertion points [C, N] int32, rows, lo, hi)
    of the negatives equal to the positives asc[row, lo:hi].
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
    empty = torch.zeros(0, dtype=torch.int64, device=asc.device)
    if not sel.numel():
        return ins, empty, empty, empty
    rows = torch.div(sel, n, rounding_mode="floor")
    global_pos = ((torch.arange(c, device=asc.device)[:, None] << 32) + _order_key(asc)).view(-1)
    vals = (rows << 32) + _order_key(neg.view(-1).index_select(0, sel))
    right = torch.searchsorted(global_pos, vals, right=True) - rows * r
    left = torch.searchsorted(global_pos, vals, right=False) - rows * r
    flat.index_copy_(0, sel, right.to(torch.int32))
    eq = right != left
    return ins, rows[eq], left[eq], right[eq]


def _insertion(asc: Tensor, neg: Tensor, untied: bool = False):
    """Same contract as :func:`_bucketed_insertion`, for any dtype and device. ``untied``: the
    caller guarantees that no negative equals a positive (one search instead of two)."""
    if asc.dtype == torch.float32 and asc.device.type == "cpu":
        return _bucketed_insertion(asc, neg)
    right = torch.searchsorted(asc, neg, right=True, out_int32=True)
    if untied:
        empty = torch.zeros(0, dtype=torch.int64, device=asc.device)
        return right, empty, empty, empty
    left = torch.searchsorted(asc, neg, right=False, out_int32=True)
    rows, cols = (right != left).nonzero(as_tuple=True)
    return right, rows, left[rows, cols].to(torch.int64), right[rows, cols].to(torch.int64)


def rank_stats(
    pos: Tensor, neg: Tensor, keep_scores: bool = False, untied: bool = False
) -> RankStats:
    """Counts needed by every metric here, without sorting the gallery.

    ``pos`` [C, R] (R >= 1) and ``neg`` [C, N] scores (any real dtype, or integer keys).
    ``keep_scores``: keep ``neg`` in the stats (needed to sample tie orders). ``untied``: no
    negative equals a positive (distinct sampled keys), which skips the search for ties.
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
    dev = pos.device
    if n == 0:
        zeros = torch.zeros(c, r, dtype=torch.float64, device=dev)
        neg_ge, neg_gt = zeros, zeros.clone()
        n_tied_neg = torch.zeros(c, dtype=torch.float64, device=dev)
    else:
        neg = neg.contiguous()
        ins, eq_rows, eq_lo, eq_hi = _insertion(asc, neg, untied)
        # a negative v is >= asc[j] for exactly the j < insertion point: histogram, suffix sums
        ins = ins.add_(torch.arange(c, device=dev, dtype=torch.int32)[:, None] * (r + 1))
        hist = torch.bincount(ins.view(-1), minlength=c * (r + 1)).view(c, r + 1)
        neg_ge = hist.flip(1).cumsum(1).flip(1)[:, 1:].to(torch.float64)
        # negatives equal to asc[j]: +1 over [lo, hi) of each tied negative (difference array)
        diff = torch.zeros(c * (r + 1), dtype=torch.float64, device=dev)
        ones = torch.ones(eq_rows.numel(), dtype=torch.float64, device=dev)
        diff.index_add_(0, eq_rows * (r + 1) + eq_lo, ones)
        diff.index_add_(0, eq_rows * (r + 1) + eq_hi, -ones)
        neg_gt = neg_ge - diff.view(c, r + 1).cumsum(1)[:, :r]
        n_tied_neg = torch.bincount(eq_rows, minlength=c).to(torch.float64)
    return RankStats(
        pos=asc.flip(1),
        tp_ge=tp_ge.flip(1),
        tp_gt=tp_gt.flip(1),
        neg_ge=neg_ge.flip(1),
        neg_gt=neg_gt.flip(1),
        n_neg=n,
        n_tied_neg=n_tied_neg,
        neg=neg if keep_scores else None,
    )


# ------------------------------------------------------------------------- order-free: sklearn


def _sklearn_precision(st: RankStats) -> Tensor:
    """Precision at each positive's tie group taken as one threshold (sklearn's convention)."""
    return st.tp_ge / (st.tp_ge + st.neg_ge)


def ap(st: RankStats) -> Tensor:
    """Non-interpolated average precision over the whole gallery, identical to sklearn.

    ``AP = (1/R) * sum over positives p of TP(>= s_p) / (TP(>= s_p) + NEG(>= s_p))``, i.e.
    ``sklearn.metrics.average_precision_score(relevant, scores)``: every distinct score is one
    threshold, so all items of a tie group are retrieved together and each positive gets the
    precision at the end of its group. Not interpolated; no order inside a group is involved.
    """
    return _sklearn_precision(st).mean(dim=1)


# ----------------------------------------------------------------------- order inside ties


def _ranks(st: RankStats, ties: str) -> Tensor:
    """1-based rank of each positive with non-relevant (pessimistic) or relevant (optimistic)
    items first inside tie groups."""
    if ties == "pessimistic":
        return st.k_index() + st.neg_ge
    if ties == "optimistic":
        return st.k_index() + st.neg_gt
    raise ValueError(f"no single rank under ties={ties!r}")


def inclusion(st: RankStats, k: int, ties: str = "expected") -> Tensor:
    """Probability that each positive is among the first K ranks, float64 [C, R].

    ``expected``: items strictly above its tie group count fully, the group straddling rank K
    puts each of its members there with probability (K - #above) / (group size).
    """
    check_ties(ties)
    if ties == "expected":
        return ((k - st.above()) / st.group_size()).clamp(0.0, 1.0)
    return (_ranks(st, ties) <= k).to(torch.float64)


def hits(st: RankStats, k: int, ties: str = "expected") -> Tensor:
    """(Expected) number of positives among the first K ranks."""
    return inclusion(st, k, ties).sum(dim=1)


def precision(st: RankStats, k: int, denominator: str = "k", ties: str = "expected") -> Tensor:
    """P@K = hits among the first K ranks / denominator.

    ``denominator``: ``"k"`` (K itself: zsbench default, Yelamarthi's mean over the 200
    retrieved items), ``"min_k_r"`` (min(K, R): a perfect ranking scores 1 even when R < K) or
    ``"min_k_g"`` (min(K, G): SAKE ``eval_precision``, SEM-PCYC ``prec``, DRCPL).
    """
    h = hits(st, k, ties)
    if denominator == "k":
        return h / k
    if denominator == "min_k_r":
        return h / min(k, st.n_pos)
    if denominator == "min_k_g":
        return h / min(k, st.n_gallery)
    raise ValueError(f"unknown precision denominator {denominator!r}")


def window_precision(st: RankStats, k: int, ties: str = "expected") -> Tensor:
    """ZSE-SBIR's P@K: hits within the first m = min(K, R) ranks, divided by m.

    (``utils/ap.py::precision_eval`` truncates the ranking at min(K, R), not at K.)
    """
    m = min(k, st.n_pos)
    return hits(st, m, ties) / m


def ap_at_k(st: RankStats, k: int, ties: str = "expected") -> Tensor:
    """zsbench's AP over the top K, non-interpolated, divided by min(K, R).

    ``AP@K = (1/min(K, R)) * sum over positives p of w_p * TP(>= s_p) / (TP(>= s_p) +
    NEG(>= s_p))``: sklearn's tie-group precision, weighted by w_p = :func:`inclusion` (the
    probability that p is among the first K). Without ties: the usual (1/min(K, R)) *
    sum_{i <= K, rel_i} P@i; with K >= G it equals :func:`ap`.
    """
    return (inclusion(st, k, ties) * _sklearn_precision(st)).sum(dim=1) / min(k, st.n_pos)


def _harmonic_diff(lo: Tensor, hi: Tensor) -> Tensor:
    """H(hi) - H(lo) = sum_{i=lo+1}^{hi} 1/i for float64 integer tensors (digamma form)."""
    return torch.digamma(hi + 1.0) - torch.digamma(lo + 1.0)


def precision_sum(st: RankStats, k: int | None = None, ties: str = "expected") -> Tensor:
    """Sum over positives ranked within the first K of the precision at their rank.

    Non-interpolated, rank-based (``hits in the first r / r`` at a positive's rank r); K None:
    the whole ranking. ``expected`` (McSherry & Najork): take a positive whose tie group starts
    after s items (a of them positive) and holds m items, t of them positive. It lands on each
    slot j = 1..m of its group with probability 1/m and then has in expectation
    (a + 1) + (j - 1)(t - 1)/(m - 1) positives at or above it, so its expected term is
    (1/m) * sum_{j <= J} [(a + 1) + (j - 1)(t - 1)/(m - 1)] / (s + j),
    J = clamp(K - s, 0, m), summed in closed form with harmonic numbers.
    """
    check_ties(ties)
    if ties != "expected":
        r = _ranks(st, ties)
        inside = torch.ones_like(r, dtype=torch.bool) if k is None else r <= k
        return ((st.k_index() / r) * inside).sum(dim=1)
    s, t, m = st.above(), st.group_pos(), st.group_size()
    a = st.tp_gt
    j = m if k is None else (k - s).clamp(min=0.0).minimum(m)
    d1 = _harmonic_diff(s, s + j)  # sum_{j' <= J} 1 / (s + j')
    d2 = j - (s + 1.0) * d1  # sum_{j' <= J} (j' - 1) / (s + j')
    c = torch.where(m > 1, (t - 1.0) / (m - 1.0).clamp(min=1.0), torch.zeros_like(m))
    term = ((a + 1.0) * d1 + c * d2) / m
    single = torch.where(j >= 1, (a + 1.0) / (s + 1.0), torch.zeros_like(s))  # m = 1: exact
    return torch.where(m == 1, single, term).sum(dim=1)


def yelamarthi_ap_at_k(st: RankStats, k: int, ties: str = "expected") -> Tensor:
    """Yelamarthi et al. (ECCV 2018) mAP@K: ``(1/K) * sum_{i <= K, rel_i} P@i``.

    Non-interpolated precision at each relevant rank among the first K, divided by K itself
    (not by R or min(K, R)), as in ``trainCVAE_pre.py::find_precision`` (``mapChange`` and
    ``np.mean`` over the 200 neighbours).
    """
    return precision_sum(st, k, ties) / k


def sempcyc_ap_at_k(st: RankStats, k: int, ties: str = "expected") -> Tensor:
    """SEM-PCYC ``apsak(sim, str_sim, k)``: sklearn AP computed on the top-K list only.

    The first K ranks are cut out and ``average_precision_score`` is applied to them, so the
    recall denominator is H = the number of positives *inside the top K* (not R, not
    min(K, R)); a query with H = 0 scores 0. Inside the list ties follow sklearn. Which items
    of the tie group straddling rank K enter the list depends on the order inside it: with A
    positives (sklearn precisions summing to S_A) in the groups above, and X of the
    straddling group's t positives among its J = K - s listed items,
    AP = (S_A + X (A + X) / K) / (A + X). ``expected``: X is hypergeometric (J draws from the
    group's m items); ``pessimistic``: X = max(0, J - #negatives of the group);
    ``optimistic``: X = min(t, J).
    """
    check_ties(ties)
    s, m, t = st.above(), st.group_size(), st.group_pos()
    full = (s + m) <= k
    straddle = (s < k) & (s + m > k)
    a = full.sum(dim=1)[:, None]  # int64; h = a + x is float64
    s_a = (_sklearn_precision(st) * full).sum(dim=1)[:, None]
    zero = torch.zeros_like(s)
    # the straddling group (one per query at most): its size, positives and listed slots
    g_m = torch.where(straddle, m, zero).amax(dim=1)[:, None]
    g_t = torch.where(straddle, t, zero).amax(dim=1)[:, None]
    g_j = torch.where(straddle, k - s, zero).amax(dim=1)[:, None]

    def value(x: Tensor) -> Tensor:
        h = a + x
        return torch.where(h > 0, (s_a + x * h / k) / h.clamp(min=1.0), torch.zeros_like(h))

    if ties == "pessimistic":
        return value((g_j - (g_m - g_t)).clamp(min=0.0)).squeeze(1)
    if ties == "optimistic":
        return value(torch.minimum(g_t, g_j)).squeeze(1)
    x = torch.arange(k + 1, device=st.pos.device, dtype=torch.float64)[None]
    g_n = g_m - g_t
    valid = (x <= g_t) & (x <= g_j) & (g_j - x <= g_n)

    def log_binom(n: Tensor, r: Tensor) -> Tensor:
        return torch.lgamma(n + 1) - torch.lgamma(r + 1) - torch.lgamma((n - r).clamp(min=0) + 1)

    logp = log_binom(g_t, x) + log_binom(g_n, (g_j - x).clamp(min=0)) - log_binom(g_m, g_j)
    pmf = torch.where(valid, logp.exp(), torch.zeros_like(logp))
    return (pmf * value(x)).sum(dim=1)


def voc_ap(st: RankStats, k: int | None = None, ties: str = "pessimistic") -> Tensor:
    """VOC-style interpolated AP as in SAKE ``VOCap`` / ZSE-SBIR ``voc_ap`` / DRCPL ``voc_ap``.

    Ranking cut at the first K ranks (K None: whole gallery); recall denominator
    R' = min(K, R) (R when K is None). Precision at each retrieved positive is replaced by the
    maximum precision at any rank at or after it inside the cut list (the monotone envelope),
    and ``AP = (1/R') * sum over retrieved positives of that interpolated precision`` (the
    recall steps of VOCap are exactly 1/R' at each positive, and 0 at negatives).

    ``pessimistic`` / ``optimistic`` only: the envelope's expectation over random tie orders
    has no closed form; :mod:`zsbench.metrics.tie_sampling` estimates it.
    """
    kk = st.k_index()
    ranks = _ranks(st, ties)
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


def voc_control(st: RankStats, k: int | None = None, ties: str = "expected") -> Tensor:
    """The non-interpolated twin of :func:`voc_ap` (same cut, same denominator): the control
    variate of the sampled VOC AP, whose expectation :func:`precision_sum` gives exactly."""
    denom = st.n_pos if k is None else min(k, st.n_pos)
    return precision_sum(st, k, ties) / denom
