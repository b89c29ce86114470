"""Doodle2Search: the GRL, the attention mask, each loss term on hand-built inputs, a training
step (what trains, what does not), a short training that lowers the loss, and a bench run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zsbench.methods.doodle2search as d2s
from zsbench.backbones import create_backbone

C = 4  # seen classes of the small problems


def small_method(**kw) -> d2s.Doodle2Search:
    args = dict(
        num_classes=C,
        class_embeddings={"minilm": np.random.default_rng(0).normal(size=(C, 12))},
        backbone="resnet10t",
        weights="random",
        trainable_stages=1,
        embedding_dim=16,
        hidden_dim=32,
        attention_hidden=8,
        semantic_hidden=16,
        domain_hidden=8,
    )
    args.update(kw)
    return d2s.Doodle2Search(**args)


def triplet_batch(n: int = 8, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % C
    return {
        "sketch": torch.randn(n, 3, size, size, generator=g),
        "photo": torch.randn(n, 3, size, size, generator=g),
        "negative": torch.randn(n, 3, size, size, generator=g),
        "label": labels,
        "negative_label": (labels + 1) % C,
    }


def test_grad_reverse_flips_sign_and_scales_by_lambda():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = d2s.grad_reverse(x, 0.5)
    assert torch.equal(y, x)  # identity forward
    (y * torch.tensor([2.0, 4.0, -6.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-1.0, -2.0, 3.0]))
    x.grad = None
    d2s.grad_reverse(x, 0.0).sum().backward()  # lambda 0: no gradient flows back
    assert torch.equal(x.grad, torch.zeros(3))


def test_domain_lambda_schedule_matches_official():
    assert [d2s.domain_lambda(s) for s in (0, 4, 5, 15, 25, 26, 100)] == [
        0.0,
        0.0,
        0.0,
        0.5,
        1.0,
        1.0,
        1.0,
    ]


def test_attention_mask_is_a_softmax_over_positions_and_adds_attended_features():
    att = d2s.SpatialAttention(channels=5, hidden=3)
    x = torch.randn(2, 5, 4, 6)
    out, mask = att(x)
    assert mask.shape == (2, 1, 4, 6) and (mask > 0).all()
    assert torch.allclose(mask.sum(dim=(1, 2, 3)), torch.ones(2))
    assert torch.allclose(out, x * (1 + mask))
    with torch.no_grad():  # a constant score map -> uniform mask 1 / (H * W)
        for conv in att.net:
            conv.weight.zero_()
            conv.bias.zero_()
    _, mask = att(x)
    assert torch.allclose(mask, torch.full_like(mask, 1 / 24))


def test_triplet_is_zero_beyond_margin_and_linear_inside():
    a = torch.zeros(3, 2)
    p = torch.tensor([[0.1, 0.0]] * 3)
    far = torch.tensor([[10.0, 0.0]] * 3)
    assert d2s.triplet_loss(a, p, far, margin=1.0) == 0
    near = torch.tensor([[0.5, 0.0]] * 3)  # 0.1 - 0.5 + 1 = 0.6
    assert torch.allclose(d2s.triplet_loss(a, p, near, margin=1.0), torch.tensor(0.6), atol=1e-5)


def test_cosine_distance_closed_form():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert torch.allclose(d2s.cosine_distance(x, t), torch.tensor([0.0, 0.5, 1.0]))


def test_domain_loss_is_log2_for_a_constant_half_classifier_and_reverses_gradients():
    m = small_method()
    m.eval()  # no dropout
    with torch.no_grad():
        m.domain_clf[-1].weight.zero_()
        m.domain_clf[-1].bias.zero_()  # logit 0 -> p = 0.5 for every input
    e = [torch.randn(5, 16, requires_grad=True) for _ in range(3)]
    loss = m.domain_loss(*e, lambd=1.0)
    assert torch.allclose(loss, torch.tensor(np.log(2.0), dtype=torch.float32))
    # the GRL: the encoder-side gradient is minus (lambda x) the classifier-side gradient
    with torch.no_grad():
        m.domain_clf[-1].weight.normal_()
    grads = []
    for lambd in (1.0, -0.5):  # -0.5: a "reversal" by -0.5 = plain gradient x 0.5
        for t in e:
            t.grad = None
        m.domain_loss(*e, lambd=lambd).backward()
        grads.append(e[0].grad.clone())
    assert torch.allclose(grads[0], -2.0 * grads[1], atol=1e-6)


def test_semantic_loss_zero_when_decoder_reproduces_target():
    m = small_method(semantic_hidden=16)
    m.eval()
    w = m.class_emb[torch.tensor([0, 1])]
    # decoder(e) = w when e holds w in its first coordinates and the decoder copies them
    dec = m.decoder
    with torch.no_grad():
        for layer in (dec[0], dec[3]):
            layer.weight.zero_()
            layer.bias.zero_()
        dec[0].weight[:12, :12] = torch.eye(12)
        dec[3].weight[:, :12] = torch.eye(12)
    e = torch.zeros(2, 16)
    e[:, :12] = w.clamp(min=0)  # ReLU keeps the positive part: target its positive part
    target = w.clamp(min=0)
    assert torch.allclose(m.semantic_loss(e, e, e, target), torch.tensor(0.0), atol=1e-6)
    # opposite targets: cosine -1, distance 1 for each of the three terms
    assert torch.allclose(m.semantic_loss(e, e, e, -target), torch.tensor(3.0), atol=1e-6)


def test_training_step_grads_and_frozen_stages():
    m = small_method()
    m.train()
    b = triplet_batch(size=64)  # a 2x2 feature map: a 1x1 one gives the attention no gradient
    out = m.losses(b["sketch"], b["photo"], b["negative"], b["label"], step=30)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    for net in (m.sketch_net, m.photo_net):
        trained = [n for n, p in net.named_parameters() if p.requires_grad]
        frozen = [p for p in net.backbone.parameters() if not p.requires_grad]
        assert frozen and all(p.grad is None for p in frozen)  # early stages stay frozen
        assert all(p.grad is not None for n, p in net.named_parameters() if n in trained)
        assert net.attention.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.decoder.parameters())
    assert all(p.grad is not None for p in m.domain_clf.parameters())
    # separate weights for the two branches, as in the official code
    assert next(m.sketch_net.parameters()) is not next(m.photo_net.parameters())
    q = m.encode_query({"image": b["sketch"]})
    g = m.encode_gallery({"image": b["photo"]})
    assert q.shape == g.shape == (8, 16)


def test_branches_start_equal_but_have_separate_weights():
    m = small_method()
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(m.encode_query({"image": x}), m.encode_gallery({"image": x}))
    with torch.no_grad():
        m.photo_net.head[-1].bias.add_(1.0)
    assert not torch.allclose(m.encode_query({"image": x}), m.encode_gallery({"image": x}))
    untied = small_method(tie_init=False)
    w_sk, w_im = untied.sketch_net.head[0].weight, untied.photo_net.head[0].weight
    assert not torch.equal(w_sk, w_im)


def test_domain_loss_has_no_encoder_gradient_during_warmup():
    m = small_method(w_triplet=0.0, w_semantic=0.0)
    m.train()
    b = triplet_batch()
    m.losses(b["sketch"], b["photo"], b["negative"], b["label"], step=0)["loss"].backward()
    assert m.sketch_net.head[-1].weight.grad.abs().sum() == 0  # lambda_d = 0 before step 5
    assert m.domain_clf[0].weight.grad.abs().sum() > 0  # the classifier still learns


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    m = small_method(lr=0.01, head_lr_mult=1.0, dropout=0.0, w_domain=0.0)
    m.train()
    opt = m.configure_optimizers()
    b = triplet_batch(n=8, size=32)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = m.losses(b["sketch"], b["photo"], b["negative"], b["label"], step=0)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_encoder_channels_follow_forward_features():
    net, _ = create_backbone("resnet10t", "random")
    channels = net.forward_features(torch.zeros(1, 3, 32, 32)).shape[1]
    enc = d2s.Encoder("resnet10t", "random", None, 8, 0, 0.0, True, 4)
    assert enc.attention.net[0].in_channels == channels
    assert enc.head[0].in_features == channels


def test_bad_schedule_name_fails():
    from zsbench.errors import ZsbenchError

    with pytest.raises(ZsbenchError, match="domain_schedule"):
        small_method(domain_schedule="iteration")


def test_frozen_stages_keep_their_batchnorm_statistics_in_training():
    """Frozen BatchNorms stay in eval mode (running stats untouched by a training step);
    BatchNorms of the trained stages follow the module's mode."""
    model = small_method(trainable_stages=1)
    model.train()
    bns = [m for m in model.sketch_net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen = [m for m in bns if not any(p.requires_grad for p in m.parameters())]
    trained = [m for m in bns if any(p.requires_grad for p in m.parameters())]
    assert frozen and trained
    assert not any(m.training for m in frozen) and all(m.training for m in trained)
    before = frozen[0].running_mean.clone()
    b = triplet_batch()
    model.losses(b["sketch"], b["photo"], b["negative"], b["label"], step=30)["loss"].backward()
    assert torch.equal(frozen[0].running_mean, before)
