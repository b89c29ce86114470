"""Trained weights beside the result, resuming an interrupted run, scoring saved weights
(zsbench.checkpoints; README "Weights, checkpoints and resuming")."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import one_result
from test_bench import bench_args, needs_wordnet

from zsbench.checkpoints import checkpoint_dir, weights_path
from zsbench.cli import main
from zsbench.errors import ZsbenchError
from zsbench.registry import METHODS

# kills its own process with SIGKILL right after the checkpoint of epoch DIE_AFTER_EPOCHS is on
# disk: a preempted Slurm job or an OOM kill, at the one moment that is deterministic
DIE_AFTER_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    from lightning.pytorch.callbacks import ModelCheckpoint
    save = ModelCheckpoint._save_checkpoint
    def save_then_die(self, trainer, filepath):
        save(self, trainer, filepath)
        if trainer.current_epoch + 1 >= int(os.environ["DIE_AFTER_EPOCHS"]):
            os.kill(os.getpid(), signal.SIGKILL)
    ModelCheckpoint._save_checkpoint = save_then_die
    from zsbench.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def interrupted_result(root) -> object:
    """The result path of the one run under `root` that left a checkpoint and no result."""
    (ckpt,) = root.rglob("seed0.ckpt/last.ckpt")
    return ckpt.parent.with_name("seed0.json")


def run_killed_after(root, settings: list[str], epochs: int):
    """`bench supervised --save-weights` in a subprocess SIGKILLed after the checkpoint of
    epoch `epochs`; the result path it never wrote."""
    args = bench_args(root, settings, "supervised", "--save-weights", "--quiet")
    proc = subprocess.run(
        [sys.executable, "-c", DIE_AFTER_CHECKPOINT, *args],
        env={**os.environ, "DIE_AFTER_EPOCHS": str(epochs)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL: no result, a checkpoint
    return interrupted_result(root)


def logged_epochs(record: dict) -> list[int]:
    with open(os.path.join(record["log_dir"], "metrics.csv")) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("epoch")})


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path, tiny):
    settings = [*tiny, "trainer.max_epochs=6"]
    killed = tmp_path / "killed"
    path = run_killed_after(killed, settings, epochs=3)
    assert not path.exists()

    assert main(bench_args(killed, settings, "supervised", "--save-weights", "--quiet")) == 0
    resumed = json.loads(path.read_text())
    assert resumed["resumed_from_epoch"] == 3
    assert logged_epochs(resumed) == [3, 4, 5]  # the epoch counter went on, not from 0
    assert resumed["weights"]["epochs"] == 6 and weights_path(path).is_file()
    assert not checkpoint_dir(path).exists()  # served: removed once the result is out

    whole = tmp_path / "whole"
    assert main(bench_args(whole, settings, "supervised", "--quiet")) == 0
    straight = json.loads(one_result(whole, "supervised").read_text())
    assert straight["resumed_from_epoch"] is None and "weights" not in straight
    assert logged_epochs(straight) == list(range(6))
    assert resumed["metrics"] == straight["metrics"]


def test_checkpoint_of_another_config_is_set_aside_not_resumed(tmp_path, tiny):
    settings = [*tiny, "trainer.max_epochs=3"]
    killed = tmp_path / "r"
    path = run_killed_after(killed, settings, epochs=1)
    ckpt = torch.load(checkpoint_dir(path) / "last.ckpt", weights_only=False)
    for key, state in ckpt["callbacks"].items():  # as if the defaults changed since
        if "RngState" in key:
            cfg = json.loads(state["config"])
            cfg["model"]["lr"] = 123.0
            state["config"] = json.dumps(cfg)
    torch.save(ckpt, checkpoint_dir(path) / "last.ckpt")
    assert main(bench_args(killed, settings, "supervised", "--save-weights", "--quiet")) == 0
    assert json.loads(path.read_text())["resumed_from_epoch"] is None
    kept = [p for p in path.parent.iterdir() if p.name.startswith("seed0.ckpt.other-config-")]
    assert len(kept) == 1 and (kept[0] / "last.ckpt").is_file()  # nothing lost


TRAINED = [m for m in METHODS.names() if METHODS.get(m).metadata.trains]


@pytest.mark.parametrize("method", TRAINED)
def test_saved_weights_score_the_same_without_training(method, tmp_path, tiny, request):
    """Every method that trains: its weights file alone reproduces its result (all of its
    fitted state is in the state_dict, buffers included), under --eval-only."""
    if needs_wordnet(method):
        request.getfixturevalue("wordnet_dir")
    fast = ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    if METHODS.get(method).metadata.task == "cir":
        from test_cir_bench import TINY_CIR, cir_bench_args

        def args(root, *extra):
            return cir_bench_args(root, [*TINY_CIR, *fast], method, "--quiet", *extra)
    else:

        def args(root, *extra):
            return bench_args(root, [*tiny, *fast], method, "--quiet", *extra)

    assert main(args(tmp_path / "a", "--save-weights")) == 0
    trained_path = one_result(tmp_path / "a", method)
    trained = json.loads(trained_path.read_text())
    saved = weights_path(trained_path)
    assert trained["weights"]["path"] == str(saved) and saved.is_file()

    assert main(args(tmp_path / "b", "--eval-only", "--weights", str(saved))) == 0
    scored = json.loads(one_result(tmp_path / "b", method).read_text())
    assert scored["eval_only"] is True and scored["weights"]["loaded_from"] == str(saved)
    assert scored["variant"] == trained["variant"]
    assert scored["metrics"] == pytest.approx(trained["metrics"], abs=1e-6)


def test_eval_only_refuses_what_it_cannot_score(tmp_path, tiny):
    assert main(bench_args(tmp_path, tiny, "supervised", "--save-weights", "--quiet")) == 0
    saved = weights_path(one_result(tmp_path, "supervised"))
    with pytest.raises(ZsbenchError, match="no weights at"):
        from zsbench.runner import bench

        bench("supervised", "synthetic", 1, tiny, tmp_path, eval_only=True, progress=False)
    with pytest.raises(ZsbenchError, match="other model settings.*model.lr"):
        bench("supervised", "synthetic", 0, [*tiny, "model.lr=0.5"], tmp_path / "x",
              eval_only=True, weights=saved, progress=False)  # fmt: skip
    with pytest.raises(ZsbenchError, match="holds supervised weights, not lcale"):
        bench("lcale", "synthetic", 0, tiny, tmp_path / "y", eval_only=True, weights=saved,
              progress=False)  # fmt: skip
    with pytest.raises(ZsbenchError, match="does not train"):
        bench("frozen", "synthetic", 0, tiny, tmp_path / "z", eval_only=True, progress=False)


def test_overwrite_without_weights_sets_the_old_weights_aside(tmp_path, tiny):
    assert main(bench_args(tmp_path, tiny, "supervised", "--save-weights", "--quiet")) == 0
    path = one_result(tmp_path, "supervised")
    old = weights_path(path).read_bytes()
    assert main(bench_args(tmp_path, tiny, "supervised", "--overwrite", "--quiet")) == 0
    assert not weights_path(path).exists()  # not this result's weights any more
    aside = list(path.parent.glob("seed0.weights.replaced-*.pt"))
    assert len(aside) == 1 and aside[0].read_bytes() == old
