"""Expected VOC-interpolated AP over random orders inside tie groups, estimated by sampling.

The interpolated AP (SAKE / ZSE-SBIR / DRCPL ``voc_ap``) takes a running maximum of
precisions, so its expectation over the orders inside tie groups has no closed form. For the
queries where a relevant and a non-relevant item share a score, this module draws orders (a
random secondary key inside every tie group), scores each drawn ranking, and averages.

Variance reduction: the control variate is the non-interpolated twin of the same cut and
denominator (:func:`zsbench.metrics.ranking.voc_control`), whose expectation is exact. The
estimate is E[control] + mean(voc - control); the difference moves far less from one order to
the next than either term. Samples are drawn in batches until the estimated standard error of
the caller's final mean is below its target (``var_budget``), or ``max_samples`` is reached;
the per-query variance of the estimate is returned so the caller can report the achieved
standard error. A fixed generator makes the result reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zsbench.metrics.ranking import RankStats, rank_stats, voc_ap, voc_control

__all__ = ["TieOrderSampler", "expected_voc_ap"]

MIN_SAMPLES = 32
MAX_SAMPLES = 4096
BATCH = 16
# draws ranked together in one rank_stats call: at most this many sampled keys at once
# (128 MiB of int64), so a block of many tied queries draws fewer orders per call
STACK_ELEMENTS = 2**24


class TieOrderSampler:
    """Draws rankings of one block of queries with a uniformly random order inside every tie
    group, as :class:`RankStats` without ties.

    Only the negatives that share a score with a positive can change places with one; the
    others keep a fixed count above each positive. So a draw ranks the positives among the
    tied negatives alone, by an integer key (dense rank of the score, random low bits: a
    collision of the random bits has probability below G^2 / 2^40 per query), and adds the
    fixed count of untied negatives above.
    """

    def __init__(self, st: RankStats, generator: torch.Generator | None = None):
        if st.neg is None:
            raise ValueError("tie sampling needs the negative scores: rank_stats(keep_scores=True)")
        pos, neg = st.pos, st.neg
        c, r = pos.shape
        asc = torch.sort(pos, dim=1).values.contiguous()
        tied = torch.searchsorted(asc, neg, right=True) != torch.searchsorted(asc, neg)
        t = max(int(tied.sum(dim=1).max()), 1)
        # tied negatives first in each row (stable), padded with the lowest score of the row
        order = torch.argsort((~tied).to(torch.int8), dim=1, stable=True)[:, :t]
        tied_neg = torch.gather(neg, 1, order)
        is_pad = ~torch.gather(tied, 1, order)
        floor = torch.minimum(pos.amin(dim=1), neg.amin(dim=1))[:, None]
        tied_neg = torch.where(is_pad, floor, tied_neg)
        scores = torch.cat([pos, tied_neg], dim=1)
        srt, idx = torch.sort(scores, dim=1)
        step = torch.ones_like(srt, dtype=torch.int64)
        step[:, 1:] = (srt[:, 1:] != srt[:, :-1]).to(torch.int64)
        dense = torch.empty_like(step).scatter_(1, idx, step.cumsum(1))
        self.bits = 62 - int(r + t + 1).bit_length()
        self.base = dense << self.bits
        self.base[:, r:][is_pad] = -1  # padding: below every positive's key
        # untied negatives above each positive (descending order): fixed in every draw
        reduced = rank_stats(pos, torch.where(is_pad, torch.full_like(floor, -torch.inf), tied_neg))
        self.offset = st.neg_gt - reduced.neg_gt
        self.n_pos, self.n_neg = r, st.n_neg
        self.generator = generator

    def sample(self, draws: int = 1) -> RankStats:
        """``draws`` independent orders of the block, stacked draw-major: row d * C + q is
        query q in draw d. One call ranks them all (the per-call overhead dominates small
        blocks); the generator yields the same numbers as ``draws`` calls of one draw."""
        noise = torch.randint(
            0,
            2**self.bits,
            (draws, *self.base.shape),
            generator=self.generator,
            device=self.base.device,
        )
        key = torch.where(self.base >= 0, self.base + noise, self.base).flatten(0, 1)
        drawn = rank_stats(key[:, : self.n_pos], key[:, self.n_pos :], untied=True)
        offset = self.offset.repeat(draws, 1)
        drawn.neg_ge = drawn.neg_ge + offset
        drawn.neg_gt = drawn.neg_gt + offset
        drawn.n_neg = self.n_neg
        return drawn


def expected_voc_ap(
    st: RankStats,
    ks: list[int | None],
    var_budget: float,
    generator: torch.Generator | None = None,
    min_samples: int = MIN_SAMPLES,
    max_samples: int = MAX_SAMPLES,
) -> dict[int | None, tuple[Tensor, Tensor]]:
    """Expected VOC AP at each cut-off in ``ks`` (None = whole ranking) for a block of queries.

    Returns {k: (values [C], variance of each value's estimate [C])}; queries without a tie
    between a relevant and a non-relevant item are exact (variance 0). ``var_budget``: stop
    once the sum over the block of the estimates' variances is below it for every k.
    """
    c = st.pos.shape[0]
    values = {k: voc_ap(st, k, "pessimistic") for k in ks}
    var = {k: torch.zeros(c, dtype=torch.float64, device=st.pos.device) for k in ks}
    tied = (st.n_tied() > 0).nonzero().squeeze(1)
    if not tied.numel():
        return {k: (values[k], var[k]) for k in ks}
    sub = st.select(tied)
    sampler = TieOrderSampler(sub, generator)
    exact = {k: voc_control(sub, k, "expected") for k in ks}
    total = {k: torch.zeros(len(tied), dtype=torch.float64, device=st.pos.device) for k in ks}
    total_sq = {k: torch.zeros_like(total[k]) for k in ks}
    stack = max(1, min(BATCH, STACK_ELEMENTS // max(1, sampler.base.numel())))
    n = 0
    while n < max_samples:
        for done in range(0, BATCH, stack):
            draws = min(stack, BATCH - done)
            drawn = sampler.sample(draws)
            for k in ks:
                diff = voc_ap(drawn, k, "pessimistic") - voc_control(drawn, k, "pessimistic")
                for d in diff.view(draws, -1):  # one draw at a time: the same sums as before
                    total[k] += d
                    total_sq[k] += d * d
        n += BATCH
        if n < min_samples:
            continue
        est_var = {k: ((total_sq[k] - total[k] ** 2 / n) / (n - 1)).clamp(min=0.0) / n for k in ks}
        if all(float(v.sum()) <= var_budget for v in est_var.values()):
            break
    for k in ks:
        values[k][tied] = exact[k] + total[k] / n
        var[k][tied] = est_var[k]
    return {k: (values[k], var[k]) for k in ks}
