"""DRCPL: losses in closed form, prompt shapes and placement, what trains, a bench run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import one_result

import zsbench.methods.drcpl  # noqa: F401 - registers "drcpl"
from zsbench.backbones import IMAGENET_MEAN
from zsbench.cli import main
from zsbench.clip import encode_image, encode_text, save_tiny_clip
from zsbench.errors import ZsbenchError
from zsbench.methods.drcpl import (
    PHOTO,
    SKETCH,
    Drcpl,
    cosine_lr_factor,
    itc_loss,
    sdm_loss,
    triplet_cosine_loss,
)

CLASSES = ["cat", "dog", "hot_air_balloon", "car_(sedan)"]


def _model(**kw) -> Drcpl:
    torch.manual_seed(0)
    return Drcpl(CLASSES, clip="tiny", **kw)


def _triplets(n: int = 4, size: int = 64) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "sketch": torch.randn(n, 3, size, size, generator=g),
        "photo": torch.randn(n, 3, size, size, generator=g),
        "negative": torch.randn(n, 3, size, size, generator=g),
        "label": torch.arange(n) % len(CLASSES),
        "negative_label": (torch.arange(n) + 1) % len(CLASSES),
    }


# ----------------------------------------------------------------------------- losses
def test_itc_loss_is_the_cross_entropy_of_scaled_cosines():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = itc_loss(feats, text, torch.tensor([0, 0]), scale=10.0)
    # row 0 logits (10, 0, -10) -> class 0; row 1 logits (0, 10, 0) -> class 0
    row0 = -10 + math.log(math.exp(10) + 1 + math.exp(-10))
    row1 = -0 + math.log(1 + math.exp(10) + 1)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_triplet_loss_with_cosine_distance():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # d = 0 (same direction), d = 1 (orthogonal)
    n = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # d = 1, d = 0
    # max(0, 0 - 1 + 0.3) = 0 and max(0, 1 - 0 + 0.3) = 1.3
    assert triplet_cosine_loss(a, p, n, 0.3).item() == pytest.approx(0.65, rel=1e-6)
    reference = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: 1.0 - F.cosine_similarity(x, y), margin=0.3
    )
    assert triplet_cosine_loss(a, p, n, 0.3).item() == pytest.approx(reference(a, p, n).item())


def test_sdm_loss_closed_form():
    s = torch.eye(2)
    scale, eps = 5.0, 1e-8
    loss = sdm_loss(s, s.clone(), torch.tensor([0, 1]), torch.tensor([0, 1]), scale, eps)
    # each row: softmax(5, 0) against the one-hot target (1, 0)
    p0, p1 = math.exp(5) / (math.exp(5) + 1), 1 / (math.exp(5) + 1)
    row = p0 * (math.log(p0) - math.log(1 + eps)) + p1 * (math.log(p1) - math.log(eps))
    assert loss.item() == pytest.approx(row, rel=1e-4)
    # uniform similarities and all labels equal: softmax == target, the loss vanishes
    same = torch.ones(3, 4) / 2
    zero = sdm_loss(same, same, torch.zeros(3, dtype=torch.long), torch.zeros(3), scale)
    assert abs(zero.item()) < 1e-6


def test_cosine_schedule_runs_from_lr_to_min_lr():
    assert cosine_lr_factor(0, 10, 5e-6, 3e-6) == pytest.approx(1.0)
    assert cosine_lr_factor(9, 10, 5e-6, 3e-6) == pytest.approx(0.6)
    assert cosine_lr_factor(20, 10, 5e-6, 3e-6) == pytest.approx(0.6)
    mid = cosine_lr_factor(3, 7, 5e-6, 3e-6)  # halfway: the mean of lr and min_lr
    assert mid == pytest.approx(0.8)
    assert cosine_lr_factor(0, 1, 5e-6, 3e-6) == 1.0


# ----------------------------------------------------------------------------- prompts
def test_prompt_shapes_and_initial_context():
    model = _model()
    learner = model.prompt_learner
    prompts = learner.eval()()
    n_cls, n_ctx, depth = len(CLASSES), 2, 9
    dt = model.clip.config.text_config.hidden_size
    dv = model.clip.config.vision_config.hidden_size
    assert learner.ctx.shape == (n_ctx, dt)
    assert prompts.text_embeds.shape[0] == n_cls and prompts.text_embeds.shape[2] == dt
    assert len(prompts.text_deep) == depth - 1 and prompts.text_deep[0].shape == (n_ctx, dt)
    for d in (SKETCH, PHOTO):
        assert prompts.vision_first[d].shape == (n_ctx, dv)
        assert len(prompts.vision_deep[d]) == depth - 1
        assert all(p.shape == (n_ctx, dv) for p in prompts.vision_deep[d])
    assert not torch.allclose(prompts.vision_first[SKETCH], prompts.vision_first[PHOTO])
    # the context starts as the embeddings of the first n_ctx tokens of "a photo of a"
    tok = load_tokenizer(model)
    ids = tok("a photo of a")["input_ids"][1 : 1 + n_ctx]
    embed = model.clip.text_model.embeddings.token_embedding
    torch.testing.assert_close(learner.ctx.detach(), embed(torch.tensor(ids)).detach())


def load_tokenizer(model):
    from zsbench.clip import load_clip

    return load_clip(model.hparams.clip).tokenizer


def test_without_residual_mlp_or_deep_prompts_the_text_side_is_plain_clip():
    """prompt_depth=1, res_mlp=False: the class weights are CLIP's own text embeddings of
    'a photo of a {class}.' (the learned context starts as those words)."""
    model = _model(prompt_depth=1, res_mlp=False).eval()
    tok = load_tokenizer(model)
    names = ["cat", "dog", "hot air balloon", "car sedan"]
    batch = tok([f"a photo of a {n}." for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.text_features(model.prompt_learner())
        out = model.clip.get_text_features(**batch)
        theirs = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("j", [1, 8])
def test_the_coupled_prompt_of_layer_j_enters_vision_and_text_at_layer_j(j):
    model = _model().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model.prompt_learner()
        model.prompt_learner.deep_text[j - 1].add_(0.5)  # one text prompt, coupled to vision
        after = model.prompt_learner()
    for d in (SKETCH, PHOTO):  # only layer j's vision prompts move, in both domains
        for i in range(8):
            same = torch.allclose(before.vision_deep[d][i], after.vision_deep[d][i])
            assert same == (i != j - 1)
    h0, h1 = [], []
    with torch.no_grad():
        encode_image(model.clip, x, before.vision_first[SKETCH], before.vision_deep[SKETCH], h0)
        encode_image(model.clip, x, after.vision_first[SKETCH], after.vision_deep[SKETCH], h1)
    for i in range(j):
        torch.testing.assert_close(h0[i], h1[i])
    assert not torch.allclose(h0[j], h1[j])
    t0, t1 = [], []
    with torch.no_grad():
        encode_text(model.clip, before.text_embeds, model.eos_index, before.text_deep, hidden=t0)
        encode_text(model.clip, after.text_embeds, model.eos_index, after.text_deep, hidden=t1)
    for i in range(j):
        torch.testing.assert_close(t0[i], t1[i])
    assert not torch.allclose(t0[j], t1[j])


def test_sketches_and_photos_use_their_own_prompts():
    model = _model().eval()
    batch = {"image": torch.randn(3, 3, 32, 32), "label": torch.arange(3)}  # resized to 64
    with torch.no_grad():
        q, g = model.encode_query(batch), model.encode_gallery(batch)
    assert q.shape == g.shape == (3, model.clip.config.projection_dim)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(q, g)


# ----------------------------------------------------------------------------- training
def test_only_prompt_and_coupling_parameters_train_and_clip_is_unchanged():
    model = _model().train()
    assert not model.clip.training  # frozen CLIP stays in eval mode
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    learner_before = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    opt = model.configure_optimizers()["optimizer"]
    out = model.losses(_triplets())
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert (
        with_grad
        == trainable
        == {n for n, _ in model.named_parameters() if n.startswith("prompt_learner.")}
    )
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)
    opt.step()
    for k, v in model.clip.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    after = model.prompt_learner.state_dict()  # parameters only (the token buffers are not saved)
    assert all(not torch.equal(after[k], learner_before[k]) for k in learner_before)


def test_a_few_steps_lower_the_loss():
    model = _model(res_mlp_dropout=0.0, lr=1e-2).train()
    opt = model.configure_optimizers()["optimizer"]
    batch = _triplets()
    first = None
    for _ in range(8):
        opt.zero_grad()
        loss = model.losses(batch)["loss"]
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert model.losses(batch)["loss"].item() < first


def test_bf16_autocast_gives_finite_losses_and_gradients():
    model = _model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.losses(_triplets(n=2))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(model.prompt_learner.ctx.grad).all()


def test_normalisation_follows_the_official_preprocessing_unless_asked():
    assert _model().backbone_info.mean == IMAGENET_MEAN
    assert _model(normalization="clip").backbone_info.mean[0] == pytest.approx(0.48145466)
    with pytest.raises(ZsbenchError, match="normalization"):
        _model(normalization="bogus")


def test_bad_settings_fail_with_the_fix(tmp_path, monkeypatch):
    shallow = save_tiny_clip(tmp_path / "shallow", layers=3)
    with pytest.raises(ZsbenchError, match="prompt_depth <= 3"):
        Drcpl(CLASSES, clip=str(shallow))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZsbenchError, match="openai/clip-vit-base-patch16"):
        Drcpl(CLASSES)  # the paper's model, absent here
    with pytest.raises(ZsbenchError, match=str(tmp_path / "nope")):
        Drcpl(CLASSES, clip=str(tmp_path / "nope"))


def test_bench_fast_dev_run(tmp_path, tiny):
    args = ["bench", "--method", "drcpl", "--dataset", "synthetic"]
    args += ["--results-dir", str(tmp_path), "--no-progress"]
    args += [x for o in tiny for x in ("--set", o)]
    assert main([*args, "--set", "model.clip=tiny", "--set", "trainer.fast_dev_run=true"]) == 0
    rec = json.loads(one_result(tmp_path, "drcpl").read_text())
    assert rec["status"] == "fast_dev_run"
    assert rec["backbone"]["pretrained_on"] == "random"
    assert tuple(rec["backbone"]["mean"]) == IMAGENET_MEAN
