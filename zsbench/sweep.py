"""Sweeps: a grid of (method, dataset, seed) cells run by worker processes, resumable.

Each cell is one `zsbench bench` run in its own process, so a crashed or killed worker loses
only its cell: the cell is retried (`retries`), every other result is already on disk. A
restarted sweep plans the grid again and skips every cell whose result exists; `bench` holds a
per-result file lock, so two processes never run one cell at the same time. `--shard i/n` keeps
every n-th cell (from i, in a fixed order), so n machines sharing a results folder split a grid.

Where a cell runs is the launcher's business (`zsbench.launchers`: local worker processes here,
or one Slurm job array); every launcher runs a cell through `start_worker` (the same
`zsbench bench` command, log and environment), so results of all launchers mix.

Overrides may be scoped: `drcpl:model.clip=tiny` applies to drcpl's cells only,
`sketchy21-mini:dataset.n_unseen=8` to one dataset's. A dataset may appear more than once as
named variants, `sketchy21-mini@s1` (the dataset `sketchy21-mini`, labelled `s1` in the sweep),
each with its own scoped overrides (`sketchy21-mini@s1:dataset.split_seed=1`). Overrides apply
in the order given, later ones winning, as in `zsbench bench`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from zsbench.errors import ZsbenchError, did_you_mean
from zsbench.registry import DATASETS, METHODS

# exit statuses of a worker that was killed rather than failed: its cell is worth retrying
KILLED = {-9, -15, 137, 143}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One `zsbench bench` run. `label`: the dataset's name in the sweep when it is a variant
    (`sketchy21-mini@s1`); `overrides`: this cell's own `--set` list, scopes resolved."""

    method: str
    dataset: str
    seed: int
    label: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.method}/{self.label or self.dataset}/seed{self.seed}"


@dataclasses.dataclass
class CellOutcome:
    cell: Cell
    status: str  # "done", "skipped" (result existed), "failed"
    seconds: float = 0.0
    attempts: int = 0
    log: str | None = None
    slurm_state: str | None = None  # a Slurm array task that did not complete: its state


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


def dataset_of(label: str) -> str:
    """The registered dataset of a dataset label: `sketchy21-mini@s1` -> `sketchy21-mini`."""
    return label.split("@", 1)[0]


def split_scope(text: str) -> tuple[str | None, str]:
    """`drcpl:model.clip=tiny` -> ('drcpl', 'model.clip=tiny'); an unscoped override -> (None, it).
    Only a colon before the `=` is a scope (values may hold colons: paths, URLs)."""
    key = text.split("=", 1)[0]
    if ":" not in key:
        return None, text
    scope, rest = text.split(":", 1)
    if not scope or not rest:
        raise ZsbenchError(f"--set {text!r}: a scoped override looks like NAME:section.key=value.")
    return scope, rest


def check_scopes(overrides: Sequence[str], labels: Sequence[str] = ()) -> None:
    """Every scope names a registered method, a registered dataset or one of `labels` (the
    sweep's dataset variants); anything else fails with a did-you-mean."""
    known = {*METHODS.names(), *DATASETS.names(), *labels}
    for text in overrides:
        scope, _ = split_scope(text)
        if scope is not None and scope not in known:
            raise ZsbenchError(
                f"--set {text}: {scope!r} is neither a method nor a dataset (nor a dataset "
                f"variant of this sweep).{did_you_mean(scope, known)} A scoped override looks "
                "like METHOD:section.key=value or DATASET:section.key=value."
            )


def cell_overrides(method: str, label: str, overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that apply to (method, dataset label), scopes stripped, in their order."""
    scopes = {None, method, label, dataset_of(label)}
    out = []
    for text in overrides:
        scope, rest = split_scope(text)
        if scope in scopes:
            out.append(rest)
    return tuple(out)


def expand_grid(
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    known_labels: Sequence[str] = (),
) -> tuple[list[Cell], list[str]]:
    """Every compatible (method, dataset, seed) in a fixed order, and notes on skipped pairs.

    `datasets` are names or variant labels (`name@variant`); `overrides` (scoped or not) are
    resolved per cell into `Cell.overrides`; a scope may also name one of `known_labels` (the
    variants a sweep file declares but this grid leaves out). Unknown names and scopes fail
    with a did-you-mean;
    a method whose task differs from a dataset's (an SBIR method on a CIR dataset) is left out
    with a note, not an error.
    """
    if not methods or not datasets or not seeds:
        raise ZsbenchError("A sweep needs at least one method, one dataset and one seed.")
    labels = list(dict.fromkeys(datasets))
    check_scopes(overrides, [*labels, *known_labels])
    cells, notes = [], []
    for label in labels:
        d = dataset_of(label)
        task = DATASETS.info(d).task  # read from the source: no plug-in imported
        for m in dict.fromkeys(methods):
            m_task = METHODS.info(m).task
            if m_task != task:
                notes.append(f"{m} ({m_task}) does not run on {label} ({task}): left out")
                continue
            extra = cell_overrides(m, label, overrides)
            cells.extend(
                Cell(m, d, int(s), label if label != d else None, extra)
                for s in dict.fromkeys(seeds)
            )
    return cells, notes


def shard(cells: list[Cell], index: int, count: int) -> list[Cell]:
    return cells[index::count]


def pending(
    cells: list[Cell],
    overrides: Sequence[str],
    results: str | Path | None,
    running: list[Cell] | None = None,
) -> tuple[list[Cell], list[Cell]]:
    """(cells to run, cells whose result exists), planned as `bench` would (same paths).

    With a `running` list, cells whose result lock another process holds right now (a worker
    of an earlier sweep still at it, on this or another machine) go there instead of `todo`.
    """
    from filelock import FileLock, Timeout

    from zsbench.runner import plan_run

    todo, done, cache = [], [], {}
    for cell in cells:
        plan = plan_run(
            cell.method, cell.dataset, cell.seed, cell_args(cell, overrides), results, cache
        )
        if plan.path.exists():
            done.append(cell)
            continue
        if running is not None:
            lock = FileLock(str(plan.path.with_name(f".{plan.path.name}.lock")))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                running.append(cell)
                continue
            lock.release()
        todo.append(cell)
    return todo, done


def cell_args(cell: Cell, overrides: Sequence[str] = ()) -> list[str]:
    """A cell's `--set` list: the sweep-wide `overrides`, then the cell's own."""
    return [*overrides, *cell.overrides]


def worker_command(
    cell: Cell, overrides: Sequence[str], results: str | Path | None, wandb: bool
) -> list[str]:
    # -P: the worker's current folder is not put on sys.path, so a folder there named zsbench
    # (the parent of a clone, holding zsbench/results/) cannot shadow the installed package
    cmd = [sys.executable, "-P", "-m", "zsbench.cli", "bench", "--method", cell.method]
    cmd += ["--dataset", cell.dataset, "--seed", str(cell.seed), "--no-progress", "--quiet"]
    if results is not None:
        cmd += ["--results-dir", str(results)]
    if wandb:
        cmd.append("--wandb")
    for o in cell_args(cell, overrides):
        cmd += ["--set", o]
    return cmd


def worker_env(
    cell: Cell, threads: int, sweep: dict | None = None, base: dict | None = None
) -> dict[str, str]:
    """A worker's environment: `base` (default: this process's), `threads` torch/BLAS threads,
    and ZSBENCH_SWEEP (which sweep and cell; `zsbench.provenance` records it in the result)."""
    env = dict(os.environ if base is None else base)
    n = str(max(1, int(threads)))
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, ZSBENCH_THREADS=n)
    env["ZSBENCH_SWEEP"] = json.dumps({**(sweep or {}), "cell": cell.name}, sort_keys=True)
    return env


def start_worker(
    cell: Cell,
    overrides: Sequence[str],
    results: str | Path | None,
    wandb: bool,
    log_dir: Path,
    env: dict[str, str],
    cwd: str | None = None,
) -> tuple[subprocess.Popen, Path]:
    """Start the worker process of `cell` (its output to a fresh log); every launcher runs a
    cell through here."""
    log = _free_log_path(Path(log_dir), cell)
    env = {**env, STATUS_ENV: str(status_path(log))}  # where the worker says how it ended
    with open(log, "w") as f:
        proc = subprocess.Popen(
            worker_command(cell, overrides, results, wandb),
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    return proc, log


# `zsbench bench` writes {"status": "done" | "skipped", "result": path} to the file this
# variable names (write_cell_status), so the sweep never reads the worker's log
STATUS_ENV = "ZSBENCH_STATUS_FILE"


def write_cell_status(status: str, result: Path) -> None:
    """Tell the sweep that started this bench run how it ended: {"status", "result"} written
    atomically to the file $ZSBENCH_STATUS_FILE names (read by `cell_status`); nothing when the
    run was not started by a sweep."""
    target = os.environ.get(STATUS_ENV)
    if target:
        from zsbench.results import write_json_atomic

        write_json_atomic(Path(target), {"status": status, "result": str(result)})


def status_path(log: Path) -> Path:
    """The status file of the worker attempt that writes `log` (`<cell>.tryN.status.json`)."""
    return Path(log).with_suffix(".status.json")


def cell_status(returncode: int, log: Path) -> str:
    """'done', 'skipped' (the result existed when the worker got the lock) or 'failed': the
    exit code, then the status file the worker wrote. A worker that exited 0 without writing
    one did not finish a run (it was not a bench worker, or died in a way that hid it)."""
    if returncode != 0:
        return "failed"
    try:
        status = json.loads(status_path(log).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return "failed"
    return status if status in ("done", "skipped") else "failed"


def run_cell(
    cell: Cell,
    overrides: Sequence[str],
    results: str | Path | None,
    wandb: bool,
    log_dir: Path,
    env: dict[str, str],
    retries: int = 1,
    cwd: str | None = None,
    killed: frozenset[int] | set[int] = KILLED,
) -> CellOutcome:
    """Run one cell to its end in this process's place (what a Slurm array task does); a worker
    that exits with a status in `killed` is started again up to `retries` times, as in
    `run_sweep`."""
    start, attempts = time.perf_counter(), 0
    while True:
        attempts += 1
        proc, log = start_worker(cell, overrides, results, wandb, log_dir, env, cwd)
        try:
            rc = proc.wait()
        except BaseException:  # interrupted (a signal handler raised): stop the worker
            proc.terminate()
            proc.wait()
            raise
        if rc in killed and attempts <= retries:
            continue
        status = cell_status(rc, log)
        return CellOutcome(cell, status, time.perf_counter() - start, attempts, str(log))


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
    sweep: dict | None = None,
    threads: int | None = None,
) -> list[CellOutcome]:
    """Run `cells` (already filtered by `pending`) with `jobs` worker processes on this machine,
    each with `threads` torch threads (default: the cores split between the workers).
    `sweep`: what the results record of the sweep (`worker_env`)."""
    from zsbench.progress import progress as progress_bar
    from zsbench.results import results_dir

    if jobs < 1:
        raise ZsbenchError(f"--jobs must be >= 1, got {jobs}.")
    log_dir = Path(log_dir or results_dir(results) / "logs" / "sweep")
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = threads or _threads_per_worker(jobs)
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
                env = worker_env(cell, threads, sweep)
                proc, log = start_worker(cell, overrides, results, wandb, log_dir, env)
                running[proc] = (cell, time.perf_counter(), log)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                cell, start, log = running.pop(proc)
                rc = proc.returncode
                if rc in KILLED and attempts[cell] <= retries:
                    bar.write(f"worker of {cell.name} was killed (exit {rc}); retrying")
                    queue.append(cell)
                    continue
                status = cell_status(rc, log)
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
            "status": o.status
            if o.status != "failed"
            else f"FAILED{f' ({o.slurm_state})' if o.slurm_state else ''}: {o.log}",
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
