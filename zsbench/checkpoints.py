"""Trained weights and resumable training, beside each result.

    <result folder>/seed<N>.weights.pt   the trained method's state_dict and the config it was
                                          trained with (kept; `bench --eval-only` scores it)
    <result folder>/seed<N>.ckpt/last.ckpt  Lightning's checkpoint at the end of the latest
                                          epoch (optimizer, loops, RNG): a rerun of the same
                                          cell resumes from it; removed once the result is out

Both are written only when `trainer.enable_checkpointing=true` (`bench --save-weights`).
Resuming is exact for a method whose training randomness is the global RNGs: the checkpoint
holds the torch, numpy, Python and CUDA generator states at the epoch's end (`RngState`), they
are put back before the first resumed batch is drawn, and the sanity-check validation (which
would draw from them) is skipped on a resume.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch

from zsbench.errors import ZsbenchError

WEIGHTS_FORMAT = "zsbench-weights/1"


def weights_path(result: Path) -> Path:
    result = Path(result)
    return result.with_name(result.stem + ".weights.pt")


def checkpoint_dir(result: Path) -> Path:
    result = Path(result)
    return result.with_name(result.stem + ".ckpt")


def resume_point(result: Path) -> Path | None:
    """The checkpoint an interrupted run of this result left, if any."""
    last = checkpoint_dir(result) / "last.ckpt"
    return last if last.is_file() else None


def checkpoint_epochs(path: Path, cfg: dict) -> int | None:
    """Epochs completed when `path` (a checkpoint of `RngState`'s runs) was written, or None
    when it was written by a run of another config (its folder is then moved aside, kept)."""
    import json

    from zsbench.identity import same_config

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        epochs = int(ckpt["epoch"]) + 1
        states = [v for k, v in ckpt.get("callbacks", {}).items() if "RngState" in str(k)]
        stored = json.loads(states[0]["config"]) if states else None
    except Exception as err:
        raise ZsbenchError(
            f"Checkpoint {path} is unreadable ({type(err).__name__}: {err}); delete its folder "
            f"(the run then starts from epoch 0) or rerun with --overwrite."
        ) from err
    if stored is None or not same_config(stored, json.loads(json.dumps(cfg, default=str))):
        folder = Path(path).parent
        aside = folder.with_name(folder.name + f".other-config-{int(os.path.getmtime(path))}")
        folder.rename(aside)
        print(f"{path} was written by a run of another config: moved to {aside}, not resumed")
        return None
    return epochs


def model_checkpoint(result: Path):
    """Lightning's ModelCheckpoint writing `last.ckpt` at the end of every training epoch."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(
        dirpath=str(checkpoint_dir(result)),
        filename="last",
        save_top_k=1,  # without a monitor: the latest epoch, overwritten in place
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )


def _rng_states() -> dict:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngState(L.Callback):
    """Keeps the global RNG states in every checkpoint and puts them back when training
    resumes from one, at fit start: before the first resumed batch is drawn (Lightning draws
    it before `on_train_start`), after everything the method built at construction."""

    def __init__(self, cfg: dict) -> None:
        import json

        self._config = json.dumps(cfg, sort_keys=True, default=str)  # which run this resumes
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        return {"rng": _rng_states(), "config": self._config}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict.get("rng")

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None


def _write_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(model, path: Path, method: str, cfg: dict, variant: str, epochs: int) -> dict:
    """Write the trained `model`'s state_dict with the config it was trained with; returns
    what the result records about the file."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _write_atomic(
        {
            "format": WEIGHTS_FORMAT,
            "method": method,
            "variant": variant,
            "epochs": epochs,
            "config": cfg,
            "state_dict": state,
        },
        Path(path),
    )
    return {"path": str(path), "bytes": Path(path).stat().st_size, "epochs": epochs}


def read_weights(path: Path, method: str) -> dict:
    """A weights file written by `save_weights` for `method`, checked."""
    path = Path(path)
    if not path.is_file():
        raise ZsbenchError(
            f"--eval-only: no weights at {path}. Train and keep them first (bench --save-weights"
            f" or --set trainer.enable_checkpointing=true), or give --weights PATH."
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ZsbenchError(f"Weights file {path} is unreadable ({type(err).__name__}).") from err
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ZsbenchError(
            f"{path} is not a zsbench weights file (format {WEIGHTS_FORMAT}); bench --save-weights"
            f" writes them beside the result as seed<N>.weights.pt."
        )
    if blob["method"] != method:
        raise ZsbenchError(f"{path} holds {blob['method']} weights, not {method}.")
    return blob


def load_weights(model, blob: dict, path: Path, model_cfg: dict) -> None:
    """Put the saved state into `model` (built from `model_cfg`): the model section must be
    the one the weights were trained with, or they are another experiment."""
    from zsbench.identity import config_diff

    diff = config_diff({"model": blob["config"]["model"]}, {"model": model_cfg})
    if diff:
        raise ZsbenchError(
            f"{path} was trained with other model settings ({', '.join(sorted(diff))}); give "
            f"the same --set model.* as its training run, or score them under their own config."
        )
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise ZsbenchError(
            f"{path} does not fit the {blob['method']} model built from this config (missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}): another dataset's "
            f"classes or another zsbench version?"
        )


def read_official_state(path: str | Path, containers: tuple[str, ...], what: str) -> dict:
    """A state dict from a checkpoint as an official repository saves it: the first of
    `containers` present (e.g. Pic2Word's "state_dict_img2text", SEARLE's and LinCIR's "Phi"),
    a zsbench weights file or Lightning checkpoint ("state_dict", keys of the module `what`
    under a "<what>." or "base.<what>." prefix), or a bare state dict; DDP's "module." prefix
    stripped (the official scripts save the wrapped model)."""
    path = Path(path)
    if not path.is_file():
        raise ZsbenchError(
            f"checkpoint {str(path)!r} does not exist; give the file the official code saved "
            f"(keys {', '.join(containers)}) or a zsbench seed<N>.weights.pt."
        )
    obj = torch.load(path, map_location="cpu", weights_only=False)
    state = None
    if isinstance(obj, dict):
        for key in containers:
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
        if state is None and isinstance(obj.get("state_dict"), dict):
            prefixes = (f"{what}.", f"base.{what}.")
            state = {
                k.split(f"{what}.", 1)[1]: v
                for k, v in obj["state_dict"].items()
                if k.startswith(prefixes)
            }
    if state is None and isinstance(obj, dict) and obj:
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = obj  # a bare state dict
    if not isinstance(state, dict) or not state:
        raise ZsbenchError(
            f"checkpoint {str(path)!r} holds no {what} weights (looked for "
            f"{', '.join(containers)}, a state_dict with '{what}.' keys, or a bare state dict)."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_official(module, path: str | Path, containers: tuple[str, ...], what: str) -> None:
    """Load `read_official_state` into `module` and freeze it (a released part is used as
    trained, and DDP rejects parameters that get no gradient)."""
    state = read_official_state(path, containers, what)
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ZsbenchError(
            f"checkpoint {str(path)!r} does not fit this {what} (its sizes follow model.clip; "
            f"is it the checkpoint of that CLIP?): {err}"
        ) from err
    module.requires_grad_(False)
