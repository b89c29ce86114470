"""Hand-computed rankings for every metric spec and the CIR metrics, beyond the top ranks.

Fast and independent of the code under test: every expected value below is written out from
the definitions in the spec docstrings (never from a spec's ``k``), on rankings built so that
the cut-offs matter: positives exactly at ranks 100 / 101 and 200 / 201, positives beyond
rank 200, R < 100, 100 < R < 200 and R > 200, and tie groups straddling ranks 100 and 200.
These are the tests `make mutate` runs first (tests/README.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zsbench.evaluation import evaluate_sbir
from zsbench.metrics import METRIC_SPECS, per_query_values
from zsbench.metrics.cir import cir_metrics, circo_metrics, cirr_metrics, fashioniq_metrics

ALL_SPECS = [
    "default",
    "sake",
    "voc",
    "drcpl",
    "zse-sbir",
    "sem-pcyc",
    "yelamarthi",
    "precision-min-k-r",
]


def ranked(g: int, relevant_ranks) -> tuple[np.ndarray, np.ndarray]:
    """Scores g, g-1, ..., 1 (rank r has score g + 1 - r) and relevance at ``relevant_ranks``."""
    scores = np.arange(g, 0, -1, dtype=np.float64)
    rel = np.zeros(g, bool)
    rel[np.asarray(list(relevant_ranks)) - 1] = True
    return scores, rel


def psum(ranks, offset: int) -> float:
    """Sum over relevant ranks r of the precision (r - offset) / r (a contiguous block of
    relevant items with ``offset`` non-relevant items above it)."""
    return sum((r - offset) / r for r in ranks)


# ---------------------------------------------------------------------------------- case B
# R = 6 < 100, G = 300, no ties, relevant at ranks 1, 2, 100, 101, 200, 201.
# Precision at the relevant ranks: 1, 1, 3/100, 4/101, 5/200, 6/201. Hits: top 100 -> 3,
# top 200 -> 5. VOC envelope (max precision at any later rank): 1, 1, 4/101, 4/101 and over
# the whole list 6/201, 6/201 (5/200 < 6/201); cut at 200 the last one is 5/200.
CASE_B = ranked(300, [1, 2, 100, 101, 200, 201])
_B_TOP200 = 1 + 1 + 3 / 100 + 4 / 101 + 5 / 200
_B_ALL = _B_TOP200 + 6 / 201
_B_VOC_ALL = (2 + 2 * 4 / 101 + 2 * 6 / 201) / 6
_B_VOC_200 = (2 + 2 * 4 / 101 + 5 / 200) / 6
CASE_B_EXPECTED = {
    # AP@200 over min(200, R) = 6; P@K = hits / K
    "default": {
        "mAP@all": _B_ALL / 6,
        "mAP@200": _B_TOP200 / 6,
        "P@100": 3 / 100,
        "P@200": 5 / 200,
    },
    # P@K over min(K, G) = K (G = 300)
    "sake": {"mAP@all": _B_VOC_ALL, "mAP@200": _B_VOC_200, "P@100": 3 / 100, "P@200": 5 / 200},
    # P@K: hits within the first min(K, R) = 6 ranks (ranks 1, 2) / 6
    "zse-sbir": {"mAP@all": _B_VOC_ALL, "mAP@200": _B_VOC_200, "P@100": 2 / 6, "P@200": 2 / 6},
    # apsak(200): sklearn AP of the top-200 list alone: 5 relevant items in it
    "sem-pcyc": {
        "mAP@all": _B_ALL / 6,
        "mAP@200": _B_TOP200 / 5,
        "P@100": 3 / 100,
        "P@200": 5 / 200,
    },
    # (1/200) * sum of precisions at relevant ranks <= 200
    "yelamarthi": {"mAP@200": _B_TOP200 / 200, "P@200": 5 / 200},
    # P@K = hits / min(K, R) = hits / 6
    "precision-min-k-r": {
        "mAP@all": _B_ALL / 6,
        "mAP@200": _B_TOP200 / 6,
        "P@100": 3 / 6,
        "P@200": 5 / 6,
    },
}

# ---------------------------------------------------------------------------------- case C
# R = 250 > 200, G = 600, no ties, relevant at ranks 1..50 and 151..350.
# Precision 1 at ranks 1..50, (r - 100) / r at r = 151..350 (increasing: VOC envelope there =
# the precision at rank 350 = 250/350 over the whole list, = 100/200 at rank 200 when cut at
# 200). Hits: top 100 -> 50, top 200 -> 100.
CASE_C = ranked(600, [*range(1, 51), *range(151, 351)])
_C_TOP200 = 50 + psum(range(151, 201), 100)
_C_ALL = 50 + psum(range(151, 351), 100)
_C_VOC_ALL = (50 + 200 * 250 / 350) / 250
_C_VOC_200 = (50 + 50 * 100 / 200) / 200  # / min(200, R) = 200
CASE_C_EXPECTED = {
    "default": {"mAP@all": _C_ALL / 250, "mAP@200": _C_TOP200 / 200, "P@100": 0.5, "P@200": 0.5},
    "sake": {"mAP@all": _C_VOC_ALL, "mAP@200": _C_VOC_200, "P@100": 0.5, "P@200": 0.5},
    # window = min(K, R) = K: hits in the first K ranks / K
    "zse-sbir": {"mAP@all": _C_VOC_ALL, "mAP@200": _C_VOC_200, "P@100": 0.5, "P@200": 0.5},
    # the top-200 list holds 100 relevant items
    "sem-pcyc": {"mAP@all": _C_ALL / 250, "mAP@200": _C_TOP200 / 100, "P@100": 0.5, "P@200": 0.5},
    "yelamarthi": {"mAP@200": _C_TOP200 / 200, "P@200": 0.5},
    "precision-min-k-r": {
        "mAP@all": _C_ALL / 250,
        "mAP@200": _C_TOP200 / 200,
        "P@100": 50 / 100,
        "P@200": 100 / 200,
    },
}

# ---------------------------------------------------------------------------------- case D
# 100 < R = 150 < 200, G = 400, no ties, relevant at ranks 1..100 and 251..300.
# Precision 1 at ranks 1..100, (r - 150) / r at r = 251..300 (VOC envelope 150/300 there).
# Hits: top 100 -> 100, top 150 -> 100, top 200 -> 100.
CASE_D = ranked(400, [*range(1, 101), *range(251, 301)])
_D_ALL = 100 + psum(range(251, 301), 150)
CASE_D_EXPECTED = {
    # AP@200 = 100 precisions of 1 / min(200, 150)
    "default": {"mAP@all": _D_ALL / 150, "mAP@200": 100 / 150, "P@100": 1.0, "P@200": 0.5},
    "sake": {"mAP@all": (100 + 50 * 0.5) / 150, "mAP@200": 100 / 150, "P@100": 1.0, "P@200": 0.5},
    # P@200: hits within the first min(200, 150) = 150 ranks / 150
    "zse-sbir": {
        "mAP@all": (100 + 50 * 0.5) / 150,
        "mAP@200": 100 / 150,
        "P@100": 1.0,
        "P@200": 100 / 150,
    },
    "sem-pcyc": {"mAP@all": _D_ALL / 150, "mAP@200": 1.0, "P@100": 1.0, "P@200": 0.5},
    "yelamarthi": {"mAP@200": 100 / 200, "P@200": 0.5},
    "precision-min-k-r": {
        "mAP@all": _D_ALL / 150,
        "mAP@200": 100 / 150,
        "P@100": 1.0,
        "P@200": 100 / 150,
    },
}

CASES = {
    "B": (CASE_B, CASE_B_EXPECTED),
    "C": (CASE_C, CASE_C_EXPECTED),
    "D": (CASE_D, CASE_D_EXPECTED),
}
for _case in CASES.values():  # voc and drcpl are sake's evaluator
    _case[1]["voc"] = _case[1]["drcpl"] = _case[1]["sake"]


@pytest.mark.parametrize("rule", ["expected", "pessimistic", "optimistic"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cutoffs_by_hand_every_spec(case, rule):
    (scores, rel), expected = CASES[case]
    for name in ALL_SPECS:
        got = per_query_values(scores, rel, name, ties=rule)
        assert set(got) == set(expected[name]), name
        for key, v in expected[name].items():
            assert float(got[key][0]) == pytest.approx(v, abs=1e-12), (name, key)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cutoffs_by_hand_through_the_evaluator(case):
    """The same numbers from evaluate_sbir: query [[1]], gallery scores as 1-d features, dot."""
    (scores, rel), expected = CASES[case]
    for name in ALL_SPECS:
        res = evaluate_sbir(
            np.ones((1, 1)), [0], scores[:, None], np.where(rel, 0, 1), spec=name, similarity="dot"
        )
        for key, v in expected[name].items():
            assert res["metrics"][key] == pytest.approx(v, abs=1e-12), (name, key)
            assert res["metrics"][f"{key}.class_mean"] == pytest.approx(v, abs=1e-12)
            assert res["per_class"]["0"][key] == pytest.approx(v, abs=1e-12)
        assert res["per_class"]["0"]["n_relevant"] == int(rel.sum())
        assert res["spec"]["name"] == name and res["n_gallery"] == len(scores)


def test_single_relevant_item_first_by_hand():
    """R = 1 at rank 1 of G = 301: AP 1; P@K = 1/K, 1/min(K, G) = 1/K, 1/min(K, R) = 1."""
    scores, rel = ranked(301, [1])
    want = {
        "default": {"mAP@all": 1, "mAP@200": 1, "P@100": 1 / 100, "P@200": 1 / 200},
        "sake": {"mAP@all": 1, "mAP@200": 1, "P@100": 1 / 100, "P@200": 1 / 200},
        "zse-sbir": {"mAP@all": 1, "mAP@200": 1, "P@100": 1, "P@200": 1},
        "sem-pcyc": {"mAP@all": 1, "mAP@200": 1, "P@100": 1 / 100, "P@200": 1 / 200},
        "yelamarthi": {"mAP@200": 1 / 200, "P@200": 1 / 200},
        "precision-min-k-r": {"mAP@all": 1, "mAP@200": 1, "P@100": 1, "P@200": 1},
    }
    want["voc"] = want["drcpl"] = want["sake"]
    for name in ALL_SPECS:
        got = per_query_values(scores, rel, name)
        for key, v in want[name].items():
            assert float(got[key][0]) == pytest.approx(v, abs=1e-12), (name, key)


def test_small_gallery_denominators_by_hand():
    """G = 50 < 100: P@K over min(K, G) divides by 50 (sake, sem-pcyc); over K by 100/200.
    Relevant at ranks 2 and 50 (R = 2)."""
    scores, rel = ranked(50, [2, 50])
    want = {
        "sake": {"P@100": 2 / 50, "P@200": 2 / 50, "mAP@all": (1 / 2 + 2 / 50) / 2},
        "sem-pcyc": {"P@100": 2 / 50, "P@200": 2 / 50, "mAP@200": (1 / 2 + 2 / 50) / 2},
        "default": {"P@100": 2 / 100, "P@200": 2 / 200, "mAP@200": (1 / 2 + 2 / 50) / 2},
        "yelamarthi": {"P@200": 2 / 200, "mAP@200": (1 / 2 + 2 / 50) / 200},
        # window min(K, R) = 2: ranks 1, 2 hold one relevant item
        "zse-sbir": {"P@100": 1 / 2, "P@200": 1 / 2},
        "precision-min-k-r": {"P@100": 2 / 2, "P@200": 2 / 2},
    }
    for name, keys in want.items():
        got = per_query_values(scores, rel, name)
        for key, v in keys.items():
            assert float(got[key][0]) == pytest.approx(v, abs=1e-12), (name, key)


# ------------------------------------------------------------------------------------ ties
# G = 300, R = 13: relevant at ranks 1..10; a tie group over ranks 99..102 (4 items, 2 of
# them relevant) and one over ranks 199..202 (4 items, 1 relevant); all other items distinct.
def _tied_case():
    scores = np.arange(300, 0, -1, dtype=np.float64)
    scores[98:102] = scores[98]  # ranks 99..102
    scores[198:202] = scores[198]  # ranks 199..202
    rel = np.zeros(300, bool)
    rel[:10] = True
    rel[[98, 101]] = True  # two of the first group
    rel[200] = True  # one of the second
    return scores, rel


# sklearn precision of a tie group = TP / items at the end of the group: 12/102 and 13/202
_T_AP = (10 + 2 * 12 / 102 + 13 / 202) / 13
TIED_EXPECTED = {
    # hits in the top 100: 10 + the group's 2 positives over 2 of its 4 slots; top 200: 12 + 1
    # positive over 2 of 4 slots. expected: proportional share; pessimistic: negatives first.
    "expected": {
        "P@100": (10 + 2 * 2 / 4) / 100,
        "P@200": (12 + 2 / 4) / 200,
        "mAP@200": (10 + 2 * 12 / 102 + (2 / 4) * 13 / 202) / 13,
    },
    "pessimistic": {"P@100": 10 / 100, "P@200": 12 / 200, "mAP@200": (10 + 2 * 12 / 102) / 13},
    "optimistic": {"P@100": 12 / 100, "P@200": 13 / 200, "mAP@200": _T_AP},
}


@pytest.mark.parametrize("rule", sorted(TIED_EXPECTED))
def test_tie_groups_straddling_rank_100_and_200_by_hand(rule):
    scores, rel = _tied_case()
    got = per_query_values(scores, rel, "default", ties=rule)
    assert float(got["mAP@all"][0]) == pytest.approx(_T_AP, abs=1e-12)  # order-free (sklearn)
    for key, v in TIED_EXPECTED[rule].items():
        assert float(got[key][0]) == pytest.approx(v, abs=1e-12), key
    # P@K over min(K, R) = 13 and over min(K, G) = K (sem-pcyc)
    mkr = per_query_values(scores, rel, "precision-min-k-r", ties=rule)
    sem = per_query_values(scores, rel, "sem-pcyc", ties=rule)
    for key, den in (("P@100", 100), ("P@200", 200)):
        hits = TIED_EXPECTED[rule][key] * den
        assert float(mkr[key][0]) == pytest.approx(hits / 13, abs=1e-12)
        assert float(sem[key][0]) == pytest.approx(hits / den, abs=1e-12)
    res = evaluate_sbir(
        np.ones((1, 1)), [0], scores[:, None], np.where(rel, 0, 1), similarity="dot", ties=rule
    )
    assert res["metrics"]["P@100"] == pytest.approx(TIED_EXPECTED[rule]["P@100"], abs=1e-12)
    assert res["tie_fraction"] == pytest.approx(8 / 300)  # the 8 items of the 2 mixed groups


def test_tied_ranks_by_hand_paper_specs():
    """The same tie case for the rank-based paper rules, pessimistic / optimistic (exact).

    pessimistic: relevant ranks 1..10, 101, 102, 202; optimistic: 1..10, 99, 100, 199.
    yelamarthi mAP@200 = (1/200) * sum of precisions at relevant ranks <= 200;
    zse-sbir P@K: hits in the first min(K, 13) = 13 ranks / 13 = 10/13 for both rules.
    """
    scores, rel = _tied_case()
    pess = per_query_values(scores, rel, "yelamarthi", ties="pessimistic")
    assert float(pess["mAP@200"][0]) == pytest.approx((10 + 11 / 101 + 12 / 102) / 200)
    opt = per_query_values(scores, rel, "yelamarthi", ties="optimistic")
    assert float(opt["mAP@200"][0]) == pytest.approx((10 + 11 / 99 + 12 / 100 + 13 / 199) / 200)
    for rule in ("pessimistic", "optimistic"):
        zse = per_query_values(scores, rel, "zse-sbir", ties=rule)
        assert float(zse["P@100"][0]) == pytest.approx(10 / 13)
    # VOC over the whole list, pessimistic: precisions 1 (x10), 11/101, 12/102, 13/202; the
    # envelope at 101 and 102 is 12/102 (> 11/101)
    voc = per_query_values(scores, rel, "sake", ties="pessimistic")
    assert float(voc["mAP@all"][0]) == pytest.approx((10 + 2 * 12 / 102 + 13 / 202) / 13)
    assert float(voc["mAP@200"][0]) == pytest.approx((10 + 2 * 12 / 102) / 13)
    # sem-pcyc apsak@200, optimistic: the list (ranks 1..200) holds 13 relevant items; sklearn
    # inside the list keeps a tie group one threshold: the first group (99..102) ends at 102
    # (precision 12/102), the listed part of the second (199, 200) at 200 (13/200)
    sem = per_query_values(scores, rel, "sem-pcyc", ties="optimistic")
    assert float(sem["mAP@200"][0]) == pytest.approx((10 + 2 * 12 / 102 + 13 / 200) / 13)
    sem = per_query_values(scores, rel, "sem-pcyc", ties="pessimistic")
    # the list ends at rank 200 = 2 negatives of the second group: ranks 101, 102 are in it
    # (group 99..102 complete: 12/102); the second group contributes no relevant item
    assert float(sem["mAP@200"][0]) == pytest.approx((10 + 2 * 12 / 102) / 12)


def test_expected_sem_pcyc_top_list_by_hand():
    """Expected apsak@200 when a tie group straddles rank 200: the number X of its relevant
    items inside the list is hypergeometric. Case: the second group (ranks 199..202, 1
    relevant) puts its positive in the list (2 of 4 slots) with probability 1/2.
    X = 1: AP = (10 + 2 * 12/102 + 13/200) / 13 (the listed part of the group has 2 items,
    1 relevant, ending at rank 200); X = 0: AP = (10 + 2 * 12/102) / 12."""
    scores, rel = _tied_case()
    got = per_query_values(scores, rel, "sem-pcyc")
    x1 = (10 + 2 * 12 / 102 + 13 / 200) / 13
    x0 = (10 + 2 * 12 / 102) / 12
    assert float(got["mAP@200"][0]) == pytest.approx((x1 + x0) / 2, abs=1e-12)


def test_no_positive_queries_excluded_or_zero_by_hand():
    """A class without gallery items: excluded from 'exclude' metrics, 0 for 'zero' ones."""
    scores, rel = CASE_B
    gallery = scores[:, None]
    labels = np.where(rel, 0, 1)
    for name in ALL_SPECS:
        res = evaluate_sbir(np.ones((2, 1)), [0, 5], gallery, labels, spec=name, similarity="dot")
        assert res["n_queries_without_positive"] == 1
        for m in METRIC_SPECS[name].metrics:
            v = CASE_B_EXPECTED[name][m.key]
            want = v if m.no_positive == "exclude" else v / 2
            assert res["metrics"][m.key] == pytest.approx(want, abs=1e-12), (name, m.key)
            other = res["per_class"]["5"][m.key]
            assert math.isnan(other) if m.no_positive == "exclude" else other == 0.0


# ------------------------------------------------------------------------------------- CIR


def _desc(g: int) -> torch.Tensor:
    """One query row whose gallery item i has rank i + 1 (scores g, g-1, ..., 1)."""
    return torch.arange(g, 0, -1, dtype=torch.float64)[None]


def test_fashioniq_recall_at_10_and_50_boundaries_by_hand():
    # 4 queries over a 60-item gallery (reference kept): targets at ranks 10, 11, 50, 51
    s = _desc(60).repeat(4, 1)
    got = fashioniq_metrics(s, [9, 10, 49, 50])
    assert got == {"R@10": 1 / 4, "R@50": 3 / 4}


def test_cirr_recall_boundaries_and_reference_removal_by_hand():
    # 60 items; query i's reference is item 0 (rank 1) and its target item t_i. After removing
    # the reference, item t has rank t: targets 1, 5, 6, 10, 11, 50, 51 -> R@1 1/7, R@5 2/7,
    # R@10 4/7, R@50 6/7.
    targets = [1, 5, 6, 10, 11, 50, 51]
    s = _desc(60).repeat(len(targets), 1)
    members = [[0, t, 55, 56, 57, 58] for t in targets]  # subset: target first after removal
    got = cirr_metrics(s, targets, [0] * len(targets), members)
    assert got["R@1"] == pytest.approx(1 / 7)
    assert got["R@5"] == pytest.approx(2 / 7)
    assert got["R@10"] == pytest.approx(4 / 7)
    assert got["R@50"] == pytest.approx(6 / 7)
    # within the image set the target beats items 55..58 unless it is 55 or beyond: rank 1
    assert got["R_subset@1"] == got["R_subset@2"] == got["R_subset@3"] == 1.0


def test_cirr_subset_recall_at_1_2_3_by_hand():
    # img_set = reference 0 plus 4 other members; the target ranks 1st, 2nd, 3rd or 4th among
    # the members left after removing the reference -> R_subset@1 1/4, @2 2/4, @3 3/4
    s = _desc(20).repeat(4, 1)
    members = [[0, 3, 4, 5, 6]] * 4
    got = cirr_metrics(s, [3, 4, 5, 6], [0] * 4, members)
    assert got["R_subset@1"] == pytest.approx(1 / 4)
    assert got["R_subset@2"] == pytest.approx(2 / 4)
    assert got["R_subset@3"] == pytest.approx(3 / 4)
    # full gallery without the reference: targets at ranks 3..6 -> R@1 0, R@5 3/4
    assert got["R@1"] == 0.0 and got["R@5"] == pytest.approx(3 / 4) and got["R@10"] == 1.0


def test_circo_map_at_k_few_and_many_ground_truths_by_hand():
    s = _desc(80).repeat(2, 1)
    # query 0: 5 ground truths at ranks 1, 3, 10, 26, 51 (precisions 1, 2/3, 3/10, 4/26,
    # 5/51); AP@k divided by min(5, k) = 5 for every k
    # query 1: 12 ground truths at ranks 2..13 (precision j / (j + 1) for the j-th);
    # AP@5: 4 of them in the top 5, / min(12, 5); AP@10: 9, / 10; AP@25, AP@50: all 12, / 12
    gt = torch.full((2, 12), -1)
    gt[0, :5] = torch.tensor([0, 2, 9, 25, 50])
    gt[1] = torch.arange(1, 13)
    q1 = {
        k: sum(j / (j + 1) for j in range(1, n + 1)) / d
        for k, n, d in ((5, 4, 5), (10, 9, 10), (25, 12, 12), (50, 12, 12))
    }
    q0 = {
        5: (1 + 2 / 3) / 5,
        10: (1 + 2 / 3 + 3 / 10) / 5,
        25: (1 + 2 / 3 + 3 / 10) / 5,
        50: (1 + 2 / 3 + 3 / 10 + 4 / 26) / 5,
    }
    got = circo_metrics(s, gt)
    for k in (5, 10, 25, 50):
        assert got[f"mAP@{k}"] == pytest.approx((q0[k] + q1[k]) / 2, abs=1e-12), k
    # R@k on the main target (first ground truth): ranks 1 and 2
    assert got["R@5"] == got["R@50"] == 1.0
    # main target beyond rank 25: R@25 0, R@50 1
    late = circo_metrics(_desc(80), [[30, 0]])
    assert late["R@5"] == late["R@25"] == 0.0 and late["R@50"] == 1.0
    assert late["mAP@5"] == pytest.approx(1 / 2)  # rank 1 only, / min(2, 5)
    assert late["mAP@50"] == pytest.approx((1 + 2 / 31) / 2)


def test_cir_metrics_dispatch_by_hand():
    from zsbench.metrics.cir import CIRLabels

    s = _desc(60).repeat(2, 1)
    t = torch.tensor([9, 50])  # ranks 10 and 51
    fiq = cir_metrics(s, CIRLabels("fashioniq", t, torch.full((2,), -1)))
    assert fiq == {"R@10": 0.5, "R@50": 0.5}
    cirr = cir_metrics(
        s, CIRLabels("cirr", t, torch.tensor([0, 0]), members=torch.tensor([[0, 9], [0, 50]]))
    )
    # reference removed: ranks 9 and 50
    assert cirr["R@10"] == 0.5 and cirr["R@50"] == 1.0 and cirr["R_subset@1"] == 1.0
    assert cirr["R@5"] == 0.0 and cirr["Avg"] == 0.5  # (R@5 + R_subset@1) / 2
    gt = torch.tensor([[9, -1], [50, 0]])
    circo = cir_metrics(s, CIRLabels("circo", t, torch.full((2,), -1), gt=gt))
    assert circo["R@10"] == 0.5 and circo["R@50"] == 0.5
    assert circo["mAP@10"] == pytest.approx((1 / 10 + 1 / 2) / 2)
