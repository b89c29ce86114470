"""CFSA: WGAN-GP pieces on hand-built inputs, gradient routing, a short training, a CLI run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zsbench.methods.cfsa  # noqa: F401  (registers "cfsa")
from zsbench.methods.cfsa import Cfsa, gradient_penalty

FEAT, CLASSES, SEM = 16, 4, 8


def make_model(**kw) -> Cfsa:
    rng = np.random.default_rng(0)
    emb = {"minilm": rng.normal(size=(CLASSES, SEM)).astype(np.float32)}
    args = dict(hidden_dim=32, n_critic=2)
    return Cfsa(feature_dim=FEAT, num_classes=CLASSES, class_embeddings=emb, **(args | kw))


def pair_batch(n: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(CLASSES, FEAT, generator=g) * 2
    label = torch.arange(n) % CLASSES
    sketch = centres[label] + 0.2 * torch.rand(n, FEAT, generator=g)
    photo = centres[label].flip(-1) + 0.2 * torch.rand(n, FEAT, generator=g)
    return {"sketch": sketch, "photo": photo, "label": label, "index": torch.arange(n)}


@pytest.fixture
def one_thread():
    """Small models train faster single-threaded on a busy machine (no thread contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_gradient_penalty_closed_form():
    # D(x, a) = w . x has gradient w everywhere: penalty (||w|| - 1)^2
    critic = nn.Linear(3 + 2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0, 0.0, 7.0, 7.0]]))
    real, fake, cond = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 2)
    assert gradient_penalty(critic, real, fake, cond).item() == pytest.approx(16.0)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8, 0.0, 1.0, 1.0]]))
    assert gradient_penalty(critic, real, fake, cond).item() == pytest.approx(0.0, abs=1e-10)


def test_defaults_follow_jfse_weights():
    model = make_model()
    assert model.hparams.synthetic_weight == 0.01  # JFSE: 0.01 * cycle loss on fakes in loss_Re
    assert model.hparams.cycle_weight == 0.1  # JFSE: 0.1 * mean squared cycle error in loss_G
    assert model.hparams.feature_cycle_weight == 0.0 and len(model.decoders) == 0
    # the generator's cycle term is a mean over dimensions (JFSE's reduce_mean), so its
    # weight does not grow with the size of the class embedding
    batch = pair_batch()
    torch.manual_seed(0)
    cyc = model.generator_loss(batch)[0]["cycle"]
    torch.manual_seed(0)
    fakes = {d: model.synthesise(d, model.class_emb[batch["label"]]) for d in ("sketch", "photo")}
    a = model.class_emb[batch["label"]]
    expected = sum((model.regressors[d](fakes[d]) - a).pow(2).mean() for d in fakes)
    assert cyc.item() == pytest.approx(expected.item(), rel=1e-5)


def test_losses_finite_and_gradients_reach_the_right_networks():
    model = make_model(feature_cycle_weight=0.1)
    batch = pair_batch()
    d_out = model.critic_loss(batch)
    model.zero_grad()
    d_out["loss"].backward()
    assert all(p.grad is not None for p in model.critics.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generators.parameters())

    model.zero_grad()
    g_out, fakes = model.generator_loss(batch)
    assert all(torch.isfinite(v) for v in g_out.values())
    g_out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generators.parameters())

    model.zero_grad()
    r_out = model.regressor_loss(batch, fakes)
    assert all(torch.isfinite(v) for v in r_out.values())
    r_out["loss"].backward()
    for mod in (model.regressors, model.decoders):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())
    # the synthetic features are detached: the regressor loss does not train the generators
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generators.parameters())


def test_regression_terms_vanish_when_the_regressors_hit_the_class_embeddings():
    """Features that are one-hot class codes and linear regressors whose columns are the class
    embeddings: real and synthetic regression terms are 0; one wrong label makes them > 0."""
    model = make_model()
    onehot = torch.eye(CLASSES, FEAT)
    for d in ("sketch", "photo"):
        lin = nn.Linear(FEAT, SEM, bias=False)
        with torch.no_grad():
            lin.weight.zero_()
            lin.weight[:, :CLASSES] = model.class_emb.T
        model.regressors[d] = lin
    label = torch.tensor([0, 1, 2, 3, 1])
    batch = {"sketch": onehot[label], "photo": onehot[label], "label": label}
    fakes = {d: onehot[label] for d in ("sketch", "photo")}
    out = model.regressor_loss(batch, fakes)
    assert out["regression"].item() == pytest.approx(0.0, abs=1e-10)
    assert out["synthetic"].item() == pytest.approx(0.0, abs=1e-10)
    wrong = dict(batch, label=torch.tensor([1, 1, 2, 3, 1]))
    a0, a1 = model.class_emb[0], model.class_emb[1]
    expected = 2 * (a0 - a1).pow(2).sum().item() / 5  # one item of five, in both domains
    assert model.regressor_loss(wrong, fakes)["regression"].item() == pytest.approx(expected)
    items = {
        "feature": torch.rand(5, FEAT),
        "label": torch.zeros(5).long(),
        "domain": torch.zeros(5).long(),
    }
    assert model.encode_query(items).shape == (5, SEM)
    assert torch.equal(model.encode_query(items), model.embed_items(items))


def test_short_training_lowers_regression_loss(one_thread):
    torch.manual_seed(0)
    model = make_model(lr=1e-3)
    opt_d, opt_g, opt_r = model.configure_optimizers()
    batch = pair_batch(32)
    first = model.regressor_loss(batch, model.generator_loss(batch)[1])["regression"].item()
    for _ in range(60):
        for _ in range(model.hparams.n_critic):
            opt_d.zero_grad()
            model.critic_loss(batch)["loss"].backward()
            opt_d.step()
        opt_g.zero_grad()
        g_out, fakes = model.generator_loss(batch)
        g_out["loss"].backward()
        opt_g.step()
        opt_r.zero_grad()
        model.regressor_loss(batch, fakes)["loss"].backward()
        opt_r.step()
    last = model.regressor_loss(batch, model.generator_loss(batch)[1])["regression"].item()
    assert last < 0.5 * first


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["label"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.batch.items()}


@pytest.mark.parametrize("target", [0.2, 1.0, None])
def test_feature_rms_scales_training_and_retrieval_features_alike(one_thread, target):
    """`feature_rms`: one scalar from the training pairs (default 0.2; None: raw features);
    training, queries and gallery all see the same scalar."""
    assert make_model().hparams.feature_rms == 0.2
    import lightning as L

    batch = pair_batch(32)
    model = make_model(feature_rms=target)
    loader = torch.utils.data.DataLoader(_Pairs(batch), batch_size=16)
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu").fit(model, loader)  # fmt: skip
    rms = torch.cat([batch["sketch"], batch["photo"]]).square().mean().sqrt().item()
    expected = 1.0 if target is None else target / rms
    assert model.feature_scale.item() == pytest.approx(expected, rel=1e-5)
    x = torch.rand(3, FEAT)
    model.eval()
    assert torch.allclose(
        model.encode_gallery({"feature": x}), model.regressors["photo"](x * expected)
    )
    assert torch.allclose(
        model.encode_query({"feature": x}), model.regressors["sketch"](x * expected)
    )
