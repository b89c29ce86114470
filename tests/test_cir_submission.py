"""CIRR / CIRCO submission files: writers, offline scoring with the servers' formulas, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zsbench.cir_readers import CIRQuery, CIRSplit, read_circo, read_cirr
from zsbench.cir_submission import (
    circo_submission,
    cirr_submissions,
    read_submission,
    score_submission,
    score_submission_main,
    top_k_names,
    write_submission,
)
from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import cir_metrics


def tiny_split(dataset: str, queries: list[CIRQuery], gallery: list[str]) -> CIRSplit:
    return CIRSplit(dataset, "val", queries, gallery, Path("."), {n: n for n in gallery})


def random_scores(split: CIRSplit, seed: int = 0) -> torch.Tensor:
    """Noisy queries near their target (and, for CIRR, near their img_set): mid-range metrics."""
    g = torch.Generator().manual_seed(seed)
    labels = split.labels()
    gal = F.normalize(torch.randn(len(split.gallery), 64, generator=g), dim=-1)
    q = gal[labels.target] + 0.5 * torch.randn(len(split.queries), 64, generator=g)
    if labels.members is not None:
        q = q + gal[labels.members.clamp(min=0)].sum(1) / 3  # hard negatives in the subset
    return F.normalize(q, dim=-1) @ gal.T


# ----------------------------------------------------------------------------- hand-built files

CIRCO_2Q = tiny_split(
    "circo",
    [
        CIRQuery("0", "100", ("c",), targets=("1", "2", "3")),
        CIRQuery("1", "100", ("c",), targets=("4",)),
    ],
    [str(i) for i in range(1, 10)] + ["100"],
)


def test_circo_two_query_file_known_answers(tmp_path):
    sub = {"0": [1, 7, 2, 8, 3, 9], "1": ["7", "4"]}
    path = write_submission(tmp_path / "circo.json", sub)
    m = score_submission(path, CIRCO_2Q)
    # q0: hits at 1, 3, 5 -> AP@5 = (1/1 + 2/3 + 3/5) / 3; AP@10 the same (no more hits)
    # q1: hit at 2 -> AP@5 = (1/2) / 1
    ap0, ap1 = (1 + 2 / 3 + 3 / 5) / 3, 1 / 2
    assert m["mAP@5"] == pytest.approx((ap0 + ap1) / 2)
    assert m["mAP@50"] == pytest.approx((ap0 + ap1) / 2)
    assert m["R@5"] == 1.0
    # only the top 2 of q0 in the file: AP@5 = 1 / min(3, 5)
    short = score_submission({"0": [1, 7], "1": [4]}, CIRCO_2Q)
    assert short["mAP@5"] == pytest.approx((1 / 3 + 1) / 2)
    # main target (1) ranked 6th: R@5 drops, mAP does not change for the other hits
    late = score_submission({"0": [7, 8, 9, 5, 6, 1], "1": [4]}, CIRCO_2Q)
    assert late["R@5"] == 0.5 and late["R@10"] == 1.0


CIRR_2Q = tiny_split(
    "cirr",
    [
        CIRQuery("7", "a", ("c",), targets=("b",), img_set=("a", "b", "c", "d", "e", "f")),
        CIRQuery("9", "c", ("c",), targets=("d",), img_set=("a", "b", "c", "d", "e", "f")),
    ],
    list("abcdefgh"),
)


def test_cirr_two_query_files_known_answers():
    recall = {"version": "rc2", "metric": "recall", "7": ["b", "c"], "9": ["g", "h", "a", "b", "d"]}
    m = score_submission(recall, CIRR_2Q)
    assert m == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "R@50": 1.0}
    subset = {"version": "rc2", "metric": "recall_subset", "7": ["c", "b", "d"], "9": ["d"]}
    assert score_submission(subset, CIRR_2Q) == {
        "R_subset@1": 0.5,
        "R_subset@2": 1.0,
        "R_subset@3": 1.0,
    }


@pytest.mark.parametrize(
    "sub, match",
    [
        ({"metric": "recall", "7": ["b"], "9": ["d"]}, '"version": "rc2"'),
        ({"version": "rc2", "metric": "map", "7": ["b"], "9": ["d"]}, '"metric" must be'),
        ({"version": "rc2", "metric": "recall", "7": ["b"]}, "Missing 1: 9"),
        ({"version": "rc2", "metric": "recall", "7": ["b"], "9": ["d"], "5": []}, "Unknown 1: 5"),
        ({"version": "rc2", "metric": "recall", "7": ["b", "b"], "9": ["d"]}, "more than once"),
        ({"version": "rc2", "metric": "recall", "7": ["zz"], "9": ["d"]}, "'zz' is not one"),
        ({"version": "rc2", "metric": "recall", "7": "b", "9": ["d"]}, "non-empty list"),
        ({"version": "rc2", "metric": "recall_subset", "7": ["a"], "9": ["d"]}, "img_set"),
        ({"version": "rc2", "metric": "recall_subset", "7": list("bcde"), "9": ["d"]}, "top 3"),
    ],
)
def test_cirr_malformed_submissions(sub, match):
    with pytest.raises(ZsbenchError, match=match):
        score_submission(sub, CIRR_2Q)


def test_circo_malformed_submissions(tmp_path):
    with pytest.raises(ZsbenchError, match="'x' is not an integer"):
        score_submission({"0": ["x"], "1": [4]}, CIRCO_2Q)
    with pytest.raises(ZsbenchError, match="top 50"):
        score_submission({"0": list(range(51)), "1": [4]}, CIRCO_2Q)
    with pytest.raises(ZsbenchError, match="Missing 1: 1"):
        score_submission({"0": [1]}, CIRCO_2Q)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ZsbenchError, match="JSON object"):
        score_submission(bad, CIRCO_2Q)
    bad.write_text("{not json")
    with pytest.raises(ZsbenchError, match="not valid JSON"):
        read_submission(bad)
    with pytest.raises(ZsbenchError, match="not found"):
        read_submission(tmp_path / "nope.json")
    hidden = tiny_split("circo", [CIRQuery("0", "1", ("c",))], ["1", "2"])
    with pytest.raises(ZsbenchError, match="no public targets"):
        score_submission({"0": [2]}, hidden)


def test_top_k_names_excludes_and_orders():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    assert top_k_names(s, list("abcd"), 2) == [["b", "d"], ["a", "b"]]
    assert top_k_names(s, list("abcd"), 2, exclude=[1, 0], chunk_size=1) == [["d", "c"], ["b", "c"]]
    with pytest.raises(ZsbenchError, match="fewer than"):
        top_k_names(s, list("abcd"), 4, exclude=[0, 0])


# ----------------------------------------------------------------------------- real val files


@pytest.fixture
def cir(shared_data) -> Path:
    root = shared_data / "cir"
    if not root.is_dir():
        pytest.skip(f"real CIR annotations not found at {root}")
    return root


@pytest.mark.needs_data
def test_circo_val_submission_equals_metric_functions(cir, tmp_path):
    split = read_circo(cir / "circo", "val", annotation_gallery=True)
    scores = random_scores(split)
    want = cir_metrics(scores, split.labels())
    assert 0.05 < want["mAP@10"] < 0.95 and want["R@5"] < 0.95  # neither trivial nor hopeless
    sub = circo_submission(scores, split)
    assert set(sub) == {str(i) for i in range(220)}
    assert all(len(v) == 50 and all(isinstance(x, int) for x in v) for v in sub.values())
    path = write_submission(tmp_path / "circo_val.json", sub)
    assert read_submission(path) == json.loads(json.dumps(sub))
    got = score_submission(path, split)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.needs_data
def test_cirr_val_submissions_round_trip(cir, tmp_path):
    split = read_cirr(cir / "cirr", "val")
    scores = random_scores(split, seed=1)
    want = cir_metrics(scores, split.labels())
    assert 0.05 < want["R@1"] < 0.5 and 0.3 < want["R_subset@1"] < 0.9
    recall, subset = cirr_submissions(scores, split)
    assert recall["version"] == "rc2" and recall["metric"] == "recall"
    assert subset["metric"] == "recall_subset"
    q = split.queries[0]
    assert len(recall[q.query_id]) == 50 and q.reference not in recall[q.query_id]
    assert len(subset[q.query_id]) == 3 and set(subset[q.query_id]) < set(q.img_set) - {q.reference}
    p1 = write_submission(tmp_path / "recall.json", recall)
    p2 = write_submission(tmp_path / "subset.json", subset)
    got = score_submission(p1, split) | score_submission(p2, split)
    got["Avg"] = (got["R@5"] + got["R_subset@1"]) / 2  # one file each: Avg needs both
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.needs_data
def test_score_submission_main_prints_table(cir, shared_data, tmp_path, capsys):
    split = read_circo(cir / "circo", "val", annotation_gallery=True)
    scores = random_scores(split, seed=2)
    path = write_submission(tmp_path / "s.json", circo_submission(scores, split))
    want = cir_metrics(scores, split.labels())
    argv = ["--dataset", "circo", "--predictions", str(path), "--data-root", str(shared_data)]
    assert score_submission_main(argv) == 0
    out = capsys.readouterr().out
    assert "circo val" in out and "220 queries" in out
    assert f"{100 * want['mAP@10']:#9.4g}" in out  # 4 significant digits
    assert score_submission_main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)[str(path)]
    assert res["mAP@25"] == pytest.approx(want["mAP@25"])
    assert (
        score_submission_main(
            ["--dataset", "cirr", "--predictions", str(path), "--data-root", str(tmp_path)]
        )
        == 2
    )
    assert "no cirr annotations" in capsys.readouterr().err
    assert score_submission_main([*argv, "--split", "test"]) == 2
    assert "no public targets" in capsys.readouterr().err


@pytest.mark.parametrize(
    "ranked",
    [[1, 1.0, 2, 3], [1, "01", 2, 3], [1, "1", 2, 3], [2, 3.0, "003", 1]],
    ids=["int-float", "leading-zero", "int-str", "three-forms"],
)
def test_circo_duplicates_are_found_after_conversion(ranked):
    """One image in two spellings counted twice would push mAP past 100 %."""
    with pytest.raises(ZsbenchError, match="more than once"):
        score_submission({"0": ranked, "1": [4]}, CIRCO_2Q)
    # the same ids once each score at most 1
    once = list(dict.fromkeys(int(float(x)) for x in ranked))
    assert score_submission({"0": once, "1": [4]}, CIRCO_2Q)["mAP@5"] <= 1.0


@pytest.mark.parametrize("bad", [1.7, 2.5, True, "1.0", None, [1]])
def test_circo_non_integral_ids_are_errors_not_truncated(bad):
    with pytest.raises(ZsbenchError, match="is not an integer"):
        score_submission({"0": [bad, 2, 3], "1": [4]}, CIRCO_2Q)


def test_a_duplicate_query_key_is_an_error(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"0": [7, 8], "1": [4], "0": [1, 2, 3]}')  # the last "0" would win
    with pytest.raises(ZsbenchError, match="query '0' appears more than once"):
        read_submission(path)
