"""Tie semantics of the paper specs: zsbench's `expected` value equals what each paper's own
evaluation code gives on average over random orders inside tie groups.

The references below are written from the official code (argsort of the scores, then the
paper's formula over the ranked relevance list), vectorised over queries; a random order
inside tie groups is a random permutation of the gallery before a stable argsort. Without
ties every spec must equal its reference exactly, under every tie rule.

The tie-order sampler (zsbench.metrics.tie_sampling) is checked at the end: its draws, the
sampled VOC AP against an exact enumeration of every tie order, and when sampling stops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_metrics import f64

from zsbench.chance import expected_random_ap
from zsbench.evaluation import evaluate_sbir, similarity_matrix, tie_warning
from zsbench.metrics import METRIC_SPECS, get_spec, rank_stats, ranking
from zsbench.metrics.tie_sampling import MIN_SAMPLES, TieOrderSampler, expected_voc_ap

PAPER_SPECS = ["sake", "voc", "drcpl", "zse-sbir", "sem-pcyc", "yelamarthi"]
N_PERMUTATIONS = 200


# ------------------------------------------------------------ official formulas, vectorised


def _voc(tp: np.ndarray, top: int | None) -> np.ndarray:
    """SAKE eval_AP_inner / ZSE-SBIR voc_eval + VOCap over rows of a ranked 0/1 matrix."""
    n_pos = tp.sum(1)
    if top is not None:
        top = min(top, tp.shape[1])
        tp, n_pos = tp[:, :top], np.minimum(top, n_pos)
    ctp = tp.cumsum(1)
    prec = ctp / np.arange(1, tp.shape[1] + 1)
    envelope = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    # recall steps by 1/n_pos at each relevant item: sum of the envelope there
    return (envelope * tp).sum(1) / n_pos


def _sklearn_ap(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """sklearn.metrics.average_precision_score per row (a tie group is one threshold)."""
    out = np.zeros(len(scores))
    for i, (s, r) in enumerate(zip(scores, rel)):
        if not r.any():
            continue
        order = np.argsort(-s, kind="stable")
        s, r = s[order], r[order].astype(float)
        last = np.r_[s[1:] != s[:-1], True]  # end of each tie group
        tp = r.cumsum()[last]
        prec = tp / (np.flatnonzero(last) + 1)
        out[i] = np.sum(np.diff(np.r_[0.0, tp]) * prec) / r.sum()
    return out


def official(spec: str, scores: np.ndarray, rel: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query values of `spec` exactly as the official code computes them (argsort)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    tp = np.take_along_axis(rel, order, 1).astype(float)
    g, n_pos = tp.shape[1], tp.sum(1)
    if spec in ("sake", "voc", "drcpl", "zse-sbir"):
        out = {"mAP@all": _voc(tp, None), "mAP@200": _voc(tp, 200)}
        for k in (100, 200):
            if spec == "zse-sbir":  # precision_eval: mean of the first min(K, R) labels
                m = np.minimum(k, n_pos).astype(int)
                out[f"P@{k}"] = np.array([row[:mm].mean() for row, mm in zip(tp, m)])
            else:  # eval_precision: hits in the first min(K, G) / min(K, G)
                out[f"P@{k}"] = tp[:, :k].sum(1) / min(k, g)
        return out
    if spec == "yelamarthi":  # find_precision over the 200 nearest neighbours
        top = tp[:, :200]
        ap = (top.cumsum(1) * top / np.arange(1, 201)).mean(1)
        return {"mAP@200": ap, "P@200": top.mean(1)}
    if spec == "sem-pcyc":  # apsak (sklearn AP of the top-K list) and precak
        idx = order[:, :200]
        s200 = np.take_along_axis(scores, idx, 1)
        r200 = np.take_along_axis(rel, idx, 1)
        return {
            "mAP@all": _sklearn_ap(scores, rel),
            "mAP@200": _sklearn_ap(s200, r200),
            "P@100": tp[:, :100].sum(1) / min(100, g),
            "P@200": tp[:, :200].sum(1) / min(200, g),
        }
    raise AssertionError(spec)


def official_over_tie_orders(spec, scores, rel, seed=0):
    """Mean and standard error over random gallery permutations of the official means."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(N_PERMUTATIONS):
        perm = rng.permutation(scores.shape[1])
        vals = official(spec, scores[:, perm], rel[:, perm])
        draws.append({k: float(np.mean(v)) for k, v in vals.items()})
    keys = draws[0]
    mean = {k: np.mean([d[k] for d in draws]) for k in keys}
    se = {k: np.std([d[k] for d in draws], ddof=1) / np.sqrt(N_PERMUTATIONS) for k in keys}
    return mean, se


# ------------------------------------------------------------------------------ test data


def _data(kind: str, seed: int = 0, q: int = 24, g: int = 700, classes: int = 3):
    """Query/gallery features and labels (3 classes: R ~ 233, above the cut-offs at 200)."""
    rng = np.random.default_rng(seed)
    ql, gl = rng.integers(0, classes, q), rng.integers(0, classes, g)
    if kind == "codes":  # 64-bit codes (what sem-pcyc-binary ranks): Hamming ties
        centres = rng.normal(size=(classes, 64))
        qf = np.sign(centres[ql] + 2.0 * rng.normal(size=(q, 64)))
        gf = np.sign(centres[gl] + 2.0 * rng.normal(size=(g, 64)))
    else:
        centres = rng.normal(size=(classes, 6))
        qf = centres[ql] + rng.normal(size=(q, 6))
        gf = centres[gl] + rng.normal(size=(g, 6))
        if kind == "rounded":  # rounded features: many tied dot products
            qf, gf = np.round(qf), np.round(gf)
    return qf.astype(np.float32), ql, gf.astype(np.float32), gl


def _scores(qf, gf):
    return similarity_matrix(qf, gf, "dot").numpy().astype(np.float64)


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("classes", [3, 5])  # R ~ 233 > 200 and R ~ 140 < 200
@pytest.mark.parametrize("kind", ["rounded", "codes"])
@pytest.mark.parametrize("spec", PAPER_SPECS)
def test_expected_ties_equal_official_code_over_random_tie_orders(spec, kind, classes):
    qf, ql, gf, gl = _data(kind, classes=classes)
    scores, rel = _scores(qf, gf), ql[:, None] == gl[None]
    res = evaluate_sbir(qf, ql, gf, gl, spec=spec, similarity="dot")
    assert res["tie_fraction"] > 0.05  # the case this test is about
    mean, se = official_over_tie_orders(spec, scores, rel)
    pess = evaluate_sbir(qf, ql, gf, gl, spec=spec, similarity="dot", ties="pessimistic")
    moved = 0
    for key in mean:
        tol = 3 * np.hypot(se[key], res["tie_se"].get(key, 0.0)) + 1e-12
        assert abs(res["metrics"][key] - mean[key]) <= tol, (key, res["metrics"][key], mean)
        moved += abs(pess["metrics"][key] - mean[key]) > tol
    # the old pessimistic rule is off by many standard errors on the order-dependent metrics
    assert moved >= 2


@pytest.mark.parametrize("spec", sorted(METRIC_SPECS))
def test_every_tie_rule_equals_official_code_without_ties(spec):
    qf, ql, gf, gl = _data("continuous")
    scores, rel = _scores(qf, gf), ql[:, None] == gl[None]
    for rule in ranking.TIES:
        res = evaluate_sbir(qf, ql, gf, gl, spec=spec, similarity="dot", ties=rule)
        assert res["tie_fraction"] == 0.0 and not any(res["tie_se"].values())
        if spec in PAPER_SPECS:
            for key, v in official(spec, scores, rel).items():
                assert res["metrics"][key] == pytest.approx(float(np.mean(v)), abs=1e-9), key
        else:
            base = evaluate_sbir(qf, ql, gf, gl, spec=spec, similarity="dot")
            assert res["metrics"] == pytest.approx(base["metrics"], abs=1e-12)


@pytest.mark.parametrize("spec", sorted(METRIC_SPECS))
def test_pessimistic_expected_optimistic_are_ordered(spec):
    qf, ql, gf, gl = _data("rounded", seed=1)
    got = {
        rule: evaluate_sbir(qf, ql, gf, gl, spec=spec, similarity="dot", ties=rule)
        for rule in ranking.TIES
    }
    for m in get_spec(spec).metrics:
        lo, mid, hi = (got[r]["metrics"][m.key] for r in ("pessimistic", "expected", "optimistic"))
        if not m.tie_dependent:
            assert lo == mid == hi
        elif m.rule != "sempcyc_ap_at_k":  # AP of the top-K list alone is not monotone
            se = got["expected"]["tie_se"].get(m.key, 0.0)
            assert lo - 4 * se <= mid <= hi + 4 * se and lo < hi, m.key


def test_sampled_standard_error_is_below_target_and_reported():
    qf, ql, gf, gl = _data("codes", seed=2, q=60)
    res = evaluate_sbir(qf, ql, gf, gl, spec="sake", similarity="dot")
    assert set(res["tie_se"]) == {"mAP@all", "mAP@200"}
    assert all(0 < v < 1e-4 for v in res["tie_se"].values())
    again = evaluate_sbir(qf, ql, gf, gl, spec="sake", similarity="dot")
    assert again["metrics"] == res["metrics"]  # a fixed generator: reproducible


def test_expected_precision_sum_of_one_tie_group_is_random_ranking_ap():
    """All items tied: the expected AP under random order is the chance formula."""
    for r, n in ((1, 5), (3, 10), (40, 333)):
        st = rank_stats(torch.zeros(1, r, dtype=torch.float64), torch.zeros(1, n - r))
        got = float(ranking.precision_sum(st, None, "expected")[0]) / r
        assert got == pytest.approx(expected_random_ap(r, n), abs=1e-12)


def test_tie_fraction_by_hand_and_warning():
    # scores [3, 2, 2, 2, 1, 1], relevance [0, 1, 0, 1, 1, 0]: the 2-group (p, n, p) and the
    # 1-group (p, n) mix relevance: 5 of 6 scores tie a score of the other relevance
    gallery = np.array([3.0, 2, 2, 2, 1, 1])[:, None]
    labels = np.array([1, 0, 1, 0, 0, 1])
    res = evaluate_sbir(np.ones((1, 1)), [0], gallery, labels, similarity="dot")
    assert res["tie_fraction"] == pytest.approx(5 / 6)
    assert "83.3%" in tie_warning(res["tie_fraction"], "expected")
    assert "bound" in tie_warning(0.5, "pessimistic")
    assert tie_warning(0.01, "expected") is None


def test_spec_records_its_tie_rule_and_rejects_unknown_ones():
    from zsbench.errors import ZsbenchError

    assert get_spec("sake").to_dict()["ties"] == "expected"
    d = get_spec("sake", "optimistic").to_dict()
    assert d["ties"] == "optimistic" and "relevant items ranked first" in d["ties_definition"]
    with pytest.raises(ZsbenchError, match="Did you mean: pessimistic"):
        get_spec("sake", "pesimistic")


# ------------------------------------------------- the tie-order sampler and the sampled VOC AP


def test_tie_sampler_needs_the_negative_scores():
    """TieOrderSampler on stats without kept scores: ValueError naming keep_scores."""
    msg = r"^tie sampling needs .*keep_scores=True"
    with pytest.raises(ValueError, match=msg):
        TieOrderSampler(rank_stats(f64([1.0]), f64([1.0])))


def test_tie_sampler_draws_untied_stats_with_the_fixed_negatives_added():
    """A draw: positive 2 tied with negative 2, negatives 3 and 4 always above: 2 fixed
    negatives above, plus the tied one in half of the draws; no ties inside a draw."""
    st = rank_stats(f64([2.0]), f64([2.0, 3.0, 4.0, 0.0]), keep_scores=True)
    sampler = TieOrderSampler(st, torch.Generator().manual_seed(0))
    above = []
    for _ in range(64):
        drawn = sampler.sample()
        assert torch.equal(drawn.neg_gt, drawn.neg_ge) and drawn.n_neg == 4
        above.append(float(drawn.neg_ge[0, 0]))
    assert set(above) == {2.0, 3.0}
    # 30 positives tied with a negative: every draw orders them strictly (random keys of
    # ~56 bits; a handful of bits would repeat keys, i.e. leave ties, in most draws)
    st = rank_stats(torch.zeros(1, 30, dtype=torch.float64), f64([0.0]), keep_scores=True)
    sampler = TieOrderSampler(st, torch.Generator().manual_seed(0))
    for _ in range(20):
        assert torch.equal(sampler.sample().group_pos(), torch.ones(1, 30, dtype=torch.float64))


def test_stacked_tie_draws_equal_one_draw_per_call(monkeypatch):
    """Draws ranked together in one call (tie_sampling.STACK_ELEMENTS) give bit-identical
    estimates to one draw per call: same random numbers, sums in the same order."""
    from zsbench.metrics import tie_sampling

    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 12, (5, 30), generator=g).double()  # tied and untied items
    rel = torch.rand(5, 30, generator=g) < 0.3
    rel[:, 0] = True
    rel[:, 1:] = rel[:1, 1:]  # the same R for every query: one block
    st = rank_stats(
        torch.stack([s[m] for s, m in zip(scores, rel)]),
        torch.stack([s[~m] for s, m in zip(scores, rel)]),
        keep_scores=True,
    )

    def run():
        gen = torch.Generator().manual_seed(0)
        return tie_sampling.expected_voc_ap(st, [None, 10], 0.0, gen, max_samples=64)

    stacked = run()
    monkeypatch.setattr(tie_sampling, "STACK_ELEMENTS", 0)
    single = run()
    # 3 draws a call (the batch of 16 ends with a call of 1): STACK_ELEMENTS = 3 blocks of keys
    keys = tie_sampling.TieOrderSampler(st).base.numel()  # sampled keys of one draw
    monkeypatch.setattr(tie_sampling, "STACK_ELEMENTS", 3 * keys + 1)
    threes = run()
    for k in (None, 10):
        assert bool(stacked[k][1].gt(0).any())  # some queries were sampled
        for other in (single, threes):
            assert torch.equal(stacked[k][0], other[k][0])
            assert torch.equal(stacked[k][1], other[k][1])


def _voc_ap_by_hand(relevant_in_rank_order: list[bool]) -> float:
    """SAKE's VOCap over the whole ranking: the precision at each hit, replaced by the largest
    precision at or after it, averaged over the R hits."""
    prec, hits = [], 0
    for rank, rel in enumerate(relevant_in_rank_order, 1):
        if rel:
            hits += 1
            prec.append(hits / rank)
    return sum(max(prec[i:]) for i in range(len(prec))) / len(prec)


def _expected_by_enumeration(groups: list[tuple[int, int]]) -> float:
    """Exact mean of VOC AP over every order inside the tie groups, listed from the top as
    (positives, negatives); each order of a group's items is equally likely."""
    import itertools

    orders = []
    for n_pos, n_neg in groups:
        slots = range(n_pos + n_neg)
        orders.append(
            [[i in chosen for i in slots] for chosen in itertools.combinations(slots, n_pos)]
        )
    values = [_voc_ap_by_hand(sum(combo, [])) for combo in itertools.product(*orders)]
    return sum(values) / len(values)


@pytest.mark.parametrize(
    "groups",
    [
        [(2, 40)],  # one big tie group: 861 equally likely position pairs
        [(1, 1)] * 4,  # four score levels, each a positive tied with a negative: 16 orders
    ],
    ids=["one-group-of-42", "four-tied-pairs"],
)
def test_expected_voc_ap_equals_the_mean_over_every_tie_order(groups):
    """The sampled expectation lands within 4 standard errors of the exact enumeration (the
    random keys must stay distinct and inside int64 for every group shape)."""
    pos, neg = [], []
    for level, (n_pos, n_neg) in enumerate(reversed(groups)):
        pos += [float(level)] * n_pos
        neg += [float(level)] * n_neg
    st = rank_stats(f64(pos), f64(neg), keep_scores=True)
    got = expected_voc_ap(st, [None], 1e-7, torch.Generator().manual_seed(0), 64, 4096)
    value, var = (float(x[0]) for x in got[None])
    want = _expected_by_enumeration(groups)
    assert abs(value - want) <= 4 * math.sqrt(var) + 1e-9, (value, want, math.sqrt(var))


def test_expected_voc_ap_estimate_is_control_plus_mean_difference():
    """One batch of 16 draws: value = exact control + mean(d), variance = var(d, ddof=1) / 16."""
    # positives 3, 1; negatives 3, 3: the first positive is at rank 1, 2 or 3 (probability 1/3
    # each), the second at rank 4 (precision 2/4). VOC envelope of the first: 1, 1/2, 1/2;
    # its plain precision 1, 1/2, 1/3: d = voc - control = 0, 0 or (1/2 - 1/3) / 2 = 1/12.
    st = rank_stats(f64([3.0, 1.0]), f64([3.0, 3.0]), keep_scores=True)
    got = expected_voc_ap(st, [None], 0.0, torch.Generator().manual_seed(5), 16, 16)
    value, var = (float(x[0]) for x in got[None])
    # the same 16 draws
    sampler = TieOrderSampler(st, torch.Generator().manual_seed(5))
    d = []
    for _ in range(16):
        drawn = sampler.sample()
        d.append(float(ranking.voc_ap(drawn, None, "pessimistic")[0]))
        d[-1] -= float(ranking.voc_control(drawn, None, "pessimistic")[0])
    assert set(np.round(d, 12)) <= {0.0, round(1 / 12, 12)} and 0 < sum(d) < 16 / 12
    # E[control] = ((1 + 1/2 + 1/3) / 3 + 1/2) / 2
    control = ((1 + 1 / 2 + 1 / 3) / 3 + 1 / 2) / 2
    assert value == pytest.approx(control + np.mean(d), abs=1e-12)
    assert var == pytest.approx(np.var(d, ddof=1) / 16, abs=1e-15)


def test_an_estimate_without_variance_stops_at_the_minimum_draws(monkeypatch):
    """A budget of 0 is met by an estimate whose variance is 0: with one positive the VOC AP
    equals its non-interpolated control in every draw, so sampling stops after min_samples
    instead of running to max_samples."""
    drawn = []
    sample = TieOrderSampler.sample
    monkeypatch.setattr(
        TieOrderSampler, "sample", lambda self, draws=1: drawn.append(draws) or sample(self, draws)
    )
    st = rank_stats(torch.tensor([[1.0]]), torch.tensor([[1.0, 0.0]]), keep_scores=True)
    (value, var) = expected_voc_ap(st, [None], 0.0, torch.Generator().manual_seed(0))[None]
    assert sum(drawn) == MIN_SAMPLES and float(var[0]) == 0.0
    assert float(value[0]) == pytest.approx((1 + 1 / 2) / 2)  # rank 1 or 2, equally likely
