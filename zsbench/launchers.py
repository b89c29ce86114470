"""Launchers: where the cells of a sweep run, and the `zsbench sweep` command itself.

- `local` (default): `--jobs` worker processes on this machine (`zsbench.sweep.run_sweep`).
- `slurm`: one Slurm job array through submitit (`pip install "zsbench[cluster]"`), one array
  task per pending cell. A task runs its cell through `zsbench.sweep.run_cell`, i.e. the very
  `zsbench bench` command, per-result lock, result path and log a local worker has, so results
  of both launchers mix in one results folder and leaderboard, and rerunning the same sweep
  fills exactly the missing cells (failed, cancelled or never run). A task that hits its time
  limit or is preempted is requeued by submitit (its cell starts again).

Slurm parameters: `--slurm key=value` (repeatable) or `launcher.slurm` in a sweep file. Keys are
submitit's: the shared ones (`timeout_min`, `cpus_per_task`, `gpus_per_node`, `mem_gb`, `nodes`,
`tasks_per_node`, `name`) and the Slurm ones, with or without submitit's `slurm_` prefix
(`partition`, `qos`, `account`, `constraint`, `array_parallelism`, `setup`,
`additional_parameters`, ...). Each task gives its cell `cpus_per_task` torch threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zsbench.errors import ZsbenchError, did_you_mean
from zsbench.sweep import Cell, CellOutcome, run_cell, worker_env

# submitit's defaults (5 minutes, job name "submitit") do not suit a benchmark cell
SLURM_DEFAULTS = {"timeout_min": 24 * 60, "name": "zsbench-sweep", "cpus_per_task": 1}
POLL_S = 2.0


def slurm_parameters(options: dict[str, Any]) -> dict[str, Any]:
    """`--slurm` options -> `submitit.AutoExecutor.update_parameters` keywords.

    Shared submitit keys pass as they are; Slurm-only keys get the `slurm_` prefix; anything
    else fails with a did-you-mean over the keys submitit knows."""
    import submitit

    shared = submitit.AutoExecutor._valid_parameters()
    slurm_only = submitit.SlurmExecutor._valid_parameters() - shared
    out = {}
    for key, value in {**SLURM_DEFAULTS, **options}.items():
        bare = key.removeprefix("slurm_")
        if key in shared:
            out[key] = value
        elif bare in slurm_only:
            out[f"slurm_{bare}"] = value
        else:
            known = sorted(shared | slurm_only)
            raise ZsbenchError(
                f"--slurm {key}: not a submitit/Slurm parameter.{did_you_mean(bare, known)} "
                f"Known: {', '.join(known)}; other sbatch options go in "
                "additional_parameters={option: value}."
            )
    return out


def check_slurm(options: dict[str, Any]) -> None:
    """Fail early (before the grid is planned) when submitit or sbatch is missing or an option
    is misspelt."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ZsbenchError(
            "--launcher slurm needs submitit: pip install 'zsbench[cluster]' "
            "(or pip install submitit)."
        ) from None
    slurm_parameters(options)
    if shutil.which("sbatch") is None:
        raise ZsbenchError(
            "--launcher slurm needs Slurm's sbatch on PATH (run on a Slurm login node; "
            "tests/slurm/start.sh starts a one-node Slurm on this machine)."
        )


@dataclasses.dataclass
class SlurmCellTask:
    """What one Slurm array task runs: its cell, exactly as a local worker would run it."""

    overrides: tuple[str, ...]
    results: str
    wandb: bool
    log_dir: str
    retries: int
    sweep: dict
    cwd: str
    threads: int | None = None

    def __call__(self, cell: Cell) -> CellOutcome:
        threads = self.threads or int(
            os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0))
        )
        log_dir = Path(self.log_dir)
        rank = int(os.environ.get("SLURM_PROCID") or 0)
        if rank > 0:  # a multi-task (DDP) cell: each rank logs on its own
            log_dir = log_dir / f"rank{rank}"
            log_dir.mkdir(parents=True, exist_ok=True)
        env = worker_env(cell, threads, self.sweep)
        cwd = self.cwd if Path(self.cwd).is_dir() else None
        # only a worker the kernel killed (out of memory) is retried here: SIGTERM means Slurm
        # is stopping the task (scancel, time limit), and the task must stop with it
        outcome = run_cell(
            cell,
            self.overrides,
            self.results,
            self.wandb,
            log_dir,
            env,
            self.retries,
            cwd,
            killed={-9, 137},
        )
        if outcome.status == "failed":  # so that sacct and submitit call the task FAILED
            raise RuntimeError(f"zsbench bench failed for {cell.name}; log: {outcome.log}")
        return outcome

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit at the time limit or on preemption: requeue the same cell (it
        starts over; what is finished is on disk and is never redone)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _last_log(log_dir: Path, cell: Cell) -> str | None:
    logs = sorted(
        log_dir.glob(f"{cell.name.replace('/', '__')}.try*.log"), key=lambda p: p.stat().st_mtime
    )
    return str(logs[-1]) if logs else None


def submit_slurm(
    cells: list[Cell],
    overrides: Sequence[str],
    results: Path,
    options: dict[str, Any],
    retries: int = 1,
    wandb: bool = False,
    sweep: dict | None = None,
    log_dir: Path | None = None,
    threads: int | None = None,
) -> list:
    """Submit `cells` as one Slurm job array; returns submitit's jobs (one per cell)."""
    check_slurm(options)
    import submitit

    log_dir = Path(log_dir or results / "logs" / "sweep")
    log_dir.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=log_dir / "slurm" / "%j", cluster="slurm")
    executor.update_parameters(**slurm_parameters(options))
    task = SlurmCellTask(
        tuple(overrides),
        str(results),
        wandb,
        str(log_dir),
        retries,
        dict(sweep or {}),
        os.getcwd(),
        threads,
    )
    try:
        return executor.map_array(task, cells)
    except Exception as err:  # sbatch refused (partition, limits, ...): say what it said
        if isinstance(err, ZsbenchError):
            raise
        raise ZsbenchError(f"Slurm refused the job array: {err}") from err


def wait_slurm(jobs: list, cells: list[Cell], log_dir: Path, progress: bool = True):
    """Wait for every array task; one CellOutcome per cell (Slurm state in the failures)."""
    import submitit

    from zsbench.progress import progress as progress_bar

    waiting = dict(zip(jobs, cells))
    start = time.perf_counter()
    outcomes: list[CellOutcome] = []
    bar = progress_bar(total=len(jobs), desc="slurm", unit="cell", enabled=progress)
    try:
        while waiting:
            time.sleep(POLL_S)
            for job in [j for j in waiting if j.done()]:
                cell = waiting.pop(job)
                try:  # the task's own return value (Slurm's state may still say RUNNING);
                    outcome = job.results()[0]  # a multi-task (DDP) cell: rank 0's
                except Exception as err:  # the task failed, or Slurm ended it (scancel, limit)
                    state = job.state
                    if state in ("RUNNING", "COMPLETING", "UNKNOWN"):
                        state = (
                            "FAILED"
                            if isinstance(err, submitit.core.utils.FailedJobError)
                            else state
                        )
                    log = _last_log(log_dir, cell) or str(job.paths.stderr)
                    outcome = CellOutcome(
                        cell, "failed", time.perf_counter() - start, 0, log, slurm_state=state
                    )
                    bar.write(f"FAILED {cell.name} (Slurm task {job.job_id}: {state}); log: {log}")
                outcomes.append(outcome)
                bar.update(1)
                bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes))
    except KeyboardInterrupt:
        array = jobs[0].job_id.split("_")[0]
        bar.write(
            f"Stopped waiting; Slurm job array {array} keeps running (scancel {array} stops "
            "it). Rerun the same sweep to wait for it again and fill what is missing."
        )
        raise
    finally:
        bar.close()
    return outcomes


def sweep_main(args: argparse.Namespace) -> int:
    """`zsbench sweep`: plan the grid, run what is missing with the launcher, print the board."""
    import yaml

    from zsbench.leaderboard import format_table, update_leaderboard
    from zsbench.results import results_dir
    from zsbench.sweep import (
        expand_grid,
        parse_shard,
        pending,
        run_sweep,
        shard,
        summary_table,
        wandb_sweep_config,
    )
    from zsbench.sweepfile import spec_from_args

    spec = spec_from_args(args)
    if spec.launcher == "slurm" and not args.emit_wandb:
        check_slurm(spec.slurm)
    if args.emit_wandb:
        scoped = any(":" in o.split("=", 1)[0] for o in spec.overrides)
        if scoped or any("@" in d for d in spec.datasets):
            raise ZsbenchError(
                "--emit-wandb: a W&B grid sweep applies the same overrides to every cell; "
                "scoped overrides (METHOD:...) and dataset variants (NAME@variant) cannot be "
                "expressed. Run it with --launcher local or slurm instead."
            )
        cfg = wandb_sweep_config(
            spec.methods, spec.datasets, spec.seeds, spec.overrides, args.results_dir
        )
        Path(args.emit_wandb).write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(f"Wrote {args.emit_wandb}: `wandb sweep {args.emit_wandb}`, then `wandb agent ID`.")
        return 0
    cells, notes = expand_grid(
        spec.methods, spec.datasets, spec.seeds, spec.overrides, known_labels=spec.labels
    )
    for note in notes:
        print(f"note: {note}")
    i, n = parse_shard(args.shard)
    cells = shard(cells, i, n)
    # absolute, so that a worker anywhere (another directory, a Slurm node) writes the same files
    results = results_dir(args.results_dir).resolve()
    running: list[Cell] = []
    todo, done = pending(cells, (), results, running)
    where = f"{spec.jobs} local worker(s)" if spec.launcher == "local" else "a Slurm job array"
    print(
        f"sweep: {len(cells)} cells{f' (shard {i}/{n})' if n > 1 else ''}, "
        f"{len(done)} done already, "
        + (f"{len(running)} running elsewhere (locked, left out), " if running else "")
        + f"{len(todo)} to run with {where}"
        + (f"; sweep file {spec.file} (sha256 {spec.sha256[:12]})" if spec.file else "")
    )
    sweep = spec.record()
    if spec.launcher == "local":
        outcomes = run_sweep(
            todo,
            (),
            results,
            jobs=spec.jobs,
            retries=spec.retries,
            wandb=args.wandb,
            progress=not args.no_progress,
            sweep=sweep,
            threads=spec.threads,
        )
    elif not todo:
        outcomes = []
    else:
        log_dir = results / "logs" / "sweep"
        jobs = submit_slurm(todo, (), results, spec.slurm, spec.retries, args.wandb, sweep, log_dir)
        array = jobs[0].job_id.split("_")[0]
        what = f"job array {array} ({len(jobs)} tasks)" if len(jobs) > 1 else f"job {array}"
        print(f"Submitted Slurm {what}; logs: {log_dir}")  # submitit sends 1 cell as a plain job
        if args.no_wait:
            print("Not waiting (--no-wait). Rerun the same sweep later: it fills what is missing.")
            return 0
        outcomes = wait_slurm(jobs, todo, log_dir, progress=not args.no_progress)
    print(summary_table(outcomes, done))
    df = update_leaderboard(results)
    print()
    print(format_table(df))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"\n{len(failed)} cell(s) failed; rerun the same command to retry them.")
        return 1
    return 0


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `zsbench sweep` (the caller adds --results-dir)."""
    p.add_argument("--config", metavar="FILE", help="a sweep file (sweeps/<name>.yaml)")
    p.add_argument("--methods", nargs="+", help="names, or 'all' (required without --config)")
    p.add_argument("--datasets", nargs="+", help="names or name@variant (default: synthetic)")
    p.add_argument("--seeds", nargs="+", type=int, help="default: 0")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[SCOPE:]SECTION.KEY=VALUE",
        help="for every cell, or scoped to a method's or dataset's cells: drcpl:model.clip=tiny",
    )
    p.add_argument("--launcher", choices=["local", "slurm"], help="where cells run (default local)")
    p.add_argument("--jobs", type=int, help="local worker processes (threads are split); default 1")
    p.add_argument(
        "--threads", type=int, help="torch threads per cell (default: cores / jobs; Slurm: cpus)"
    )
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="submitit/Slurm parameter for --launcher slurm (timeout_min=120, partition=gpu, ...)",
    )
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and exit")
    p.add_argument("--shard", default=None, metavar="i/n", help="run every n-th cell from i")
    p.add_argument("--retries", type=int, help="reruns of a cell whose worker died (default 1)")
    p.add_argument("--wandb", action="store_true", help="each run logs to W&B")
    p.add_argument(
        "--emit-wandb", metavar="FILE", default=None, help="write a W&B sweep YAML and exit"
    )
    p.add_argument("--no-progress", action="store_true")
