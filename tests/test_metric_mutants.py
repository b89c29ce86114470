"""Hand-computed checks of the metric core aimed at mutants that survived `make mutate`.

Each test pins one behaviour the other metric tests left open: evaluate_sbir's per-class
bookkeeping, chunking and sampling budget, dtype handling and exact error messages, the
builders of the spec definitions (called at test time: the registered specs are built at
import, before a mutant is switched on), the defaults of the ranking functions and the CIR
input checks. Expected values are written out by hand in the comments, never read from the
code under test. Equivalent mutants are listed in tests/mutation_equivalent.toml.
"""

from __future__ import annotations

import math
import re
import time
import warnings

import numpy as np
import pytest
import torch

import zsbench.evaluation as evaluation
from zsbench.errors import ZsbenchError
from zsbench.evaluation import (
    default_chunk_size,
    evaluate_sbir,
    similarity_matrix,
    tie_warning,
)
from zsbench.metrics import (
    METRIC_SPECS,
    MetricDef,
    MetricSpec,
    get_spec,
    per_query_ap,
    per_query_values,
    rank_stats,
    ranking,
    specs,
)
from zsbench.metrics.cir import (
    CIRLabels,
    ap_at_k,
    cir_metrics,
    circo_metrics,
    cirr_metrics,
    combine_caption_orders,
    fashioniq_mean,
    fashioniq_metrics,
    index_tensor,
    recall_from_ranks,
    subset_ranks,
    target_ranks,
)
from zsbench.metrics.tie_sampling import MIN_SAMPLES, TieOrderSampler, expected_voc_ap


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message`` (no prefix, no suffix)."""
    return "^" + re.escape(message) + "$"


def f64(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------ evaluate_sbir bookkeeping
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


class _RecordingSpec(MetricSpec):
    """The default spec, recording (block size, variance budget) of every compute call."""

    calls: list = []
    results: list = []

    def compute(self, stats, var_budget=0.0, generator=None):
        type(self).calls.append((stats.pos.shape[0], var_budget))
        out = super().compute(stats, var_budget, generator)
        type(self).results.append(out)
        return out


def _recording(name: str, ties: str = "expected") -> _RecordingSpec:
    s = get_spec(name)
    _RecordingSpec.calls, _RecordingSpec.results = [], []
    return _RecordingSpec(s.name, s.description, s.source, s.metrics, ties=ties)


def test_chunks_and_sampling_budget_by_hand():
    """5 queries of one class, chunk_size 2: blocks 2, 2, 1; budget (5e-5)^2 * Q * block size."""
    qf = np.ones((5, 1))
    spec = _recording("sake")
    evaluate_sbir(qf, [0] * 5, _GALLERY, _GALLERY_LABELS, spec=spec, similarity="dot", chunk_size=2)
    want = [(2, 5e-5**2 * 5 * 2), (2, 5e-5**2 * 5 * 2), (1, 5e-5**2 * 5 * 1)]
    assert [c[0] for c in spec.calls] == [w[0] for w in want]
    assert [c[1] for c in spec.calls] == pytest.approx([w[1] for w in want], rel=1e-12)


def test_default_chunk_size_follows_the_work_dtype(monkeypatch):
    """Default chunk = score-block bytes // (G * bytes per score): 8 for float64, 4 for float32."""
    # a 2 * 8 * G byte block: 2 float64 queries or 4 float32 queries per chunk (G = 5)
    monkeypatch.setattr(evaluation, "_CHUNK_BYTES", 2 * 8 * 5)
    for dtype, blocks in ((np.float64, [2, 2, 1]), (np.float32, [4, 1])):
        spec = _recording("default")
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


# ------------------------------------------------------------------- evaluate_sbir validation


def test_gallery_nan_message_names_the_gallery():
    """A NaN in the gallery: the message names 'gallery features', the row count and row."""
    gallery = _GALLERY.copy()
    gallery[3, 0] = np.nan
    msg = (
        "gallery features contains NaN or inf in 1 row(s) (first: row 3); fix the encoder or "
        "drop those items before evaluating."
    )
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        evaluate_sbir(np.ones((1, 1)), [0], gallery, _GALLERY_LABELS)


def test_label_count_messages_name_the_features():
    """Label / row count mismatch: the message names both the labels and their features."""
    msg = "query labels has 2 entries but query features has 1 rows; pass one label per item."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        evaluate_sbir(np.ones((1, 1)), [0, 1], _GALLERY, _GALLERY_LABELS)
    msg = "gallery labels has 4 entries but gallery features has 5 rows; pass one label per item."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        evaluate_sbir(np.ones((1, 1)), [0], _GALLERY, _GALLERY_LABELS[:4])


def test_bool_and_complex_features_are_rejected():
    """Boolean or complex features are an error (not silently cast to float)."""
    for bad, dtype in ((np.ones((1, 1), bool), "torch.bool"), (np.ones((1, 1), complex), None)):
        dtype = dtype or "torch.complex128"
        msg = f"query features has dtype {dtype}; pass real-valued features."
        with pytest.raises(ZsbenchError, match=exactly(msg)):
            evaluate_sbir(bad, [0], _GALLERY, _GALLERY_LABELS)
    with pytest.raises(
        ZsbenchError, match=exactly("b has dtype torch.bool; pass real-valued features.")
    ):
        similarity_matrix(np.ones((1, 2)), np.ones((1, 2), bool))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda_is_a_clear_error():
    """device='cuda' on a machine without CUDA: a ZsbenchError that says to use 'cpu'."""
    msg = "device 'cuda:0' requested but CUDA is not available; use 'cpu'."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        _eval(device="cuda:0")
    with pytest.raises(
        ZsbenchError, match=exactly("invalid device 'gpu0'; use e.g. 'cpu', 'cuda', 'cuda:0'.")
    ):
        _eval(device="gpu0")


def test_class_names_missing_label_message():
    """class_names without an entry for a query label: the message says what to pass."""
    msg = (
        "class_names has no entry for label 7; pass a sequence indexed by label id or a "
        "mapping {label: name} covering every query label."
    )
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        _eval(class_names={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        _eval(class_names=["a", "b", "c"])


def test_similarity_matrix_dimension_message_and_dtypes():
    """Different D: the message gives both D; float64 in -> float64 out, else float32."""
    msg = (
        "feature dimensions differ: a has D=2, b has D=3; both must come from the same "
        "embedding space."
    )
    with pytest.raises(ZsbenchError, match=exactly(msg)):
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_similarity_matrix_moves_b_to_a_device():
    """a on CUDA, b on the CPU: b is moved to a's device (scores on CUDA)."""
    a = torch.tensor([[3.0, 4.0]], device="cuda")
    s = similarity_matrix(a, torch.tensor([[1.0, 0.0]]), "dot")
    assert s.device.type == "cuda" and s.cpu().tolist() == [[3.0]]


# ----------------------------------------------------------------------------- ranking core


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
    msg = "pos [C, R] and neg [C, N] expected, got (2, 1), (3, 4)"
    with pytest.raises(ValueError, match=exactly(msg)):
        rank_stats(torch.zeros(2, 1), torch.zeros(3, 4))
    with pytest.raises(
        ValueError, match=exactly("rank_stats needs at least one positive per query")
    ):
        rank_stats(torch.zeros(2, 0), torch.zeros(2, 4))


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


# ------------------------------------------------------------------------ spec definitions

_ORDER = (
    "Order inside tie groups: the spec's ties rule (the official code ranks with np.argsort, "
    "whose order inside a tie group is arbitrary; without ties every rule equals it)."
)


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


# ------------------------------------------------------------------------------------ CIR


def test_cir_error_messages_word_for_word():
    """The CIR input errors say what is wrong with the exact count or name."""
    s = f64([0.9, 0.8, 0.7])
    with pytest.raises(ZsbenchError, match=exactly("exclude must have one row per query (1).")):
        target_ranks(s, [0], exclude=[[1], [2]])
    msg = "gt lists a gallery item twice for a query; list each once."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        ap_at_k(s, [[1, 1]])
    msg = "target and members must have one row per query."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        subset_ranks(s, [0], [[0, 1], [0, 2]])
    with pytest.raises(ZsbenchError, match=exactly("no queries to score.")):
        recall_from_ranks(torch.zeros(0), (1,))
    msg = "reference must hold integer gallery indices, got dtype torch.float64."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        cirr_metrics(s, [0], [1.0], [[0, 1]])
    msg = "members must have 2 dimension(s), got shape (2,)."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        cirr_metrics(s, [0], [1], [0, 1])


def test_cir_metrics_passes_chunk_size_to_every_protocol():
    """cir_metrics forwards chunk_size: 0 is rejected for fashioniq, cirr and circo alike."""
    s = f64([0.9, 0.8, 0.7])
    t, none = torch.tensor([0]), torch.tensor([-1])
    for labels in (
        CIRLabels("fashioniq", t, none),
        CIRLabels("cirr", t, torch.tensor([1]), members=torch.tensor([[0, 1]])),
        CIRLabels("circo", t, none, gt=torch.tensor([[0]])),
    ):
        with pytest.raises(ZsbenchError, match=exactly("chunk_size must be >= 1, got 0.")):
            cir_metrics(s, labels, chunk_size=0)


def test_subset_rank_ignores_padding_when_a_reference_is_given():
    """-1 padding stays out of the image set when the reference is removed too."""
    # scores 0.9 (item 0), 0.8 (item 1, the reference), 0.7 (item 2, the target); the set
    # [1, 2, -1] minus the reference holds only the target: rank 1 (item 0 is not a member)
    s = f64([0.9, 0.8, 0.7])
    assert subset_ranks(s, [2], [[1, 2, -1]], [1]).tolist() == [1]
    assert subset_ranks(s, [2], [[1, 2, -1]]).tolist() == [2]  # reference kept: 0.8 >= 0.7


def test_index_tensor_accepts_array_likes():
    """Anything numpy turns into an integer array is accepted (here: an __array__ object)."""

    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.array([2, 0])

    assert index_tensor(ArrayLike(), "target", 1).tolist() == [2, 0]
    # the same for the excluded items, one per query: item 2 for query 0, item 0 for query 1
    s = f64([0.5, 0.6, 0.7], [0.9, 0.6, 0.7])
    assert target_ranks(s, [1, 2]).tolist() == [2, 2]
    assert target_ranks(s, [1, 2], exclude=ArrayLike()).tolist() == [1, 1]
    assert index_tensor([np.array(1), np.array(2)], "target", 1).tolist() == [1, 2]


def test_combine_caption_orders_is_the_normalised_mean():
    """normalize((normalize(a) + normalize(b)) / 2), F.normalize's eps of 1e-12 included."""
    a, b = f64([3.0, 4.0]), f64([0.0, 2.0])
    # (0.6, 0.8) + (0, 1) = (0.6, 1.8), over 2 -> (0.3, 0.9), norm sqrt(0.9)
    want = [0.3 / math.sqrt(0.9), 0.9 / math.sqrt(0.9)]
    assert combine_caption_orders(a, b)[0].tolist() == pytest.approx(want)
    # nearly opposite orders: the mean (0, 1e-12) / 2 has norm 5e-13 < eps, so F.normalize
    # divides by eps: (0, 0.5) -- the halving is visible
    got = combine_caption_orders(f64([1.0, 0.0]), f64([-1.0, 1e-12]))
    assert got[0].tolist() == pytest.approx([0.0, 0.5], abs=1e-9)


# every index argument of every public CIR function, given floats: the message names it
_FLOAT = [0.0]
_BAD_INDEX_ARGS = [
    ("target", lambda s: target_ranks(s, _FLOAT)),
    ("target", lambda s: subset_ranks(s, _FLOAT, [[0]])),
    ("members", lambda s: subset_ranks(s, [0], [_FLOAT])),
    ("reference", lambda s: subset_ranks(s, [0], [[0]], _FLOAT)),
    ("gt", lambda s: ap_at_k(s, [_FLOAT])),
    ("exclude", lambda s: ap_at_k(s, [[0]], exclude=_FLOAT)),
    ("exclude", lambda s: target_ranks(s, [0], exclude=[[-1.0]])),
    ("target", lambda s: fashioniq_metrics(s, _FLOAT)),
    ("target", lambda s: cirr_metrics(s, _FLOAT, [1], [[0, 1]])),
    ("members", lambda s: cirr_metrics(s, [0], [1], [_FLOAT])),
    ("gt", lambda s: circo_metrics(s, [_FLOAT])),
    ("target", lambda s: circo_metrics(s, [[0]], target=_FLOAT)),
]


@pytest.mark.parametrize("name, call", _BAD_INDEX_ARGS)
def test_cir_index_errors_name_the_argument(name, call):
    msg = f"{name} must hold integer gallery indices, got dtype torch.float64."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        call(f64([0.9, 0.8, 0.7]))


def test_cir_range_errors_name_the_argument():
    s = f64([0.9, 0.8, 0.7])
    msg = "{} holds gallery indices outside [-1, 2] (min {}, max {}); the gallery has 3 items."
    with pytest.raises(ZsbenchError, match=exactly(msg.format("exclude", 0, 5))):
        target_ranks(s, [1], exclude=[[0, 5]])
    with pytest.raises(ZsbenchError, match=exactly(msg.format("exclude", -2, -2))):
        ap_at_k(s, [[0]], exclude=[-2])


def test_index_tensor_returns_int64_whatever_the_integer_dtype():
    for dtype in (np.int8, np.int32, np.uint8):
        assert index_tensor(np.array([1, 2], dtype=dtype), "target", 1).dtype == torch.int64
    # a bfloat16 tensor is rejected by its dtype (numpy cannot even hold bfloat16)
    msg = "target must hold integer gallery indices, got dtype torch.bfloat16."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        index_tensor(torch.tensor([1.0], dtype=torch.bfloat16), "target", 1)
    msg = "exclude must hold integer gallery indices, got dtype torch.bfloat16."
    with pytest.raises(ZsbenchError, match=exactly(msg)):
        target_ranks(f64([0.9, 0.8]), [0], exclude=torch.tensor([1.0], dtype=torch.bfloat16))


def test_cir_scores_in_bfloat16_and_integers():
    """Scores of any dtype: bfloat16 tensors (numpy has no bfloat16) are ranked as they are,
    integer scores as float64 -- where the excluded items are set to -inf."""
    bf = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    # query 0: target 2 scores lowest -> rank 3; query 1: target 0 scores lowest -> rank 3
    assert target_ranks(bf, [2, 0]).tolist() == [3, 3]
    assert fashioniq_metrics(bf, [0, 2], ks=(1,), chunk_size=1) == {"R@1": 1.0}
    ints = torch.tensor([[3, 2, 1]])
    # item 0 (score 3) excluded: target 1 moves from rank 2 to rank 1
    assert target_ranks(ints, [1], exclude=[0]).tolist() == [1]
    assert target_ranks(np.array([[3, 2, 1]]), [1], exclude=[[0]]).tolist() == [1]
    got = ap_at_k(ints, [[1, 2]], ks=(2,), exclude=[0])[2]
    assert got.dtype == torch.float64 and got.tolist() == [1.0]  # ranks 1, 2 of 2 ground truths


def test_cir_chunk_size_one_is_allowed():
    """chunk_size 1 (one query per chunk) gives the same metrics as one chunk."""
    s = f64([0.9, 0.8, 0.7], [0.1, 0.5, 0.3])
    # query 0: target 2 at rank 3; query 1: target 1 at rank 1
    assert fashioniq_metrics(s, [2, 1], ks=(1, 3), chunk_size=1) == {"R@1": 0.5, "R@3": 1.0}


def test_circo_recall_uses_the_given_target_not_the_first_ground_truth():
    """CIRCO R@k ranks ``target``; only when it is None does the first ground truth stand in."""
    s = f64([0.9, 0.8, 0.7])
    gt = torch.tensor([[0, 2]])
    # target 2 is at rank 3: R@1 = 0 (while gt[:, 0] = item 0 would give 1)
    got = circo_metrics(s, gt, target=torch.tensor([2]), ks=(1,))
    assert got["R@1"] == 0.0 and got["mAP@1"] == 1.0
    assert circo_metrics(s, gt, ks=(1,))["R@1"] == 1.0
    # through cir_metrics: six items, the target (item 5) at rank 6, gt[:, 0] (item 0) at 1
    labels = CIRLabels("circo", torch.tensor([5]), torch.tensor([-1]), gt=torch.tensor([[0, 5]]))
    assert cir_metrics(f64([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), labels)["R@5"] == 0.0


def test_combine_caption_orders_on_one_vector_and_on_batches_of_batches():
    """Normalised along the last dimension whatever the leading ones: a single [D] query gives
    row 0 of the batch, and a [2, 1, D] batch the batch's rows."""
    a, b = f64([3.0, 4.0], [1.0, 0.0]), f64([0.0, 2.0], [0.0, 5.0])
    batch = combine_caption_orders(a, b)
    assert torch.allclose(combine_caption_orders(a[0], b[0]), batch[0])
    nested = combine_caption_orders(a[:, None], b[:, None])
    assert nested.shape == (2, 1, 2) and torch.allclose(nested[:, 0], batch)
    # row 1: (1, 0) + (0, 1) -> (0.5, 0.5) -> (1, 1) / sqrt(2)
    assert batch[1].tolist() == pytest.approx([2**-0.5, 2**-0.5])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_circo_ap_at_k_on_cuda_by_hand():
    """CIRCO AP@k with scores on CUDA: ground truths at ranks 1 and 3 -> (1 + 2/3) / 2."""
    s = torch.tensor([[0.9, 0.8, 0.7]], device="cuda")
    assert float(ap_at_k(s, [[0, 2]], ks=(3,))[3][0]) == pytest.approx((1 + 2 / 3) / 2)


# ---------------------------------------------------------------------------- tie sampling


def test_tie_sampler_needs_the_negative_scores():
    """TieOrderSampler on stats without kept scores: ValueError naming keep_scores."""
    msg = "tie sampling needs the negative scores: rank_stats(keep_scores=True)"
    with pytest.raises(ValueError, match=exactly(msg)):
        TieOrderSampler(rank_stats(f64([1.0]), f64([1.0])))


def test_rank_stats_select_keeps_every_field_of_the_chosen_rows():
    pos, neg = f64([3.0, 1.0], [2.0, 2.0], [0.5, 0.1]), f64([2.0, 0.0], [2.0, 5.0], [1.0, 1.0])
    for keep in (False, True):
        st = rank_stats(pos, neg, keep_scores=keep)
        sub = st.select(torch.tensor([2, 1]))
        for field in ("pos", "tp_ge", "tp_gt", "neg_ge", "neg_gt", "n_tied_neg"):
            assert torch.equal(getattr(sub, field), getattr(st, field)[[2, 1]]), field
        assert sub.n_neg == 2
        assert (sub.neg is None) if not keep else torch.equal(sub.neg, neg[[2, 1]])


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


# ------------------------------------------------------------------------- every error text
# Every user-facing error of the metric core, word for word: the messages say what to fix, so
# a changed count, name or hint is a regression.

_S1 = f64([0.9, 0.8, 0.7])  # one query, G = 3
_S2 = f64([0.9, 0.8, 0.7], [0.7, 0.8, 0.9])  # two queries, G = 3
_T0, _NONE = torch.tensor([0]), torch.tensor([-1])


def _st():
    return rank_stats(f64([2.0]), f64([2.0, 3.0]))


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


def _sbir(query=((1.0,),), query_labels=(0,), gallery=None, gallery_labels=None, **kw):
    gallery = _GALLERY if gallery is None else gallery
    gallery_labels = _GALLERY_LABELS if gallery_labels is None else gallery_labels
    return lambda: evaluate_sbir(
        np.asarray(query), query_labels, gallery, gallery_labels, device="cpu", **kw
    )


_ERRORS = {
    # zsbench.metrics.per_query_values
    "pqv-scores-3d": (
        lambda: per_query_values(np.zeros((1, 2, 3)), np.zeros((1, 2), bool)),
        "scores must be [Q, G], got shape (1, 2, 3).",
    ),
    "pqv-relevant-3d": (
        lambda: per_query_values(np.zeros((1, 2)), np.zeros((1, 1, 2), bool)),
        "relevant must be [Q, G], got shape (1, 1, 2).",
    ),
    "pqv-shapes": (
        lambda: per_query_values(np.zeros((2, 3)), np.zeros((2, 4), bool)),
        "scores (2, 3) and relevant (2, 4) must have the same shape.",
    ),
    "pqv-nan": (
        lambda: per_query_values(np.array([[np.inf, 1.0]]), np.array([[True, False]])),
        "scores contain NaN or inf; fix the features that produced them.",
    ),
    # zsbench.metrics.cir
    "cir-float-index": (
        lambda: target_ranks(_S1, [1.0]),
        "target must hold integer gallery indices, got dtype torch.float64.",
    ),
    "cir-bool-index": (
        lambda: ap_at_k(_S1, [[True]]),
        "gt must hold integer gallery indices, got dtype torch.bool.",
    ),
    "cir-index-ndim": (
        lambda: target_ranks(_S1, [[0]]),
        "target must have 1 dimension(s), got shape (1, 1).",
    ),
    "cir-scores-ndim": (
        lambda: target_ranks(np.zeros(3), [0]),
        "scores must be [queries, gallery], got shape (3,).",
    ),
    "cir-range-high": (
        lambda: target_ranks(_S1, [3]),
        "target holds gallery indices outside [-1, 2] (min 3, max 3); the gallery has 3 items.",
    ),
    "cir-range-gt": (
        lambda: ap_at_k(_S1, [[3]]),
        "gt holds gallery indices outside [-1, 2] (min 3, max 3); the gallery has 3 items.",
    ),
    "cir-range-low": (
        lambda: subset_ranks(_S1, [0], [[0, -2]]),
        "members holds gallery indices outside [-1, 2] (min -2, max 0); the gallery has 3 items.",
    ),
    "cir-nan": (
        lambda: target_ranks(f64([0.1, math.nan]), [0]),
        "scores contain NaN or inf; fix the features that produced them.",
    ),
    "cir-target-negative": (
        lambda: target_ranks(_S1, [-1]),
        "target must give one gallery index >= 0 per query (1).",
    ),
    "cir-target-count": (
        lambda: target_ranks(_S1, [0, 1]),
        "target must give one gallery index >= 0 per query (1).",
    ),
    "cir-target-excluded": (
        lambda: target_ranks(_S2, [0, 1], exclude=[2, 1]),
        "query 1: its target is also excluded from the gallery.",
    ),
    "cir-not-member": (
        lambda: subset_ranks(_S2, [0, 2], [[0, 1], [0, 1]]),
        "query 1: the target is not among its image-set members.",
    ),
    "cir-target-is-reference": (
        lambda: subset_ranks(_S1, [1], [[0, 1]], [1]),
        "query 0: the target is not among its image-set members.",
    ),
    "cir-gt-rows": (
        lambda: ap_at_k(_S1, [[0], [1]]),
        "gt must have one row per query (1), got 2.",
    ),
    "cir-no-gt": (
        lambda: ap_at_k(_S2, [[0], [-1]]),
        "query 1 has no ground truth; CIRCO's AP@k needs at least one.",
    ),
    "cir-gt-excluded": (
        lambda: ap_at_k(_S1, [[0, 1]], exclude=[1]),
        "a ground truth is also excluded from the gallery.",
    ),
    "cir-fiq-mean-empty": (
        lambda: fashioniq_mean({}),
        "fashioniq_mean needs at least one category.",
    ),
    "cir-fiq-mean-keys": (
        lambda: fashioniq_mean({"dress": {"R@10": 0.1, "R@50": 0.2}, "shirt": {"R@10": 0.1}}),
        "category 'shirt' has metrics ['R@10'], expected ['R@10', 'R@50'].",
    ),
    "cir-protocol": (
        lambda: CIRLabels("cir", _T0, _NONE),
        "unknown CIR protocol 'cir'; one of ('fashioniq', 'cirr', 'circo').",
    ),
    "cir-cirr-members": (
        lambda: CIRLabels("cirr", _T0, _NONE),
        "the cirr protocol needs members (each query's img_set).",
    ),
    "cir-circo-gt": (
        lambda: CIRLabels("circo", _T0, _NONE, members=torch.tensor([[0]])),
        "the circo protocol needs gt (each query's ground truths).",
    ),
    "cir-rows": (
        lambda: cir_metrics(_S2, CIRLabels("fashioniq", _T0, _NONE)),
        "scores have 2 rows but there are 1 queries.",
    ),
    "cir-caption-shapes": (
        lambda: combine_caption_orders(torch.zeros(2, 3), torch.zeros(2, 4)),
        "both caption orders need features of one shape, got (2, 3) and (2, 4).",
    ),
    # zsbench.metrics.ranking / specs (ValueError: programming errors)
    "rank-ties": (
        lambda: ranking.check_ties("random"),
        "unknown tie rule 'random'; one of expected, pessimistic, optimistic",
    ),
    "rank-single-rank": (
        lambda: ranking.voc_ap(_st(), None, "expected"),
        "no single rank under ties='expected'",
    ),
    "rank-denominator": (
        lambda: ranking.precision(_st(), 1, "min_k"),
        "unknown precision denominator 'min_k'",
    ),
    "spec-rule": (lambda: MetricDef("a", "map", 1, "d"), "unknown metric rule 'map'"),
    "spec-no-positive": (
        lambda: MetricDef("a", "ap", None, "d", no_positive="drop"),
        "unknown no_positive policy 'drop'",
    ),
    "spec-sampled": (
        lambda: MetricDef("mAP@all", "voc_ap", None, "d").compute(_st()),
        "mAP@all: expected ties are sampled, use MetricSpec.compute",
    ),
    "spec-ties": (
        lambda: MetricSpec("n", "d", "s", (), ties="random"),
        "unknown tie rule 'random'; one of expected, pessimistic, optimistic",
    ),
    "get-spec-ties": (
        lambda: get_spec("sake", "random"),
        "Unknown tie rule 'random'. Known: expected, optimistic, pessimistic.",
    ),
    "get-spec-name": (
        lambda: get_spec("zzz"),
        "Unknown metric spec 'zzz'. Known: default, drcpl, precision-min-k-r, sake, sem-pcyc, "
        "voc, yelamarthi, zse-sbir.",
    ),
    "get-spec-unhashable": (
        lambda: get_spec(["sake"]),
        "Unknown metric spec ['sake']. Did you mean: sake? Known: default, drcpl, "
        "precision-min-k-r, sake, sem-pcyc, voc, yelamarthi, zse-sbir.",
    ),
    # zsbench.evaluation
    "eval-similarity": (
        _sbir(similarity="manhattan"),
        "Unknown similarity 'manhattan'. Known: cosine, dot, euclidean.",
    ),
    "eval-query-1d": (
        _sbir(query=(1.0, 2.0, 3.0)),
        "query features must be a 2-D array [N, D] of features, got shape (3,); reshape (e.g. "
        "flatten all but the first axis) before evaluating.",
    ),
    "eval-gallery-empty": (
        _sbir(gallery=np.zeros((0, 1)), gallery_labels=[]),
        "gallery features is empty (0 rows); evaluation needs at least one item.",
    ),
    "eval-query-no-dims": (
        _sbir(query=np.zeros((1, 0))),
        "query features has 0 feature dimensions; check the encoder output.",
    ),
    "eval-dims-differ": (
        _sbir(query=((1.0, 2.0),)),
        "feature dimensions differ: query D=2, gallery D=1; both must come from the same "
        "embedding space (check encode_query / encode_gallery).",
    ),
    "eval-labels-2d": (
        _sbir(query_labels=[[0, 1]]),
        "query labels must be 1-D [N] class ids, got shape (1, 2).",
    ),
    "eval-labels-float": (
        _sbir(gallery_labels=[0.0, 1.0, 2.5, 0.0, 1.0]),
        "gallery labels must be integer class ids, got non-integer floats; map class names to "
        "ids first (e.g. np.unique(..., return_inverse=True)).",
    ),
    "eval-labels-nan": (
        _sbir(query_labels=[math.nan]),
        "query labels must be integer class ids, got non-integer floats; map class names to "
        "ids first (e.g. np.unique(..., return_inverse=True)).",
    ),
    "eval-labels-bool": (
        _sbir(query_labels=[True]),
        "query labels must be integer class ids, got dtype torch.bool.",
    ),
    "eval-labels-complex": (
        _sbir(query_labels=np.array([1 + 0j])),
        "query labels must be integer class ids, got dtype torch.complex128.",
    ),
    "eval-chunk-zero": (
        _sbir(chunk_size=0),
        "chunk_size must be a positive integer or None, got 0.",
    ),
    "eval-chunk-bool": (
        _sbir(chunk_size=True),
        "chunk_size must be a positive integer or None, got True.",
    ),
    "eval-chunk-float": (
        _sbir(chunk_size=2.0),
        "chunk_size must be a positive integer or None, got 2.0.",
    ),
    "eval-class-names": (
        _sbir(class_names=[]),
        "class_names has no entry for label 0; pass a sequence indexed by label id or a "
        "mapping {label: name} covering every query label.",
    ),
}


@pytest.mark.parametrize("case", sorted(_ERRORS))
def test_error_messages_word_for_word(case):
    """Each input error of the metric core raises its type with exactly its message."""
    fn, msg = _ERRORS[case]
    kind = ValueError if case.startswith(("rank-", "spec-")) else ZsbenchError
    with pytest.raises(kind, match=exactly(msg)) as info:
        fn()
    assert type(info.value) is kind


def test_unconvertible_features_name_the_input():
    """Features numpy cannot turn into numbers: the message names them and what to pass."""
    pattern = (
        r"^gallery features could not be converted to a tensor \(.+\); pass a torch\.Tensor or "
        r"numpy array\.$"
    )
    with pytest.raises(ZsbenchError, match=pattern):
        evaluate_sbir(np.ones((1, 1)), [0], [["a"], ["b"]], [0, 1])


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


def test_voc_control_uses_the_given_tie_rule():
    """voc_control = precision_sum / min(K, R) under the tie rule it is given."""
    st = _st()  # the positive is at rank 2 or 3 (tied with one negative), R = 1
    assert float(ranking.voc_control(st, None, "expected")[0]) == pytest.approx(5 / 12)
    assert float(ranking.voc_control(st, None, "pessimistic")[0]) == pytest.approx(1 / 3)
    assert float(ranking.voc_control(st, None, "optimistic")[0]) == pytest.approx(1 / 2)
    assert float(ranking.voc_control(st, 2, "expected")[0]) == pytest.approx(1 / 4)


def test_per_query_values_sampling_budget_by_hand():
    """per_query_values samples each query to a variance budget of (5e-5)^2 * Q."""
    scores = np.array([[3.0, 2.0, 1.5, 1.0], [1.0, 0.5, 2.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
    rel = np.array([[0, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0]], bool)
    spec = _recording("sake")
    per_query_values(scores, rel, spec)
    # one call per query (R >= 1 each), every one with the budget for Q = 3
    assert [c[0] for c in spec.calls] == [1, 1, 1]
    assert [c[1] for c in spec.calls] == pytest.approx([5e-5**2 * 3] * 3, rel=1e-12)


@pytest.mark.parametrize("n_tied", [1, 2])
def test_tie_se_is_root_summed_variance_over_counted_queries(n_tied, monkeypatch):
    """tie_se = sqrt(sum of the per-query variances) / number of queries not excluded."""
    monkeypatch.setattr(evaluation, "TIE_SE_TARGET", 0.05)  # a loose target: few draws, fast
    # gallery 3 (relevant), 3, 1 (relevant), 3: the first positive ties two negatives, so the
    # VOC AP is sampled; n_tied such queries plus one query (label 9) without any positive
    gallery = np.array([[3.0], [3.0], [1.0], [3.0]])
    spec = _recording("sake")
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


def test_unconvertible_labels_name_the_input():
    """Labels numpy cannot turn into an array: the message names them and what to pass."""
    pattern = (
        r"^query labels could not be converted to a tensor \(.+\); pass a torch\.Tensor or "
        r"numpy array\.$"
    )
    with pytest.raises(ZsbenchError, match=pattern):
        evaluate_sbir(np.ones((2, 1)), [[0], [1, 2]], np.ones((2, 1)), [0, 1])


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


def test_seconds_is_the_time_the_call_took():
    start = time.perf_counter()
    res = evaluate_sbir(np.ones((2, 1)), [0, 1], np.ones((3, 1)), [0, 1, 1], device="cpu")
    assert 0 <= res["seconds"] <= time.perf_counter() - start
    assert "per_query" not in res  # per-query values only on request


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


def test_inclusion_defaults_to_the_expected_tie_rule():
    st = rank_stats(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.5]]))
    want = ranking.inclusion(st, 2, "expected")
    assert torch.equal(ranking.inclusion(st, 2), want)
    assert not torch.equal(want, ranking.inclusion(st, 2, "pessimistic"))  # the rule matters


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
