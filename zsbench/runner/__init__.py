"""One benchmark run: train a method on seen classes, evaluate on unseen, write the result.

`bench()` is what `zsbench bench` and `make bench` call. Its steps, in order: resolve the config,
set up the data (seen/unseen split), skip if the result exists, seed, extract or reuse backbone
features, build the method, train it on seen classes (Lightning), embed unseen queries and
gallery, score them with `zsbench.evaluation`, write one result JSON atomically and rebuild the
leaderboard.

Modules: `common` (the lifecycle both tasks share: plan, seeding, trainer, loggers, the result
record and its publication), `sbir` and `cir` (each task's training, embedding and scoring).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from filelock import FileLock

from zsbench.errors import ZsbenchError
from zsbench.evaluation import tie_warning
from zsbench.identity import Identity, resolve_identity
from zsbench.registry import DATASETS, METHODS
from zsbench.results import result_path, results_dir
from zsbench.runner.cir import CIR
from zsbench.runner.common import (
    BenchOutcome,
    RunPlan,
    TrainedRun,
    _launched_rank,
    _move_other_config,
    run_task,
    split_label,
)
from zsbench.runner.sbir import SBIR, embed_partition, train_sbir

__all__ = [
    "BenchOutcome",
    "Identity",
    "RunPlan",
    "TrainedRun",
    "bench",
    "describe_config",
    "embed_partition",
    "plan_run",
    "resolve_identity",
    "summarize",
    "train_sbir",
]


def bench(
    method: str,
    dataset: str,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    results: str | Path | None = None,
    overwrite: bool = False,
    wandb: bool = False,
    progress: bool = True,
    tag: str | None = None,
    save_weights: bool = False,
    eval_only: bool = False,
    weights: str | Path | None = None,
) -> BenchOutcome:
    """Run `method` on `dataset` with `seed`; see the module docstring. `tag` names the
    variant instead of the hash of its config differences (zsbench.identity). `save_weights`
    (= trainer.enable_checkpointing=true) keeps the trained weights and an every-epoch
    checkpoint that a rerun resumes from; `eval_only` scores saved weights (`weights`, default
    the result's own `seed<N>.weights.pt`) without training (zsbench.checkpoints)."""
    if seed is None or int(seed) < 0:
        raise ZsbenchError(f"seed must be a non-negative integer, got {seed!r}.")
    if weights is not None and not eval_only:
        raise ZsbenchError("--weights names the weights --eval-only scores; add --eval-only.")
    seed = int(seed)
    t_start = time.perf_counter()
    if save_weights:
        overrides = [*overrides, "trainer.enable_checkpointing=true"]
    plan = plan_run(method, dataset, seed, overrides, results, tag=tag, overwrite=overwrite)
    if eval_only:
        if not plan.meta.trains:
            raise ZsbenchError(
                f"{method} does not train: there are no weights to load; run it without "
                f"--eval-only."
            )
        plan.eval_only, plan.weights = True, Path(weights) if weights else None
    if _launched_rank() != 0:  # a DDP worker process Lightning started: rank 0 holds the lock
        return _run(plan, method, dataset, seed, wandb, progress, t_start)
    # one run per result at a time: a second process (another sweep worker, a restarted sweep
    # while an orphaned worker finishes) waits here, then finds the result and skips
    with FileLock(str(plan.path.with_name(f".{plan.path.name}.lock"))):
        if plan.path.exists() and not overwrite:
            return BenchOutcome(plan.path, skipped=True)
        return _run(plan, method, dataset, seed, wandb, progress, t_start)


def plan_run(
    method: str,
    dataset: str,
    seed: int,
    overrides: list[str] | tuple[str, ...] = (),
    results: str | Path | None = None,
    dm_cache: dict | None = None,
    tag: str | None = None,
    overwrite: bool = False,
) -> RunPlan:
    """Resolve the config, its variant and the split of one cell. `dm_cache`: a dict the caller
    keeps to set up each distinct dataset config once (the sweep plans many cells of one
    dataset). A result already at the cell's path that was run with another config (older
    defaults, a result written before variants existed) moves to its own variant's path."""
    ident = resolve_identity(method, dataset, overrides, tag)
    cfg = ident.cfg
    _check_specs(cfg)
    method_cls, dataset_cls = METHODS.get(method), DATASETS.get(dataset)
    meta = method_cls.metadata
    if meta.task != "sbir" and cfg["eval"].get("also_specs"):
        raise ZsbenchError(
            "eval.also_specs is for SBIR runs; a CIR dataset has one metric protocol."
        )
    if meta.task != "sbir" and cfg["eval"]["spec"] != "default":
        raise ZsbenchError(
            f"eval.spec={cfg['eval']['spec']!r} is an SBIR spec; a CIR run is scored with its "
            "dataset's protocol (zsbench.metrics.cir_specs): leave eval.spec out."
        )
    if cfg["eval"].get("untrained") and not meta.trains:
        raise ZsbenchError(
            f"{method} does not train: eval.untrained is for methods that train (its result is "
            "already an untrained one)."
        )
    protocol = (cfg["eval"]["protocol"], cfg["eval"]["generalized_fraction"])
    if meta.task != "sbir" and protocol[0] != "zero-shot":
        raise ZsbenchError("eval.protocol=generalized is for SBIR runs (generalized ZS-SBIR).")
    root = results_dir(results)
    key = (dataset, json.dumps(cfg["dataset"], sort_keys=True, default=str), protocol)
    dm = (dm_cache or {}).get(key)
    if dm is None:
        dm = dataset_cls(**cfg["dataset"])
        if meta.task == "sbir":
            dm.set_protocol(*protocol)
        dm.setup()
        if dm_cache is not None:
            dm_cache[key] = dm
    cell = (root, meta.task, dataset, split_label(dm), method, int(seed))
    path = result_path(*cell, ident.variant)
    if path.exists():
        _move_other_config(path, ident, cell, tagged=tag is not None, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    return RunPlan(meta, method_cls, cfg, dm, path, root, ident.variant, ident.diff, ident,
                   overwrite=overwrite)  # fmt: skip


def _check_specs(cfg: dict) -> None:
    """eval.spec and eval.also_specs name registered SBIR specs (before any data is read)."""
    also = cfg["eval"].get("also_specs") or []
    if isinstance(also, str):
        also = cfg["eval"]["also_specs"] = [x.strip() for x in also.split(",") if x.strip()]
    if not also:
        return
    from zsbench.metrics import get_spec

    for name in also:
        get_spec(name)


def summarize(record: dict) -> str:
    """Two lines for the terminal: main metrics and the chance level beside them."""
    from zsbench.leaderboard import metric_order

    m, c = record["metrics"], record.get("chance", {})
    if record.get("task") == "cir":  # FashionIQ: the category means, not each category
        keys = [k for k in metric_order(set(m)) if "/" not in k or k.startswith("mean/")][:6]
    else:
        keys = [k for k in ("mAP@all", "P@100", "mAP@200", "P@200") if k in m]
    main = "  ".join(f"{k}={m[k]:.4f}" for k in keys)
    chance = "  ".join(f"{k}={c[k]:.4f}" for k in keys if k in c)
    text = (
        f"{record['method']} on {record['dataset']}/{record['split']} seed {record['seed']}: "
        f"{main}\n  random ranking (expected): {chance}"
    )
    note = tie_warning(record.get("tie_fraction", 0.0), record["spec"].get("ties", "expected"))
    return text + (f"\n  warning: {note}" if note else "")


def describe_config(record: dict) -> str:
    return json.dumps(record["config"], indent=2, default=str)


def _run(
    plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool, progress: bool, t_start
) -> BenchOutcome:
    task = CIR if plan.meta.task == "cir" else SBIR
    return run_task(task, plan, method, dataset, seed, wandb, progress, t_start)
