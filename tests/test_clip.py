"""CLIP loading (folder, HF cache, "tiny"), the prompted encoders, the clip-zeroshot baseline."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import one_result

import zsbench.methods.clip_zeroshot  # noqa: F401 - registers "clip-zeroshot"
from zsbench.backbones import sha256_file
from zsbench.cli import main
from zsbench.clip import (
    encode_image,
    encode_text,
    fit_image_size,
    load_clip,
    save_tiny_clip,
    tiny_clip_folder,
)
from zsbench.errors import ZsbenchError
from zsbench.methods.clip_zeroshot import ClipZeroshot


@pytest.fixture(scope="module")
def clip_tiny():
    return load_clip("tiny")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A shallow tiny CLIP written with save_pretrained to a folder, as a user's would be."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "my-clip", image_size=32, layers=3)


def _pooled(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 vs 4


# ----------------------------------------------------------------------------- loading
def test_tiny_is_built_once_under_the_cache_and_recorded_as_random(clip_tiny, _isolated_cache):
    folder = tiny_clip_folder()
    assert folder.parent.parent == _isolated_cache and clip_tiny.folder == folder
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]  # no partial builds
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_clip("tiny")
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    info = clip_tiny.info
    assert info.pretrained_on == "random" and info.name == "tiny"
    assert info.weights_sha256 == sha256_file(folder / "model.safetensors")
    assert again.info.weights_sha256 == info.weights_sha256
    assert info.feature_dim == clip_tiny.model.config.projection_dim
    assert clip_tiny.image_size == 64
    assert (
        not any(p.requires_grad for p in clip_tiny.model.parameters())
        and not clip_tiny.model.training
    )


def test_a_user_folder_loads_with_its_processor_statistics(tiny_folder, tmp_path):
    folder = tmp_path / "clip"
    shutil.copytree(tiny_folder, folder)
    (folder / "zsbench_tiny_clip.json").unlink()  # as a real model's folder: no marker
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    cfg["image_mean"], cfg["image_std"] = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    loaded = load_clip(str(folder))
    assert loaded.folder == folder.resolve() and loaded.image_size == 32
    assert loaded.info.mean == (0.1, 0.2, 0.3) and loaded.info.std == (0.4, 0.5, 0.6)
    assert loaded.info.pretrained_on == "openai-clip"
    assert loaded.info.weights == str(folder.resolve() / "model.safetensors")
    assert len(loaded.model.vision_model.encoder.layers) == 3


def test_a_hub_id_resolves_from_the_local_hf_cache_only(tiny_folder, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--openai--clip-vit-base-patch16"
    commit = "0" * 40
    shutil.copytree(tiny_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_clip("openai/clip-vit-base-patch16")
    assert loaded.folder == (repo / "snapshots" / commit).resolve()
    assert loaded.image_size == 32


def test_missing_models_fail_naming_the_path_and_the_fix(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(ZsbenchError, match="save_pretrained") as err:
        load_clip(str(missing))
    assert str(missing) in str(err.value)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZsbenchError, match="openai/clip-vit-base-patch16.*HF_HUB_OFFLINE"):
        load_clip("openai/clip-vit-base-patch16")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ZsbenchError, match="Could not load a CLIP model from") as err:
        load_clip(str(empty))
    assert str(empty) in str(err.value) and "model.clip=" in str(err.value)


# ----------------------------------------------------------------------------- encoders
def test_encoders_without_prompts_equal_clipmodel(clip_tiny):
    model, tok = clip_tiny.model, clip_tiny.tokenizer
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = encode_image(model, x)
        theirs = _pooled(model.get_image_features(pixel_values=x))
    torch.testing.assert_close(ours, theirs)
    batch = tok(["a photo of a cat.", "a photo of a hot air balloon."], padding=True)
    ids = torch.tensor(batch["input_ids"])
    eos = (ids == tok.eos_token_id).int().argmax(-1)
    assert eos[0] < eos[1]  # the shorter prompt is padded after its end token
    with torch.no_grad():
        ours = encode_text(model, model.text_model.embeddings.token_embedding(ids), eos)
        mask = torch.tensor(batch["attention_mask"])
        theirs = _pooled(model.get_text_features(input_ids=ids, attention_mask=mask))
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("j", [1, 4, 8])
def test_vision_deep_prompt_j_enters_at_layer_j(clip_tiny, j):
    model, n, width = clip_tiny.model, 2, clip_tiny.model.config.vision_config.hidden_size
    x = torch.randn(2, 3, 64, 64)
    first = torch.randn(n, width)
    deep = [torch.randn(n, width) for _ in range(8)]
    changed = [d.clone() for d in deep]
    changed[j - 1] += 1.0
    h0, h1 = [], []
    with torch.no_grad():
        encode_image(model, x, first, deep, hidden=h0)
        encode_image(model, x, first, changed, hidden=h1)
    assert len(h0) == 12 and h0[0].shape == (2, 1 + 16 + n, width)
    for layer in range(j):
        torch.testing.assert_close(h0[layer], h1[layer])
    assert not torch.allclose(h0[j], h1[j])
    # the prompts occupy the last n positions; the class token is pooled
    assert not torch.allclose(h0[j][:, -n:], h1[j][:, -n:])


@pytest.mark.parametrize("j", [1, 5])
def test_text_deep_prompt_j_enters_at_layer_j_after_the_start_token(clip_tiny, j):
    model, tok = clip_tiny.model, clip_tiny.tokenizer
    ids = torch.tensor(tok(["a photo of a cat."])["input_ids"])
    eos = (ids == tok.eos_token_id).int().argmax(-1)
    embeds = model.text_model.embeddings.token_embedding(ids).detach()
    width = embeds.shape[-1]
    deep = [torch.randn(2, width) for _ in range(8)]
    changed = [d.clone() for d in deep]
    changed[j - 1] += 1.0
    h0, h1 = [], []
    with torch.no_grad():
        encode_text(model, embeds, eos, deep, hidden=h0)
        encode_text(model, embeds, eos, changed, hidden=h1)
    for layer in range(j):
        torch.testing.assert_close(h0[layer], h1[layer])
    # causal attention: the start token (position 0) never sees the prompts at 1..2
    torch.testing.assert_close(h0[j][:, 0], h1[j][:, 0])
    assert not torch.allclose(h0[j][:, 1:3], h1[j][:, 1:3])


def test_too_many_deep_prompts_fail_clearly(clip_tiny):
    width = clip_tiny.model.config.vision_config.hidden_size
    deep = [torch.zeros(2, width)] * 12
    with pytest.raises(ZsbenchError, match="prompt_depth <= 12"):
        encode_image(clip_tiny.model, torch.zeros(1, 3, 64, 64), torch.zeros(2, width), deep)


def test_fit_image_size_resizes_only_when_needed():
    x = torch.rand(2, 3, 32, 32)
    assert fit_image_size(x, 32) is x
    y = fit_image_size(x, 64)
    assert y.shape == (2, 3, 64, 64)
    torch.testing.assert_close(y.mean(), x.mean(), atol=0.02, rtol=0)


# ----------------------------------------------------------------------------- clip-zeroshot
def test_clip_zeroshot_is_frozen_and_shares_the_encoder():
    model = ClipZeroshot(clip="tiny").train()
    assert not any(p.requires_grad for p in model.parameters()) and not model.clip.training
    batch = {"image": torch.randn(3, 3, 32, 32), "label": torch.arange(3)}  # resized to 64
    z = model.encode_query(batch)
    assert z.shape == (3, 32)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(model.encode_gallery(batch), z)
    assert model.backbone_info.pretrained_on == "random"


def test_clip_zeroshot_default_model_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZsbenchError, match="openai/clip-vit-base-patch16"):
        ClipZeroshot()


def test_clip_zeroshot_bench_fast_dev_run(tmp_path, tiny):
    args = ["bench", "--method", "clip-zeroshot", "--dataset", "synthetic"]
    args += ["--results-dir", str(tmp_path), "--no-progress"]
    args += [x for o in tiny for x in ("--set", o)]
    assert main([*args, "--set", "model.clip=tiny", "--set", "trainer.fast_dev_run=true"]) == 0
    path = one_result(tmp_path, "clip-zeroshot")
    rec = json.loads(path.read_text())
    assert rec["backbone"]["name"] == "tiny" and rec["backbone"]["pretrained_on"] == "random"
    assert rec["backbone"]["weights_sha256"] == sha256_file(
        tiny_clip_folder() / "model.safetensors"
    )
