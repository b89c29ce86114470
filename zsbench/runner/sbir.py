"""The ZS-SBIR task (`SBIR`, run by runner.common.run_task): features or images, side
information, training on the seen classes (train_sbir), then embedding the unseen queries and
gallery (rank-sharded under DDP) and scoring them with `zsbench.evaluation` (score_sbir)."""

from __future__ import annotations

import json
import time

import torch

from zsbench.chance import chance_metrics
from zsbench.config import init_parameters
from zsbench.errors import ZsbenchError
from zsbench.evaluation import evaluate_sbir
from zsbench.extras import run_extras
from zsbench.features import cached_features
from zsbench.leakage import imagenet_overlap
from zsbench.results import extras_path, write_json_atomic
from zsbench.runner.common import (
    RunPlan,
    Scored,
    Task,
    TrainedRun,
    _distributed,
    _loggers,
    _move_other_config,
    _prepare_run,
    _seeded_model,
    fit_method,
    predict_trainer_args,
    wandb_requested,
)
from zsbench.significance import per_query_path, query_order_hash, write_per_query


def side_information(model_cfg: dict, seen: tuple[str, ...]) -> tuple[dict, dict]:
    """Seen-class embeddings for each source in `model.semantics`.

    `semantics` is a comma-separated list (or a YAML list) of sources from zsbench.semantics,
    each optionally with a file: "minilm", "word2vec:/data/GoogleNews.bin,wordnet".
    """
    from zsbench.semantics import class_embeddings

    sources = model_cfg.get("semantics")
    if not sources:
        raise ZsbenchError(
            "This method takes class embeddings but no model.semantics: declare a `semantics` "
            "argument (FeatureSpaceMethod has one), or give --set model.semantics=minilm."
        )
    if isinstance(sources, str):
        sources = [x.strip() for x in sources.split(",") if x.strip()]
    out, record = {}, {"sources": list(sources), "dims": {}}
    for entry in sources:
        src, _, path = entry.partition(":")
        out[src] = class_embeddings(list(seen), src, path=path or None)
        record["dims"][src] = int(out[src].shape[1])
    return out, record


def train_loader(dm, model, model_cfg: dict):
    """The training batches the method asks for (`train_on`): items, pairs or triplets, paired
    by the method's `pairing` argument, or the datamodule's default for a method without one."""
    pairing = {"pairing": model_cfg["pairing"]} if "pairing" in model_cfg else {}
    if model.train_on == "pairs":
        return dm.paired_train_dataloader(**pairing)
    if model.train_on == "triplets":
        return dm.triplet_train_dataloader(**pairing)
    if model.train_on == "items":
        return dm.train_dataloader()
    raise ZsbenchError(
        f"{type(model).__name__}.train_on={model.train_on!r} is not one of items, pairs, triplets."
    )


def embed_partition(
    model, dm, part: str, side: str, tcfg: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels of partition `part` ('query' or 'gallery'), in partition order,
    by `Trainer.predict` (zsbench.embedding). Under DDP (`tcfg`: the run's trainer section)
    every rank embeds its share and every rank receives the whole partition."""
    loader = dm.query_dataloader() if part == "query" else dm.gallery_dataloader()
    return model.embed(loader, side, predict_trainer_args(tcfg))


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
    params = init_parameters(method_cls)
    side_info = None
    if "class_embeddings" in params:  # before the features: a missing WordNet fails in seconds
        class_embeddings, side_info = side_information(cfg["model"], dm.split.seen)
    if meta.inputs == "features":
        feats, info, stats = cached_features(
            dm, cfg["model"]["backbone"], cfg["model"]["weights"], device=device, progress=progress
        )
        dm.use_features(feats)
        backbone = info.to_dict()
        timings["features_s"], timings["feature_cache_hit"] = stats["seconds"], stats["cache_hit"]

    provided = dm.data_info()
    if "class_embeddings" in params:
        provided["class_embeddings"] = class_embeddings
    model = _seeded_model(
        method_cls, seed, **cfg["model"], **{k: v for k, v in provided.items() if k in params}
    )
    if meta.inputs == "images":  # the method owns its backbone: normalise images its way
        info = model.backbone_info
        dm.set_normalization(info.mean, info.std)
        dm.set_augment(tcfg["augment"])
        backbone = info.to_dict()

    loggers = _loggers(root, plan.run_name(dataset, method), seed, cfg, wandb_requested(wandb))
    t0 = time.perf_counter()
    fit_fields: dict = {}
    if meta.trains:
        val = dm.val_dataloader() if len(dm.partitions["val"]) and not plan.eval_only else None
        train = None if plan.eval_only else train_loader(dm, model, cfg["model"])
        fit_fields = fit_method(plan, model, method, loggers, progress,
                                train_dataloaders=train, val_dataloaders=val)  # fmt: skip
    elif hasattr(model, "fit_statistics"):  # no training, statistics of the seen-class data
        fit_fields = {"fitted": model.fit_statistics(dm)}
    timings["train_s"] = time.perf_counter() - t0
    return TrainedRun(model, device, timings, backbone, side_info, loggers, fit_fields)


def score_sbir(plan: RunPlan, run: TrainedRun, seed: int, t_start: float) -> Scored | None:
    """Embed the unseen queries and gallery (every rank its share), score them on rank 0, and
    make the report's extras; after the result: per-query scores and the `eval.also_specs`."""
    cfg, dm = plan.cfg, plan.dm
    model, device, timings = run.model, run.device, run.timings
    model.to(device)
    t0 = time.perf_counter()
    q, ql = embed_partition(model, dm, "query", "query", cfg["trainer"])
    g, gl = embed_partition(model, dm, "gallery", "gallery", cfg["trainer"])
    timings["encode_s"] = time.perf_counter() - t0
    rank, world = _distributed()
    if rank != 0:
        return None
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
        return_per_query=True,
    )
    per_query = ev.pop("per_query")
    timings["rank_s"] = ev["seconds"]
    timings["total_s"] = time.perf_counter() - t_start
    timings["encode_items_per_s"] = (len(q) + len(g)) / max(timings["encode_s"], 1e-9)
    timings["rank_queries_per_s"] = len(q) / max(ev["seconds"], 1e-9)
    # artefacts for `zsbench report`, written with the result (publish)
    q_items = [dm.items[i] for i in dm.partitions["query"]]
    g_items = [dm.items[i] for i in dm.partitions["gallery"]]
    extras = run_extras(
        q,
        ql,
        g,
        gl,
        model.similarity,
        [it.path for it in q_items],
        [it.path for it in g_items],
        dm.class_names,
        seed=seed,
    )
    order = query_order_hash([dm.holdout_key(dm.items[i]) for i in dm.partitions["query"]])

    def after(record: dict) -> None:
        write_per_query(per_query_path(plan.path), per_query, order, record["run_id"])
        for spec in cfg["eval"]["also_specs"] or []:
            if spec != cfg["eval"]["spec"]:
                _publish_respecified(plan, record, spec, (q, ql, g, gl), model, device, order)

    backbone = run.backbone or {}
    fields = {
        "per_class": ev["per_class"],
        "tie_fraction": ev["tie_fraction"],
        "tie_se": ev["tie_se"],
        "side_information": run.side_info,
        "leakage": imagenet_overlap(dm.unseen_photo_wnids(), backbone.get("pretrained_on")),
        "world_size": world,
    }
    chance = chance_metrics(ql.numpy(), gl.numpy())
    return Scored(ev=ev, chance=chance, fields=fields, extras=extras, after=after)


def _publish_respecified(
    plan: RunPlan, record: dict, spec: str, embeddings, model, device, order: str
):
    """The run's embeddings scored under `spec`, written as the result of its own
    `eval.spec=<spec>` variant (with the run's extras) unless that result exists already."""
    from filelock import FileLock

    from zsbench.identity import respecified
    from zsbench.results import result_path

    ident = respecified(plan.identity, spec)
    r = record
    path = result_path(plan.root, r["task"], r["dataset"], r["split"], r["method"], r["seed"],
                       ident.variant)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        if path.exists():  # a sibling of older defaults is another experiment: moved aside
            cell = (plan.root, r["task"], r["dataset"], r["split"], r["method"], r["seed"])
            _move_other_config(path, ident, cell, tagged=False, overwrite=False)
        if path.exists():
            print(f"eval.also_specs: {path} exists, kept")
            return
        q, ql, g, gl = embeddings
        cfg = ident.cfg
        ev = evaluate_sbir(q, ql, g, gl, spec=spec, similarity=model.similarity,
                           chunk_size=cfg["eval"]["chunk_size"], device=device,
                           class_names=plan.dm.class_names, ties=cfg["eval"]["ties"],
                           return_per_query=True)  # fmt: skip
        per_query = ev.pop("per_query")
        sibling = {
            **record,
            "variant": ident.variant,
            "config_diff": ident.diff,
            "config": cfg,
            "metrics": ev["metrics"],
            "spec": ev["spec"],
            "per_class": ev["per_class"],
            "tie_fraction": ev["tie_fraction"],
            "tie_se": ev["tie_se"],
            "n_queries_without_positive": ev["n_queries_without_positive"],
            "scored_with": str(plan.path),  # the run whose embeddings these are
        }
        source = extras_path(plan.path)
        write_json_atomic(path, sibling)  # the same run_id as the run's own result
        if source.exists():
            write_json_atomic(extras_path(path), json.loads(source.read_text()))
        write_per_query(per_query_path(path), per_query, order, record["run_id"])
        print(f"Wrote {path} ({spec} spec)")


SBIR = Task("sbir", train=train_sbir, score=score_sbir)
