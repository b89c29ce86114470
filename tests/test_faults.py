"""Fault injection: a run killed or failing at the worst moment never leaves a result beside
another run's artefacts, and the temp files of dead writers do not pile up (issue 30)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import zsbench.runner.common as common
from zsbench.report import load_runs
from zsbench.results import extras_path, remove_stale_temps, write_json_atomic
from zsbench.runner import bench


def _fail_on(monkeypatch, suffix: str):
    """Make the runner's write of files ending in `suffix` die as a kill would."""
    real = common.write_json_atomic

    def write(path, data):
        if str(path).endswith(suffix):
            raise KeyboardInterrupt(f"killed while writing {path}")
        return real(path, data)

    monkeypatch.setattr(common, "write_json_atomic", write)


def test_interrupted_publish_never_pairs_a_result_with_another_runs_extras(
    tmp_path, tiny, monkeypatch
):
    first = bench("frozen", "synthetic", overrides=tiny, results=tmp_path, progress=False)
    (run,) = load_runs(tmp_path)
    assert run.extras and run.extras["run_id"] == first.record["run_id"]
    # killed while the new result is written: the old result and its own extras stay paired
    with monkeypatch.context() as m:
        _fail_on(m, "seed0.json")
        with pytest.raises(KeyboardInterrupt):
            bench("frozen", "synthetic", 0, tiny, results=tmp_path, overwrite=True, progress=False)
    (run,) = load_runs(tmp_path)
    assert run.record["run_id"] == first.record["run_id"] and run.extras
    # killed after the result, before its extras: the report refuses the old run's extras
    with monkeypatch.context() as m:
        _fail_on(m, ".extras.json")
        with pytest.raises(KeyboardInterrupt):
            bench("frozen", "synthetic", 0, tiny, results=tmp_path, overwrite=True, progress=False)
    (run,) = load_runs(tmp_path)
    assert run.record["run_id"] != first.record["run_id"] and run.extras == {}
    assert "belongs to another run" in run.note
    # the next complete run pairs them again
    last = bench("frozen", "synthetic", 0, tiny, results=tmp_path, overwrite=True, progress=False)
    (run,) = load_runs(tmp_path)
    assert run.extras["run_id"] == last.record["run_id"] == run.record["run_id"]
    assert json.loads(extras_path(last.path).read_text())["run_id"] == last.record["run_id"]


def test_sigkilled_writer_keeps_the_old_file_and_its_temp_is_removed_later(tmp_path):
    path = tmp_path / "seed0.json"
    write_json_atomic(path, {"old": 1})
    script = (
        "import os, signal, sys, zsbench.results as r\n"
        "r.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "r.write_json_atomic(sys.argv[1], {'new': 1})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert json.loads(path.read_text()) == {"old": 1}  # the previous file, untouched
    left = list(tmp_path.glob(".seed0.json.*.tmp"))
    assert len(left) == 1  # the dead writer's temp file
    # another host's temp files: kept while fresh (it may be writing now), removed when old
    fresh = tmp_path / ".seed0.json.otherhost.123.abc.tmp"
    old = tmp_path / ".seed0.json.otherhost.456.def.tmp"
    fresh.write_text("x")
    old.write_text("x")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    write_json_atomic(path, {"newer": 1})
    assert json.loads(path.read_text()) == {"newer": 1}
    assert sorted(tmp_path.glob(".seed0.json.*.tmp")) == [fresh]
    assert remove_stale_temps(path) == []  # nothing else to remove


def test_an_unseen_class_that_lost_its_sketches_is_an_error_naming_it(tmp_path):
    """An emptied class folder must not silently shrink the queries under the same split."""
    from zsbench.datamodules.synthetic import SyntheticSketchy
    from zsbench.errors import ZsbenchError

    def dm():
        return SyntheticSketchy(
            n_shapes=2, n_patterns=2, photos_per_class=3, sketches_per_class=3, render_size=32,
            image_size=32, unseen=["plain_circle"], cache=str(tmp_path / "data"),
        )  # fmt: skip

    whole = dm()
    whole.setup()
    sketches = [it.path for it in whole.items if it.label == "plain_circle" and it.domain == 0]
    assert len(sketches) == 3
    for p in sketches:
        os.remove(p)
    with pytest.raises(ZsbenchError, match=r"plain_circle \(0 sketches, 3 photos\)"):
        dm().setup()


def test_a_result_that_cannot_be_written_prints_its_metrics(tmp_path, tiny, monkeypatch, capsys):
    import errno

    from zsbench.errors import ZsbenchError

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(common, "write_json_atomic", disk_full)
    with pytest.raises(ZsbenchError, match="No space left on device"):
        bench("frozen", "synthetic", 0, tiny, results=tmp_path, progress=False)
    out = capsys.readouterr().out
    printed = json.loads(out[out.index('{\n  "unwritten_result"') :].split("\n}\n")[0] + "\n}")
    assert 0 < printed["metrics"]["mAP@all"] <= 1


def test_missing_side_information_fails_before_feature_extraction(tmp_path, tiny, monkeypatch):
    """A method needing WordNet without WordNet installed fails in seconds, not after the
    feature extraction (30 minutes for ResNet-50 on the real Sketchy protocol)."""
    import zsbench.features as features
    from zsbench.errors import ZsbenchError

    calls = []
    monkeypatch.setattr(features, "_extract", lambda *a: calls.append(1))
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path / "no-wordnet"))
    # A fresh cache: the session's may already hold a copied WordNet (and cached features, which
    # would hide an extraction that ran first).
    monkeypatch.setenv("ZSBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ZsbenchError, match="WordNet"):
        bench("sem-pcyc", "synthetic", 0, [*tiny, "model.semantics=wordnet"], results=tmp_path,
              progress=False)  # fmt: skip
    assert calls == []
