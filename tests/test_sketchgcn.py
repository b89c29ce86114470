"""SketchGCN: the graph, the GCN layer, the CVAE's KL, gradients, a short fit, the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zsbench.methods.sketchgcn  # noqa: F401 - registers "sketchgcn"
from zsbench.methods.sketchgcn import (
    GraphConvolution,
    SketchGCN,
    normalize_adjacency,
    semantic_adjacency,
)

NUM_CLASSES = 4


def make_model(**kw) -> SketchGCN:
    torch.manual_seed(0)
    sem = {"minilm": np.random.default_rng(0).normal(size=(NUM_CLASSES, 16)).astype("float32")}
    args = dict(
        num_classes=NUM_CLASSES,
        class_embeddings=sem,
        weights="random",
        embedding_dim=32,
        gcn_hidden_dim=32,
        cvae_hidden_dim=32,
        latent_dim=8,
    )
    return SketchGCN(**{**args, **kw})


def pair_batch(n: int = 8, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "sketch": torch.randn(n, 3, size, size, generator=g),
        "photo": torch.randn(n, 3, size, size, generator=g),
        "label": torch.arange(n) % NUM_CLASSES,
        "index": torch.arange(n),
    }


def test_adjacency_is_the_formula_on_three_classes():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    t = 2.0
    # squared distances: (0,1) -> 1, (0,2) -> 4, (1,2) -> 1 + 4 = 5
    d2 = np.array([[0, 1, 4], [1, 0, 5], [4, 5, 0]], dtype=float)
    expected = np.exp(-d2 / t)
    adj = semantic_adjacency(s, t)
    np.testing.assert_allclose(adj.numpy(), expected, rtol=1e-6)
    deg = expected.sum(1)
    expected_norm = expected / np.sqrt(deg[:, None] * deg[None, :])
    np.testing.assert_allclose(normalize_adjacency(adj).numpy(), expected_norm, rtol=1e-6)
    assert adj[0, 0] == 1.0  # a_ii = exp(0): the self-loop


def test_gcn_layer_is_adj_x_w_plus_b():
    torch.manual_seed(0)
    layer = GraphConvolution(5, 3)
    nn.init.normal_(layer.bias)
    x, adj = torch.randn(4, 5), torch.rand(4, 4)
    manual = adj.numpy() @ (x.numpy() @ layer.weight.detach().numpy()) + layer.bias.detach().numpy()
    np.testing.assert_allclose(layer(x, adj).detach().numpy(), manual, rtol=1e-5, atol=1e-6)


def test_batch_graph_is_the_class_graph_indexed_by_labels():
    model = make_model()
    labels = torch.tensor([0, 2, 2, 1])
    s = model.semantics[labels]
    np.testing.assert_allclose(
        model.class_adjacency[labels][:, labels].numpy(),
        semantic_adjacency(s, model.hparams.t).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_losses_closed_forms():
    model = make_model().eval()
    f = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model.losses(f, labels, partner=f[:3])  # photos identical to their sketches
    assert out["feature"].item() == 0.0
    assert all(torch.isfinite(v) for v in out.values())
    expected = out["cls"] + out["rec"] + out["kl"] + out["feature"]  # all weights 1
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("graph", ["batch", "class"])
def test_step_gradients_reach_trained_parts_only(graph):
    model = make_model(graph=graph, trainable_stages=1)
    model.train()
    loss = _loss(model, pair_batch())
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"sketch_embed.0.weight", "photo_embed.0.weight", "gcn.gc1.weight"} <= trained
    assert any(n.startswith("cvae.") for n in trained)
    assert "sketch_net.conv_head.weight" in trained and "photo_net.conv_head.weight" in trained
    assert "sketch_net.conv_stem.weight" not in trained  # frozen stage
    # frozen stages keep their BatchNorm statistics in train mode
    assert not model.sketch_net.bn1.training and model.sketch_net.bn2.training


def _loss(model: SketchGCN, batch: dict) -> torch.Tensor:
    fs, fp = model.encode_sketch(batch["sketch"]), model.encode_photo(batch["photo"])
    y = batch["label"]
    return model.losses(torch.cat([fs, fp]), torch.cat([y, y]), partner=fp)["loss"]


def test_short_training_lowers_the_loss():
    model = make_model(trainable_stages=1)
    # a tiny stand-in for the two backbones keeps this test fast; the heads are the real ones
    for name in ("sketch_net", "photo_net"):
        setattr(model, name, nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1280), nn.ReLU()))
    model.train()
    opt = model.configure_optimizers()
    batch = pair_batch(8, 8)
    torch.manual_seed(0)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = _loss(model, batch)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert _loss(model, batch).item() < 0.7 * first


def test_encoders_give_unit_embeddings():
    model = make_model().eval()
    x = torch.randn(3, 3, 32, 32)
    for z in (model.encode_query({"image": x}), model.encode_gallery({"image": x})):
        assert z.shape == (3, 32)
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
