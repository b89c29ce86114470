"""Weights resolution (real embedded EfficientNet-Lite0) and the feature cache."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import zsbench.features as features_mod
from zsbench.backbones import create_backbone, resolve_weights
from zsbench.datamodules.synthetic import SyntheticSketchy
from zsbench.errors import ZsbenchError
from zsbench.features import cached_features

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_embedded_efficientnet_lite0_recognises_a_real_cat():
    """The package weights load into timm's efficientnet_lite0 and are truly ImageNet weights."""
    import timm
    from PIL import Image
    from skimage.data import chelsea

    model, info = create_backbone("efficientnet_lite0", "default")
    assert info.pretrained_on == "imagenet-1k" and len(info.weights_sha256) == 64
    assert info.mean == (0.5, 0.5, 0.5) and info.feature_dim == 1280
    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    from zsbench.backbones import _load_into, _load_state_dict

    _load_into(classifier, _load_state_dict(resolve_weights("efficientnet_lite0", "default")), "x")
    img = Image.fromarray(chelsea()).resize((224, 224))
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        top = classifier.eval()((x - 0.5) / 0.5).argmax().item()
    assert top in IMAGENET_CATS
    # the feature extractor is the same network without its classifier
    with torch.no_grad():
        assert model((x - 0.5) / 0.5).shape == (1, 1280)


def test_missing_weights_fail_with_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("ZSBENCH_WEIGHTS", raising=False)
    with pytest.raises(ZsbenchError, match="Looked in: .*ZSBENCH_WEIGHTS"):
        resolve_weights("resnet18", "default")
    with pytest.raises(ZsbenchError, match="does not exist"):
        resolve_weights("resnet18", str(tmp_path / "nope.pth"))
    with pytest.raises(ZsbenchError, match="Did you mean"):
        create_backbone("efficientnet_lite00", "random")


def test_local_weights_file_and_random(tmp_path):
    import timm

    net = timm.create_model("resnet10t", pretrained=False)
    torch.save(net.state_dict(), tmp_path / "r.pth")
    model, info = create_backbone("resnet10t", str(tmp_path / "r.pth"))
    assert info.weights_sha256 and info.weights == str(tmp_path / "r.pth")
    assert info.pretrained_on == "unknown"  # a user's file is not claimed as ImageNet
    torch.testing.assert_close(
        model.state_dict()["conv1.0.weight"], net.state_dict()["conv1.0.weight"]
    )
    _, rinfo = create_backbone("resnet10t", "random")
    assert rinfo.weights_sha256 is None and rinfo.pretrained_on is None


def tiny_dm(tmp_path, image_size=32):
    dm = SyntheticSketchy(
        n_shapes=2,
        n_patterns=2,
        photos_per_class=3,
        sketches_per_class=3,
        render_size=32,
        image_size=image_size,
        unseen=["plain_circle"],
        cache=str(tmp_path / "data"),
    )
    dm.setup()
    return dm


def test_feature_cache_hits_and_invalidates(tmp_path, monkeypatch):
    calls = []
    real = features_mod._extract
    monkeypatch.setattr(features_mod, "_extract", lambda *a: calls.append(1) or real(*a))
    dm = tiny_dm(tmp_path)
    f1, _, s1 = cached_features(dm, root=tmp_path, progress=False)
    f2, _, s2 = cached_features(tiny_dm(tmp_path), root=tmp_path, progress=False)
    assert (s1["cache_hit"], s2["cache_hit"]) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(f1, f2)
    assert f1.shape == (len(dm.items), 1280)
    # a different transform is a different key: extracted anew
    _, _, s3 = cached_features(tiny_dm(tmp_path, image_size=40), root=tmp_path, progress=False)
    assert not s3["cache_hit"] and s3["key"] != s1["key"] and len(calls) == 2
    # another backbone / weights: another key
    _, _, s4 = cached_features(dm, "resnet10t", "random", root=tmp_path, progress=False)
    assert s4["key"] not in (s1["key"], s3["key"])


def test_files_replaced_in_place_miss_the_cache(tmp_path):
    """Same paths, new contents (a re-download, an edit): the fingerprint holds each file's
    size and mtime, so the old features are not served for the new images."""
    dm = tiny_dm(tmp_path)
    f1, _, s1 = cached_features(dm, root=tmp_path, progress=False)
    photo = next(it.path for it in dm.items if it.domain == 1)
    os.utime(photo, ns=(time.time_ns(), time.time_ns() + 10**9))
    f2, _, s2 = cached_features(tiny_dm(tmp_path), root=tmp_path, progress=False)
    assert not s2["cache_hit"] and s2["key"] != s1["key"]


@pytest.mark.parametrize("fault", ["overwrite", "truncate", "meta", "no-meta"])
def test_a_damaged_cache_entry_is_rebuilt_never_used(fault, tmp_path, capsys):
    """Each entry carries its array's sha256: zeroing part of it (same size), truncating it or
    losing its meta.json rebuilds the entry with one line naming the file."""
    f1, _, s1 = cached_features(tiny_dm(tmp_path), root=tmp_path, progress=False)
    good = np.array(f1)
    target = Path(s1["path"])
    raw = target.read_bytes()
    if fault == "overwrite":
        target.write_bytes(raw[: len(raw) // 2] + bytes(len(raw) - len(raw) // 2))
    elif fault == "truncate":
        target.write_bytes(raw[: len(raw) - 100])
    elif fault == "meta":
        (target.parent / "meta.json").write_text("{not json")
    else:
        (target.parent / "meta.json").unlink()
    capsys.readouterr()
    f2, _, s2 = cached_features(tiny_dm(tmp_path), root=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert not s2["cache_hit"] and str(target) in err and "extracting again" in err
    np.testing.assert_array_equal(np.array(f2), good)
    _, _, s3 = cached_features(tiny_dm(tmp_path), root=tmp_path, progress=False)
    assert s3["cache_hit"]  # the rebuilt entry is whole again


def test_concurrent_extraction_of_one_key_extracts_once(tmp_path, monkeypatch):
    calls = []
    real = features_mod._extract
    monkeypatch.setattr(features_mod, "_extract", lambda *a: calls.append(1) or real(*a))
    out = []
    threads = [
        threading.Thread(
            target=lambda: out.append(
                cached_features(tiny_dm(tmp_path), root=tmp_path, progress=False)
            )
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 2
    np.testing.assert_array_equal(out[0][0], out[1][0])


def test_default_weights_from_a_populated_hf_cache(tmp_path, monkeypatch):
    """timm's hub repo in the local HF cache is used, offline, and recorded by sha256."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("resnet10t", pretrained=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(net.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("ZSBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_weights("resnet10t", "default")
    assert path.name == "model.safetensors"
    model, info = create_backbone("resnet10t", "default")
    assert info.pretrained_on == "imagenet-1k" and info.weights_sha256
    torch.testing.assert_close(
        model.state_dict()["conv1.0.weight"], net.state_dict()["conv1.0.weight"]
    )
    with pytest.raises(ZsbenchError, match="no timm/resnet18"):
        resolve_weights("resnet18", "default")


@pytest.mark.parametrize("name", ["vgg16_bn", "mobilenetv3_large_100", "resnet18"])
def test_feature_dim_is_what_the_backbone_outputs(name):
    """Backbones with a pre-logits head (vgg16_bn's fc6/fc7, MobileNetV3's conv_head) output
    more than their last feature map's channels; the recorded width is the output's."""
    model, info = create_backbone(name, weights="random")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert info.feature_dim == out.shape[1]


def test_no_worker_processes_are_forked_from_a_thread():
    from zsbench.features import extraction_workers

    assert extraction_workers(0, cores=16) == 4
    seen = []
    t = threading.Thread(target=lambda: seen.append(extraction_workers(3, cores=16)))
    t.start()
    t.join()
    assert seen == [0]
