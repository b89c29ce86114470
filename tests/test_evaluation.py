"""Tests for zsbench.evaluation: the chunked evaluator against the per-query reference, hand
numbers on toy data, per-class means, similarities and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zsbench.errors import ZsbenchError
from zsbench.evaluation import default_chunk_size, evaluate_sbir, score_rows, similarity_matrix
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


# ------------------------------------------------------------------------------ similarities


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


def test_default_chunk_size_targets_64mib():
    assert default_chunk_size(27_989) == 2**26 // (4 * 27_989)
    assert default_chunk_size(10**9) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    qf, ql, gf, gl = _clustered(10)
    for name in METRIC_SPECS:
        a = evaluate_sbir(qf, ql, gf, gl, spec=name, device="cpu")
        b = evaluate_sbir(qf, ql, gf, gl, spec=name, device="cuda")
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-9, nan_ok=True)


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
