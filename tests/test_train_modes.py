"""Train/eval modes inside a real `Trainer.fit`, not after a hand-made `model.train()`.

Lightning 2.x does not call `model.train()` when fit starts and restores the modes it found
after each validation, so a method's `train()` override only counts if something inside fit
calls it (RetrievalMethod.on_train_epoch_start). Checked at every training step of two epochs
with validation in between: frozen BatchNorms (and frozen teachers) in eval mode, so their
pretrained running statistics never move; BatchNorms with trained parameters in train mode.
"""

from __future__ import annotations

import pytest
import torch
from test_bench import bench_args, needs_wordnet

from zsbench.cli import main
from zsbench.registry import METHODS

TRAINED_SBIR = [
    m
    for m in METHODS.names()
    if METHODS.get(m).metadata.trains and METHODS.get(m).metadata.task == "sbir"
]


def batchnorms(model: torch.nn.Module):
    """(frozen, trained) BatchNorm layers of `model`, by whether any parameter is trained."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    frozen = [m for m in bns if not any(p.requires_grad for p in m.parameters())]
    return frozen, [m for m in bns if m not in frozen]


@pytest.mark.parametrize("method", TRAINED_SBIR)
def test_modes_inside_trainer_fit(method, tmp_path, tiny, request, monkeypatch):
    if needs_wordnet(method):
        request.getfixturevalue("wordnet_dir")
    cls = METHODS.get(method)
    seen: list[tuple[int, int, int, int, bool]] = []
    frozen_stats: dict[str, torch.Tensor] = {}
    original = cls.training_step

    def training_step(self, *args, **kwargs):
        frozen, trained = batchnorms(self)
        if not frozen_stats:
            for name, m in self.named_modules():
                if m in frozen and m.track_running_stats:
                    frozen_stats[name] = m.running_mean.clone()
        seen.append(
            (
                sum(m.training for m in frozen),
                len(frozen),
                sum(m.training for m in trained),
                len(trained),
                self.training,
            )
        )
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "training_step", training_step)
    fit_end = {}
    original_end = cls.on_train_end

    def on_train_end(self):
        fit_end.update(
            {n: m.running_mean.clone() for n, m in self.named_modules() if n in frozen_stats}
        )
        return original_end(self)

    monkeypatch.setattr(cls, "on_train_end", on_train_end)
    settings = [*tiny, "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    assert main(bench_args(tmp_path, settings, method, "--quiet")) == 0
    assert len(seen) >= 3, f"{method}: expected training steps in two epochs, saw {len(seen)}"
    for frozen_train, n_frozen, trained_train, n_trained, training in seen:
        assert training, f"{method}: the module is in eval mode during training_step"
        assert frozen_train == 0, f"{method}: {frozen_train}/{n_frozen} frozen BNs in train mode"
        assert trained_train == n_trained, (
            f"{method}: only {trained_train}/{n_trained} trained BNs in train mode"
        )
    for name, before in frozen_stats.items():
        assert torch.equal(fit_end[name], before), f"{method}: frozen BN {name} stats moved"
