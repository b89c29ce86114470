"""One benchmark run: train a method on seen classes, evaluate on unseen, write the result.

`bench()` is what `zsbench bench` and `make bench` call. Its steps, in order: resolve the config,
set up the data (seen/unseen split), skip if the result exists, seed, extract or reuse backbone
features, build the method, train it on seen classes (Lightning), embed unseen queries and
gallery, score them with `zsbench.evaluation`, write one result JSON atomically and rebuild the
leaderboard.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock

from methods.base import DATA_PROVIDED
from zsbench.chance import chance_metrics
from zsbench.config import init_parameters, resolve_config
from zsbench.errors import ZsbenchError
from zsbench.evaluation import evaluate_sbir
from zsbench.extras import run_extras
from zsbench.features import cached_features
from zsbench.leaderboard import update_leaderboard
from zsbench.leakage import imagenet_overlap
from zsbench.provenance import provenance
from zsbench.registry import DATASETS, METHODS
from zsbench.results import (
    SCHEMA_VERSION,
    extras_path,
    result_path,
    results_dir,
    write_json_atomic,
)


@dataclasses.dataclass
class BenchOutcome:
    path: Path
    skipped: bool
    record: dict | None = None


def side_information(model_cfg: dict, seen: tuple[str, ...]) -> tuple[dict, dict]:
    """Seen-class embeddings for each source in `model.semantics`.

    `semantics` is a comma-separated list (or a YAML list) of sources from zsbench.semantics,
    each optionally with a file: "minilm", "word2vec:/data/GoogleNews.bin,wordnet".
    """
    from zsbench.semantics import class_embeddings

    sources = model_cfg.get("semantics") or "minilm"
    if isinstance(sources, str):
        sources = [x.strip() for x in sources.split(",") if x.strip()]
    out, record = {}, {"sources": list(sources), "dims": {}}
    for entry in sources:
        src, _, path = entry.partition(":")
        out[src] = class_embeddings(list(seen), src, path=path or None)
        record["dims"][src] = int(out[src].shape[1])
    return out, record


def train_loader(dm, model, model_cfg: dict):
    """The training batches the method asks for (`train_on`): items, pairs or triplets."""
    if model.train_on == "pairs":
        return dm.paired_train_dataloader(model_cfg.get("pairing", "instance"))
    if model.train_on == "triplets":
        return dm.triplet_train_dataloader(model_cfg.get("pairing", "class"))
    if model.train_on == "items":
        return dm.train_dataloader()
    raise ZsbenchError(
        f"{type(model).__name__}.train_on={model.train_on!r} is not one of items, pairs, triplets."
    )


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


def bench(
    method: str,
    dataset: str,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    results: str | Path | None = None,
    overwrite: bool = False,
    wandb: bool = False,
    progress: bool = True,
) -> BenchOutcome:
    """Run `method` on `dataset` with `seed`; see the module docstring."""
    if seed is None or int(seed) < 0:
        raise ZsbenchError(f"seed must be a non-negative integer, got {seed!r}.")
    seed = int(seed)
    t_start = time.perf_counter()
    plan = plan_run(method, dataset, seed, overrides, results)
    # one run per result at a time: a second process (another sweep worker, a restarted sweep
    # while an orphaned worker finishes) waits here, then finds the result and skips
    with FileLock(str(plan.path.with_name(f".{plan.path.name}.lock"))):
        if plan.path.exists() and not overwrite:
            return BenchOutcome(plan.path, skipped=True)
        return _run(plan, method, dataset, seed, wandb, progress, t_start)


@dataclasses.dataclass
class RunPlan:
    """What a run will do and where its result goes (config resolved, data set up)."""

    meta: object
    method_cls: type
    cfg: dict
    dm: object
    path: Path
    root: Path


def plan_run(
    method: str,
    dataset: str,
    seed: int,
    overrides: list[str] | tuple[str, ...] = (),
    results: str | Path | None = None,
    dm_cache: dict | None = None,
) -> RunPlan:
    """Resolve the config and the split of one cell. `dm_cache`: a dict the caller keeps to set
    up each distinct dataset config once (the sweep plans many cells of one dataset)."""
    method_cls, dataset_cls = METHODS.get(method), DATASETS.get(dataset)
    meta = method_cls.metadata
    if meta.task != dataset_cls.task:
        raise ZsbenchError(
            f"Method {method!r} is a {meta.task} method but dataset {dataset!r} is a "
            f"{dataset_cls.task} dataset."
        )
    cfg = resolve_config(method_cls, dataset_cls, method, dataset, overrides, DATA_PROVIDED)
    root = results_dir(results)
    key = (dataset, json.dumps(cfg["dataset"], sort_keys=True, default=str))
    dm = (dm_cache or {}).get(key)
    if dm is None:
        dm = dataset_cls(**cfg["dataset"])
        dm.setup()
        if dm_cache is not None:
            dm_cache[key] = dm
    path = result_path(root, meta.task, dataset, dm.split.name, method, int(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    return RunPlan(meta, method_cls, cfg, dm, path, root)


def _run(
    plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool, progress: bool, t_start
) -> BenchOutcome:
    meta, method_cls, cfg, dm, path, root = (
        plan.meta,
        plan.method_cls,
        plan.cfg,
        plan.dm,
        plan.path,
        plan.root,
    )
    split = dm.split.name

    tcfg = cfg["trainer"]
    dm.batch_size, dm.eval_batch_size = tcfg["batch_size"], tcfg["eval_batch_size"]
    dm.num_workers = tcfg["num_workers"]
    device = _device(tcfg["accelerator"])
    L.seed_everything(seed, workers=True, verbose=False)

    timings: dict[str, float | bool] = {}
    backbone = None
    if meta.inputs == "features":
        feats, info, stats = cached_features(
            dm, cfg["model"]["backbone"], cfg["model"]["weights"], device=device, progress=progress
        )
        dm.use_features(feats)
        backbone = info.to_dict()
        timings["features_s"], timings["feature_cache_hit"] = stats["seconds"], stats["cache_hit"]

    provided = dm.data_info()
    params = init_parameters(method_cls)
    side_info = None
    if "class_embeddings" in params:
        provided["class_embeddings"], side_info = side_information(cfg["model"], dm.split.seen)
    model = method_cls(**cfg["model"], **{k: v for k, v in provided.items() if k in params})
    if meta.inputs == "images":  # the method owns its backbone: normalise images its way
        info = model.backbone_info
        dm.set_normalization(info.mean, info.std)
        dm.set_augment(tcfg["augment"])
        backbone = info.to_dict()

    run_name = f"{meta.task}/{dataset}/{split}/{method}"
    loggers = _loggers(root, run_name, seed, cfg, wandb_requested(wandb))
    t0 = time.perf_counter()
    if meta.trains:
        trainer = L.Trainer(
            max_epochs=tcfg["max_epochs"],
            accelerator=tcfg["accelerator"],
            devices=tcfg["devices"],
            precision=tcfg["precision"],
            gradient_clip_val=tcfg["gradient_clip_val"],
            limit_train_batches=tcfg["limit_train_batches"],
            log_every_n_steps=tcfg["log_every_n_steps"],
            fast_dev_run=tcfg["fast_dev_run"],
            logger=loggers,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
        )
        val = dm.val_dataloader() if len(dm.partitions["val"]) else None
        train = train_loader(dm, model, cfg["model"])
        trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    timings["train_s"] = time.perf_counter() - t0

    model.to(device)
    t0 = time.perf_counter()
    q, ql = model.embed(dm.query_dataloader(), "query")
    g, gl = model.embed(dm.gallery_dataloader(), "gallery")
    timings["encode_s"] = time.perf_counter() - t0
    ev = evaluate_sbir(
        q,
        ql,
        g,
        gl,
        spec=cfg["eval"]["spec"],
        similarity=model.similarity,
        chunk_size=cfg["eval"]["chunk_size"],
        device=device,
        class_names=dm.class_names,
    )
    timings["rank_s"] = ev["seconds"]
    timings["total_s"] = time.perf_counter() - t_start
    timings["encode_items_per_s"] = (len(q) + len(g)) / max(timings["encode_s"], 1e-9)
    timings["rank_queries_per_s"] = len(q) / max(ev["seconds"], 1e-9)

    record = {
        "schema_version": SCHEMA_VERSION,
        "task": meta.task,
        "dataset": dataset,
        "split": split,
        "method": method,
        "seed": seed,
        "status": "fast_dev_run" if tcfg["fast_dev_run"] else "ok",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": ev["metrics"],
        "chance": chance_metrics(ql.numpy(), gl.numpy()),
        "per_class": ev["per_class"],
        "spec": ev["spec"],
        "n_queries": ev["n_queries"],
        "n_gallery": ev["n_gallery"],
        "n_queries_without_positive": ev["n_queries_without_positive"],
        "split_manifest": dm.manifest(),
        "config": cfg,
        "method_metadata": meta.to_dict(),
        "backbone": backbone,
        "side_information": side_info,
        "leakage": imagenet_overlap(dm.unseen_photo_wnids(), (backbone or {}).get("pretrained_on")),
        "provenance": provenance(device),
        "timings": timings,
        "log_dir": loggers[0].log_dir,
    }
    # artefacts for `zsbench report`, written before the result so a result's extras exist
    q_items = [dm.items[i] for i in dm.partitions["query"]]
    g_items = [dm.items[i] for i in dm.partitions["gallery"]]
    write_json_atomic(
        extras_path(path),
        run_extras(
            q,
            ql,
            g,
            gl,
            model.similarity,
            [it.path for it in q_items],
            [it.path for it in g_items],
            dm.class_names,
            seed=seed,
        ),
    )
    write_json_atomic(path, record)
    for logger in loggers[1:]:  # W&B: final metrics next to the training curves
        logger.log_metrics({f"test/{k}": v for k, v in ev["metrics"].items()})
        logger.experiment.summary.update({f"test/{k}": v for k, v in ev["metrics"].items()})
        logger.experiment.finish()
    update_leaderboard(root)
    return BenchOutcome(path, skipped=False, record=record)


def summarize(record: dict) -> str:
    """Two lines for the terminal: main metrics and the chance level beside them."""
    m, c = record["metrics"], record.get("chance", {})
    keys = [k for k in ("mAP@all", "P@100", "mAP@200", "P@200") if k in m]
    main = "  ".join(f"{k}={m[k]:.4f}" for k in keys)
    chance = "  ".join(f"{k}={c[k]:.4f}" for k in keys if k in c)
    return (
        f"{record['method']} on {record['dataset']}/{record['split']} seed {record['seed']}: "
        f"{main}\n  random ranking (expected): {chance}"
    )


def describe_config(record: dict) -> str:
    return json.dumps(record["config"], indent=2, default=str)
