"""LinCIR: keyword masking, the noise, the self-masking loss, what trains, a bench run."""

from __future__ import annotations

import random

import pytest
import torch

from zsbench.clip import encode_prompts, encode_with_pseudo_tokens
from zsbench.methods.lincir import Lincir, encode_masked, mask_keywords
from zsbench.methods.pseudo_word import noisy_features


@pytest.fixture(scope="module")
def model() -> Lincir:
    torch.manual_seed(0)
    return Lincir(clip="tiny")


def test_mask_keywords_replaces_keyword_runs_by_whole_words():
    rng = random.Random(0)
    assert mask_keywords("A large red striped star", rng) == "$"
    assert mask_keywords("a cat sitting on a mat", rng) == "$ sitting on $"
    # "a" is not replaced inside "cat" (the official str.replace would)
    assert "c$t" not in mask_keywords("a cat with a", rng)
    assert mask_keywords("", rng) == "a photo of $"
    assert mask_keywords("With the $ sign", rng) == "with $"  # "$" cleaned, then "the sign" masked


def test_mask_keywords_falls_back_to_one_random_word():
    words = "on with of".split()
    out = mask_keywords("on with of", random.Random(1))
    assert out.split().count("$") == 1 and len(out.split()) == len(words)


def test_noise_strength_is_uniform_times_gaussian():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4000, 256)
    noise = noisy_features(x, 2.0, generator=g)
    per_row = noise.std(dim=1)  # = 2 * u with u ~ U[0, 1)
    assert per_row.max() <= 2.0 + 0.2 and per_row.min() >= 0
    assert per_row.mean().item() == pytest.approx(1.0, abs=0.05)  # E[2u] = 1
    assert per_row.std().item() == pytest.approx(2 / 12**0.5, abs=0.05)  # sd of 2u
    assert torch.equal(noisy_features(x, 0.0), x)


def test_encode_masked_equals_single_placeholder_encoding_and_fills_every_dollar(model):
    tokens = torch.randn(2, model.clip.text_model.config.hidden_size)
    texts = ["a photo of $ that is red", "$ on a table"]
    a = encode_masked(model.clip, model.tokenizer, texts, tokens)
    b = encode_with_pseudo_tokens(model.clip, model.tokenizer, texts, tokens)
    assert torch.allclose(a, b, atol=1e-5)
    # two placeholders: both take the token, so the result depends on it at both positions
    two = encode_masked(model.clip, model.tokenizer, ["$ with $"], tokens[:1])
    word = model.clip.text_model.embeddings.token_embedding.weight[
        model.tokenizer("x")["input_ids"][1]
    ]
    same = encode_masked(model.clip, model.tokenizer, ["$ with $"], word[None])
    assert torch.allclose(
        same, encode_prompts(model.clip, model.tokenizer, ["x with x"]), atol=1e-5
    )
    assert not torch.allclose(two, same)


def test_loss_is_zero_when_phi_returns_the_masked_word(model):
    """MSE(encode(c$ with $ = embedding of the masked word), encode(c)) = 0: the optimum."""
    caption = "x"
    x_id = model.tokenizer(caption)["input_ids"][1]
    emb = model.clip.text_model.embeddings.token_embedding.weight[x_id]
    pred = encode_masked(model.clip, model.tokenizer, ["$"], emb[None])
    target = encode_prompts(model.clip, model.tokenizer, [caption])
    assert torch.nn.functional.mse_loss(pred, target).item() < 1e-10


def test_one_step_trains_phi_only(model):
    model.train()
    assert not model.clip.training  # frozen CLIP stays in eval mode
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    phi_before = [p.clone() for p in model.phi.parameters()]
    opt = model.configure_optimizers()
    loss = model.phi_loss(["a large red striped star", "a small blue dotted heart"])
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(phi_before, model.phi.parameters()))
    assert all(torch.equal(v, model.clip.state_dict()[k]) for k, v in clip_before.items())


def test_query_uses_phi_of_the_reference_image(model):
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    q = model.encode_query(
        {"reference": images, "text": ["is red", "is red"], "index": torch.arange(2)}
    )
    assert q.shape == (2, model.clip.config.projection_dim)
    assert torch.allclose(q.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(q[0], q[1])  # different images, same text -> different queries
