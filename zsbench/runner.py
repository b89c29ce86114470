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
import numpy as np
import torch
from filelock import FileLock

from methods.base import DATA_PROVIDED
from zsbench.chance import chance_metrics
from zsbench.config import init_parameters, resolve_config
from zsbench.errors import ZsbenchError
from zsbench.evaluation import evaluate_sbir, tie_warning
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


def _trainer(tcfg: dict, loggers: list, progress: bool) -> L.Trainer:
    return L.Trainer(
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
    if _launched_rank() != 0:  # a DDP worker process Lightning started: rank 0 holds the lock
        return _run(plan, method, dataset, seed, wandb, progress, t_start)
    # one run per result at a time: a second process (another sweep worker, a restarted sweep
    # while an orphaned worker finishes) waits here, then finds the result and skips
    with FileLock(str(plan.path.with_name(f".{plan.path.name}.lock"))):
        if plan.path.exists() and not overwrite:
            return BenchOutcome(plan.path, skipped=True)
        return _run(plan, method, dataset, seed, wandb, progress, t_start)


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


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def embed_partition(model, dm, part: str, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels of partition `part` ('query' or 'gallery'), in partition order.

    Under DDP every rank embeds every world-th item and the pieces are gathered on all ranks
    (no padding or duplicates, unlike a DistributedSampler), so rank 0 scores the whole set.
    """
    from datamodules.base import ItemDataset

    rank, world = _distributed()
    indices = dm.partitions[part]
    if world == 1:
        loader = dm.query_dataloader() if part == "query" else dm.gallery_dataloader()
        return model.embed(loader, side)
    import torch.distributed as dist

    mine = np.arange(len(indices))[rank::world]
    z, y = model.embed(dm._loader(ItemDataset(dm, indices[mine]), False, dm.eval_batch_size), side)
    pieces: list = [None] * world
    dist.all_gather_object(pieces, (mine, z, y))
    order = np.concatenate([p[0] for p in pieces])
    inverse = torch.as_tensor(np.argsort(order, kind="stable"))
    return torch.cat([p[1] for p in pieces])[inverse], torch.cat([p[2] for p in pieces])[inverse]


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


@dataclasses.dataclass
class TrainedRun:
    """A method trained on the seen classes of a plan, with what its result records."""

    model: object
    device: torch.device
    timings: dict
    backbone: dict | None
    side_info: dict | None
    loggers: list


def train_sbir(
    plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool = False, progress: bool = True
) -> TrainedRun:
    """Set up features (or image normalisation), build the seeded method and train it on the
    seen classes: everything of an SBIR run before the unseen classes are touched."""
    meta, method_cls, cfg, dm, root = plan.meta, plan.method_cls, plan.cfg, plan.dm, plan.root
    tcfg = cfg["trainer"]
    device = _prepare_run(dm, tcfg)

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
    model = _seeded_model(
        method_cls, seed, **cfg["model"], **{k: v for k, v in provided.items() if k in params}
    )
    if meta.inputs == "images":  # the method owns its backbone: normalise images its way
        info = model.backbone_info
        dm.set_normalization(info.mean, info.std)
        dm.set_augment(tcfg["augment"])
        backbone = info.to_dict()

    run_name = f"{meta.task}/{dataset}/{dm.split.name}/{method}"
    loggers = _loggers(root, run_name, seed, cfg, wandb_requested(wandb))
    t0 = time.perf_counter()
    if meta.trains:
        trainer = _trainer(tcfg, loggers, progress)
        val = dm.val_dataloader() if len(dm.partitions["val"]) else None
        train = train_loader(dm, model, cfg["model"])
        trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    timings["train_s"] = time.perf_counter() - t0
    return TrainedRun(model, device, timings, backbone, side_info, loggers)


def _run(
    plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool, progress: bool, t_start
) -> BenchOutcome:
    if plan.meta.task == "cir":
        return run_cir(plan, method, dataset, seed, wandb, progress, t_start)
    meta, cfg, dm, path, root = plan.meta, plan.cfg, plan.dm, plan.path, plan.root
    split = dm.split.name
    run = train_sbir(plan, method, dataset, seed, wandb, progress)
    model, device, timings, loggers = run.model, run.device, run.timings, run.loggers
    backbone, side_info, tcfg = run.backbone, run.side_info, cfg["trainer"]
    model.to(device)
    t0 = time.perf_counter()
    q, ql = embed_partition(model, dm, "query", "query")
    g, gl = embed_partition(model, dm, "gallery", "gallery")
    timings["encode_s"] = time.perf_counter() - t0
    rank, world = _distributed()
    if rank != 0:  # DDP: rank 0 scores and writes; the others are done
        return BenchOutcome(path, skipped=False, record=None)
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
        ties=cfg["eval"]["ties"],
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
        "tie_fraction": ev["tie_fraction"],
        "tie_se": ev["tie_se"],
        "split_manifest": dm.manifest(),
        "config": cfg,
        "method_metadata": meta.to_dict(),
        "backbone": backbone,
        "side_information": side_info,
        "leakage": imagenet_overlap(dm.unseen_photo_wnids(), (backbone or {}).get("pretrained_on")),
        "provenance": provenance(device),
        "world_size": world,
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
    return _publish(path, record, loggers, root)


def _publish(path: Path, record: dict, loggers: list, root: Path) -> BenchOutcome:
    """Write the result (after its extras), send the final metrics to W&B next to the training
    curves, rebuild the leaderboard."""
    write_json_atomic(path, record)
    metrics = {f"test/{k}": v for k, v in record["metrics"].items()}
    for logger in loggers[1:]:
        logger.log_metrics(metrics)
        logger.experiment.summary.update(metrics)
        logger.experiment.finish()
    update_leaderboard(root)
    return BenchOutcome(path, skipped=False, record=record)


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


# ----------------------------------------------------------------------------- ZS-CIR
def cir_train_loader(dm, model):
    """The CIR training batches the method asks for (`train_on`, see datamodules.cir)."""
    loaders = {
        "images": dm.image_train_dataloader,
        "captions": dm.caption_train_dataloader,
        "text_triplets": dm.triplet_train_dataloader,
    }
    if model.train_on not in loaders:
        raise ZsbenchError(
            f"{type(model).__name__} trains (metadata.trains) but train_on={model.train_on!r}; "
            f"one of {', '.join(loaders)}."
        )
    return loaders[model.train_on]()


def cir_chance(labels, n_gallery: int) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking (exact, per query, then averaged).

    R@k: min(k, n) / n over the n candidates (CIRR: the gallery minus the reference);
    R_subset@k the same over the image set minus the reference; CIRCO's AP@k with m ground
    truths: sum_{r <= k} (m / n) (1 + (m - 1)(r - 1) / (n - 1)) / r, divided by min(m, k).
    """
    from zsbench.metrics.cir import CIRCO_KS, CIRR_KS, CIRR_SUBSET_KS, FASHIONIQ_KS

    ref_in = (labels.reference >= 0).to(torch.float64)
    n = torch.full_like(ref_in, float(n_gallery))
    if labels.protocol == "cirr":
        n = n - ref_in
    ks = {"cirr": CIRR_KS, "circo": CIRCO_KS, "fashioniq": FASHIONIQ_KS}[labels.protocol]
    out = {f"R@{k}": float((n.clamp(max=k) / n).mean()) for k in ks}
    if labels.protocol == "cirr":
        m = labels.members
        valid = (m >= 0) & (m != labels.reference[:, None])
        s = valid.sum(1).to(torch.float64)
        out.update({f"R_subset@{k}": float((s.clamp(max=k) / s).mean()) for k in CIRR_SUBSET_KS})
    if labels.protocol == "circo":
        m = (labels.gt >= 0).sum(1).to(torch.float64)
        for k in CIRCO_KS:
            r = torch.arange(1, k + 1, dtype=torch.float64)[None]
            prec = (1 + (m[:, None] - 1) * (r - 1) / (n[:, None] - 1).clamp(min=1)) / r
            ap = (m[:, None] / n[:, None] * prec * (r <= n[:, None])).sum(1) / m.clamp(max=k)
            out[f"mAP@{k}"] = float(ap.mean())
    return out


def cir_examples(scores, labels, data, n_examples: int = 5, top_k: int = 10) -> list[dict]:
    """Report examples: the first `n_examples` queries with their top-k gallery images
    (reference removed under CIRR's protocol), each flagged correct when it is a ground truth."""
    examples = []
    for qi in range(min(n_examples, len(data.queries))):
        q = data.queries[qi]
        row = scores[qi].clone()
        if labels.protocol == "cirr" and int(labels.reference[qi]) >= 0:
            row[int(labels.reference[qi])] = float("-inf")
        relevant = set(q.targets)
        top = torch.argsort(row, descending=True, stable=True)[:top_k].tolist()
        text = " / ".join(q.captions)
        examples.append(
            {
                "query": str(data.image_path(q.reference)),
                "label": text,
                "top": [
                    {
                        "path": str(data.image_path(data.gallery[gi])),
                        "label": data.gallery[gi],
                        "correct": data.gallery[gi] in relevant,
                        "score": float(row[gi]),
                    }
                    for gi in top
                ],
            }
        )
    return examples


def _embed_group(model, dm, group):
    """Query and gallery embeddings of one evaluation group, checked to be in dataset order."""
    out = []
    for side, loader in (
        ("query", dm.query_dataloader(group)),
        ("gallery", dm.gallery_dataloader(group)),
    ):
        z, index = model.embed(loader, side)
        if not torch.equal(index, torch.arange(len(z))):
            raise ZsbenchError(f"{side} embeddings came back out of dataset order.")
        out.append(z)
    return out


def run_cir(
    plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool, progress: bool, t_start
) -> BenchOutcome:
    """The ZS-CIR run: train on what `train_on` names, embed each evaluation group, score it
    with zsbench.metrics.cir (FashionIQ: per category, then the mean), write the result."""
    from zsbench.evaluation import similarity_matrix
    from zsbench.metrics.cir import cir_metrics, fashioniq_mean

    meta, cfg, dm, path, root = plan.meta, plan.cfg, plan.dm, plan.path, plan.root
    tcfg = cfg["trainer"]
    device = _prepare_run(dm, tcfg)

    model = _seeded_model(plan.method_cls, seed, **cfg["model"])
    info = model.backbone_info
    dm.set_normalization(info.mean, info.std)
    run_name = f"{meta.task}/{dataset}/{dm.split.name}/{method}"
    loggers = _loggers(root, run_name, seed, cfg, wandb_requested(wandb))
    timings: dict[str, float | bool] = {}
    t0 = time.perf_counter()
    train_items = None
    if meta.trains:
        if hasattr(model, "prepare_from_datamodule"):  # e.g. RTD: stage 1 trains its base's phi
            model.prepare_from_datamodule(dm)
        train = cir_train_loader(dm, model)
        train_items = len(train.dataset)
        _trainer(tcfg, loggers, progress).fit(model, train_dataloaders=train)
    timings["train_s"] = time.perf_counter() - t0
    rank, world = _distributed()
    if rank != 0:  # DDP: rank 0 embeds and scores everything (CIR sets are small)
        return BenchOutcome(path, skipped=False, record=None)

    model.to(device)
    per_group, chance, extras = {}, {}, []
    n_q = n_g = 0
    timings["encode_s"] = timings["rank_s"] = 0.0
    for group in dm.groups:
        t0 = time.perf_counter()
        q, g = _embed_group(model, dm, group)
        timings["encode_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = similarity_matrix(q.to(device), g.to(device), model.similarity).cpu()
        labels = dm.labels(group)
        chunk = cfg["eval"]["chunk_size"] or 256
        per_group[group.name or "all"] = cir_metrics(scores, labels, chunk_size=chunk)
        timings["rank_s"] += time.perf_counter() - t0
        chance[group.name or "all"] = cir_chance(labels, len(g))
        extras += cir_examples(scores, labels, group.data, n_examples=max(1, 5 // len(dm.groups)))
        n_q, n_g = n_q + len(q), n_g + len(g)
    if dm.protocol == "fashioniq":
        metrics, chance = fashioniq_mean(per_group), fashioniq_mean(chance)
    else:
        (metrics,), (chance,) = per_group.values(), chance.values()
    timings["total_s"] = time.perf_counter() - t_start
    timings["encode_items_per_s"] = 2 * n_q / max(timings["encode_s"], 1e-9)

    record = {
        "schema_version": SCHEMA_VERSION,
        "task": meta.task,
        "dataset": dataset,
        "split": dm.split.name,
        "method": method,
        "seed": seed,
        "status": "fast_dev_run" if tcfg["fast_dev_run"] else "ok",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
        "chance": chance,
        "per_class": None,
        "per_group": per_group,
        "spec": {
            "name": dm.protocol,
            "definition": "zsbench.metrics.cir (docs/cir.md); ties ranked pessimistically",
        },
        "n_queries": n_q,
        "n_gallery": n_g,
        "n_queries_without_positive": 0,
        "n_train_items": train_items,
        "split_manifest": dm.manifest(),
        "config": cfg,
        "method_metadata": meta.to_dict(),
        "backbone": info.to_dict(),
        "side_information": None,
        "leakage": None,
        "provenance": provenance(device),
        "timings": timings,
        "log_dir": loggers[0].log_dir,
    }
    write_json_atomic(extras_path(path), {"examples": extras})
    return _publish(path, record, loggers, root)
