"""Golden tests for zsbench.metrics: sklearn / torchmetrics / naive numpy references and
hand-computed toy rankings for every rule and every named spec."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from zsbench.errors import ZsbenchError
from zsbench.metrics import (
    METRIC_SPECS,
    METRICS_VERSION,
    MetricDef,
    MetricSpec,
    get_spec,
    per_query_ap,
    per_query_values,
    rank_stats,
    ranking,
)

# --------------------------------------------------------------------- naive numpy references
# Written from the definitions / official code, one query at a time, with full sorts.


def _sk_ap(rel, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(rel, s))


def _order(s, rel, ties):
    """Descending score; inside ties non-relevant first (pessimistic) or relevant first
    (optimistic)."""
    sign = 1 if ties == "pessimistic" else -1
    return np.lexsort((sign * rel.astype(int), -s))


def ref_precision_expected(s, rel, k, den):
    t = np.sort(s)[::-1][k - 1] if k <= len(s) else -np.inf
    above = s > t
    eq = s == t
    hits = rel[above].sum() + (rel[eq].sum() * (k - above.sum()) / eq.sum() if eq.any() else 0)
    return hits / (k if den == "k" else min(k, rel.sum()))


def ref_ap_at_k_expected(s, rel, k):
    total = 0.0
    for p in np.flatnonzero(rel):
        ge, gt, eq = s >= s[p], s > s[p], s == s[p]
        prec = rel[ge].sum() / ge.sum()
        w = min(max((k - gt.sum()) / eq.sum(), 0.0), 1.0)
        total += w * prec
    return total / min(k, rel.sum())


def ref_ap_at_k_ranked(s, rel, k, ties):
    ranked = _order(s, rel, ties)[:k]
    total = sum(rel[s >= s[p]].sum() / (s >= s[p]).sum() for p in ranked if rel[p])
    return total / min(k, rel.sum())


def ref_voc(s, rel, top, ties):
    """SAKE eval_AP_inner + VOCap, re-derived: cumulative tp/fp, envelope, recall steps."""
    tp = rel[_order(s, rel, ties)].astype(float)
    tot_pos = tp.sum()
    if top is not None:
        top = min(top, len(tp))
        tp = tp[:top]
        tot_pos = min(top, tot_pos)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    rec = ctp / tot_pos
    prec = ctp / (ctp + cfp)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def ref_precision_ranked(s, rel, k, den, ties):
    hits = rel[_order(s, rel, ties)][:k].sum()
    if den == "min_k_g":
        return hits / min(k, len(s))
    return hits / (k if den == "k" else min(k, rel.sum()))


def ref_window(s, rel, k, ties):
    m = min(k, rel.sum())
    return rel[_order(s, rel, ties)][:m].mean()


def ref_sempcyc(s, rel, k, ties):
    idx = _order(s, rel, ties)[:k]
    if rel[idx].sum() == 0:
        return 0.0
    return _sk_ap(rel[idx], s[idx])


def ref_yelamarthi(s, rel, k, ties):
    r = rel[_order(s, rel, ties)][:k].astype(float)
    return float(np.sum(np.cumsum(r) * r / np.arange(1, len(r) + 1)) / k)


def reference(m: MetricDef, s: np.ndarray, rel: np.ndarray, ties: str) -> float:
    """The value of ``m`` under the ``pessimistic`` or ``optimistic`` tie rule; ``expected``
    only for the rules with a closed form written here (ap, ap_at_k, precision)."""
    if not rel.any():
        return math.nan if m.no_positive == "exclude" else 0.0
    if m.rule == "ap":
        return _sk_ap(rel, s)
    if ties == "expected":
        if m.rule == "ap_at_k":
            return ref_ap_at_k_expected(s, rel, m.k)
        if m.rule == "precision" and m.denominator != "min_k_g":
            return ref_precision_expected(s, rel, m.k, m.denominator)
        raise AssertionError(f"no closed-form reference for {m.rule} with expected ties")
    if m.rule == "ap_at_k":
        return ref_ap_at_k_ranked(s, rel, m.k, ties)
    if m.rule == "voc_ap":
        return ref_voc(s, rel, m.k, ties)
    if m.rule == "precision":
        return ref_precision_ranked(s, rel, m.k, m.denominator, ties)
    if m.rule == "window_precision":
        return ref_window(s, rel, m.k, ties)
    if m.rule == "sempcyc_ap_at_k":
        return ref_sempcyc(s, rel, m.k, ties)
    if m.rule == "yelamarthi_ap_at_k":
        return ref_yelamarthi(s, rel, m.k, ties)
    raise AssertionError(m.rule)


def _with_k(spec: MetricSpec, k: int) -> MetricSpec:
    """The same rules with every cut-off set to k (keys stay distinct by rule)."""
    ms = tuple(
        dataclasses.replace(m, key=f"{m.key}/{m.rule}@{k}", k=None if m.k is None else k)
        for m in spec.metrics
    )
    return dataclasses.replace(spec, name=f"{spec.name}@{k}", metrics=ms)


def _random(seed, q, g, ties):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, (q, g)).astype(float) if ties else rng.normal(size=(q, g))
    rel = rng.random((q, g)) < rng.uniform(0.05, 0.5, size=(q, 1))
    rel[0] = False  # one query without any positive
    rel[1, :] = False
    rel[1, 3] = True  # one with a single positive
    return s, rel


# ------------------------------------------------------------------------------ golden: sklearn


@pytest.mark.parametrize("ties", [True, False])
def test_per_query_ap_equals_sklearn(ties):
    s, rel = _random(1, 60, 150, ties)
    got = per_query_ap(s, rel).numpy()
    assert math.isnan(got[0])
    exp = np.array([_sk_ap(rel[i], s[i]) for i in range(1, len(s))])
    np.testing.assert_allclose(got[1:], exp, atol=1e-6, rtol=0)


def test_per_query_ap_sklearn_many_tie_patterns():
    rng = np.random.default_rng(7)
    for _ in range(200):
        g = int(rng.integers(1, 25))
        s = rng.integers(0, int(rng.integers(1, 4)), g).astype(float)
        rel = rng.random(g) < 0.5
        if not rel.any():
            rel[int(rng.integers(g))] = True
        assert float(per_query_ap(s, rel)[0]) == pytest.approx(_sk_ap(rel, s), abs=1e-12)


@pytest.mark.slow  # importing torchmetrics takes ~10 s
def test_map_equals_torchmetrics_on_positive_scores():
    from torchmetrics.retrieval import RetrievalMAP

    s, rel = _random(2, 40, 120, ties=False)
    s = s - s.min() + 1.0  # torchmetrics >= 1.7.4 treats scores <= 0 as not retrieved
    keep = rel.any(axis=1)
    s, rel = s[keep], rel[keep]
    metric = RetrievalMAP()
    idx = torch.arange(len(s))[:, None].expand(-1, s.shape[1])
    tm = float(
        metric(torch.tensor(s).flatten(), torch.tensor(rel).flatten(), indexes=idx.flatten())
    )
    assert float(per_query_ap(s, rel).mean()) == pytest.approx(tm, abs=1e-6)


# ---------------------------------------------------------------- golden: naive numpy reference


@pytest.mark.parametrize("rule", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("name", sorted(METRIC_SPECS))
@pytest.mark.parametrize("k", [None, 3, 17])
def test_every_spec_matches_numpy_reference(name, ties, k, rule):
    spec = METRIC_SPECS[name] if k is None else _with_k(METRIC_SPECS[name], k)
    s, rel = _random(3, 25, 80 if k else 260, ties)
    got = per_query_values(s, rel, spec, ties=rule)
    for m in spec.metrics:
        exp = np.array([reference(m, s[i], rel[i], rule) for i in range(len(s))])
        np.testing.assert_allclose(got[m.key].numpy(), exp, atol=1e-9, rtol=0, err_msg=m.key)


@pytest.mark.parametrize("name", ["default", "precision-min-k-r"])
@pytest.mark.parametrize("k", [None, 3, 17])
def test_expected_closed_forms_match_numpy_reference(name, k):
    spec = METRIC_SPECS[name] if k is None else _with_k(METRIC_SPECS[name], k)
    s, rel = _random(3, 25, 80, ties=True)
    got = per_query_values(s, rel, spec)
    for m in spec.metrics:
        exp = np.array([reference(m, s[i], rel[i], "expected") for i in range(len(s))])
        np.testing.assert_allclose(got[m.key].numpy(), exp, atol=1e-9, rtol=0, err_msg=m.key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_stats_counts_equal_brute_force(dtype):
    s, rel = _random(4, 20, 300, ties=True)
    s = s + np.random.default_rng(0).integers(0, 2, s.shape) * 0.5  # more distinct values
    for i in range(len(s)):
        if not rel[i].any():
            continue
        p, n = s[i][rel[i]], s[i][~rel[i]]
        st = rank_stats(torch.tensor(p, dtype=dtype)[None], torch.tensor(n, dtype=dtype)[None])
        desc = np.sort(p)[::-1]
        np.testing.assert_array_equal(st.neg_ge[0].numpy(), [(n >= v).sum() for v in desc])
        np.testing.assert_array_equal(st.neg_gt[0].numpy(), [(n > v).sum() for v in desc])
        np.testing.assert_array_equal(st.tp_gt[0].numpy(), [(p > v).sum() for v in desc])
        assert float(st.n_tied_neg[0]) == np.isin(n, p).sum()
        assert float(st.n_tied()[0]) == np.isin(n, p).sum() + np.isin(p, n).sum()


# ------------------------------------------------------------------- hand-computed toy rankings

# Toy A (no ties): scores 0.9 .. 0.4, relevance [0, 1, 1, 0, 1, 1], G = 6, R = 4.
# Relevant items sit at ranks 2, 3, 5, 6 with precision 1/2, 2/3, 3/5, 4/6.
TOY_A = (np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), np.array([0, 1, 1, 0, 1, 1], bool))
# AP (sklearn, no ties) = (1/2 + 2/3 + 3/5 + 2/3) / 4 = 2.43333 / 4
AP_A = (1 / 2 + 2 / 3 + 3 / 5 + 2 / 3) / 4  # 0.608333
# VOC: envelope max(later precisions) = 2/3 at all four relevant ranks -> 4 * (2/3) / 4
VOC_A = 2 / 3

TOY_A_EXPECTED = {
    # all four relevant items are inside the top 100/200; AP@200 over min(200, 4) = 4 = AP
    "default": {"mAP@all": AP_A, "mAP@200": AP_A, "P@100": 4 / 100, "P@200": 4 / 200},
    # P@K over min(K, G) = min(K, 6)
    "sake": {"mAP@all": VOC_A, "mAP@200": VOC_A, "P@100": 4 / 6, "P@200": 4 / 6},
    "voc": {"mAP@all": VOC_A, "mAP@200": VOC_A, "P@100": 4 / 6, "P@200": 4 / 6},
    "drcpl": {"mAP@all": VOC_A, "mAP@200": VOC_A, "P@100": 4 / 6, "P@200": 4 / 6},
    # P@K: hits in the first min(K, R) = 4 ranks (ranks 2, 3) / 4
    "zse-sbir": {"mAP@all": VOC_A, "mAP@200": VOC_A, "P@100": 2 / 4, "P@200": 2 / 4},
    # top-200 list = whole gallery, so apsak@200 = sklearn AP; P over min(K, G) = 6
    "sem-pcyc": {"mAP@all": AP_A, "mAP@200": AP_A, "P@100": 4 / 6, "P@200": 4 / 6},
    # sum of precisions at relevant ranks / 200 ; hits / 200
    "yelamarthi": {"mAP@200": (1 / 2 + 2 / 3 + 3 / 5 + 2 / 3) / 200, "P@200": 4 / 200},
    # hits / min(K, R) = 4 / 4
    "precision-min-k-r": {"mAP@all": AP_A, "mAP@200": AP_A, "P@100": 1.0, "P@200": 1.0},
}


@pytest.mark.parametrize("name", sorted(METRIC_SPECS))
def test_toy_a_every_named_spec_every_key(name):
    got = per_query_values(*TOY_A, name)
    assert set(got) == set(TOY_A_EXPECTED[name]) == set(METRIC_SPECS[name].keys)
    for key, exp in TOY_A_EXPECTED[name].items():
        assert float(got[key][0]) == pytest.approx(exp, abs=1e-12), key


def _toy_spec(*defs):
    return MetricSpec(
        "toy", "toy", "test", tuple(MetricDef(f"m{i}", *d) for i, d in enumerate(defs))
    )


def test_toy_a_cutoffs_by_hand():
    spec = _toy_spec(
        ("ap_at_k", 3, "-"),  # top 3 = [n, p, p]: (1/2 + 2/3) / min(3, 4)
        ("precision", 3, "-", "k"),  # 2 / 3
        ("precision", 5, "-", "min_k_r"),  # hits in top 5 = 3, / min(5, 4) = 3 / 4
        ("voc_ap", 3, "-"),  # envelope 2/3, 2/3 -> (4/3) / min(3, 4)
        ("precision", 3, "-", "min_k_g"),  # 2 / min(3, 6)
        ("window_precision", 5, "-"),  # first min(5, 4) = 4 ranks hold 2 -> 2 / 4
        ("sempcyc_ap_at_k", 3, "-"),  # sklearn AP of [n, p, p]: (1/2 + 2/3) / 2
        ("yelamarthi_ap_at_k", 3, "-"),  # (1/2 + 2/3) / 3
    )
    exp = [7 / 18, 2 / 3, 3 / 4, 4 / 9, 2 / 3, 1 / 2, 7 / 12, 7 / 18]
    got = per_query_values(*TOY_A, spec)
    assert [float(got[f"m{i}"][0]) for i in range(len(exp))] == pytest.approx(exp, abs=1e-12)


# Toy B (ties): scores [3, 2, 2, 2, 1, 1], relevance [0, 1, 0, 1, 1, 0], R = 3.
TOY_B = (np.array([3.0, 2, 2, 2, 1, 1]), np.array([0, 1, 0, 1, 1, 0], bool))


TOY_B_SPEC = _toy_spec(
    ("ap", None, "-"),
    ("precision", 3, "-", "k"),
    ("ap_at_k", 3, "-"),
    ("precision", 3, "-", "min_k_g"),
    ("voc_ap", 3, "-"),
    ("voc_ap", None, "-"),
    ("sempcyc_ap_at_k", 3, "-"),
    ("yelamarthi_ap_at_k", 3, "-"),
    ("window_precision", 3, "-"),
)
# Tie groups: {3: n}, {2: p, n, p}, {1: p, n}. sklearn AP (no order involved): threshold 2 ->
# TP 2 of 4 retrieved, threshold 1 -> TP 3 of 6: (2/3) * (1/2) + (1/3) * (1/2) = 1/2.
TOY_B_BY_HAND = {
    # order [3n, 2n, 2p, 2p, 1n, 1p]: relevant ranks 3, 4, 6
    #   P@3 = 1/3; AP@3: the rank-3 positive, sklearn precision 2/4, over min(3, 3) -> 1/6;
    #   VOC@3 (R' = 3): (1/3) / 3; VOC@all: precisions 1/3, 2/4, 3/6 -> envelope 1/2 each;
    #   sem-pcyc@3: list [3n, 2n, 2p], one threshold at 2: 1 TP of 3 -> 1/3;
    #   yelamarthi@3: (1/3) / 3; window (m = 3): 1 / 3
    "pessimistic": [1 / 2, 1 / 3, 1 / 6, 1 / 3, 1 / 9, 1 / 2, 1 / 3, 1 / 9, 1 / 3],
    # order [3n, 2p, 2p, 2n, 1p, 1n]: relevant ranks 2, 3, 5
    #   P@3 = 2/3; AP@3 = (2/4 + 2/4) / 3; VOC@3: precisions 1/2, 2/3 -> 2/3 twice, / 3;
    #   VOC@all: 1/2, 2/3, 3/5 -> envelope 2/3, 2/3, 3/5 -> 29/45; sem-pcyc@3: 2 TP of 3;
    #   yelamarthi@3: (1/2 + 2/3) / 3; window: 2 / 3
    "optimistic": [1 / 2, 2 / 3, 1 / 3, 2 / 3, 4 / 9, 29 / 45, 2 / 3, 7 / 18, 2 / 3],
    # random order inside groups, by enumeration: the 2-group puts its negative on slot 1, 2
    # or 3 (a, b, c), the 1-group its positive first or second (x, y), all equally likely.
    #   expected hits in the top 3: 2 * (2/3) -> P@3 = 4/9 (also over min(3, 6));
    #   AP@3: w = 2/3 for both 2-positives, precision 2/4: (2 * 2/3 * 1/2) / 3;
    #   VOC@3: a 1/9, b (1/2) / 3, c (2/3 + 2/3) / 3 -> mean 13/54;
    #   VOC@all: ax 3/5, ay 1/2, bx 3/5, by 1/2, cx 29/45, cy 11/18 -> 311/540;
    #   sem-pcyc@3: a 1/3, b 1/3, c 2/3 -> 4/9; yelamarthi@3: a 1/3, b 1/2, c 7/6, / 3 ->
    #   2/9; window: (4/3) / 3
    "expected": [1 / 2, 4 / 9, 2 / 9, 4 / 9, 13 / 54, 311 / 540, 4 / 9, 2 / 9, 4 / 9],
}


@pytest.mark.parametrize("rule", sorted(TOY_B_BY_HAND))
def test_toy_b_ties_by_hand(rule):
    got = per_query_values(*TOY_B, TOY_B_SPEC, ties=rule)
    exp = TOY_B_BY_HAND[rule]
    for i, m in enumerate(TOY_B_SPEC.metrics):
        # the VOC AP with expected ties is sampled: one query, standard error about 4e-4
        tol = 2e-3 if m.sampled(rule) else 1e-12
        assert float(got[m.key][0]) == pytest.approx(exp[i], abs=tol), (m.rule, m.k)
    assert _sk_ap(TOY_B[1], TOY_B[0]) == pytest.approx(0.5)


def test_precision_tie_at_boundary_is_expected_value():
    # 10 items all tied, 4 relevant: any K gets expected hits 4K/10
    s, rel = np.zeros(10), np.arange(10) < 4
    st = rank_stats(torch.tensor(s[rel])[None], torch.tensor(s[~rel])[None])
    for k in (1, 3, 10):
        assert float(ranking.precision(st, k)[0]) == pytest.approx(0.4)
    # above-boundary items count fully: scores [5 (rel), 1, 1, 1 (rel), 0]
    st = rank_stats(torch.tensor([[5.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert float(ranking.hits(st, 2)[0]) == pytest.approx(1 + 1 / 3)


def test_no_positive_policy():
    s = np.array([[0.3, 0.2, 0.1]])
    rel = np.zeros((1, 3), bool)
    for name, spec in METRIC_SPECS.items():
        got = per_query_values(s, rel, name)
        for m in spec.metrics:
            v = float(got[m.key][0])
            if m.no_positive == "exclude":
                assert math.isnan(v), (name, m.key)
            else:
                assert v == 0.0, (name, m.key)
    # sem-pcyc mAP@all includes them as 0, exactly what sklearn returns there
    assert _sk_ap(rel[0], s[0]) == 0.0


# -------------------------------------------------------------------------------------- specs


def test_spec_registry_and_to_dict():
    assert {
        "default",
        "voc",
        "sake",
        "drcpl",
        "zse-sbir",
        "sem-pcyc",
        "yelamarthi",
        "precision-min-k-r",
    } <= set(METRIC_SPECS)
    assert get_spec("default").keys == ["mAP@all", "mAP@200", "P@100", "P@200"]
    assert get_spec(get_spec("sake")) is get_spec("sake")
    for name, spec in METRIC_SPECS.items():
        d = spec.to_dict()
        assert d["name"] == name and d["version"] == METRICS_VERSION
        assert d["description"] and d["source"]
        for key, md in d["metrics"].items():
            assert md["definition"] and md["key"] == key


def test_get_spec_unknown_name_did_you_mean():
    with pytest.raises(ZsbenchError, match="Did you mean: sake"):
        get_spec("sakee")
    with pytest.raises(ZsbenchError, match="Unknown metric spec"):
        get_spec("nope")


def test_per_query_values_validation():
    with pytest.raises(ZsbenchError, match="same shape"):
        per_query_values(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(ZsbenchError, match="NaN"):
        per_query_values(np.array([[np.nan, 1.0]]), np.array([[True, False]]))


def test_bucketed_searchsorted_is_exact():
    from zsbench.metrics.ranking import _bucketed_insertion

    gen = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1e-38, -1e-38, 3e38, -3e38, float("inf"), -float("inf")])
    for trial in range(120):
        c, r, n = 3, 1 + trial % 37, trial * 2
        mode = trial % 4
        if mode == 0:
            pos, neg = torch.randn(c, r, generator=gen), torch.randn(c, n, generator=gen)
        elif mode == 1:
            pos = torch.randint(-2, 3, (c, r), generator=gen).float()
            neg = torch.randint(-3, 4, (c, n), generator=gen).float()
        elif mode == 2:
            pos = torch.zeros(c, r)
            neg = special[torch.randint(0, 8, (c, n), generator=gen)]
        else:
            pos = torch.randn(c, r, generator=gen) * 1e-30
            neg = torch.cat([pos[:, : n // 2], special[torch.randint(0, 8, (c, n - n // 2))]], 1)
        asc = torch.sort(pos, 1).values
        exp = torch.searchsorted(asc, neg, right=True, out_int32=True)
        left = torch.searchsorted(asc, neg, right=False)
        ins, rows, lo, hi = _bucketed_insertion(asc, neg)
        assert torch.equal(ins, exp), trial
        eq_rows, eq_cols = (exp != left).nonzero(as_tuple=True)  # negatives equal to a positive
        assert torch.equal(rows, eq_rows), trial
        assert torch.equal(lo, left[eq_rows, eq_cols]) and torch.equal(hi, exp[eq_rows, eq_cols])
