"""Sweeps: a grid of (method, dataset, seed) cells run by worker processes, resumable.

Each cell is one `zsbench bench` run in its own process, so a crashed or killed worker loses
only its cell: the cell is retried (`retries`), every other result is already on disk. A
restarted sweep plans the grid again and skips every cell whose result exists; `bench` holds a
per-result file lock, so two processes never run one cell at the same time. `--shard i/n` keeps
every n-th cell (from i, in a fixed order), so n machines sharing a results folder split a grid.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from zsbench.errors import ZsbenchError
from zsbench.registry import DATASETS, METHODS

# exit statuses of a worker that was killed rather than failed: its cell is worth retrying
KILLED = {-9, -15, 137, 143}


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}/{self.dataset}/seed{self.seed}"


@dataclasses.dataclass
class CellOutcome:
    cell: Cell
    status: str  # "done", "skipped" (result existed), "failed"
    seconds: float = 0.0
    attempts: int = 0
    log: str | None = None


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ZsbenchError(f"--shard must look like i/n (e.g. 0/4), got {text!r}.") from None
    if n < 1 or not 0 <= i < n:
        raise ZsbenchError(f"--shard {text}: need 0 <= i < n (shards are numbered from 0).")
    return i, n


def expand_grid(
    methods: Sequence[str], datasets: Sequence[str], seeds: Sequence[int]
) -> tuple[list[Cell], list[str]]:
    """Every compatible (method, dataset, seed) in a fixed order, and notes on skipped pairs.

    Unknown names fail with a did-you-mean; a method whose task differs from a dataset's
    (an SBIR method on a CIR dataset) is left out with a note, not an error.
    """
    if not methods or not datasets or not seeds:
        raise ZsbenchError("A sweep needs at least one method, one dataset and one seed.")
    cells, notes = [], []
    for d in dict.fromkeys(datasets):
        task = DATASETS.get(d).task
        for m in dict.fromkeys(methods):
            m_task = METHODS.get(m).metadata.task
            if m_task != task:
                notes.append(f"{m} ({m_task}) does not run on {d} ({task}): left out")
                continue
            cells.extend(Cell(m, d, int(s)) for s in dict.fromkeys(seeds))
    return cells, notes


def shard(cells: list[Cell], index: int, count: int) -> list[Cell]:
    return cells[index::count]


def pending(
    cells: list[Cell], overrides: Sequence[str], results: str | Path | None
) -> tuple[list[Cell], list[Cell]]:
    """(cells to run, cells whose result exists), planned as `bench` would (same paths)."""
    from zsbench.runner import plan_run

    todo, done, cache = [], [], {}
    for cell in cells:
        plan = plan_run(cell.method, cell.dataset, cell.seed, overrides, results, cache)
        (done if plan.path.exists() else todo).append(cell)
    return todo, done


def worker_command(
    cell: Cell, overrides: Sequence[str], results: str | Path | None, wandb: bool
) -> list[str]:
    cmd = [sys.executable, "-m", "zsbench.cli", "bench", "--method", cell.method]
    cmd += ["--dataset", cell.dataset, "--seed", str(cell.seed), "--no-progress", "--quiet"]
    if results is not None:
        cmd += ["--results-dir", str(results)]
    if wandb:
        cmd.append("--wandb")
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def _free_log_path(log_dir: Path, cell: Cell) -> Path:
    """<cell>.tryN.log with the first unused N: a resumed sweep keeps the earlier logs."""
    n = 1
    while (path := log_dir / f"{cell.name.replace('/', '__')}.try{n}.log").exists():
        n += 1
    return path


def _threads_per_worker(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def run_sweep(
    cells: list[Cell],
    overrides: Sequence[str] = (),
    results: str | Path | None = None,
    jobs: int = 1,
    retries: int = 1,
    wandb: bool = False,
    progress: bool = True,
    log_dir: Path | None = None,
) -> list[CellOutcome]:
    """Run `cells` (already filtered by `pending`) with `jobs` worker processes."""
    from zsbench.progress import progress as progress_bar
    from zsbench.results import results_dir

    if jobs < 1:
        raise ZsbenchError(f"--jobs must be >= 1, got {jobs}.")
    log_dir = Path(log_dir or results_dir(results) / "logs" / "sweep")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    threads = str(_threads_per_worker(jobs))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, ZSBENCH_THREADS=threads)
    queue = list(cells)
    attempts: dict[Cell, int] = {}
    running: dict[subprocess.Popen, tuple[Cell, float, Path]] = {}
    outcomes: list[CellOutcome] = []
    bar = progress_bar(total=len(cells), desc="sweep", unit="cell", enabled=progress)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop(0)
                attempts[cell] = attempts.get(cell, 0) + 1
                log = _free_log_path(log_dir, cell)
                with open(log, "w") as f:
                    proc = subprocess.Popen(
                        worker_command(cell, overrides, results, wandb),
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                running[proc] = (cell, time.perf_counter(), log)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                cell, start, log = running.pop(proc)
                rc = proc.returncode
                if rc in KILLED and attempts[cell] <= retries:
                    bar.write(f"worker of {cell.name} was killed (exit {rc}); retrying")
                    queue.append(cell)
                    continue
                status = "done" if rc == 0 else "failed"
                if rc == 0 and "Result exists, skipped" in log.read_text(errors="replace"):
                    status = "skipped"
                if status == "failed":
                    bar.write(f"FAILED {cell.name} (exit {rc}); log: {log}")
                outcomes.append(
                    CellOutcome(cell, status, time.perf_counter() - start, attempts[cell], str(log))
                )
                bar.update(1)
                bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes))
    finally:
        for proc in running:  # interrupted: stop the workers; their cells stay pending
            proc.terminate()
        for proc in running:
            proc.wait()
        bar.close()
    return outcomes


def summary_table(outcomes: list[CellOutcome], skipped: list[Cell]) -> str:
    import pandas as pd

    rows = [
        {"cell": c.name, "status": "skipped (result exists)", "seconds": "", "attempts": 0}
        for c in skipped
    ]
    rows += [
        {
            "cell": o.cell.name,
            "status": o.status if o.status != "failed" else f"FAILED: {o.log}",
            "seconds": f"{o.seconds:.0f}",
            "attempts": o.attempts,
        }
        for o in outcomes
    ]
    return pd.DataFrame(rows).to_markdown(index=False) if rows else "(no cells)"


def wandb_sweep_config(
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    results: str | Path | None = None,
) -> dict:
    """A W&B grid sweep whose agents run the same entry point (`zsbench bench --wandb`).

    W&B passes each grid point as `--method=... --dataset=... --seed=...` (`${args}`); a
    finished cell is skipped by `bench`, as in a local sweep. Agents need a W&B server.
    """
    command = ["${env}", "zsbench", "bench", "--wandb", "--no-progress", "--quiet"]
    if results is not None:
        command += ["--results-dir", str(results)]
    for o in overrides:
        command += ["--set", o]
    return {
        "name": "zsbench-sweep",
        "method": "grid",
        "metric": {"name": "test/mAP@all", "goal": "maximize"},
        "parameters": {
            "method": {"values": list(dict.fromkeys(methods))},
            "dataset": {"values": list(dict.fromkeys(datasets))},
            "seed": {"values": [int(s) for s in dict.fromkeys(seeds)]},
        },
        "command": [*command, "${args}"],
    }
