"""LCALE: loss terms on hand-built inputs, gradients, a short training, and a CLI smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import zsbench.methods.lcale  # noqa: F401  (registers "lcale")
from zsbench.methods.lcale import Lcale, ramp, wasserstein_diag_gaussians

FEAT, CLASSES, SEM = 24, 4, 8


def make_model(**kw) -> Lcale:
    rng = np.random.default_rng(0)
    emb = {"minilm": rng.normal(size=(CLASSES, SEM)).astype(np.float32)}
    args = dict(latent_dim=6, feature_hidden=(32, 32), class_hidden=(16, 16))
    return Lcale(feature_dim=FEAT, num_classes=CLASSES, class_embeddings=emb, **(args | kw))


def pair_batch(n: int = 16, seed: int = 0) -> dict:
    """Sketch and photo features of 4 classes: a class mean plus noise, photos shifted."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, FEAT, generator=g) * 2
    label = torch.arange(n) % CLASSES
    sketch = centres[label] + 0.3 * torch.randn(n, FEAT, generator=g)
    photo = centres[label] + 1.0 + 0.3 * torch.randn(n, FEAT, generator=g)
    return {"sketch": sketch, "photo": photo, "label": label, "index": torch.arange(n)}


def test_wasserstein_closed_form():
    mu1, mu2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    lv = torch.zeros(1, 2)
    assert torch.allclose(wasserstein_diag_gaussians(mu1, lv, mu1, lv), torch.zeros(1), atol=1e-5)
    assert torch.allclose(wasserstein_diag_gaussians(mu1, lv, mu2, lv), torch.tensor([5.0]))
    # sigma 1 vs sigma 2 in both dims: W2^2 = 25 + 2 * (2 - 1)^2
    lv2 = torch.full((1, 2), math.log(4.0))
    w2sq = wasserstein_diag_gaussians(mu1, lv, mu2, lv2, squared=True)
    assert torch.allclose(w2sq, torch.tensor([27.0]))


def test_ramp_follows_cada_warmup():
    assert ramp(0.0, 2.0, 0.2, 0.6) == 0.0
    assert ramp(0.4, 2.0, 0.2, 0.6) == pytest.approx(1.0)
    assert ramp(0.9, 2.0, 0.2, 0.6) == 2.0


def test_forward_backward_gradients_and_embeddings():
    model = make_model()
    out = model.losses(pair_batch(), progress=1.0)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    for name, p in model.named_parameters():  # every encoder and decoder trains
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    items = {
        "feature": torch.randn(5, FEAT),
        "label": torch.zeros(5).long(),
        "domain": torch.ones(5).long(),
    }
    assert model.encode_query(items).shape == (5, 6)
    assert torch.equal(model.encode_gallery(items), model.embed_items(items))


def test_weights_are_zero_at_start_of_warmups():
    w = make_model().weights_at(0.0)
    assert w["cross"] == 0.0 and w["wasserstein"] == 0.0 and w["mmd"] == 0.0
    assert make_model().weights_at(1.0)["cross"] == pytest.approx(2.37)


@pytest.fixture
def one_thread():
    """Small models train faster single-threaded on a busy machine (no thread contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_short_training_lowers_loss(one_thread):
    torch.manual_seed(0)
    model = make_model(lr=3e-3)
    opt = model.configure_optimizers()
    batch = pair_batch(32)
    first = model.losses(batch, 1.0)["loss"].item()
    for _ in range(100):
        opt.zero_grad()
        model.losses(batch, 1.0)["loss"].backward()
        opt.step()
    torch.manual_seed(1)
    assert model.losses(batch, 1.0)["loss"].item() < 0.7 * first
