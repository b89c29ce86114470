"""Every `trainer.*` key reaches `lightning.Trainer`: the section is Lightning's own signature
(with zsbench's defaults on top), so nothing set on the command line is silently dropped."""

from __future__ import annotations

import pytest

from zsbench.config import (
    DATA_PROVIDED,
    MANAGED_TRAINER_ARGS,
    lightning_trainer_parameters,
    resolve_config,
)
from zsbench.errors import ZsbenchError
from zsbench.registry import DATASETS, METHODS
from zsbench.runner.common import _trainer


def trainer_for(*overrides: str):
    cfg = resolve_config(
        METHODS.get("supervised"),
        DATASETS.get("synthetic"),
        "supervised",
        "synthetic",
        list(overrides),
        DATA_PROVIDED,
    )
    return _trainer(cfg["trainer"], loggers=[], progress=False), cfg


def test_command_line_trainer_options_arrive_in_the_trainer():
    from lightning.pytorch.strategies import DDPStrategy

    trainer, cfg = trainer_for(
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.num_nodes=2",
        "trainer.max_steps=7",
        "trainer.max_epochs=3",
        "trainer.accumulate_grad_batches=3",
        "trainer.val_check_interval=0.5",
        "trainer.gradient_clip_val=0.25",
        "trainer.check_val_every_n_epoch=2",
        "trainer.limit_val_batches=4",
    )
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_nodes == 2
    assert trainer.max_steps == 7 and trainer.max_epochs == 3
    assert trainer.accumulate_grad_batches == 3
    assert trainer.val_check_interval == 0.5
    assert trainer.gradient_clip_val == 0.25
    assert trainer.check_val_every_n_epoch == 2
    assert trainer.limit_val_batches == 4
    assert cfg["trainer"]["max_steps"] == 7  # recorded in the result's config


def test_the_section_is_lightnings_signature():
    params = lightning_trainer_parameters()
    for key in ("max_steps", "accumulate_grad_batches", "val_check_interval", "strategy"):
        assert key in params
    assert not set(MANAGED_TRAINER_ARGS) & set(params)
    trainer, cfg = trainer_for()
    assert set(params) <= set(cfg["trainer"])
    assert trainer.max_epochs == cfg["trainer"]["max_epochs"]  # zsbench's default wins
    with pytest.raises(ZsbenchError, match="unknown key trainer.logger"):
        trainer_for("trainer.logger=false")  # the runner's own: not settable
    with pytest.raises(ZsbenchError, match="trainer.precision must be one of"):
        trainer_for("trainer.precision=fp17")


def test_a_run_prints_no_lightning_advert_or_leafspec_deprecation(capsys, caplog):
    """The litlogger tip and the LeafSpec deprecation are filtered, nothing else."""
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_for()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1
        )
        warnings.warn("another warning", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert "another warning" in messages
    assert not any("LeafSpec" in m for m in messages)
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info("💡 Tip: For seamless cloud logging, try installing litlogger")
        log.info("GPU available: False, used: False")
    assert "GPU available" in caplog.text and "Tip" not in caplog.text
    assert "litlogger" not in capsys.readouterr().err


def test_a_full_fraction_means_all_batches_without_lightnings_info_line(caplog):
    import logging

    with caplog.at_level(logging.INFO):
        trainer, _ = trainer_for("trainer.limit_train_batches=1.0", "trainer.limit_val_batches=0.5")
    assert trainer.limit_train_batches == 1.0 and trainer.limit_val_batches == 0.5
    assert "100% of the batches" not in caplog.text
    trainer, _ = trainer_for("trainer.limit_train_batches=1")  # an int 1 is one batch, kept
    assert trainer.limit_train_batches == 1
