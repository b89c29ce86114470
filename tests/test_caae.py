"""CAAE (Yelamarthi et al., ECCV 2018): adversarial losses, gradients, training, CLI smoke."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import zsbench.methods.caae  # noqa: F401  (registers "caae")
from zsbench.config import signature_defaults
from zsbench.methods.caae import CAAE, discriminator_loss, generator_loss
from zsbench.methods.sketch_conditioned import FeatureGenerator


def small(**kw) -> CAAE:
    args = {"feature_dim": 12, "hidden_dim": 16, "latent_dim": 4, "disc_hidden_dim": 8}
    return CAAE(**{**args, "n_samples": 5, **kw})


def test_defaults_share_the_cvae_code():
    p = signature_defaults(CAAE)  # __init__ defaults, through **kwargs to the base
    shared = {
        "hidden_dim": 2048,
        "latent_dim": 1024,
        "sketch_recon_weight": 10.0,
        "lr": 2e-4,
        "n_samples": 100,
    }
    assert {k: p[k] for k in shared} == shared
    assert isinstance(small().generator, FeatureGenerator)  # the CVAE block, not a copy
    assert CAAE.train_on == "pairs" and CAAE.similarity == "cosine"


def test_adversarial_losses_closed_form():
    zero = torch.zeros(6)
    # D undecided (logit 0): BCE = log 2 for each side
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(zero).item() == pytest.approx(math.log(2))
    big = torch.full((6,), 30.0)
    # a perfect discriminator: ~0 loss for D, large loss for the encoder
    assert discriminator_loss(big, -big).item() == pytest.approx(0.0, abs=1e-6)
    assert generator_loss(-big).item() == pytest.approx(30.0, rel=1e-3)


def test_gradients_go_where_they_should():
    torch.manual_seed(0)
    m = small()
    terms = m.autoencoder_losses(torch.rand(8, 12), torch.rand(8, 12))
    assert all(torch.isfinite(v).all() for v in terms.values())
    terms["loss"].backward()
    ae = {n: p for n, p in m.named_parameters() if not n.startswith("discriminator.")}
    assert [n for n, p in ae.items() if p.grad is None or p.grad.abs().sum() == 0] == []

    m.zero_grad(set_to_none=True)
    d_loss = m.discriminator_step_loss(terms["z"])
    assert torch.isfinite(d_loss)
    d_loss.backward()
    # the discriminator step trains the discriminator only: the codes are detached
    assert all(p.grad is not None for p in m.discriminator.parameters())
    assert all(p.grad is None for p in ae.values())


class _Pairs(Dataset):
    def __init__(self, n: int = 128, d: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.sketch = torch.rand(n, d, generator=g)
        w = torch.rand(d, d, generator=g)
        self.photo = torch.relu(self.sketch @ w / d)

    def __len__(self) -> int:
        return len(self.sketch)

    def __getitem__(self, i: int) -> dict:
        return {"sketch": self.sketch[i], "photo": self.photo[i], "label": 0, "index": i}


def test_manual_optimisation_training_lowers_the_reconstruction_loss():
    torch.manual_seed(0)
    data = _Pairs()
    m = small(hidden_dim=32, lr=1e-3)
    torch.manual_seed(1)
    with torch.no_grad():
        before = m.autoencoder_losses(data.sketch, data.photo)
    trainer = L.Trainer(
        max_epochs=12,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(m, DataLoader(data, batch_size=32, shuffle=True))
    m.train()  # batch statistics, fixed dropout: BatchNorm's running averages lag (momentum 0.01)
    torch.manual_seed(1)
    with torch.no_grad():
        after = m.autoencoder_losses(data.sketch, data.photo)

    def reconstruction(t: dict) -> float:  # the objective without the adversarial term
        return (t["recon"] + 10.0 * t["sketch_recon"]).item()

    assert reconstruction(after) < 0.6 * reconstruction(before)
    m.eval()
    q = m.encode_query({"feature": data.sketch[:3]})
    assert q.shape == (3, 12) and torch.isfinite(q).all()
