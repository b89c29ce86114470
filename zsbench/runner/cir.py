"""The ZS-CIR task (`CIR`, run by runner.common.run_task): train on what the method's
`train_on` names (images, captions, text triplets; train_cir), embed each evaluation group of
the dataset and score it with zsbench.metrics.cir (score_cir)."""

from __future__ import annotations

import time

import torch

from zsbench.chance import cir_chance
from zsbench.errors import ZsbenchError
from zsbench.extras import cir_examples
from zsbench.metrics.cir_specs import get_cir_spec
from zsbench.runner.common import (
    RunPlan,
    Scored,
    Task,
    TrainedRun,
    _distributed,
    _loggers,
    _prepare_run,
    _seeded_model,
    fit_method,
    wandb_requested,
)


def cir_train_loader(dm, model):
    """The CIR training batches the method asks for (`train_on`; zsbench.datamodules.cir_base)."""
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


def train_cir(
    plan: RunPlan, method: str, dataset: str, seed: int, wandb: bool = False, progress: bool = True
) -> TrainedRun:
    """Build the seeded method with its CLIP, then train it on what `train_on` names, load
    saved weights (--eval-only), or keep the authors' released weights (model.checkpoint)."""
    meta, cfg, dm, root = plan.meta, plan.cfg, plan.dm, plan.root
    device = _prepare_run(dm, cfg["trainer"])
    model = _seeded_model(plan.method_cls, seed, **cfg["model"])
    info = model.backbone_info
    dm.set_normalization(info.mean, info.std)
    dm.set_train_crop(getattr(model, "hparams", {}).get("train_crop_scale"))
    loggers = _loggers(root, plan.run_name(dataset, method), seed, cfg, wandb_requested(wandb))
    timings: dict[str, float | bool] = {}
    t0 = time.perf_counter()
    fields: dict = {"n_train_items": None}
    if meta.trains and model.loaded_checkpoint and not plan.eval_only:
        print(f"{method}: scoring the released weights in {model.loaded_checkpoint}, no training")
        fields["weights"] = {"loaded_from": model.loaded_checkpoint, "released": True}
    elif meta.trains:
        train = None
        if not plan.eval_only:
            if hasattr(model, "prepare_from_datamodule"):  # e.g. RTD: stage 1 trains its phi
                model.prepare_from_datamodule(dm)
            train = cir_train_loader(dm, model)
            fields["n_train_items"] = len(train.dataset)
        fields.update(fit_method(plan, model, method, loggers, progress, train_dataloaders=train))
    timings["train_s"] = time.perf_counter() - t0
    return TrainedRun(model, device, timings, info.to_dict(), None, loggers, fields)


def score_cir(plan: RunPlan, run: TrainedRun, seed: int, t_start: float) -> Scored | None:
    """Embed each evaluation group on rank 0 (CIR sets are small), score it with the library
    evaluator (FashionIQ: per category, then the mean) and pick the report's examples."""
    from zsbench.evaluation import evaluate_cir, similarity_matrix
    from zsbench.metrics.cir import fashioniq_mean

    rank, _ = _distributed()
    if rank != 0:
        return None
    cfg, dm = plan.cfg, plan.dm
    model, device, timings = run.model, run.device, run.timings
    model.to(device)
    per_group, chance, extras = {}, {}, []
    n_q = n_g = n_without = 0
    timings["encode_s"] = timings["rank_s"] = 0.0
    for group in dm.groups:
        t0 = time.perf_counter()
        q, g = _embed_group(model, dm, group)
        timings["encode_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = dm.labels(group)
        n_without += labels.n_without_positive
        q, g = q.to(device), g.to(device)
        per_group[group.name or "all"] = evaluate_cir(
            q,
            g,
            labels,
            similarity=model.similarity,
            chunk_size=cfg["eval"]["chunk_size"],
            ties=cfg["eval"]["ties"],
        )  # the library evaluator, chunk by chunk: the [Q, G] matrix is never held
        timings["rank_s"] += time.perf_counter() - t0
        chance[group.name or "all"] = cir_chance(labels, len(g))
        n_ex = max(1, 5 // len(dm.groups))
        top_rows = similarity_matrix(q[:n_ex], g, model.similarity).cpu()
        extras += cir_examples(top_rows, labels, group.data, n_examples=n_ex)
        n_q, n_g = n_q + len(q), n_g + len(g)
    if dm.protocol == "fashioniq":
        metrics, chance = fashioniq_mean(per_group), fashioniq_mean(chance)
    else:
        (metrics,), (chance,) = per_group.values(), chance.values()
    timings["total_s"] = time.perf_counter() - t_start
    timings["encode_items_per_s"] = 2 * n_q / max(timings["encode_s"], 1e-9)

    ev = {
        "metrics": metrics,
        "spec": get_cir_spec(dm.protocol, cfg["eval"]["ties"]).to_dict(),
        "n_queries": n_q,
        "n_gallery": n_g,
        "n_queries_without_positive": n_without,
    }
    fields = {"per_class": None, "per_group": per_group, "side_information": None, "leakage": None}
    return Scored(ev=ev, chance=chance, fields=fields, extras={"examples": extras})


CIR = Task("cir", train=train_cir, score=score_cir)
