"""End to end through the CLI: bench, skip, overwrite, crash safety, evaluate, W&B offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import one_result

from zsbench.cli import main
from zsbench.registry import METHODS

RESULT_FIELDS = {
    "schema_version",
    "task",
    "dataset",
    "split",
    "method",
    "seed",
    "status",
    "date",
    "metrics",
    "chance",
    "per_class",
    "spec",
    "split_manifest",
    "config",
    "method_metadata",
    "backbone",
    "provenance",
    "timings",
    "n_queries",
    "n_gallery",
    "n_queries_without_positive",
    "leakage",
    "side_information",
    "log_dir",
}


def run(*args: str) -> int:
    return main(list(args))


def bench_args(results, tiny, method="supervised", *extra):
    args = [
        "bench",
        "--method",
        method,
        "--dataset",
        "synthetic",
        "--results-dir",
        str(results),
        "--no-progress",
    ]
    for o in tiny:
        args += ["--set", o]
    return [*args, *extra]


def needs_wordnet(method: str) -> bool:
    """True when the method's default side information includes the WordNet hierarchy."""
    from zsbench.config import signature_defaults

    return "wordnet" in str(signature_defaults(METHODS.get(method)).get("semantics") or "")


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_fast_dev_run(method, tmp_path, tiny, request):
    if needs_wordnet(method):
        request.getfixturevalue("wordnet_dir")
    fast = ("--set", "trainer.fast_dev_run=true")
    if METHODS.get(method).metadata.task == "cir":  # each task's embedded dataset
        from test_cir_bench import TINY_CIR, cir_bench_args

        assert run(*cir_bench_args(tmp_path, TINY_CIR, method, *fast)) == 0
        main = "mAP@5"
    else:
        assert run(*bench_args(tmp_path, tiny, method, *fast)) == 0
        main = "mAP@all"
    rec = json.loads(one_result(tmp_path, method).read_text())
    assert rec["status"] == "fast_dev_run"
    assert np.isfinite(rec["metrics"][main])


def test_bench_writes_complete_result_then_skips_then_overwrites(tmp_path, tiny, capsys):
    assert run(*bench_args(tmp_path, tiny)) == 0
    path = one_result(tmp_path, "supervised")
    rec = json.loads(path.read_text())
    assert RESULT_FIELDS <= set(rec)
    assert rec["status"] == "ok"
    assert rec["split_manifest"]["hash"] and rec["split_manifest"]["n_unseen_classes"] == 3
    assert len(rec["backbone"]["weights_sha256"]) == 64
    assert torch.__version__.startswith(rec["provenance"]["packages"]["torch"])
    assert set(rec["provenance"]["git"]) == {"commit", "dirty"}
    assert rec["config"]["trainer"]["max_epochs"] == 2
    assert rec["timings"]["encode_items_per_s"] > 0
    assert rec["spec"]["name"] == "default"
    assert (tmp_path / "leaderboard.csv").exists()
    out = capsys.readouterr().out
    assert "random ranking" in out and "supervised" in out

    mtime = path.stat().st_mtime_ns
    assert run(*bench_args(tmp_path, tiny)) == 0
    assert "skipped" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == mtime

    first_log = rec["log_dir"]
    assert run(*bench_args(tmp_path, tiny, "supervised", "--overwrite")) == 0
    assert path.stat().st_mtime_ns != mtime
    # the replaced run's training curves are kept beside the new ones
    assert os.path.isdir(first_log) and any(os.scandir(first_log))
    assert json.loads(path.read_text())["log_dir"] != first_log
    assert json.loads(path.read_text())["status"] == "ok"


def test_crash_midway_leaves_result_and_leaderboard_intact(tmp_path, tiny, monkeypatch):
    assert run(*bench_args(tmp_path, tiny, "frozen")) == 0
    board = (tmp_path / "leaderboard.csv").read_text()
    path = one_result(tmp_path, "frozen")
    before = path.read_text()

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("zsbench.runner.sbir.evaluate_sbir", crash)
    with pytest.raises(KeyboardInterrupt):
        run(*bench_args(tmp_path, tiny, "frozen", "--overwrite"))
    assert path.read_text() == before
    assert (tmp_path / "leaderboard.csv").read_text() == board
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []


def test_unknown_names_exit_2_with_suggestions(tmp_path, capsys):
    assert run("bench", "--method", "supervisd", "--results-dir", str(tmp_path)) == 2
    assert "Did you mean: supervised" in capsys.readouterr().err
    assert run("bench", "--method", "frozen", "--dataset", "synthtic") == 2
    assert "Did you mean: synthetic" in capsys.readouterr().err
    assert run("bench", "--method", "frozen", "--set", "dataset.n_shape=3") == 2
    assert "Did you mean: n_shapes" in capsys.readouterr().err


def test_methods_and_datasets_listed(capsys):
    assert run("methods") == 0
    out = capsys.readouterr().out
    assert "frozen" in out and "supervised" in out
    assert run("datasets") == 0
    assert "synthetic" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", [".npy", ".pt"])
def test_evaluate_cli_reproduces_sklearn(tmp_path, capsys, fmt):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    ql, gl = rng.integers(0, 5, 40), rng.integers(0, 5, 300)
    files = {}
    for name, arr in {"qf": q, "ql": ql, "gf": g, "gl": gl}.items():
        files[name] = tmp_path / f"{name}{fmt}"
        if fmt == ".npy":
            np.save(files[name], arr)
        else:
            torch.save(torch.from_numpy(arr), files[name])
    assert (
        run(
            "evaluate",
            "--query-features",
            str(files["qf"]),
            "--query-labels",
            str(files["ql"]),
            "--gallery-features",
            str(files["gf"]),
            "--gallery-labels",
            str(files["gl"]),
            "--json",
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)["metrics"]["mAP@all"]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    scores = qn @ gn.T
    ref = np.mean([average_precision_score(gl == ql[i], scores[i]) for i in range(len(q))])
    assert got == pytest.approx(ref, abs=1e-6)


def test_evaluate_cli_string_labels_and_bad_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "qf.npy", rng.normal(size=(4, 3)))
    np.save(tmp_path / "gf.npy", rng.normal(size=(6, 3)))
    np.save(tmp_path / "ql.npy", np.array(["cat", "dog", "cat", "dog"]))
    np.save(tmp_path / "gl.npy", np.array(["cat", "dog", "cat", "dog", "cow", "cow"]))
    args = [
        "evaluate",
        "--query-features",
        str(tmp_path / "qf.npy"),
        "--query-labels",
        str(tmp_path / "ql.npy"),
        "--gallery-features",
        str(tmp_path / "gf.npy"),
        "--gallery-labels",
    ]
    assert run(*args, str(tmp_path / "gl.npy")) == 0
    assert "mAP@all" in capsys.readouterr().out
    assert run(*args, str(tmp_path / "missing.npy")) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_wandb_offline_leaves_local_run(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert run(*bench_args(tmp_path, tiny, "frozen")) == 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # An offline run keeps its config, history and summary in the run's .wandb record log
    # (what `wandb sync` uploads later).
    (log,) = runs[0].glob("run-*.wandb")
    data = log.read_bytes()
    assert b'"max_epochs":2' in data  # resolved config
    assert b'"n_shapes":3' in data
    assert b"test/mAP@all" in data  # final metrics
    assert os.environ["WANDB_MODE"] == "offline"


def test_cold_and_warm_feature_cache_give_the_same_result(tmp_path, tiny, monkeypatch):
    """Extracting features (a cache miss) must not change the run: the model is seeded after."""
    monkeypatch.setenv("ZSBENCH_CACHE", str(tmp_path / "fresh-cache"))
    records = []
    for name in ("cold", "warm"):
        assert run(*bench_args(tmp_path / name, tiny, "caae")) == 0
        (path,) = (tmp_path / name).rglob("seed0.json")
        records.append(json.loads(path.read_text()))
    assert [r["timings"]["feature_cache_hit"] for r in records] == [False, True]
    assert records[0]["metrics"] == records[1]["metrics"]


_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "reuse":
    from zsbench.cli import _reuse_freed_memory
    _reuse_freed_memory()
def faults_of_a_fresh_64mib_block():
    x = np.empty(16 * 2**20, np.float32)  # 64 MiB through malloc, freed on return
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x.fill(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_fresh_64mib_block()
print(faults_of_a_fresh_64mib_block())
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt is glibc's",
)
def test_evaluate_reuses_freed_memory_instead_of_faulting_it_again():
    """`zsbench evaluate` keeps freed blocks in the heap: a second 64 MiB block costs no page
    faults (by default glibc unmaps it and the next one is faulted in again: one fault per
    4 KiB page, or per 2 MiB where transparent huge pages are on, plus the partial ones)."""
    faults = {}
    for mode in ("default", "reuse"):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        faults[mode] = int(out.stdout.split()[-1])
    assert faults["default"] >= 32, faults  # at least one per 2 MiB huge page
    assert faults["reuse"] < 8, faults


def test_provenance_names_a_plugin_checkout_other_than_the_cores(tmp_path, monkeypatch):
    """A core on PYTHONPATH in a second checkout still runs the editable install's methods:
    the result then records both trees, not only the core's commit."""
    import subprocess

    import zsbench.methods
    from zsbench.provenance import git_state, plugin_git_states, provenance

    assert plugin_git_states() == {}  # one tree: nothing more recorded
    assert "plugins_git" not in provenance(torch.device("cpu"))
    other = tmp_path / "other"
    (other / "methods").mkdir(parents=True)
    (other / "methods" / "x.py").write_text("X = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], cwd=other, check=True)
    monkeypatch.setattr(zsbench.methods, "__path__", [str(other / "methods")])
    states = plugin_git_states()
    assert list(states) == ["zsbench.methods"]
    assert states["zsbench.methods"]["path"] == str((other / "methods").resolve())
    assert states["zsbench.methods"]["commit"] == git_state(other)["commit"] is not None
    assert states["zsbench.methods"]["dirty"] is False
    (other / "methods" / "x.py").write_text("X = 2\n")
    assert provenance(torch.device("cpu"))["plugins_git"]["zsbench.methods"]["dirty"] is True
