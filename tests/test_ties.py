"""Tie semantics of the paper specs: zsbench's `expected` value equals what each paper's own
evaluation code gives on average over random orders inside tie groups.

The references below are written from the official code (argsort of the scores, then the
paper's formula over the ranked relevance list), vectorised over queries; a random order
inside tie groups is a random permutation of the gallery before a stable argsort. Without
ties every spec must equal its reference exactly, under every tie rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsbench.chance import expected_random_ap
from zsbench.evaluation import evaluate_sbir, similarity_matrix, tie_warning
from zsbench.metrics import METRIC_SPECS, get_spec, rank_stats, ranking

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
