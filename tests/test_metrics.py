"""Golden tests for zsbench.metrics: sklearn / torchmetrics / naive numpy references and
hand-computed toy rankings for every rule and every named spec; rank_stats' counts, dtypes,
shapes and devices; the tie rules of the ranking functions; the spec builders and the
definitions they record; per_query_values' inputs, seeding and sampling budget; and the input
errors (each message's key fragment). Expected values are written out by hand in the comments,
never read from the code under test."""

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
    specs,
)


def f64(*rows) -> torch.Tensor:
    """A float64 tensor of these rows (test_cir_metrics.py and test_ties.py use it too)."""
    return torch.tensor(rows, dtype=torch.float64)


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


# -------------------------------- rank_stats: counts, dtypes, shapes, row selection and devices


def test_rank_stats_float32_without_shared_buckets_by_hand():
    """float32 CPU path, no negative near a positive: counts exact, empty tie lists, float64."""
    # positives 0.5, 0.6 (descending: 0.6, 0.5); negatives 0.0 (below both), 1.0 (above both)
    st = rank_stats(torch.tensor([[0.5, 0.6]]), torch.tensor([[0.0, 1.0]]))
    assert st.tp_ge.tolist() == [[1.0, 2.0]] and st.tp_gt.tolist() == [[0.0, 1.0]]
    assert st.neg_ge.tolist() == [[1.0, 1.0]] and st.neg_gt.tolist() == [[1.0, 1.0]]
    assert st.n_tied_neg.tolist() == [0.0] and st.n_tied().tolist() == [0.0]
    for t in (st.tp_ge, st.tp_gt, st.neg_ge, st.neg_gt, st.n_tied_neg):
        assert t.dtype == torch.float64
    # AP: ranks 2, 3 -> (1/2 + 2/3) / 2
    assert float(ranking.ap(st)[0]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_rank_stats_without_negatives_by_hand():
    """N = 0: every negative count is a float64 zero, and so is n_tied_neg."""
    st = rank_stats(f64([2.0, 1.0], [1.0, 1.0]), torch.zeros(2, 0, dtype=torch.float64))
    assert st.neg_ge.tolist() == st.neg_gt.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert st.n_tied_neg.dtype == torch.float64 and st.n_tied_neg.tolist() == [0.0, 0.0]
    assert st.tp_ge.tolist() == [[1.0, 2.0], [2.0, 2.0]]  # the second row is one tie group
    assert st.n_tied().dtype == torch.float64


def test_rank_stats_rejects_a_row_count_mismatch():
    """pos and neg with different numbers of rows: ValueError with both shapes."""
    msg = r"neg \[C, N\] expected, got \(2, 1\), \(3, 4\)"
    with pytest.raises(ValueError, match=msg):
        rank_stats(torch.zeros(2, 1), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="^rank_stats needs at least one positive"):
        rank_stats(torch.zeros(2, 0), torch.zeros(2, 4))


def _fields(st):
    return {f: getattr(st, f) for f in ("pos", "tp_ge", "tp_gt", "neg_ge", "neg_gt", "n_tied_neg")}


def test_rank_stats_contract_shapes_dtypes_and_the_untied_shortcut():
    """A 1-D `pos` is refused with the shapes named (not a later unpacking error); the counts
    are float64 with and without negatives (the RankStats docstring); and `untied=True` on
    scores without a positive-negative tie gives exactly the stats of the full search,
    n_tied_neg included (the shortcut skips the search, it must not invent a tie). float64:
    float32 on the CPU takes the bucketed search, which has no shortcut."""
    with pytest.raises(ValueError, match=r"^pos \[C, R\] and neg \[C, N\] expected"):
        rank_stats(torch.ones(3), torch.ones(3, 2))
    pos = torch.tensor([[0.9, 0.5, 0.5], [0.2, 0.8, 0.1]], dtype=torch.float64)
    for neg in (torch.tensor([[0.7, 0.3], [0.5, 0.9]], dtype=torch.float64), pos[:, :0]):
        st = rank_stats(pos, neg)
        for name, t in _fields(st).items():
            if name != "pos":
                assert t.dtype == torch.float64, (name, neg.shape)
        fast = rank_stats(pos, neg, untied=True)
        for name, t in _fields(st).items():
            assert torch.equal(_fields(fast)[name], t), (name, neg.shape)


def test_rank_stats_select_keeps_every_field_of_the_chosen_rows():
    """RankStats.select keeps every field of the chosen rows, in the order asked for."""
    pos, neg = f64([3.0, 1.0], [2.0, 2.0], [0.5, 0.1]), f64([2.0, 0.0], [2.0, 5.0], [1.0, 1.0])
    for keep in (False, True):
        st = rank_stats(pos, neg, keep_scores=keep)
        sub = st.select(torch.tensor([2, 1]))
        for field in ("pos", "tp_ge", "tp_gt", "neg_ge", "neg_gt", "n_tied_neg"):
            assert torch.equal(getattr(sub, field), getattr(st, field)[[2, 1]]), field
        assert sub.n_neg == 2
        assert (sub.neg is None) if not keep else torch.equal(sub.neg, neg[[2, 1]])


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


@pytest.mark.parametrize("ties", ["expected", "pessimistic", "optimistic"])
def test_ranking_core_makes_every_tensor_on_its_inputs_device(ties):
    """rank_stats, every spec and the tie sampler create each tensor on the device of their
    inputs. A factory call that leaves the device out would land on the default device: on a
    GPU run, a CPU tensor. Here the default device is `meta` while the inputs are on the CPU,
    so such a call fails or returns a tensor without values (no second device needed)."""
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (6, 40), generator=g).double()  # ties across relevance
    cases = [(s[:, :7], s[:, 7:]), (s[:, :7], s[:, :0])]  # with and without negatives
    for pos, neg in cases:
        want = {
            name: get_spec(name, ties).compute(
                rank_stats(pos, neg, keep_scores=True), 1e-4, torch.Generator().manual_seed(0)
            )
            for name in METRIC_SPECS
        }
        with torch.device("meta"):
            for name in METRIC_SPECS:
                st = rank_stats(pos, neg, keep_scores=True)
                got = get_spec(name, ties).compute(st, 1e-4, torch.Generator().manual_seed(0))
                for key, (value, var) in got.items():
                    assert value.device.type == "cpu", (name, key)
                    assert torch.equal(value, want[name][key][0]), (name, key)
                    if var is not None:
                        assert torch.equal(var, want[name][key][1]), (name, key)


# -------------------------- tie rules of the ranking functions: the defaults and the rule given


def _st():
    """One positive at score 2 tied with one negative, one negative above (score 3)."""
    return rank_stats(f64([2.0]), f64([2.0, 3.0]))


def test_default_tie_rules_of_the_ranking_functions():
    """Defaults: precision_sum and MetricDef.compute take expected ties, voc_ap pessimistic."""
    # one positive at score 2 tied with one negative, one negative above (score 3): the
    # positive is at rank 2 or 3 with probability 1/2 each
    st = rank_stats(f64([2.0]), f64([2.0, 3.0]))
    # expected sum of precisions: (1/2 + 1/3) / 2; pessimistic rank 3
    assert float(ranking.precision_sum(st)[0]) == pytest.approx(5 / 12)
    assert float(ranking.precision_sum(st, 2)[0]) == pytest.approx(1 / 4)  # rank 2 only
    assert float(ranking.voc_ap(st)[0]) == pytest.approx(1 / 3)
    assert float(ranking.voc_ap(st, 2)[0]) == 0.0  # rank 3 is beyond the cut
    # P@2 = expected hits in the top 2 / 2 = (1/2) / 2
    p2 = MetricDef("P@2", "precision", 2, "test", denominator="k")
    assert float(p2.compute(st)[0]) == pytest.approx(1 / 4)
    assert float(p2.compute(st, "optimistic")[0]) == pytest.approx(1 / 2)
    # AP@2 (zsbench): inclusion 1/2 x sklearn precision 1/3, over min(2, R = 1); pessimistic 0
    assert float(ranking.ap_at_k(st, 2)[0]) == pytest.approx(1 / 6)
    # Yelamarthi: the expected precision sum in the top 2 (1/4, above) over K = 2
    assert float(ranking.yelamarthi_ap_at_k(st, 2)[0]) == pytest.approx(1 / 8)
    # SEM-PCYC apsak: 1 slot left for the tie group {pos, neg}: X = 1 with probability 1/2,
    # then AP over the list = (X (A + X) / K) / (A + X) = 1/2; X = 0 gives 0
    assert float(ranking.sempcyc_ap_at_k(st, 2)[0]) == pytest.approx(1 / 4)
    # VOC's control variate: the expected precision sum (5/12, above) over R = 1
    assert float(ranking.voc_control(st)[0]) == pytest.approx(5 / 12)
    # with a cut-off below R the denominator is min(K, R) = K: positives at ranks 1, 2, 3,
    # K = 2 -> (1 + 1) / 2 (not / 3)
    three = rank_stats(f64([3.0, 2.0, 1.0]), f64([0.5]))
    assert float(ranking.voc_control(three, 2)[0]) == pytest.approx(1.0)
    # ZSE-SBIR's P@K looks at the first min(K, R) = 1 rank: a positive tied with one negative
    # is there with probability 1/2
    pair = rank_stats(f64([2.0]), f64([2.0]))
    assert float(ranking.window_precision(pair, 5)[0]) == pytest.approx(1 / 2)


def test_voc_control_uses_the_given_tie_rule():
    """voc_control = precision_sum / min(K, R) under the tie rule it is given."""
    st = _st()  # the positive is at rank 2 or 3 (tied with one negative), R = 1
    assert float(ranking.voc_control(st, None, "expected")[0]) == pytest.approx(5 / 12)
    assert float(ranking.voc_control(st, None, "pessimistic")[0]) == pytest.approx(1 / 3)
    assert float(ranking.voc_control(st, None, "optimistic")[0]) == pytest.approx(1 / 2)
    assert float(ranking.voc_control(st, 2, "expected")[0]) == pytest.approx(1 / 4)


def test_inclusion_defaults_to_the_expected_tie_rule():
    """ranking.inclusion takes the expected tie rule when none is given."""
    st = rank_stats(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.5]]))
    want = ranking.inclusion(st, 2, "expected")
    assert torch.equal(ranking.inclusion(st, 2), want)
    assert not torch.equal(want, ranking.inclusion(st, 2, "pessimistic"))  # the rule matters


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


def test_spec_to_dict_states_every_field():
    """The spec as written into every result JSON: all its fields, notes included."""
    spec = get_spec("sake")
    d = spec.to_dict()
    assert set(d) == {
        "name",
        "description",
        "source",
        "version",
        "ties",
        "ties_definition",
        "notes",
        "metrics",
    }
    assert d["notes"] == list(spec.notes) and d["notes"]


def test_get_spec_unknown_name_did_you_mean():
    with pytest.raises(ZsbenchError, match="Did you mean: sake"):
        get_spec("sakee")
    with pytest.raises(ZsbenchError, match="Unknown metric spec"):
        get_spec("nope")


def test_spec_compute_samples_to_the_limit_by_default():
    """var_budget defaults to 0: a sampled metric draws until max_samples (the most exact
    estimate), not until a loose budget is met."""
    st = rank_stats(
        torch.tensor([[1.0, 0.0], [2.0, 1.0]]),
        torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
        keep_scores=True,
    )
    spec = get_spec("sake")

    def run(*budget):
        return spec.compute(st, *budget, generator=torch.Generator().manual_seed(3))

    default, exact, loose = run(), run(0.0), run(1.0)
    sampled = [k for k, (_, var) in exact.items() if var is not None]
    assert sampled  # the case this test is about: sake's VOC AP is sampled on these ties
    for key in sampled:
        assert torch.equal(default[key][0], exact[key][0]), key
        assert torch.equal(default[key][1], exact[key][1]), key
    assert any(not torch.equal(loose[k][1], exact[k][1]) for k in sampled)  # the budget matters


# The spec builders, called at test time (the registered specs are built at import), and the
# definitions they record in every result, word for word.
_ORDER = (
    "Order inside tie groups: the spec's ties rule (the official code ranks with np.argsort, "
    "whose order inside a tie group is arbitrary; without ties every rule equals it)."
)


def test_p_at_definition_by_hand():
    """The P@K definition recorded by the default and min(K, R) specs, word for word."""
    for k, den, shown in ((100, "k", "100"), (200, "min_k_r", "min(200, R)")):
        m = specs._p_at(k, den)
        assert (m.key, m.rule, m.k, m.denominator, m.no_positive) == (
            f"P@{k}",
            "precision",
            k,
            den,
            "exclude",
        )
        assert m.definition == (
            f"(hits in the top {k}) / {shown}, micro mean over queries. Tie-aware at the "
            f"rank-{k} boundary: items scoring strictly above the {k}-th highest score count "
            "fully, the tie group at the boundary by the spec's ties rule (expected: "
            "proportionally). Queries with R = 0 are excluded."
        )
    assert specs._p_at(100).denominator == "k"


def test_voc_definition_by_hand():
    """The VOC AP definition for the whole ranking and for the first 200 ranks."""
    for k, key, cut, den in (
        (None, "mAP@all", "the whole ranking", "R"),
        (200, "mAP@200", "the first 200 ranks", "min(200, R)"),
    ):
        m = specs._voc(k)
        assert (m.key, m.rule, m.k, m.denominator, m.no_positive) == (
            key,
            "voc_ap",
            k,
            None,
            "exclude",
        )
        assert m.definition == (
            f"VOC-style interpolated AP (VOCap / voc_ap) over {cut}: recall = TP / {den}, "
            "precision replaced by its monotone envelope (max precision at any later rank of "
            f"the cut list), AP = (1/{den}) * sum over retrieved relevant items of the "
            "interpolated precision. Queries with R = 0 give NaN in the official code "
            "(division by zero) and are excluded (nanmean). " + _ORDER
        )


def test_p_ranked_definition_by_hand():
    """The paper-spec P@K definition: / min(K, G) or / K, included or excluded, extra text."""
    m = specs._p_ranked(100, "min_k_g", "zero")
    assert (m.key, m.rule, m.k, m.denominator, m.no_positive) == (
        "P@100",
        "precision",
        100,
        "min_k_g",
        "zero",
    )
    assert m.definition == (
        "(relevant items among the first 100 ranks) / min(100, G), mean over queries; queries "
        "with R = 0 score 0 and are included. " + _ORDER
    )
    m = specs._p_ranked(200, "k", "exclude", "Extra. ")
    assert m.denominator == "k" and m.no_positive == "exclude"
    assert m.definition == (
        "(relevant items among the first 200 ranks) / 200, mean over queries; queries with "
        "R = 0 score 0 and are excluded. Extra. " + _ORDER
    )


def test_sake_like_spec_by_hand():
    """SAKE-style specs: VOC mAP@all, mAP@200, P@100 and P@200 over min(K, G), R = 0 -> 0."""
    s = specs._sake_like("x", "desc", "src", ("note",))
    assert (s.name, s.description, s.source, s.ties) == ("x", "desc", "src", "expected")
    got = [(m.key, m.rule, m.k, m.denominator, m.no_positive) for m in s.metrics]
    assert got == [
        ("mAP@all", "voc_ap", None, None, "exclude"),
        ("mAP@200", "voc_ap", 200, None, "exclude"),
        ("P@100", "precision", 100, "min_k_g", "zero"),
        ("P@200", "precision", 200, "min_k_g", "zero"),
    ]
    assert "/ min(200, G)" in s.metrics[3].definition
    assert s.notes == (
        "Reported means: '<metric>' = micro mean over queries (NaN values, i.e. excluded "
        "queries, left out); '<metric>.class_mean' = mean over query classes of the per-class "
        "mean.",
        "note",
    )


def test_metric_def_to_dict_fields():
    """MetricDef.to_dict: exactly the seven documented fields with their values."""
    m = MetricDef("P@3", "precision", 3, "def", denominator="min_k_g", no_positive="zero")
    assert m.to_dict() == {
        "key": "P@3",
        "rule": "precision",
        "k": 3,
        "denominator": "min_k_g",
        "tie_dependent": True,
        "no_positive": "zero",
        "definition": "def",
    }
    assert MetricDef("mAP@all", "ap", None, "d").to_dict()["tie_dependent"] is False


# ------------------- per_query_values: validation, input types, seeding and the sampling budget


def test_per_query_values_validation():
    with pytest.raises(ZsbenchError, match="same shape"):
        per_query_values(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(ZsbenchError, match="NaN"):
        per_query_values(np.array([[np.nan, 1.0]]), np.array([[True, False]]))


@pytest.mark.parametrize("spec", sorted(METRIC_SPECS))
def test_per_query_values_takes_integer_scores_and_01_relevance(spec):
    """Integer scores are ranked as float64 (the tie sampler puts -inf in them) and a 0/1
    relevance matrix is a mask (an integer tensor would index columns instead)."""
    s = torch.tensor([[3, 1, 2, 2, 0, 5], [1, 1, 1, 0, 2, 2]])
    rel = [[1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 1, 0]]
    want = per_query_values(s.double(), torch.tensor(rel, dtype=torch.bool), spec)
    got = per_query_values(s, torch.tensor(rel), spec)
    assert all(torch.equal(got[k], want[k]) for k in want), (got, want)


def test_per_query_values_takes_bfloat16_tensors_and_array_likes():
    """A bfloat16 tensor (numpy has no bfloat16) is used as it is; other inputs go through
    numpy, so an object with __array__ works (torch.as_tensor alone cannot read it)."""

    class ArrayLike:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.a)

    # scores 0.5, 0.25 (relevant), 1.0: the relevant item at rank 3 -> AP 1/3
    scores, rel = [[0.5, 0.25, 1.0]], [[False, True, False]]
    want = [pytest.approx(1 / 3)]
    assert per_query_ap(torch.tensor(scores, dtype=torch.bfloat16), rel).tolist() == want
    assert per_query_ap(ArrayLike(scores), ArrayLike(rel)).tolist() == want


def test_per_query_values_sampling_is_seeded():
    """Sampled (VOC, tie-dependent) values are the same on every call: a fixed generator."""
    s = torch.tensor([[1.0] * 6 + [0.0] * 6] * 4)  # two tie groups of mixed relevance per row
    rel = torch.tensor([[1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]] * 4, dtype=torch.bool)
    torch.manual_seed(1)
    first = per_query_values(s, rel, "sake")["mAP@all"]
    torch.manual_seed(2)  # the global RNG must not matter
    assert torch.equal(per_query_values(s, rel, "sake")["mAP@all"], first)


class RecordingSpec(MetricSpec):
    """A spec recording (block size, variance budget) of every compute call, and its results
    (test_evaluation.py uses it too)."""

    calls: list = []
    results: list = []

    def compute(self, stats, var_budget=0.0, generator=None):
        type(self).calls.append((stats.pos.shape[0], var_budget))
        out = super().compute(stats, var_budget, generator)
        type(self).results.append(out)
        return out


def recording_spec(name: str, ties: str = "expected") -> RecordingSpec:
    """The named spec, recording its compute calls (the record starts empty)."""
    s = get_spec(name)
    RecordingSpec.calls, RecordingSpec.results = [], []
    return RecordingSpec(s.name, s.description, s.source, s.metrics, ties=ties)


def test_per_query_values_sampling_budget_by_hand():
    """per_query_values samples each query to a variance budget of (5e-5)^2 * Q."""
    scores = np.array([[3.0, 2.0, 1.5, 1.0], [1.0, 0.5, 2.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
    rel = np.array([[0, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0]], bool)
    spec = recording_spec("sake")
    per_query_values(scores, rel, spec)
    # one call per query (R >= 1 each), every one with the budget for Q = 3
    assert [c[0] for c in spec.calls] == [1, 1, 1]
    assert [c[1] for c in spec.calls] == pytest.approx([5e-5**2 * 3] * 3, rel=1e-12)


# --------------------------------------------------------------------------------- input errors


# each input error of zsbench.metrics: (call, the fragment its message must hold: the argument,
# the bad value and the fix)
_METRIC_ERRORS = {
    # zsbench.metrics.per_query_values
    "pqv-scores-3d": (
        lambda: per_query_values(np.zeros((1, 2, 3)), np.zeros((1, 2), bool)),
        r"scores must be \[Q, G\], got shape \(1, 2, 3\)",
    ),
    "pqv-relevant-3d": (
        lambda: per_query_values(np.zeros((1, 2)), np.zeros((1, 1, 2), bool)),
        r"relevant must be \[Q, G\], got shape \(1, 1, 2\)",
    ),
    "pqv-shapes": (
        lambda: per_query_values(np.zeros((2, 3)), np.zeros((2, 4), bool)),
        r"scores \(2, 3\) and relevant \(2, 4\) must have the same shape",
    ),
    "pqv-nan": (
        lambda: per_query_values(np.array([[np.inf, 1.0]]), np.array([[True, False]])),
        r"^scores contain NaN or inf; fix the features",
    ),
    # zsbench.metrics.ranking / specs (ValueError: programming errors)
    "rank-ties": (
        lambda: ranking.check_ties("random"),
        r"unknown tie rule 'random'; one of expected, pessimistic, optimistic",
    ),
    "rank-single-rank": (
        lambda: ranking.voc_ap(_st(), None, "expected"),
        r"no single rank under ties='expected'",
    ),
    "rank-denominator": (
        lambda: ranking.precision(_st(), 1, "min_k"),
        r"unknown precision denominator 'min_k'",
    ),
    "spec-rule": (lambda: MetricDef("a", "map", 1, "d"), r"unknown metric rule 'map'"),
    "spec-no-positive": (
        lambda: MetricDef("a", "ap", None, "d", no_positive="drop"),
        r"unknown no_positive policy 'drop'",
    ),
    "spec-sampled": (
        lambda: MetricDef("mAP@all", "voc_ap", None, "d").compute(_st()),
        r"mAP@all: expected ties are sampled, use MetricSpec\.compute",
    ),
    "spec-ties": (
        lambda: MetricSpec("n", "d", "s", (), ties="random"),
        r"unknown tie rule 'random'; one of expected, pessimistic, optimistic",
    ),
    "get-spec-ties": (
        lambda: get_spec("sake", "random"),
        r"Unknown tie rule 'random'\. Known: expected, optimistic, pessimistic",
    ),
    "get-spec-name": (
        lambda: get_spec("zzz"),
        r"Unknown metric spec 'zzz'\. Known: default, drcpl, ",
    ),
    "get-spec-unhashable": (
        lambda: get_spec(["sake"]),
        r"Unknown metric spec \['sake'\]\. Did you mean: sake\? Known: default, ",
    ),
}


@pytest.mark.parametrize("case", sorted(_METRIC_ERRORS))
def test_each_metric_input_error_names_the_problem(case):
    """Each input error of zsbench.metrics raises its type, naming the argument, value and fix."""
    fn, msg = _METRIC_ERRORS[case]
    raises_exactly(ValueError if case.startswith(("rank-", "spec-")) else ZsbenchError, fn, msg)


def raises_exactly(kind: type, fn, msg: str) -> None:
    """`fn()` raises `kind` itself (not a subclass) with a message matching `msg`."""
    with pytest.raises(kind, match=msg) as info:
        fn()
    assert type(info.value) is kind
