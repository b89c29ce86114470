"""CVAE (Yelamarthi et al., ECCV 2018): losses, gradients, generation, training, CLI smoke."""

from __future__ import annotations

import pytest
import torch

import zsbench.methods.cvae  # noqa: F401  (registers "cvae")
from zsbench.config import signature_defaults
from zsbench.methods.cvae import CVAE
from zsbench.methods.sketch_conditioned import FeatureGenerator


def small(**kw) -> CVAE:
    args = {"feature_dim": 12, "hidden_dim": 16, "latent_dim": 4, "n_samples": 5}
    return CVAE(**{**args, **kw})


def test_defaults_are_the_official_code():
    p = signature_defaults(CVAE)  # __init__ defaults, through **kwargs to the base
    official = {
        "hidden_dim": 2048,
        "latent_dim": 1024,
        "dropout": 0.3,
        "recon_weight": 1.0,
        "sketch_recon_weight": 10.0,
        "lr": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "n_samples": 100,
        "pairing": "instance",
    }
    assert {k: p[k] for k in official} == official
    assert CVAE.train_on == "pairs" and CVAE.similarity == "cosine"


def test_architecture_shapes():
    m = CVAE(feature_dim=10, hidden_dim=8, latent_dim=3)
    enc = [x for x in m.generator.encoder if isinstance(x, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in enc] == [(20, 16), (16, 8)]
    assert (m.mu.in_features, m.mu.out_features) == (8, 3)
    dec = [x for x in m.generator.decoder if isinstance(x, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in dec] == [(13, 8), (8, 10)]
    reg = [x for x in m.generator.sketch_regressor if isinstance(x, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in reg] == [(10, 8), (8, 10)]


def test_forward_backward_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = small()
    terms = m.losses(torch.rand(8, 12), torch.rand(8, 12))
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_total_loss_weights():
    torch.manual_seed(0)
    m = small(sketch_recon_weight=10.0, recon_weight=1.0).eval()
    s, p = torch.rand(4, 12), torch.rand(4, 12)
    t = m.losses(s, p)
    assert t["loss"].item() == pytest.approx(
        (t["recon"] + t["kl"] + 10.0 * t["sketch_recon"]).item(), rel=1e-5
    )


def test_generate_mean_is_the_mean_over_prior_draws():
    torch.manual_seed(0)
    g = FeatureGenerator(feature_dim=6, hidden_dim=8, latent_dim=3).eval()
    sketch = torch.rand(5, 6)
    torch.manual_seed(1)
    out = g.generate_mean(sketch, n_samples=7, chunk=14)  # 2 sketches per chunk
    torch.manual_seed(1)
    expected = []
    for i in range(0, 5, 2):
        s = sketch[i : i + 2].repeat_interleave(7, dim=0)
        z = torch.randn(len(s), 3)
        expected.append(g.decode(z, s).view(-1, 7, 6).mean(1))
    assert torch.allclose(out, torch.cat(expected), atol=1e-6)
    m = small().eval()
    q = m.encode_query({"feature": torch.rand(3, 12)})
    assert q.shape == (3, 12) and (q >= 0).all()
    gal = torch.rand(3, 12)
    assert torch.equal(m.encode_gallery({"feature": gal}), gal)


def test_validation_collects_seen_map_without_touching_the_training_rng():
    m = small().eval()
    batch = {
        "feature": torch.rand(6, 12),
        "label": torch.tensor([0, 0, 1, 1, 2, 2]),
        "domain": torch.tensor([0, 1, 0, 1, 0, 1]),
    }
    torch.manual_seed(3)
    state = torch.get_rng_state()
    m.validation_step(batch, 0)
    assert torch.equal(torch.get_rng_state(), state)  # the training draws stay as they were
    first = m._val_metric.query[0]
    assert first.shape == (3, 12) and len(m._val_metric.gallery[0]) == 3
    del m._val_metric
    m.validation_step(batch, 0)  # fixed-seed draws: the same curve point every time
    assert torch.equal(m._val_metric.query[0], first)


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    d = 12
    sketch = torch.rand(256, d)
    photo = torch.relu(sketch @ torch.rand(d, d) / d + 0.05 * torch.randn(256, d))
    m = small(hidden_dim=32, lr=1e-3)

    def total_loss() -> float:
        # train mode (batch statistics) with fixed dropout and latent draws: BatchNorm's
        # Keras-like running averages (momentum 0.01) lag behind over so few steps
        torch.manual_seed(1)
        with torch.no_grad():
            return m.losses(sketch, photo)["loss"].item()

    before = total_loss()
    opt = m.configure_optimizers()
    for _ in range(100):
        i = torch.randint(0, 256, (64,))
        loss = m.losses(sketch[i], photo[i])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert total_loss() < 0.5 * before


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, sketch, photo):
        self.sketch, self.photo = sketch, photo

    def __len__(self):
        return len(self.sketch)

    def __getitem__(self, i):
        return {"sketch": self.sketch[i], "photo": self.photo[i], "label": 0, "index": i}


@pytest.mark.parametrize("target", [1.0, 2.5, None])
def test_features_are_scaled_to_the_target_rms_when_training_starts(target):
    """One scalar puts the training features at `feature_rms` (the loss is not scale-free);
    queries and gallery get the same scalar, so cosine rankings do not depend on it."""
    import lightning as L

    torch.manual_seed(0)
    sketch, photo = 0.3 * torch.rand(40, 12), 0.5 * torch.rand(40, 12)
    m = small(feature_rms=target)
    loader = torch.utils.data.DataLoader(_Pairs(sketch, photo), batch_size=16)
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu").fit(m, loader)  # fmt: skip
    rms = torch.cat([sketch, photo]).square().mean().sqrt().item()
    expected = 1.0 if target is None else target / rms
    assert m.feature_scale.item() == pytest.approx(expected, rel=1e-5)
    gal = torch.rand(3, 12)
    assert torch.allclose(m.encode_gallery({"feature": gal}), gal * expected)
    assert "feature_scale" in m.state_dict()  # saved with the weights
