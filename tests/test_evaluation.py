"""Tests for zsbench.evaluation: the chunked evaluator against the per-query reference, hand
numbers on toy data, per-class bookkeeping and means, the tie fraction, tie standard error and
tie warning, similarities and the work dtype, input validation (each message's key fragment),
chunking and the sampling budget, and devices. Expected values are written out by hand in the
comments, never read from the code under test."""

from __future__ import annotations

import math
import re
import time
import warnings

import numpy as np
import pytest
import torch
from test_metrics import raises_exactly, recording_spec

import zsbench.evaluation as evaluation
from zsbench.errors import ZsbenchError
from zsbench.evaluation import (
    default_chunk_size,
    evaluate_sbir,
    score_rows,
    similarity_matrix,
    tie_warning,
)
from zsbench.metrics import METRIC_SPECS, get_spec, per_query_ap, per_query_values


def _clustered(seed=0, q=90, g=420, d=8, classes=6, ties=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    ql = rng.integers(0, classes, q)
    gl = rng.integers(0, classes - 1, g)  # the last class has no gallery item
    if ties:  # small integer features + dot similarity -> heavily tied integer scores
        qf = rng.integers(0, 3, (q, 2)).astype(dtype)
        gf = rng.integers(0, 3, (g, 2)).astype(dtype)
    else:
        qf = (centres[ql] + rng.normal(size=(q, d))).astype(dtype)
        gf = (centres[gl] + rng.normal(size=(g, d))).astype(dtype)
    return qf, ql, gf, gl


def _toy_features(scores, labels):
    """query [[1]] vs gallery scores[:, None] with 'dot' similarity gives exactly `scores`."""
    return np.ones((1, 1)), np.array([0]), np.asarray(scores, float)[:, None], np.asarray(labels)


# ------------------------------------------------------------------- evaluator == reference


def _evaluator_cases():
    """(spec, ties in the data, tie rule) for every spec."""
    for name in sorted(METRIC_SPECS):
        for ties in (False, True):
            for rule in ("expected", "pessimistic", "optimistic"):
                yield name, ties, rule


@pytest.mark.parametrize("name, ties, rule", list(_evaluator_cases()))
def test_evaluator_matches_per_query_reference(name, ties, rule):
    qf, ql, gf, gl = _clustered(1, ties=ties)
    sim = "dot" if ties else "cosine"
    res = evaluate_sbir(
        qf, ql, gf, gl, spec=name, similarity=sim, chunk_size=7, return_per_query=True, ties=rule
    )
    ref = per_query_values(similarity_matrix(qf, gf, sim), ql[:, None] == gl[None], name, rule)
    for m in get_spec(name).metrics:
        v = ref[m.key].numpy()
        if ties and m.sampled(rule):  # two independent samplings: within their errors
            np.testing.assert_allclose(res["per_query"][m.key], v, atol=5e-3, err_msg=m.key)
            assert res["metrics"][m.key] == pytest.approx(np.nanmean(v), abs=1e-3)
            continue
        np.testing.assert_allclose(res["per_query"][m.key], v, atol=1e-9, err_msg=m.key)
        exp = np.nanmean(v) if not np.isnan(v).all() else math.nan
        assert res["metrics"][m.key] == pytest.approx(exp, abs=1e-12, nan_ok=True)


def test_default_map_is_mean_of_sklearn_ap():
    from sklearn.metrics import average_precision_score

    qf, ql, gf, gl = _clustered(2, ties=True)
    res = evaluate_sbir(qf, ql, gf, gl, similarity="dot")
    s = similarity_matrix(qf, gf, "dot").numpy()
    aps = [
        average_precision_score(gl == ql[i], s[i]) for i in range(len(ql)) if (gl == ql[i]).any()
    ]
    assert res["metrics"]["mAP@all"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert res["n_queries_without_positive"] == int((~np.isin(ql, gl)).sum()) > 0


@pytest.mark.parametrize("name", sorted(METRIC_SPECS))
def test_chunk_size_invariance(name):
    qf, ql, gf, gl = _clustered(3)
    a = evaluate_sbir(qf, ql, gf, gl, spec=name, chunk_size=1, return_per_query=True)
    b = evaluate_sbir(qf, ql, gf, gl, spec=name, chunk_size=10_000, return_per_query=True)
    for key in a["per_query"]:
        np.testing.assert_allclose(a["per_query"][key], b["per_query"][key], atol=1e-12)
    assert a["metrics"] == pytest.approx(b["metrics"], nan_ok=True)


def test_float32_inputs_close_to_float64():
    qf, ql, gf, gl = _clustered(4)
    a = evaluate_sbir(qf, ql, gf, gl)
    b = evaluate_sbir(
        torch.tensor(qf, dtype=torch.float32),
        torch.tensor(ql),
        torch.tensor(gf, dtype=torch.float32),
        torch.tensor(gl),
    )
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-4)


# ------------------------------------------------------------------------------- toy by hand


def test_toy_every_spec_every_key_through_evaluator():
    # gallery scores 0.9 .. 0.4 with relevance [0, 1, 1, 0, 1, 1]: relevant ranks 2, 3, 5, 6
    # (same toy as tests/test_metrics.py::TOY_A; expected numbers derived there)
    from test_metrics import TOY_A_EXPECTED

    q, ql, g, gl = _toy_features([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 0, 1, 0, 0])
    for name, exp in TOY_A_EXPECTED.items():
        res = evaluate_sbir(q, ql, g, gl, spec=name, similarity="dot")
        for key, v in exp.items():
            assert res["metrics"][key] == pytest.approx(v, abs=1e-12), (name, key)
            assert res["metrics"][f"{key}.class_mean"] == pytest.approx(v, abs=1e-12)
        assert res["spec"]["name"] == name


def test_per_class_means_and_no_positive_queries_by_hand():
    # gallery: class 0 at scores 4, 2 ; class 1 at score 3 ; score = q * g (dot, 1-D)
    g, gl = np.array([[4.0], [3.0], [2.0]]), np.array([0, 1, 0])
    # queries: two of class 0 (feature 1 and -1: reversed ranking), one of class 1, one of
    # class 7 which has no gallery item
    q, ql = np.array([[1.0], [-1.0], [1.0], [1.0]]), np.array([0, 0, 1, 7])
    # q0 (class 0), scores 4, 3, 2 -> relevant ranks 1, 3: AP = (1 + 2/3)/2 = 5/6
    # q1 (class 0), scores -4, -3, -2 -> order -2 (rel), -3 (irr), -4 (rel): ranks 1, 3 -> 5/6
    # q2 (class 1), relevant at rank 2 -> AP 1/2
    # q3 (class 7): no positive -> excluded from 'default', 0 for 'sem-pcyc'
    res = evaluate_sbir(q, ql, g, gl, similarity="dot", class_names={0: "cat", 1: "dog", 7: "x"})
    assert res["n_queries"] == 4 and res["n_gallery"] == 3
    assert res["n_queries_without_positive"] == 1
    m = res["metrics"]
    assert m["mAP@all"] == pytest.approx((5 / 6 + 5 / 6 + 1 / 2) / 3)
    assert m["mAP@all.class_mean"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    # P@100: hits / 100 -> (2 + 2 + 1) / 3 / 100
    assert m["P@100"] == pytest.approx(5 / 300)
    pc = res["per_class"]
    assert set(pc) == {"cat", "dog", "x"}
    assert pc["cat"]["n_queries"] == 2 and pc["cat"]["n_relevant"] == 2
    assert pc["cat"]["mAP@all"] == pytest.approx(5 / 6)
    assert math.isnan(pc["x"]["mAP@all"]) and pc["x"]["n_relevant"] == 0

    sem = evaluate_sbir(q, ql, g, gl, spec="sem-pcyc", similarity="dot")
    assert sem["metrics"]["mAP@all"] == pytest.approx((5 / 6 + 5 / 6 + 1 / 2 + 0) / 4)
    assert sem["metrics"]["mAP@all.class_mean"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    # SEM-PCYC P@100 = hits / min(100, G = 3)
    assert sem["metrics"]["P@100"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 0) / 4)


def test_class_names_sequence_and_default_keys():
    qf, ql, gf, gl = _clustered(5, classes=3)
    res = evaluate_sbir(qf, ql, gf, gl, class_names=["a", "b", "c"])
    assert set(res["per_class"]) == {"a", "b", "c"}
    res = evaluate_sbir(qf, ql, gf, gl)
    assert set(res["per_class"]) == {"0", "1", "2"}
    assert sum(v["n_queries"] for v in res["per_class"].values()) == len(ql)
    assert res["seconds"] > 0 and isinstance(res["spec"], dict)
    with pytest.raises(ZsbenchError, match="class_names"):
        evaluate_sbir(qf, ql, gf, gl, class_names=["a"])


# ------------------------------------------ per-class bookkeeping and the micro and class means
# 1-d features with 'dot' similarity: query [+1] scores gallery item i with its value, [-1]
# with minus it. Gallery values 5, 4, 3, 2, 1 with labels 0, 1, 2, 0, 1:
#   [+1] ranks 5(0) 4(1) 3(2) 2(0) 1(1);  [-1] ranks 1(1) 2(0) 3(2) 4(1) 5(0).
# AP (no ties, R = 2 for classes 0 and 1, R = 1 for class 2):
#   label 0, [+1]: relevant ranks 1, 4 -> (1 + 2/4) / 2 = 0.75; [-1]: ranks 2, 5 -> (1/2 + 2/5)/2
#   label 1, [+1]: ranks 2, 5 -> 0.45;  label 2, [-1]: rank 3 -> 1/3;  label 7: no gallery item.
# Queries in this order: C (+1, label 1), E (+1, label 7), A (+1, label 0), D (-1, label 2),
# B (-1, label 0).
_GALLERY = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
_GALLERY_LABELS = np.array([0, 1, 2, 0, 1])
_QUERY = np.array([[1.0], [1.0], [1.0], [-1.0], [-1.0]])
_QUERY_LABELS = np.array([1, 7, 0, 2, 0])
_AP = [0.45, math.nan, 0.75, 1 / 3, 0.45]  # per query, in query order
_NAMES = {0: "zero", 1: "one", 2: "two", 7: "seven"}


def _eval(**kw):
    kw.setdefault("device", "cpu")
    return evaluate_sbir(_QUERY, _QUERY_LABELS, _GALLERY, _GALLERY_LABELS, similarity="dot", **kw)


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_per_class_entries_micro_and_class_means_by_hand(chunk_size):
    """per_class n_queries / n_relevant / means, micro vs class mean, per_query order; any chunk."""
    res = _eval(class_names=_NAMES, return_per_query=True, chunk_size=chunk_size)
    pc = res["per_class"]
    assert list(pc) == ["zero", "one", "two", "seven"]  # classes in label order
    assert [pc[n]["n_queries"] for n in pc] == [2, 1, 1, 1]
    assert [pc[n]["n_relevant"] for n in pc] == [2, 2, 1, 0]  # class 1's block starts at 2
    assert pc["zero"]["mAP@all"] == pytest.approx((0.75 + 0.45) / 2, abs=1e-12)
    assert pc["one"]["mAP@all"] == pytest.approx(0.45, abs=1e-12)
    assert pc["two"]["mAP@all"] == pytest.approx(1 / 3, abs=1e-12)
    assert math.isnan(pc["seven"]["mAP@all"])
    m = res["metrics"]
    # micro: mean over the 4 queries with a relevant item; class mean: over classes 0, 1, 2
    assert m["mAP@all"] == pytest.approx((0.75 + 0.45 + 0.45 + 1 / 3) / 4, abs=1e-12)
    assert m["mAP@all.class_mean"] == pytest.approx((0.6 + 0.45 + 1 / 3) / 3, abs=1e-12)
    # G = 5 < 200: AP@200 / min(200, R) is the AP
    assert m["mAP@200"] == pytest.approx(m["mAP@all"], abs=1e-12)
    # P@100 = hits / 100, all R items are in the top 5: 2, 2, 2, 1 hits
    assert m["P@100"] == pytest.approx(7 / 400, abs=1e-12)
    assert m["P@100.class_mean"] == pytest.approx((2 + 2 + 1) / 300, abs=1e-12)
    got = res["per_query"]["mAP@all"]
    assert math.isnan(got[1])
    assert [got[i] for i in (0, 2, 3, 4)] == pytest.approx([_AP[i] for i in (0, 2, 3, 4)])
    assert res["n_queries"] == 5 and res["n_gallery"] == 5
    assert res["n_queries_without_positive"] == 1
    assert res["tie_fraction"] == 0.0 and res["tie_se"] == {}
    assert res["spec"]["name"] == "default" and res["seconds"] >= 0


def test_zero_policy_counts_queries_without_positive_in_both_means():
    """sem-pcyc (no_positive = zero): the label-7 query scores 0 in the micro and class means."""
    m = _eval(spec="sem-pcyc")["metrics"]
    assert m["mAP@all"] == pytest.approx((0.75 + 0.45 + 0.45 + 1 / 3 + 0) / 5, abs=1e-12)
    assert m["mAP@all.class_mean"] == pytest.approx((0.6 + 0.45 + 1 / 3 + 0) / 4, abs=1e-12)


def test_no_query_has_a_relevant_item():
    """Every query without positives: NaN means and class means, tie_fraction 0, no crash, and
    no 'Mean of empty slice' RuntimeWarning (the class mean does not call np.mean([]))."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = evaluate_sbir(
            np.ones((2, 1)), [8, 9], _GALLERY, _GALLERY_LABELS, similarity="dot", device="cpu"
        )
    assert res["n_queries_without_positive"] == 2
    for key in ("mAP@all", "mAP@200", "P@100", "P@200"):
        assert math.isnan(res["metrics"][key])
        assert math.isnan(res["metrics"][f"{key}.class_mean"])
    assert res["tie_fraction"] == 0.0
    assert [res["per_class"][c]["n_relevant"] for c in ("8", "9")] == [0, 0]


def test_seconds_is_the_time_the_call_took():
    """'seconds' is the wall time of the call; per-query values only when asked for."""
    start = time.perf_counter()
    res = evaluate_sbir(np.ones((2, 1)), [0, 1], np.ones((3, 1)), [0, 1, 1], device="cpu")
    assert 0 <= res["seconds"] <= time.perf_counter() - start
    assert "per_query" not in res  # per-query values only on request


# ----------------------------------------- tie fraction, tie standard error and the tie warning


def test_tie_fraction_counts_only_evaluated_queries():
    """tie_fraction = tied scores / ((Q - Q without positive) * G): 2 tied of 1 * 4 scores."""
    # gallery 3, 2 (relevant), 2, 1: the relevant item ties one non-relevant item
    res = evaluate_sbir(
        np.ones((2, 1)),
        [0, 5],
        np.array([[3.0], [2.0], [2.0], [1.0]]),
        [1, 0, 1, 1],
        similarity="dot",
        device="cpu",
    )
    assert res["tie_fraction"] == pytest.approx(2 / 4)
    # expected ties: the relevant item is at rank 2 or 3 -> P@100 = 1/100 either way
    assert res["metrics"]["P@100"] == pytest.approx(1 / 100)


@pytest.mark.parametrize("chunk_size", [1, None])
def test_tie_fraction_sums_every_chunk_and_every_query(chunk_size):
    """Ties of all queries and chunks add up. Gallery scores x * [3, 2, 2, 1] (dot), relevant:
    item 1 for the three label-0 queries (x = 1, -1, 0), item 0 for the label-5 query (x = 1).
    Tied scores: x = 1 and x = -1 tie item 1 with item 2 (2 each); x = 0 ties all 4; the
    label-5 query, ranked last, ties none: 8 of 4 * 4 scores. With one query per chunk the
    last chunk has no tie; with whole chunks the label-0 block holds 3 queries."""
    res = evaluate_sbir(
        np.array([[1.0], [-1.0], [0.0], [1.0]]),
        [0, 0, 0, 5],
        np.array([[3.0], [2.0], [2.0], [1.0]]),
        [5, 0, 1, 9],
        similarity="dot",
        chunk_size=chunk_size,
        device="cpu",
    )
    assert res["tie_fraction"] == pytest.approx(8 / 16)


@pytest.mark.parametrize("n_tied", [1, 2])
def test_tie_se_is_root_summed_variance_over_counted_queries(n_tied, monkeypatch):
    """tie_se = sqrt(sum of the per-query variances) / number of queries not excluded."""
    monkeypatch.setattr(evaluation, "TIE_SE_TARGET", 0.05)  # a loose target: few draws, fast
    # gallery 3 (relevant), 3, 1 (relevant), 3: the first positive ties two negatives, so the
    # VOC AP is sampled; n_tied such queries plus one query (label 9) without any positive
    gallery = np.array([[3.0], [3.0], [1.0], [3.0]])
    spec = recording_spec("sake")
    res = evaluate_sbir(
        np.ones((n_tied + 1, 1)),
        [0] * n_tied + [9],
        gallery,
        [0, 1, 0, 1],
        spec=spec,
        similarity="dot",
        device="cpu",
    )
    assert len(spec.results) == 1  # one block: the n_tied queries of label 0
    for key in ("mAP@all", "mAP@200"):
        var = spec.results[0][key][1]
        assert var.shape == (n_tied,) and bool((var > 0).all())
        want = math.sqrt(float(var.sum())) / n_tied
        assert res["tie_se"][key] == pytest.approx(want, rel=1e-12)
    assert set(res["tie_se"]) == {"mAP@all", "mAP@200"}


def test_tie_warning_word_for_word():
    """The tie warning says which rule gave the numbers and what that means."""
    head = "50.0% of the scores tie a relevant with a non-relevant item, so the tie rule changes"
    tail = "; the pessimistic and optimistic rules give the range)."
    assert tie_warning(0.5, "expected") == (
        f"{head} the numbers (ties=expected: expected value over random orders inside tie "
        f"groups, as the official argsort-based code gives on average{tail}"
    )
    assert tie_warning(0.5, "optimistic") == (
        f"{head} the numbers (ties=optimistic: a bound, not what the official code gives{tail}"
    )


# ---------------------------------------------- similarities, work dtype and the scoring device


def test_similarity_matrix_variants():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(similarity_matrix(a, b, "cosine").numpy(), an @ bn.T, atol=1e-12)
    np.testing.assert_allclose(similarity_matrix(a, b, "dot").numpy(), a @ b.T, atol=1e-12)
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    np.testing.assert_allclose(similarity_matrix(a, b, "euclidean").numpy(), -d, atol=1e-9)
    assert similarity_matrix(a.astype(np.float32), b.astype(np.float32)).dtype == torch.float32
    with pytest.raises(ZsbenchError, match="Did you mean: cosine"):
        similarity_matrix(a, b, "cosin")


@pytest.mark.parametrize("sim", ["cosine", "dot", "euclidean"])
def test_evaluator_similarities(sim):
    qf, ql, gf, gl = _clustered(7)
    res = evaluate_sbir(qf, ql, gf, gl, similarity=sim, return_per_query=True)
    s = similarity_matrix(qf, gf, sim)
    np.testing.assert_allclose(
        res["per_query"]["mAP@all"], per_query_ap(s, ql[:, None] == gl[None]).numpy(), atol=1e-9
    )
    # cosine == dot on pre-normalised features
    if sim == "cosine":
        qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        dot = evaluate_sbir(qn, ql, gn, gl, similarity="dot")
        assert dot["metrics"] == pytest.approx(res["metrics"], abs=1e-9)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_score_rows_are_the_similarity_matrix_slice_by_slice(similarity):
    """The lazy matrix of evaluate_cir and zsbench submit: any slice of its rows is the same
    slice of similarity_matrix, one row, a block, past the end; its shape is [Q, G]. (To float32
    rounding: a matrix product of fewer rows may round its last bit otherwise.)"""
    q, g = torch.randn(23, 5), torch.randn(9, 5)
    rows = score_rows(q, g, similarity)
    full = similarity_matrix(q, g, similarity)
    assert rows.shape == (23, 9) and len(rows) == 23
    for sl in (slice(0, 1), slice(3, 5), slice(2, 19), slice(0, 23), slice(20, 40)):
        torch.testing.assert_close(rows[sl], full[sl], rtol=1e-6, atol=1e-6, msg=str(sl))
    assert rows[slice(23, 30)].shape == (0, 9)
    with pytest.raises(ZsbenchError, match="dimensions differ"):
        score_rows(q, torch.randn(9, 4), similarity)


def test_similarity_matrix_dimension_message_and_dtypes():
    """Different D: the message gives both D; float64 in -> float64 out, else float32."""
    msg = r"a has D=2, b has D=3; .*must come from the same embedding space"
    with pytest.raises(ZsbenchError, match=msg):
        similarity_matrix(np.ones((1, 2)), np.ones((4, 3)))
    a = np.array([[3.0, 4.0]])
    b = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    # cosine: a / 5 = (0.6, 0.8); dot: 3, 8; euclidean: -|a - b| = -sqrt(4 + 16), -sqrt(9 + 4)
    assert similarity_matrix(a, b).dtype == torch.float64
    assert similarity_matrix(a, b)[0].tolist() == pytest.approx([0.6, 0.8])
    assert similarity_matrix(a, b, "dot")[0].tolist() == pytest.approx([3.0, 8.0])
    eu = similarity_matrix(a, b, "euclidean")[0].tolist()
    assert eu == pytest.approx([-math.sqrt(20), -math.sqrt(13)])
    assert similarity_matrix(a.astype(np.float32), b).dtype == torch.float32


def test_similarity_matrix_of_half_precision_features_is_float32():
    """float16 on both sides is computed (and returned) in float32, like any non-float64 input:
    3, 4, 1, 0 are exact in float16, so the scores equal the float32 ones bit for bit."""
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float16)
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float16)
    for sim in ("cosine", "dot", "euclidean"):
        got = similarity_matrix(a, b, sim)
        assert got.dtype == torch.float32
        assert torch.equal(got, similarity_matrix(a.float(), b.float(), sim))
    # cosine by hand: a rows (0.6, 0.8), (1, 0); b rows (0, 1), (1, 1) / sqrt(2)
    want = [[0.8, 1.4 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]
    assert similarity_matrix(a, b).tolist() == [pytest.approx(r) for r in want]


def test_similarity_matrix_names_the_bad_argument_and_keeps_float64():
    """An error names the argument (`a` or `b`); float64 on either side computes in float64
    (the docstring's rule), not in the first argument's dtype."""
    with pytest.raises(ZsbenchError) as err:
        similarity_matrix(np.zeros(3), np.zeros((2, 3)))
    assert str(err.value).startswith("a must be a 2-D array [N, D] of features, got shape (3,)")
    with pytest.raises(ZsbenchError) as err:
        similarity_matrix(np.zeros((2, 3)), np.zeros(3))
    assert str(err.value).startswith("b must be a 2-D array [N, D] of features, got shape (3,)")
    a64 = torch.tensor([[1.0, 1e-9], [0.0, 1.0]], dtype=torch.float64)
    b64 = torch.tensor([[1.0, 0.0], [1.0, 1e-9]], dtype=torch.float64)
    # dot products by hand: [[1, 1 + 1e-18], [0, 1e-9]]; 1e-9 would be lost in float32 sums
    want = torch.tensor([[1.0, 1.0 + 1e-18], [0.0, 1e-9]], dtype=torch.float64)
    for a, b in [(a64.float(), b64), (a64, b64.float())]:
        got = similarity_matrix(a, b, "dot")
        assert got.dtype == torch.float64
        assert torch.equal(got, a.double() @ b.double().T)
    assert torch.allclose(similarity_matrix(a64, b64, "dot"), want, rtol=0, atol=1e-20)


def test_mixed_float32_and_float64_features_rank_in_float64():
    """A float64 gallery with a float32 query is scored in float64 (2 + 2^-40 > 2, no tie)."""
    # gallery 3, 2 + 2^-40, 2 (relevant), 1: float64 keeps the relevant item alone at rank 3
    # (AP 1/3, no tie); float32 would round 2 + 2^-40 to 2 and tie it with the relevant one
    gallery = np.array([[3.0], [2.0 + 2.0**-40], [2.0], [1.0]])
    res = evaluate_sbir(
        np.ones((1, 1), np.float32), [0], gallery, [1, 1, 0, 1], similarity="dot", device="cpu"
    )
    assert res["tie_fraction"] == 0.0
    assert res["metrics"]["mAP@all"] == pytest.approx(1 / 3, abs=1e-12)
    # and the other way round (float64 query, float32 gallery): float64 too
    res = evaluate_sbir(
        np.ones((1, 1)), [0], gallery.astype(np.float32), [1, 1, 0, 1], similarity="dot"
    )
    assert res["tie_fraction"] == pytest.approx(2 / 4)  # rounded in the gallery itself
    # a float64 query carries digits a float32 gallery cannot: 1 + 2^-40 beats 1 in float64 only
    res = evaluate_sbir(
        np.array([[1.0, 2.0**-40]]),
        [0],
        np.array([[1.0, 0.0], [1.0, 1.0]], np.float32),
        [1, 0],
        similarity="dot",
    )
    assert res["tie_fraction"] == 0.0 and res["metrics"]["mAP@all"] == 1.0


def test_similarity_matrix_scores_on_the_device_of_a(monkeypatch):
    """`b` is moved to `a`'s device before scoring (the docstring's rule), so a CUDA query
    block against a CPU gallery works. No second device is needed to see the move: `a` lives
    on `meta`, whose kernels accept a CPU operand silently, so the test records the device
    that reaches the scoring kernel. The input checks read values, which `meta` has none of;
    they are skipped for the meta tensor only."""
    checked = evaluation._features
    monkeypatch.setattr(evaluation, "_features", lambda x, n: x if x.is_meta else checked(x, n))
    seen = []
    scores = evaluation._scores
    monkeypatch.setattr(
        evaluation, "_scores", lambda q, g, s: seen.append((q.device, g.device)) or scores(q, g, s)
    )
    a = torch.empty(3, 4, device="meta")
    for sim in ("cosine", "dot", "euclidean"):
        seen.clear()
        got = similarity_matrix(a, torch.randn(5, 4, dtype=torch.float64), sim)
        assert (got.shape, got.dtype) == ((3, 5), torch.float64)
        assert seen == [(a.device, a.device)], sim


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_similarity_matrix_moves_b_to_a_device():
    """a on CUDA, b on the CPU: b is moved to a's device (scores on CUDA)."""
    a = torch.tensor([[3.0, 4.0]], device="cuda")
    s = similarity_matrix(a, torch.tensor([[1.0, 0.0]]), "dot")
    assert s.device.type == "cuda" and s.cpu().tolist() == [[3.0]]


# -------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {**a, "query": a["query"][:, :3]}, "dimensions differ"),
        (lambda a: {**a, "query": a["query"][0]}, "2-D"),
        (lambda a: {**a, "query": a["query"][:0], "query_labels": a["query_labels"][:0]}, "empty"),
        (
            lambda a: {**a, "gallery": a["gallery"][:0], "gallery_labels": a["gallery_labels"][:0]},
            "empty",
        ),
        (lambda a: {**a, "query_labels": a["query_labels"][:-1]}, "one label per item"),
        (lambda a: {**a, "gallery_labels": a["gallery_labels"] + 0.5}, "integer class ids"),
        (lambda a: {**a, "query": np.where(np.arange(8) == 2, np.nan, a["query"])}, "NaN or inf"),
        (
            lambda a: {**a, "gallery": np.where(np.arange(8) == 1, np.inf, a["gallery"])},
            "NaN or inf",
        ),
        (lambda a: {**a, "spec": "sem_pcyc"}, "Did you mean: sem-pcyc"),
        (lambda a: {**a, "similarity": "l2"}, "Unknown similarity"),
        (lambda a: {**a, "chunk_size": 0}, "chunk_size"),
    ],
)
def test_input_validation(change, match):
    qf, ql, gf, gl = _clustered(8)
    args = {"query": qf, "query_labels": ql, "gallery": gf, "gallery_labels": gl}
    with pytest.raises(ZsbenchError, match=match):
        evaluate_sbir(**change(args))


def test_nan_message_names_the_row_and_the_fix():
    qf, ql, gf, gl = _clustered(9)
    qf[5, 1] = np.nan
    with pytest.raises(ZsbenchError, match=r"query features contains NaN.*row 5.*fix the encoder"):
        evaluate_sbir(qf, ql, gf, gl)


def test_gallery_nan_message_names_the_gallery():
    """A NaN in the gallery: the message names 'gallery features', the row count and row."""
    gallery = _GALLERY.copy()
    gallery[3, 0] = np.nan
    msg = r"gallery features contains NaN .*1 row\(s\) \(first: row 3\); fix the encoder"
    with pytest.raises(ZsbenchError, match=msg):
        evaluate_sbir(np.ones((1, 1)), [0], gallery, _GALLERY_LABELS)


def test_label_count_messages_name_the_features():
    """Label / row count mismatch: the message names both the labels and their features."""
    msg = "query labels has 2 entries but query features has 1 rows"
    with pytest.raises(ZsbenchError, match=msg):
        evaluate_sbir(np.ones((1, 1)), [0, 1], _GALLERY, _GALLERY_LABELS)
    msg = "gallery labels has 4 entries but gallery features has 5 rows"
    with pytest.raises(ZsbenchError, match=msg):
        evaluate_sbir(np.ones((1, 1)), [0], _GALLERY, _GALLERY_LABELS[:4])


def test_bool_and_complex_features_are_rejected():
    """Boolean or complex features are an error (not silently cast to float)."""
    for bad, dtype in ((np.ones((1, 1), bool), "torch.bool"), (np.ones((1, 1), complex), None)):
        dtype = dtype or "torch.complex128"
        msg = f"query features has dtype {re.escape(dtype)}; pass real-valued"
        with pytest.raises(ZsbenchError, match=msg):
            evaluate_sbir(bad, [0], _GALLERY, _GALLERY_LABELS)
    with pytest.raises(ZsbenchError, match=r"b has dtype torch\.bool; pass real-valued"):
        similarity_matrix(np.ones((1, 2)), np.ones((1, 2), bool))


def test_class_names_missing_label_message():
    """class_names without an entry for a query label: the message says what to pass."""
    msg = r"class_names has no entry for label 7; .* or a mapping \{label: name\}"
    with pytest.raises(ZsbenchError, match=msg):
        _eval(class_names={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ZsbenchError, match=msg):
        _eval(class_names=["a", "b", "c"])


def test_unconvertible_features_name_the_input():
    """Features numpy cannot turn into numbers: the message names them and what to pass."""
    pattern = (
        r"gallery features could not be converted to a tensor \(.+\); pass a torch\.Tensor or "
        r"numpy array"
    )
    with pytest.raises(ZsbenchError, match=pattern):
        evaluate_sbir(np.ones((1, 1)), [0], [["a"], ["b"]], [0, 1])


def test_unconvertible_labels_name_the_input():
    """Labels numpy cannot turn into an array: the message names them and what to pass."""
    pattern = (
        r"query labels could not be converted to a tensor \(.+\); pass a torch\.Tensor or "
        r"numpy array"
    )
    with pytest.raises(ZsbenchError, match=pattern):
        evaluate_sbir(np.ones((2, 1)), [[0], [1, 2]], np.ones((2, 1)), [0, 1])


def test_valid_unusual_arguments_are_accepted():
    """numpy integer chunk sizes, [N, 1] label columns and integer features are accepted."""
    want = _eval()["metrics"]["mAP@all"]
    got = evaluate_sbir(
        _QUERY.astype(np.int64),
        _QUERY_LABELS[:, None],
        _GALLERY.astype(np.int32),
        _GALLERY_LABELS.astype(np.float64),
        similarity="dot",
        chunk_size=np.int64(1),
        device="cpu",
    )
    assert got["metrics"]["mAP@all"] == pytest.approx(want, abs=1e-12)
    assert got["metrics"]["mAP@all"] == pytest.approx((0.75 + 0.45 + 0.45 + 1 / 3) / 4)


def _sbir(query=((1.0,),), query_labels=(0,), gallery=None, gallery_labels=None, **kw):
    """A call of evaluate_sbir on one toy query and the 5-item gallery, with `kw` changed."""
    gallery = _GALLERY if gallery is None else gallery
    gallery_labels = _GALLERY_LABELS if gallery_labels is None else gallery_labels
    return lambda: evaluate_sbir(
        np.asarray(query), query_labels, gallery, gallery_labels, device="cpu", **kw
    )


# each input error of evaluate_sbir: (call, the fragment its message must hold: the argument,
# the bad value and the fix)
_SBIR_ERRORS = {
    "eval-similarity": (
        _sbir(similarity="manhattan"),
        r"Unknown similarity 'manhattan'\. Known: cosine, dot, euclidean",
    ),
    "eval-query-1d": (
        _sbir(query=(1.0, 2.0, 3.0)),
        r"query features must be a 2-D array \[N, D\] of features, got shape \(3,\); reshape",
    ),
    "eval-gallery-empty": (
        _sbir(gallery=np.zeros((0, 1)), gallery_labels=[]),
        r"gallery features is empty \(0 rows\)",
    ),
    "eval-query-no-dims": (
        _sbir(query=np.zeros((1, 0))),
        r"query features has 0 feature dimensions",
    ),
    "eval-dims-differ": (
        _sbir(query=((1.0, 2.0),)),
        r"query D=2, gallery D=1; both must come .*\(check encode_query / encode_gallery\)",
    ),
    "eval-labels-2d": (
        _sbir(query_labels=[[0, 1]]),
        r"query labels must be 1-D \[N\] class ids, got shape \(1, 2\)",
    ),
    "eval-labels-float": (
        _sbir(gallery_labels=[0.0, 1.0, 2.5, 0.0, 1.0]),
        r"gallery labels must be integer class ids, got non-integer floats; map class names to "
        r"ids first .*return_inverse=True",
    ),
    "eval-labels-nan": (
        _sbir(query_labels=[math.nan]),
        r"query labels must be integer class ids, got non-integer floats",
    ),
    "eval-labels-bool": (
        _sbir(query_labels=[True]),
        r"query labels must be integer class ids, got dtype torch\.bool",
    ),
    "eval-labels-complex": (
        _sbir(query_labels=np.array([1 + 0j])),
        r"query labels must be integer class ids, got dtype torch\.complex128",
    ),
    "eval-chunk-zero": (
        _sbir(chunk_size=0),
        r"chunk_size must be a positive integer or None, got 0",
    ),
    "eval-chunk-bool": (
        _sbir(chunk_size=True),
        r"chunk_size must be a positive integer or None, got True",
    ),
    "eval-chunk-float": (
        _sbir(chunk_size=2.0),
        r"chunk_size must be a positive integer or None, got 2\.0",
    ),
    "eval-class-names": (
        _sbir(class_names=[]),
        r"class_names has no entry for label 0; .* or a mapping \{label: name\}",
    ),
}


@pytest.mark.parametrize("case", sorted(_SBIR_ERRORS))
def test_each_evaluate_sbir_input_error_names_the_problem(case):
    """Each input error of evaluate_sbir is a ZsbenchError naming the argument, value and fix."""
    fn, msg = _SBIR_ERRORS[case]
    raises_exactly(ZsbenchError, fn, msg)


# --------------------------------------------------------------- chunks and the sampling budget


def test_default_chunk_size_targets_64mib():
    assert default_chunk_size(27_989) == 2**26 // (4 * 27_989)
    assert default_chunk_size(10**9) == 1


def test_chunks_and_sampling_budget_by_hand():
    """5 queries of one class, chunk_size 2: blocks 2, 2, 1; budget (5e-5)^2 * Q * block size."""
    qf = np.ones((5, 1))
    spec = recording_spec("sake")
    evaluate_sbir(qf, [0] * 5, _GALLERY, _GALLERY_LABELS, spec=spec, similarity="dot", chunk_size=2)
    want = [(2, 5e-5**2 * 5 * 2), (2, 5e-5**2 * 5 * 2), (1, 5e-5**2 * 5 * 1)]
    assert [c[0] for c in spec.calls] == [w[0] for w in want]
    assert [c[1] for c in spec.calls] == pytest.approx([w[1] for w in want], rel=1e-12)


def test_default_chunk_size_follows_the_work_dtype(monkeypatch):
    """Default chunk = score-block bytes // (G * bytes per score): 8 for float64, 4 for float32."""
    # a 2 * 8 * G byte block: 2 float64 queries or 4 float32 queries per chunk (G = 5)
    monkeypatch.setattr(evaluation, "_CHUNK_BYTES", 2 * 8 * 5)
    for dtype, blocks in ((np.float64, [2, 2, 1]), (np.float32, [4, 1])):
        spec = recording_spec("default")
        evaluate_sbir(
            np.ones((5, 1), dtype), [0] * 5, _GALLERY.astype(dtype), _GALLERY_LABELS, spec=spec
        )
        assert [c[0] for c in spec.calls] == blocks, dtype


def test_default_chunk_size_by_hand():
    """64 MiB // (G * bytes), at least 1 query, and G * bytes = 1 divides by 1 (not more)."""
    assert default_chunk_size(1, 1) == 64 * 2**20
    assert default_chunk_size(1024) == 64 * 2**20 // (1024 * 4)
    assert default_chunk_size(1024, 8) == 64 * 2**20 // (1024 * 8)
    assert default_chunk_size(0) == 64 * 2**20


# -------------------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    qf, ql, gf, gl = _clustered(10)
    for name in METRIC_SPECS:
        a = evaluate_sbir(qf, ql, gf, gl, spec=name, device="cpu")
        b = evaluate_sbir(qf, ql, gf, gl, spec=name, device="cuda")
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-9, nan_ok=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda_is_a_clear_error():
    """device='cuda' on a machine without CUDA: a ZsbenchError that says to use 'cpu'."""
    msg = "'cuda:0' requested but CUDA is not available; use 'cpu'"
    with pytest.raises(ZsbenchError, match=msg):
        _eval(device="cuda:0")
    with pytest.raises(ZsbenchError, match=r"invalid device 'gpu0'; use e\.g\. 'cpu'"):
        _eval(device="gpu0")


def test_default_device_is_cuda_when_available(monkeypatch):
    """device=None ranks on CUDA when torch sees a GPU, on the CPU otherwise (the docstring)."""
    for available, want in ((True, torch.device("cuda")), (False, torch.device("cpu"))):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        assert evaluation._resolve_device(None) == want


class _Stop(Exception):
    """Raised by a spy once it has seen what it came for."""


def test_evaluate_sbir_moves_query_and_gallery_to_the_ranking_device(monkeypatch):
    """Both feature sets reach the scoring step on `device`, whatever device they came on. A
    CPU-only machine sees the moves with `device="meta"`: a spy on the preparation step records
    the device of the gallery (first call) and of the queries (second), then stops the run
    (meta tensors hold no values to rank)."""
    seen = []

    def spy(x, similarity):
        seen.append(x.device)
        if len(seen) == 2:
            raise _Stop
        return x

    monkeypatch.setattr(evaluation, "_prepare", spy)
    with pytest.raises(_Stop):
        evaluate_sbir(np.ones((3, 2)), [0, 1, 0], np.ones((4, 2)), [1, 0, 0, 1], device="meta")
    assert seen == [torch.device("meta")] * 2
