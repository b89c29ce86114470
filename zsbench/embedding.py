"""Embedding a loader with `Trainer.predict`: one code path on CPU, GPU and under DDP.

A method's `predict_step` embeds one batch (zsbench.methods.base.RetrievalMethod); Lightning
moves the batches to the device, puts the method in eval mode (and restores its modes after),
and under DDP gives each rank a disjoint share of the loader (no padding repeats, unlike a
DistributedSampler for validation). The `_Gathered` writer then gathers every rank's share
with the strategy's `all_gather` and puts the rows back in the loader's order, so every rank
holds the whole set and rank 0 scores it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from zsbench.errors import ZsbenchError


def _gather_rows(strategy, x: Tensor) -> Tensor:
    """Concatenate `x` [n_rank, ...] of every rank in rank order (n_rank may differ by rank:
    the strategy's all_gather takes equal shapes, so each share is padded to the longest)."""
    device = strategy.root_device
    n = torch.tensor([len(x)], device=device)
    sizes = [int(s) for s in strategy.all_gather(n).flatten()]
    pad = x.new_zeros((max(sizes) - len(x), *x.shape[1:]))
    full = strategy.all_gather(torch.cat([x, pad]).to(device))  # [world, max, ...]
    return torch.cat([full[r, :s].cpu() for r, s in enumerate(sizes)])


class _Gathered(BasePredictionWriter):
    """Collects the predictions of one `Trainer.predict` call, gathered over ranks."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.rows: dict[str, Tensor] = {}

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if not predictions:
            raise ZsbenchError("the loader to embed yielded no batch.")
        keys = list(predictions[0])
        rows = {k: torch.cat([p[k].detach().cpu() for p in predictions]) for k in keys}
        # one loader: batch_indices[0] holds each batch's dataset positions (empty when the
        # loader is not a DataLoader, whose batches Lightning cannot index)
        positions = [i for batch in (batch_indices[0] if batch_indices else []) for i in batch]
        if len(positions) != len(rows[keys[0]]):  # a plain iterable, not a DataLoader: in order
            positions = list(range(len(rows[keys[0]])))
        rows["position"] = torch.as_tensor(positions, dtype=torch.int64)
        if trainer.world_size > 1:
            rows = {k: _gather_rows(trainer.strategy, v) for k, v in rows.items()}
        order = torch.argsort(rows.pop("position"), stable=True)
        self.rows = {k: v[order] for k, v in rows.items()}


class _Batches:
    """A list of ready batches as one iterable loader (Lightning reads a list as several)."""

    def __init__(self, batches) -> None:
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@contextlib.contextmanager
def _quiet_predict_trainer():
    """A predict Trainer per partition would print its device lines each time: Lightning's
    info lines are off while it is built, and back for the rest of the run."""
    from zsbench.runner.common import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                              "lightning.pytorch.accelerators.cuda")]  # fmt: skip
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def device_trainer_args(device: torch.device) -> dict:
    """Trainer arguments for one process on `device` (never "auto" devices: on a machine with
    several GPUs that would start DDP inside a run that did not ask for it)."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    if device.type == "mps":
        return {"accelerator": "mps", "devices": 1}
    return {"accelerator": "cpu", "devices": 1}


def predict_embeddings(
    model, loader, side: str, trainer_args: dict | None = None
) -> dict[str, Tensor]:
    """{"embedding": [N, D] float32, and what the method's predict_step returns beside it (SBIR:
    "label"; CIR: "index")} for every item of `loader`, in its order, on every rank. `side`:
    "query" or "gallery". `trainer_args`: accelerator / devices / strategy / num_nodes of the
    run (under DDP the run's; default: one process on the model's device)."""
    import lightning as L

    if side not in ("query", "gallery"):
        raise ZsbenchError(f"side must be 'query' or 'gallery', got {side!r}.")
    writer = _Gathered()
    with _quiet_predict_trainer():
        trainer = L.Trainer(
            **(trainer_args or device_trainer_args(model.device)),
            logger=False,
            callbacks=[writer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            inference_mode=False,  # torch.no_grad: the embeddings are ordinary tensors after
        )
    if isinstance(loader, (list, tuple)):  # batches given as a list: one loader, not many
        loader = _Batches(loader)
    model.predict_side = side
    try:
        with torch.no_grad():
            trainer.predict(model, dataloaders=loader, return_predictions=False)
    finally:
        model.predict_side = None
    return writer.rows
