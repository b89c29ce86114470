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


def _pess_order(s, rel):
    """Descending score; inside ties non-relevant first (what zsbench's paper specs use)."""
    return np.lexsort((rel.astype(int), -s))


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


def ref_voc(s, rel, top):
    """SAKE eval_AP_inner + VOCap, re-derived: cumulative tp/fp, envelope, recall steps."""
    tp = rel[_pess_order(s, rel)].astype(float)
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


def ref_precision_ranked(s, rel, k, den):
    hits = rel[_pess_order(s, rel)][:k].sum()
    return hits / (min(k, len(s)) if den == "min_k_g" else k)


def ref_window(s, rel, k):
    m = min(k, rel.sum())
    return rel[_pess_order(s, rel)][:m].mean()


def ref_sempcyc(s, rel, k):
    idx = _pess_order(s, rel)[:k]
    if rel[idx].sum() == 0:
        return 0.0
    return _sk_ap(rel[idx], s[idx])


def ref_yelamarthi(s, rel, k):
    r = rel[_pess_order(s, rel)][:k].astype(float)
    return (
        float(np.mean(np.cumsum(r) * r / np.arange(1, k + 1)))
        if len(r) == k
        else (float(np.sum(np.cumsum(r) * r / np.arange(1, len(r) + 1)) / k))
    )


def reference(m: MetricDef, s: np.ndarray, rel: np.ndarray) -> float:
    if not rel.any():
        return math.nan if m.no_positive == "exclude" else 0.0
    if m.rule == "ap":
        return _sk_ap(rel, s)
    if m.rule == "ap_at_k":
        return ref_ap_at_k_expected(s, rel, m.k)
    if m.rule == "precision":
        return ref_precision_expected(s, rel, m.k, m.denominator)
    if m.rule == "voc_ap":
        return ref_voc(s, rel, m.k)
    if m.rule == "precision_ranked":
        return ref_precision_ranked(s, rel, m.k, m.denominator)
    if m.rule == "window_precision":
        return ref_window(s, rel, m.k)
    if m.rule == "sempcyc_ap_at_k":
        return ref_sempcyc(s, rel, m.k)
    if m.rule == "yelamarthi_ap_at_k":
        return ref_yelamarthi(s, rel, m.k)
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


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("name", sorted(METRIC_SPECS))
@pytest.mark.parametrize("k", [None, 3, 17])
def test_every_spec_matches_numpy_reference(name, ties, k):
    spec = METRIC_SPECS[name] if k is None else _with_k(METRIC_SPECS[name], k)
    s, rel = _random(3, 25, 80 if k else 260, ties)
    got = per_query_values(s, rel, spec)
    for m in spec.metrics:
        exp = np.array([reference(m, s[i], rel[i]) for i in range(len(s))])
        np.testing.assert_allclose(got[m.key].numpy(), exp, atol=1e-9, rtol=0, err_msg=m.key)


def test_capped_neg_gt_equals_exact():
    s, rel = _random(4, 20, 300, ties=True)
    for i in range(len(s)):
        if not rel[i].any():
            continue
        pos, neg = torch.tensor(s[i][rel[i]])[None], torch.tensor(s[i][~rel[i]])[None]
        exact, capped = rank_stats(pos, neg), rank_stats(pos, neg, gt_cap=20)
        for k in (1, 5, 20):
            assert torch.allclose(ranking.hits_expected(exact, k), ranking.hits_expected(capped, k))
            assert torch.allclose(
                ranking.ap_at_k_expected(exact, k), ranking.ap_at_k_expected(capped, k)
            )
        with pytest.raises(ValueError, match="gt_cap"):
            ranking.hits_expected(capped, 21)


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
        ("precision_ranked", 3, "-", "min_k_g"),  # 2 / min(3, 6)
        ("window_precision", 5, "-"),  # first min(5, 4) = 4 ranks hold 2 -> 2 / 4
        ("sempcyc_ap_at_k", 3, "-"),  # sklearn AP of [n, p, p]: (1/2 + 2/3) / 2
        ("yelamarthi_ap_at_k", 3, "-"),  # (1/2 + 2/3) / 3
    )
    exp = [7 / 18, 2 / 3, 3 / 4, 4 / 9, 2 / 3, 1 / 2, 7 / 12, 7 / 18]
    got = per_query_values(*TOY_A, spec)
    assert [float(got[f"m{i}"][0]) for i in range(len(exp))] == pytest.approx(exp, abs=1e-12)


# Toy B (ties): scores [3, 2, 2, 2, 1, 1], relevance [0, 1, 0, 1, 1, 0], R = 3.
TOY_B = (np.array([3.0, 2, 2, 2, 1, 1]), np.array([0, 1, 0, 1, 1, 0], bool))


def test_toy_b_ties_by_hand():
    # sklearn: threshold 2 -> TP 2 / 4 retrieved, threshold 1 -> TP 3 / 6:
    #   AP = (2/3) * (1/2) + (1/3) * (1/2) = 1/2
    # expected P@3: 1 item above the tie group {2, 2, 2} (2 relevant), 2 of its 3 slots in
    #   the top 3 -> hits = 2 * 2/3 = 4/3 -> P@3 = 4/9
    # expected AP@3: both relevant 2's have w = 2/3, precision 2/4 -> (2 * 2/3 * 1/2) / 3 = 2/9
    # pessimistic order: [3n, 2n, 2p, 2p, 1n, 1p] -> relevant ranks 3, 4, 6
    #   P@3 ranked = 1 / min(3, 6) = 1/3; VOC@3 (denominator min(3, 3)): (1/3) / 3 = 1/9
    #   VOC@all: precisions 1/3, 2/4, 3/6 -> envelope 1/2, 1/2, 1/2 -> 1/2
    #   sem-pcyc@3: list [3n, 2n, 2p], sklearn AP = 1/3 (one threshold at 2: 1 TP of 3)
    #   yelamarthi@3: (1/3) / 3 = 1/9 ; window@3 (m = min(3, 3)): 1 / 3
    spec = _toy_spec(
        ("ap", None, "-"),
        ("precision", 3, "-", "k"),
        ("ap_at_k", 3, "-"),
        ("precision_ranked", 3, "-", "min_k_g"),
        ("voc_ap", 3, "-"),
        ("voc_ap", None, "-"),
        ("sempcyc_ap_at_k", 3, "-"),
        ("yelamarthi_ap_at_k", 3, "-"),
        ("window_precision", 3, "-"),
    )
    exp = [1 / 2, 4 / 9, 2 / 9, 1 / 3, 1 / 9, 1 / 2, 1 / 3, 1 / 9, 1 / 3]
    got = per_query_values(*TOY_B, spec)
    assert [float(got[f"m{i}"][0]) for i in range(len(exp))] == pytest.approx(exp, abs=1e-12)
    assert _sk_ap(TOY_B[1], TOY_B[0]) == pytest.approx(0.5)


def test_precision_tie_at_boundary_is_expected_value():
    # 10 items all tied, 4 relevant: any K gets expected hits 4K/10
    s, rel = np.zeros(10), np.arange(10) < 4
    st = rank_stats(torch.tensor(s[rel])[None], torch.tensor(s[~rel])[None])
    for k in (1, 3, 10):
        assert float(ranking.precision_expected(st, k)[0]) == pytest.approx(0.4)
    # above-boundary items count fully: scores [5 (rel), 1, 1, 1 (rel), 0]
    st = rank_stats(torch.tensor([[5.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert float(ranking.hits_expected(st, 2)[0]) == pytest.approx(1 + 1 / 3)


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
    from zsbench.metrics.ranking import _searchsorted_right

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
        assert torch.equal(_searchsorted_right(asc, neg), exp), trial
