"""Run artefacts for the report: the PR curve by hand, examples, and that results ignore them."""

from __future__ import annotations

import math

import pytest
import torch

from zsbench.extras import RECALL_LEVELS, interpolated_pr, run_extras
from zsbench.results import extras_path, load_results, write_json_atomic


def test_interpolated_pr_hand_computed():
    # ranking: rel, non, rel, non -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    rel = torch.tensor([[True, False, True, False]])
    curve = interpolated_pr(scores, rel)[0].tolist()
    assert curve[:6] == pytest.approx([1.0] * 6)  # recall 0 .. 0.5
    assert curve[6:] == pytest.approx([2 / 3] * 5)  # recall 0.6 .. 1


def test_interpolated_pr_no_relevant_is_nan_and_perfect_is_one():
    scores = torch.tensor([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    rel = torch.tensor([[False, False, False], [True, True, False]])
    curve = interpolated_pr(scores, rel)
    assert all(math.isnan(x) for x in curve[0].tolist())
    assert curve[1].tolist() == pytest.approx([1.0] * len(RECALL_LEVELS))


def test_run_extras_examples_and_curve():
    g = torch.eye(4)
    gl = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[1.0, 0.1, 0, 0], [0, 0, 0.1, 1.0]])
    ql = torch.tensor([0, 1])
    out = run_extras(q, ql, g, gl, "cosine", ["q0", "q1"], ["g0", "g1", "g2", "g3"], ["a", "b"])
    assert out["pr_curve"]["n_queries"] == 2
    assert out["pr_curve"]["precision"] == pytest.approx([1.0] * 11)
    first = out["examples"][0]
    assert first["query"] == "q0" and first["label"] == "a"
    assert [t["path"] for t in first["top"][:2]] == ["g0", "g1"]
    assert [t["correct"] for t in first["top"]] == [True, True, False, False]
    assert out["examples"][1]["top"][0]["path"] == "g3"


def test_load_results_ignores_extras(tmp_path):
    path = tmp_path / "sbir" / "d" / "s" / "m" / "seed0.json"
    record = {
        "schema_version": 1,
        "task": "sbir",
        "dataset": "d",
        "split": "s",
        "method": "m",
        "seed": 0,
        "status": "ok",
        "metrics": {"mAP@all": 0.5},
    }
    write_json_atomic(path, record)
    write_json_atomic(extras_path(path), {"pr_curve": {}, "examples": []})
    assert extras_path(path).name == "seed0.extras.json"
    assert [r["method"] for r in load_results(tmp_path)] == ["m"]
