"""Sweeps: grid expansion, sharding, a killed worker retried, a killed sweep resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from zsbench import sweep
from zsbench.cli import main
from zsbench.errors import ZsbenchError
from zsbench.results import load_results


def test_expand_grid_order_and_unknown_names():
    cells, notes = sweep.expand_grid(["frozen", "supervised"], ["synthetic"], [0, 1])
    assert [c.name for c in cells] == [
        "frozen/synthetic/seed0",
        "frozen/synthetic/seed1",
        "supervised/synthetic/seed0",
        "supervised/synthetic/seed1",
    ]
    assert notes == []
    with pytest.raises(ZsbenchError, match="supervised"):
        sweep.expand_grid(["supervise"], ["synthetic"], [0])


def test_shards_partition_the_grid():
    cells, _ = sweep.expand_grid(["frozen", "supervised", "cvae"], ["synthetic"], [0, 1, 2])
    parts = [sweep.shard(cells, i, 4) for i in range(4)]
    flat = [c for p in parts for c in p]
    assert sorted(flat, key=lambda c: c.name) == sorted(cells, key=lambda c: c.name)
    assert len(set(flat)) == len(cells)
    assert sweep.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ZsbenchError, match="shard"):
            sweep.parse_shard(bad)


def test_emit_wandb_sweep_yaml(tmp_path):
    out = tmp_path / "sweep.yaml"
    assert main(["sweep", "--methods", "frozen", "cvae", "--seeds", "0", "1"]
                + ["--emit-wandb", str(out)]) == 0  # fmt: skip
    cfg = yaml.safe_load(out.read_text())
    assert cfg["method"] == "grid"
    assert cfg["parameters"]["method"]["values"] == ["frozen", "cvae"]
    assert cfg["parameters"]["seed"]["values"] == [0, 1]
    assert cfg["command"][:3] == ["${env}", "zsbench", "bench"] and cfg["command"][-1] == "${args}"


def _killing_first_attempt(tmp_path, monkeypatch):
    """Make the first worker of every cell die by SIGKILL before it starts."""
    real = sweep.worker_command

    def command(cell, overrides, results, wandb):
        mark = tmp_path / f"killed-{cell.method}-{cell.seed}"
        script = f'if [ ! -e "{mark}" ]; then touch "{mark}"; kill -9 $$; fi; exec "$@"'
        return ["bash", "-c", script, "_", *real(cell, overrides, results, wandb)]

    monkeypatch.setattr(sweep, "worker_command", command)


@pytest.mark.slow
def test_killed_worker_is_retried_and_nothing_is_lost(tmp_path, tiny, monkeypatch):
    _killing_first_attempt(tmp_path, monkeypatch)
    results = tmp_path / "results"
    cells, _ = sweep.expand_grid(["frozen", "supervised"], ["synthetic"], [0])
    todo, done = sweep.pending(cells, tiny, results)
    assert (len(todo), len(done)) == (2, 0)
    outcomes = sweep.run_sweep(todo, tiny, results, jobs=2, retries=1, progress=False)
    assert sorted(o.status for o in outcomes) == ["done", "done"]
    assert all(o.attempts == 2 for o in outcomes)
    logs = sorted(p.name for p in (results / "logs" / "sweep").glob("frozen__*"))
    # the killed first attempt kept its log and wrote no status; the second said "done"
    assert logs == ["frozen__synthetic__seed0.try1.log", "frozen__synthetic__seed0.try2.log",
                    "frozen__synthetic__seed0.try2.status.json"]  # fmt: skip
    assert sorted(r["method"] for r in load_results(results)) == ["frozen", "supervised"]
    todo, done = sweep.pending(cells, tiny, results)  # a rerun has nothing left to do
    assert (len(todo), len(done)) == (0, 2)


@pytest.mark.slow
def test_sweep_killed_midway_then_resumed(tmp_path, tiny):
    """Kill the whole sweep (and its workers) after the first result; the rerun completes
    the grid: every cell exactly once in the leaderboard, the early result untouched."""
    results = tmp_path / "results"
    args = ["sweep", "--methods", "frozen", "supervised", "--seeds", "0", "1", "--jobs", "1"]
    args += ["--results-dir", str(results), "--no-progress"]
    args += [x for o in tiny for x in ("--set", o)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsbench.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    first = []
    while time.time() < deadline and not first and proc.poll() is None:
        first = sorted(results.rglob("seed*.json")) if results.exists() else []
        first = [p for p in first if ".extras" not in p.name]
        time.sleep(0.2)
    assert first, "no result appeared before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = first[0].read_bytes()
    n_before = len([p for p in results.rglob("seed?.json")])
    assert n_before < 4, "the sweep finished before it could be killed"

    assert main(args) == 0
    records = load_results(results)
    cells = sorted((r["method"], r["seed"]) for r in records)
    assert cells == [("frozen", 0), ("frozen", 1), ("supervised", 0), ("supervised", 1)]
    assert first[0].read_bytes() == before
    board = pd.read_csv(results / "leaderboard.csv")
    assert sorted(board["method"]) == ["frozen", "supervised"]
    assert set(board["n_seeds"]) == {2}
    assert not list(results.rglob("*.tmp"))
    json.loads(first[0].read_text())  # still a complete JSON


def test_leaderboard_pushed_as_wandb_table_offline(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    results = tmp_path / "results"
    args = ["bench", "--method", "frozen", "--results-dir", str(results), "--no-progress"]
    assert main([*args, "--quiet", *[x for o in tiny for x in ("--set", o)]]) == 0
    assert main(["leaderboard", "--results-dir", str(results), "--wandb"]) == 0
    runs = [r for r in (results / "wandb").glob("offline-run-*") if list(r.rglob("*.table.json"))]
    assert len(runs) == 1
    (table,) = runs[0].rglob("*.table.json")
    data = json.loads(table.read_text())
    assert "method" in data["columns"] and ["frozen"] == [
        row[data["columns"].index("method")] for row in data["data"]
    ]


@pytest.mark.slow
def test_sweep_works_from_a_folder_holding_a_zsbench_results_folder(tmp_path, tiny):
    """The parent of a clone named zsbench/ (with zsbench/results/ in it): a worker started
    there must import the installed zsbench, not the folder (a namespace package)."""
    (tmp_path / "zsbench" / "results").mkdir(parents=True)
    results = tmp_path / "zsbench" / "results"
    args = ["sweep", "--methods", "frozen", "--seeds", "0", "--jobs", "1"]
    args += ["--results-dir", str(results), "--no-progress"]
    args += [x for o in tiny for x in ("--set", o)]
    zsbench_cli = os.path.join(os.path.dirname(sys.executable), "zsbench")
    proc = subprocess.run([zsbench_cli, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [r["method"] for r in load_results(results)] == ["frozen"]


def test_cell_status_comes_from_the_exit_code_and_the_status_file(tmp_path):
    """Not from log text: a log that happens to say "Result exists, skipped" is not a skip,
    and a worker that exited 0 without a status file did not finish a run."""
    log = tmp_path / "frozen__synthetic__seed0.try1.log"
    log.write_text("Result exists, skipped: somewhere\n")
    status = sweep.status_path(log)
    assert status.name == "frozen__synthetic__seed0.try1.status.json"
    assert sweep.cell_status(0, log) == "failed"  # no status file
    for said in ("done", "skipped"):
        status.write_text(json.dumps({"status": said, "result": "r.json"}))
        assert sweep.cell_status(0, log) == said
        assert sweep.cell_status(1, log) == "failed"  # the exit code wins
    status.write_text("{broken")
    assert sweep.cell_status(0, log) == "failed"


def test_a_worker_reports_done_then_skipped_through_its_status_file(tmp_path, tiny):
    (cell,), _ = sweep.expand_grid(["frozen"], ["synthetic"], [0])
    results, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    env = sweep.worker_env(cell, threads=1)
    first = sweep.run_cell(cell, tiny, results, False, logs, env)
    second = sweep.run_cell(cell, tiny, results, False, logs, env)
    assert (first.status, second.status) == ("done", "skipped")
    written = json.loads(sweep.status_path(first.log).read_text())
    assert written["status"] == "done" and written["result"].endswith("seed0.json")
