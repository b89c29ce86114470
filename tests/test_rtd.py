"""RTD: the refined batch, the loss, what trains, phi checkpoints, a bench run."""

from __future__ import annotations

import math

import pytest
import torch

from zsbench.errors import ZsbenchError
from zsbench.methods.pseudo_word import nt_xent_loss
from zsbench.methods.rtd import LincirRtd, load_phi_checkpoint, refined_batch

TRIPLETS = (
    ["a red star", "a blue heart"],
    ["make it green", "make it dotted"],
    ["a green star", "a dotted blue heart"],
)


@pytest.fixture(scope="module")
def model() -> LincirRtd:
    torch.manual_seed(0)
    m = LincirRtd(clip="tiny", lr=1e-3)
    m.phi_ready = True  # stage 1 skipped: a random phi is enough for these checks
    return m


def test_refined_batch_pairs_each_token_with_a_hard_negative():
    queries, frozen, rows = refined_batch(*TRIPLETS)
    assert queries == [
        "a photo of $ that make it green",
        "a photo of $ that make it dotted",
        "a photo of $",
        "a photo of $",
    ]
    assert frozen == ["a green star", "a dotted blue heart", "a red star", "a blue heart"]
    # row i and row B + i carry the same token (triplet i) but different targets
    assert rows == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="must be equal"):
        refined_batch(["a"], ["b", "c"], ["d"])


def test_loss_is_minimal_when_queries_equal_their_anchors():
    anchors = torch.eye(4)
    t = 0.5
    perfect = nt_xent_loss(anchors, anchors.clone(), t)
    # closed form: each of the 8 rows has its partner identical (cos 1) and 6 orthogonal rows
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 6 * math.exp(0)))
    assert perfect.item() == pytest.approx(expected, rel=1e-5)
    shuffled = nt_xent_loss(anchors, anchors[[1, 0, 3, 2]], t)
    assert shuffled > perfect


def test_nt_xent_matches_the_official_formula():
    """PALAVRA's loss as the official utils.contrastive_loss writes it, on random data."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    t = 0.25
    v1, v2 = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    num = torch.exp(torch.diag(v1 @ v2.T) / t).repeat(2)
    joint = torch.cat([v1, v2])
    pairs = torch.exp(joint @ joint.T / t)
    den = (pairs - pairs * torch.eye(10)).sum(0)
    official = -torch.log(num / den).mean()
    assert nt_xent_loss(a, b, t).item() == pytest.approx(official.item(), rel=1e-5)


def test_one_step_trains_the_query_text_encoder_only(model):
    model.train()
    assert not model.base.phi.training and not model.clip.training
    frozen_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    phi_before = {k: v.clone() for k, v in model.base.phi.state_dict().items()}
    tower_before = [p.clone() for p in model.query_text.parameters()]
    opt = model.configure_optimizers()
    loss = model.rtd_loss(*TRIPLETS)
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert all(p.grad is None for p in model.base.phi.parameters())
    assert all(p.grad is not None for p in model.query_text.text_model.encoder.parameters())
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(tower_before, model.query_text.parameters()))
    assert all(torch.equal(v, model.clip.state_dict()[k]) for k, v in frozen_before.items())
    assert all(torch.equal(v, model.base.phi.state_dict()[k]) for k, v in phi_before.items())


def test_queries_go_through_the_tuned_encoder(model):
    model.eval()
    batch = {
        "reference": torch.randn(2, 3, 64, 64),
        "text": ["is red"] * 2,
        "index": torch.arange(2),
    }
    tuned = model.encode_query(batch)
    base = model.base.encode_query(batch)  # same phi, frozen text encoder
    assert tuned.shape == base.shape and not torch.allclose(tuned, base)


def test_phi_checkpoint_official_and_lightning_formats(model, tmp_path):
    state = {k: torch.randn_like(v) for k, v in model.base.phi.state_dict().items()}
    torch.save({"Phi": state}, tmp_path / "official.pt")
    fresh = LincirRtd(clip="tiny", phi_checkpoint=str(tmp_path / "official.pt"))
    assert fresh.phi_ready
    assert all(torch.equal(v, fresh.base.phi.state_dict()[k]) for k, v in state.items())
    torch.save({"state_dict": {f"phi.{k}": v for k, v in state.items()}}, tmp_path / "pl.ckpt")
    load_phi_checkpoint(model.base.phi, tmp_path / "pl.ckpt")
    with pytest.raises(ZsbenchError, match="does not exist"):
        load_phi_checkpoint(model.base.phi, tmp_path / "missing.pt")
    torch.save({"Phi": {"layers.0.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ZsbenchError, match="does not fit"):
        load_phi_checkpoint(model.base.phi, tmp_path / "bad.pt")


def test_unknown_base_args_fail_clearly():
    with pytest.raises(ZsbenchError, match="not arguments of lincir"):
        LincirRtd(clip="tiny", base_args={"phi_droput": 0.1})


def test_the_paper_preset_starts_from_a_trained_phi(tmp_path):
    """RTD's stage 1 in the paper is a complete base run: preset=paper sets base_epochs=null,
    which needs phi_checkpoint (a few epochs of the base here would not be the paper's phi)."""
    from zsbench.config import DATA_PROVIDED, resolve_config
    from zsbench.registry import DATASETS, METHODS

    for method in ("lincir+rtd", "searle+rtd", "pic2word+rtd"):
        cfg = resolve_config(METHODS.get(method), DATASETS.get("synthetic-cir"), method,
                             "synthetic-cir", ["preset=paper"], DATA_PROVIDED)  # fmt: skip
        assert cfg["model"]["base_epochs"] is None
    with pytest.raises(ZsbenchError, match="phi_checkpoint=PATH"):
        LincirRtd(clip="tiny", base_epochs=None)
    with pytest.raises(ZsbenchError, match="base_epochs must be >= 1"):
        LincirRtd(clip="tiny", base_epochs=0)
    phi = LincirRtd(clip="tiny").base.phi
    torch.save({"Phi": phi.state_dict()}, tmp_path / "phi.pt")
    loaded = LincirRtd(clip="tiny", base_epochs=None, phi_checkpoint=str(tmp_path / "phi.pt"))
    assert loaded.phi_ready
