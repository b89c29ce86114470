"""`zsbench evaluate` speaks up (issue 30 item 6): missing labels, zero rows, queries without
a positive, unreadable files and NaN in --json each get a clear word instead of a number."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zsbench.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "qf.npy", rng.normal(size=(6, 4)))
    np.save(tmp_path / "gf.npy", rng.normal(size=(8, 4)))
    np.save(tmp_path / "ql.npy", np.array([0.0, 1, 0, 1, 0, 1]))
    np.save(tmp_path / "gl.npy", np.array([0.0, 1, 0, 1, 0, 1, 2, 2]))
    return tmp_path


def evaluate(d, *extra, **names):
    paths = {"qf": "qf.npy", "ql": "ql.npy", "gf": "gf.npy", "gl": "gl.npy", **names}
    flags = ("--query-features", "--query-labels", "--gallery-features", "--gallery-labels")
    args = [
        x for flag, key in zip(flags, ("qf", "ql", "gf", "gl")) for x in (flag, str(d / paths[key]))
    ]
    return main(["evaluate", *args, *extra])


def test_nan_labels_are_an_error_not_a_class(files, capsys):
    np.save(files / "ql_nan.npy", np.array([0.0, 1, np.nan, 1, 0, np.nan]))
    assert evaluate(files, ql="ql_nan.npy") == 2
    err = capsys.readouterr().err
    assert "query labels: 2 of 6 are missing (NaN or None), first at index 2" in err


def test_zero_rows_and_queries_without_positive_are_counted_on_stderr(files, capsys):
    q = np.load(files / "qf.npy")
    q[:2] = 0
    np.save(files / "qf0.npy", q)
    np.save(files / "ql3.npy", np.array([0.0, 1, 0, 1, 0, 3]))  # class 3: not in the gallery
    assert evaluate(files, qf="qf0.npy", ql="ql3.npy") == 0
    err = capsys.readouterr().err
    assert "2 query feature rows are all zero" in err
    assert "1 queries have no relevant gallery item" in err


def test_json_output_is_valid_json_even_with_nan(files, capsys, monkeypatch):
    import zsbench.evaluation as ev

    real = ev.evaluate_sbir

    def with_nan(*a, **k):
        out = real(*a, **k)
        out["metrics"] = {**out["metrics"], "mAP@all": float("nan")}
        return out

    monkeypatch.setattr(ev, "evaluate_sbir", with_nan)
    assert evaluate(files, "--json") == 0
    data = json.loads(capsys.readouterr().out)  # a bare NaN would not parse strictly
    assert data["metrics"]["mAP@all"] is None


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY truncated", "pickle", "complex", "dir"])
def test_unreadable_inputs_name_the_file(files, capsys, content):
    bad = files / "bad.npy"
    if content == "pickle":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "complex":
        np.save(bad, np.ones((6, 4), dtype=np.complex64))
    elif content == "dir":
        bad.mkdir()
    else:
        bad.write_bytes(content)
    assert evaluate(files, qf="bad.npy") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
