"""The run lifecycle both tasks share: the plan of a cell, devices and DDP ranks, the seeded
method, Lightning trainer and loggers, the result record and its publication (result JSON,
W&B summary, leaderboard)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from zsbench.config import RUNNER_ONLY_TRAINER_KEYS
from zsbench.errors import ZsbenchError
from zsbench.identity import Identity, config_diff, variant_name
from zsbench.leaderboard import update_leaderboard
from zsbench.progress import lightning_progress
from zsbench.provenance import provenance
from zsbench.results import SCHEMA_VERSION, extras_path, result_path, write_json_atomic


@dataclasses.dataclass
class BenchOutcome:
    path: Path
    skipped: bool
    record: dict | None = None


@dataclasses.dataclass
class TrainedRun:
    """A method trained (or loaded) on a plan, with what its result records about that."""

    model: object
    device: torch.device
    timings: dict
    backbone: dict | None
    side_info: dict | None
    loggers: list
    fit_fields: dict = dataclasses.field(default_factory=dict)  # weights, resumption, sizes


@dataclasses.dataclass
class Scored:
    """A task's evaluation of a trained run: what goes into its result record and extras,
    and `after(record)`, what is written once the result is out (per-query scores, ...)."""

    ev: dict  # metrics, spec, n_queries, n_gallery, n_queries_without_positive
    chance: dict
    fields: dict  # the task's own record fields (per_class, per_group, leakage, ...)
    extras: dict | None = None
    after: Callable[[dict], None] | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """What differs between ZS-SBIR and ZS-CIR runs; `run_task` is the lifecycle they share.
    `train(plan, method, dataset, seed, wandb, progress) -> TrainedRun` sets up the data, the
    seeded model and fits it; `score(plan, run, seed, t_start) -> Scored | None` embeds, evaluates
    and makes the artefacts (None on a DDP rank that does not write)."""

    name: str
    train: Callable[..., TrainedRun]
    score: Callable[..., Scored | None]


def run_task(
    task: Task, plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool, progress: bool,
    t_start: float,
) -> BenchOutcome:  # fmt: skip
    """The one run lifecycle: train (or load), score, build the record, publish it with its
    extras, then what the task writes after the result."""
    run = task.train(plan, method, dataset, seed, wandb, progress)
    scored = task.score(plan, run, seed, t_start)
    if scored is None:  # DDP: rank 0 scores and writes; the others are done
        return BenchOutcome(plan.path, skipped=False, record=None)
    record = build_record(
        plan,
        method,
        dataset,
        seed,
        ev=scored.ev,
        chance=scored.chance,
        device=run.device,
        backbone=run.backbone,
        timings=run.timings,
        loggers=run.loggers,
        **scored.fields,
        **run.fit_fields,
    )
    outcome = publish(plan.path, record, run.loggers, plan.root, extras=scored.extras)
    if scored.after is not None:
        scored.after(record)
    return outcome


@dataclasses.dataclass
class RunPlan:
    """What a run will do and where its result goes (config resolved, data set up)."""

    meta: object
    method_cls: type
    cfg: dict
    dm: object
    path: Path
    root: Path
    variant: str = "default"  # zsbench.identity: which config of the cell this is
    config_diff: dict = dataclasses.field(default_factory=dict)
    identity: object = None  # zsbench.identity.Identity (None in hand-made plans)
    overwrite: bool = False  # --overwrite: train again, never resume an old checkpoint
    eval_only: bool = False  # --eval-only: load saved weights (zsbench.checkpoints), no fit
    weights: Path | None = None  # --weights: that file instead of the result's own

    def run_name(self, dataset: str, method: str) -> str:
        """The log and W&B name: the result's path parts."""
        name = f"{self.meta.task}/{dataset}/{split_label(self.dm)}/{method}"
        return name if self.variant == "default" else f"{name}/{self.variant}"


def run_status(cfg: dict) -> str:
    """`fast_dev_run` (a smoke test, never ranked), `untrained` (scored at the initial weights
    on purpose, eval.untrained; ranked as `<method> [untrained]`) or `ok`."""
    if cfg["trainer"]["fast_dev_run"]:
        return "fast_dev_run"
    return "untrained" if cfg["eval"].get("untrained") else "ok"


def split_label(dm) -> str:
    """The split a result is filed and ranked under (SBIR datamodules append the protocol)."""
    return getattr(dm, "split_label", None) or dm.split.name


def wandb_requested(flag: bool) -> bool:
    """--wandb, or WANDB_MODE set in the environment (e.g. WANDB_MODE=offline)."""
    return flag or bool(os.environ.get("WANDB_MODE"))


def _device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _loggers(root: Path, name: str, seed: int, cfg: dict, use_wandb: bool) -> list:
    from lightning.pytorch.loggers import CSVLogger

    # one log folder per attempt: an --overwrite run never deletes the curves of the result
    # it may or may not replace
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    loggers = [CSVLogger(save_dir=str(root / "logs"), name=name, version=f"seed{seed}-{stamp}")]
    if use_wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(
            WandbLogger(
                project=os.environ.get("WANDB_PROJECT", "zsbench"),
                name=f"{name.replace('/', '-')}-seed{seed}",
                save_dir=str(root),
                config=cfg,
            )
        )
    return loggers


class _DropAdverts(logging.Filter):
    """Lightning's "💡 Tip: ... litlogger" line, printed by every Trainer: advertising."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Drop three messages every run printed that say nothing about the run: Lightning's
    litlogger advert, its `LeafSpec` deprecation warning (Lightning's own code calls the
    deprecated torch API) and its `srun` hint. Only these; every other warning stays."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in log.filters):
        log.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Lightning hints at `srun` whenever Slurm is installed; inside a Slurm job it is not shown,
    # and outside one the hint is noise (multi-node runs: README, "More than one machine")
    warnings.filterwarnings("ignore", message="The `srun` command is available")


# Trainer arguments whose None means "all of it" and whose explicit 1.0 only adds a line saying so
_FRACTION_KEYS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "val_check_interval",
)


def _trainer(
    tcfg: dict,
    loggers: list,
    progress: bool,
    checkpoint_for: Path | None = None,
    resuming: bool = False,
    cfg: dict | None = None,
) -> L.Trainer:
    """`checkpoint_for`: the result path whose `seed<N>.ckpt/` gets a checkpoint every epoch
    (zsbench.checkpoints); `resuming`: no sanity-check validation (it would draw from the
    RNGs the checkpoint restored)."""
    bar, callbacks = lightning_progress(progress)  # a bar on a TTY, whole lines in a log
    quiet_lightning()
    passed = {k: v for k, v in tcfg.items() if k not in RUNNER_ONLY_TRAINER_KEYS}
    for key in _FRACTION_KEYS:  # 1.0 is what Lightning does when unset, minus its info line
        if isinstance(passed.get(key), float) and passed[key] == 1.0:
            passed[key] = None
    if checkpoint_for is not None:
        from zsbench.checkpoints import RngState, model_checkpoint

        callbacks = [*callbacks, model_checkpoint(checkpoint_for), RngState(cfg)]
    if resuming:
        passed["num_sanity_val_steps"] = 0
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not")
    return L.Trainer(
        **passed,  # every trainer.* key but the runner's (zsbench.config.trainer_section)
        logger=loggers,
        enable_checkpointing=checkpoint_for is not None,
        enable_progress_bar=bar,
        callbacks=callbacks,
        enable_model_summary=False,
    )


def fit_method(plan: RunPlan, model, method: str, loggers: list, progress: bool, **fit_kwargs):
    """Train `model` on the plan's data (`fit_kwargs` go to `Trainer.fit`), resuming from the
    checkpoint an interrupted run of the same result left; or, with --eval-only, load the saved
    weights instead. Returns the result record's fields about weights and resumption."""
    from zsbench import checkpoints as ck

    tcfg = plan.cfg["trainer"]
    if plan.cfg["eval"].get("untrained"):
        print(f"eval.untrained=true: scoring {method} at its initial weights, no training")
        return {"untrained": True}
    if plan.eval_only:
        path = Path(plan.weights) if plan.weights else ck.weights_path(plan.path)
        blob = ck.read_weights(path, method)
        ck.load_weights(model, blob, path, plan.cfg["model"])
        print(f"--eval-only: scoring the weights in {path} ({blob['epochs']} epochs), no training")
        return {"weights": {"loaded_from": str(path), "epochs": blob["epochs"]}, "eval_only": True}
    keep = bool(tcfg.get("enable_checkpointing"))
    last = ck.resume_point(plan.path) if keep and not plan.overwrite else None
    done = ck.checkpoint_epochs(last, plan.cfg) if last else None
    if done is None:
        last = None
    else:
        print(f"resuming from {last}: {done} epoch(s) done before the run was interrupted")
    trainer = _trainer(tcfg, loggers, progress, plan.path if keep else None, last is not None,
                       plan.cfg)  # fmt: skip
    # the checkpoint is this run's own (RNG states are numpy/Python objects): not weights-only
    trainer.fit(model, ckpt_path=str(last) if last else None, weights_only=False, **fit_kwargs)
    if trainer.global_step == 0:
        raise ZsbenchError(
            f"{method} took no optimizer step (an empty training loader, or "
            f"trainer.limit_train_batches too small for it): its result would be an untrained "
            f"model's, so none is written. Check the training data and trainer.* settings (or "
            f"--set eval.untrained=true to score it untrained on purpose)."
        )
    fields: dict = {"resumed_from_epoch": done if last else None}
    if keep and trainer.global_rank == 0:
        epochs = int(trainer.current_epoch)
        info = ck.save_weights(model, ck.weights_path(plan.path), method, plan.cfg, plan.variant,
                               epochs)  # fmt: skip
        fields["weights"] = info
    return fields


def _launched_rank() -> int:
    """Global rank of this process when Lightning (or SLURM/torchrun) launched it, else 0."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _prepare_run(dm, tcfg: dict) -> torch.device:
    """Loader sizes from the trainer config; returns the device to use."""
    # trainer.batch_size is the global batch: each of N DDP processes loads batch_size / N
    dm.batch_size = max(1, tcfg["batch_size"] // _planned_world_size(tcfg))
    dm.eval_batch_size = tcfg["eval_batch_size"]
    dm.num_workers = tcfg["num_workers"]
    return _device(tcfg["accelerator"])


def _seeded_model(method_cls, seed: int, **kwargs):
    """The method built right after seeding: whatever ran before (feature extraction on a
    cache miss draws from the global RNG through its DataLoader) cannot change the result."""
    L.seed_everything(seed, workers=True, verbose=False)
    return method_cls(**kwargs)


def _planned_world_size(tcfg: dict) -> int:
    """Processes a DDP run will start (devices x nodes) when that is known up front, else 1."""
    devices = tcfg["devices"]
    if "ddp" not in str(tcfg["strategy"]):
        return 1
    n = len(devices) if isinstance(devices, (list, tuple)) else devices
    return int(n) * int(tcfg["num_nodes"]) if isinstance(n, int) and n > 0 else 1


def predict_trainer_args(tcfg: dict | None) -> dict | None:
    """The Trainer arguments that embed on every rank of the run's process group (None when
    there is none: one process on the model's device, zsbench.embedding)."""
    if tcfg is None or _distributed()[1] == 1:
        return None
    keys = ("accelerator", "devices", "num_nodes", "strategy")
    return {k: tcfg[k] for k in keys if k in tcfg}


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def publish(
    path: Path, record: dict, loggers: list, root: Path, extras: dict | None = None
) -> BenchOutcome:
    """Write the result, then its extras (both stamped with the record's `run_id`), send the
    final metrics to W&B next to the training curves, rebuild the leaderboard. Why this order:
    a kill in between leaves the new result with the previous run's extras, which the report
    rejects by their run id; the other order would leave the previous result beside extras
    that are not its own, and nothing written before is ever mixed into another run."""
    try:
        write_json_atomic(path, record)
    except OSError as err:  # disk full, read-only folder: the trained run's numbers survive
        print(json.dumps({"unwritten_result": str(path), "metrics": record["metrics"]}, indent=2))
        raise ZsbenchError(
            f"could not write the result {path} ({err}); its metrics are printed above. Free "
            f"space or fix the folder's permissions, or pass --results-dir elsewhere."
        ) from err
    if extras is not None:
        write_json_atomic(extras_path(path), {**extras, "run_id": record["run_id"]})
    _drop_resume_checkpoint(path)
    if record.get("weights") is None:
        _set_aside_old_weights(path)
    metrics = {f"test/{k}": v for k, v in record["metrics"].items()}
    for logger in loggers[1:]:
        logger.log_metrics(metrics)
        logger.experiment.summary.update(metrics)
        logger.experiment.finish()
    update_leaderboard(root)
    return BenchOutcome(path, skipped=False, record=record)


def _move_other_config(
    path: Path, ident: Identity, cell: tuple, tagged: bool, overwrite: bool
) -> None:
    """Keep a result at `path` that is another experiment than `ident`: move it (and its
    extras) to the path of its own variant, so a skip never returns another config's number
    and an --overwrite never replaces it. A tag reused for another config is an error."""
    try:
        stored = json.loads(path.read_text())
        stored_cfg = stored["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: `bench` skips or overwrites it as before, the leaderboard says
    stored_diff = config_diff(stored_cfg, ident.base, ident.ignore)
    if tagged:
        if stored_diff != ident.diff and not overwrite:
            raise ZsbenchError(
                f"--tag {ident.variant}: {path} holds a run of another config (it differs from "
                f"the defaults in {sorted(stored_diff) or 'nothing'}, this run in "
                f"{sorted(ident.diff) or 'nothing'}). Choose another tag, or --overwrite."
            )
        return
    own = variant_name(stored_diff)
    if own == ident.variant:
        return  # the same experiment (keys it predates compare as their defaults)
    target = result_path(*cell, own)
    if target.exists():
        raise ZsbenchError(
            f"{path} holds a run of another config (variant {own}) and {target} exists too; "
            f"move one of them away by hand."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    from zsbench.checkpoints import weights_path
    from zsbench.significance import per_query_path

    for companion in (extras_path, weights_path, per_query_path):  # a result's files go with it
        if companion(path).exists():
            companion(path).replace(companion(target))
    # the record says which variant it is, so the leaderboard groups it with its own config;
    # written at the target first, then the old path removed (a crash leaves both, not none)
    write_json_atomic(target, {**stored, "variant": own, "config_diff": stored_diff})
    path.unlink()
    print(f"moved {path} to {target}: it was run with another config (variant {own})")


def _drop_resume_checkpoint(path: Path) -> None:
    """The result is out: the interrupted-run checkpoint has served (the weights stay)."""
    import shutil

    from zsbench.checkpoints import checkpoint_dir

    folder = checkpoint_dir(path)
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def _set_aside_old_weights(path: Path) -> None:
    """A result rewritten without keeping weights (--overwrite) leaves the old run's weights
    beside it under another name, so they are never read as this result's."""
    from zsbench.checkpoints import weights_path

    old = weights_path(path)
    if old.exists():
        stamp = dt.datetime.fromtimestamp(old.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        aside = old.with_name(f"{old.stem}.replaced-{stamp}.pt")
        old.replace(aside)
        print(f"{old} belonged to the result this run replaced: moved to {aside}")


def build_record(
    plan: RunPlan,
    method: str,
    dataset: str,
    seed: int,
    *,
    ev: dict,
    chance: dict,
    device: torch.device,
    backbone: dict | None,
    timings: dict,
    loggers: list,
    **task_fields,
) -> dict:
    """The result record both tasks write: identity, metrics (`ev`: metrics, spec, n_queries,
    n_gallery, n_queries_without_positive), provenance and timings, plus the task's own
    fields (`task_fields`)."""
    cfg, dm = plan.cfg, plan.dm
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex,  # ties the result to its extras file (publish)
        "task": plan.meta.task,
        "dataset": dataset,
        "split": split_label(dm),
        "method": method,
        "seed": seed,
        "variant": plan.variant,
        "config_diff": plan.config_diff,
        "status": run_status(cfg),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": ev["metrics"],
        "chance": chance,
        "spec": ev["spec"],
        "n_queries": ev["n_queries"],
        "n_gallery": ev["n_gallery"],
        "n_queries_without_positive": ev["n_queries_without_positive"],
        "split_manifest": dm.manifest(),
        "config": cfg,
        "method_metadata": plan.meta.to_dict(),
        "backbone": backbone,
        "provenance": provenance(device),
        "timings": timings,
        "log_dir": loggers[0].log_dir,
        **task_fields,
    }
