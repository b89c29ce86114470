"""RPKD: losses in closed form, the frozen teacher, class centres, a training run, the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import zsbench.methods.rpkd  # noqa: F401  (registers "rpkd")
from zsbench.methods.rpkd import (
    Rpkd,
    class_centres,
    contrastive_relation_loss,
    embedding_induced_loss,
    relation_distillation_loss,
    within_domain_relation_loss,
)


@pytest.fixture(scope="module")
def model() -> Rpkd:
    torch.manual_seed(0)
    m = Rpkd(num_classes=4, trainable_stages=2, embedding_dim=32, top_k=3)
    m.train()
    return m


def _images(n: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size)


# -- losses ---------------------------------------------------------------------------------


def test_relation_loss_is_zero_when_student_equals_teacher():
    t = torch.randn(10, 6)
    assert relation_distillation_loss(t, t, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    # relations are cosine: a rescaled copy has the same relations
    assert relation_distillation_loss(3 * t, t, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_distillation_loss(torch.randn(10, 4), t, 0.1).item() > 1e-3


def test_within_domain_relations_ignore_cross_domain_relations():
    torch.manual_seed(0)
    t = torch.randn(12, 6)
    domains = torch.tensor([0, 1] * 6)
    # the student keeps each domain's relations but moves the photos far from the sketches
    s = t.clone()
    s[domains == 1] = -t[domains == 1]  # negating one domain keeps its internal cosines
    assert within_domain_relation_loss(s, t, domains, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_distillation_loss(s, t, 1.0).item() > 1e-2  # the batch-wide reading differs
    # each domain weighted by its share of the batch
    other = torch.randn(12, 4)
    expected = sum(
        relation_distillation_loss(other[domains == d], t[domains == d], 1.0) * 0.5 for d in (0, 1)
    )
    got = within_domain_relation_loss(other, t, domains, 1.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert within_domain_relation_loss(other, t, None, 1.0).item() == pytest.approx(
        relation_distillation_loss(other, t, 1.0).item()
    )


def test_contrastive_loss_closed_form_and_decreases_when_aligned():
    torch.manual_seed(0)
    t = torch.randn(16, 8)
    # identical embeddings everywhere: every logit equal -> log(B)
    same = torch.ones(16, 8)
    assert contrastive_relation_loss(same, same, 0.07).item() == pytest.approx(math.log(16))
    random = contrastive_relation_loss(torch.randn(16, 8), t, 0.07)
    aligned = contrastive_relation_loss(t + 0.05 * torch.randn(16, 8), t, 0.07)
    assert aligned < random and aligned.item() < 0.1


def test_class_centres_are_per_class_means():
    emb = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 2, 2, 3])
    centres, has = class_centres(emb, labels, 5)
    expected = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0], [5.0, 5.0], [0.0, 0.0]])
    assert torch.equal(centres, expected)
    assert has.tolist() == [True, False, True, True, False]


def test_embedding_induced_loss_closed_form():
    torch.manual_seed(0)
    teacher, centres = torch.randn(6, 5), torch.randn(4, 5)
    has = torch.ones(4, dtype=torch.bool)
    tau = 0.1
    # student logits equal to the target's logits (cos / tau): KL = 0 for every top_k
    logits = F.normalize(teacher, dim=-1) @ F.normalize(centres, dim=-1).T / tau
    for k in (1, 2, 4):
        loss = embedding_induced_loss(logits + 7.0, teacher, centres, has, k, tau)
        assert loss.item() == pytest.approx(0.0, abs=1e-5)
    # top_k = 1: one class, a point mass on both sides -> 0 whatever the logits
    assert embedding_induced_loss(torch.randn(6, 4), teacher, centres, has, 1, tau).item() == (
        pytest.approx(0.0, abs=1e-6)
    )
    # classes without a centre are never targets
    has[0] = False
    sim = F.normalize(teacher, dim=-1) @ F.normalize(centres, dim=-1).T
    flat = torch.zeros(6, 4)
    flat[:, 0] = 100.0  # all student mass on the centre-less class: excluded, so uniform rest
    loss = embedding_induced_loss(flat, teacher, centres, has, 3, tau)
    target = F.softmax(sim[:, 1:] / tau, dim=-1)
    expected = (target * (target.log() - math.log(1 / 3))).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


# -- the model ------------------------------------------------------------------------------


def test_compute_class_centres_per_domain(model):
    images = _images(6)
    batch = {
        "image": images,
        "label": torch.tensor([0, 0, 1, 1, 2, 0]),
        "domain": torch.tensor([1, 1, 1, 0, 0, 0]),  # rows 3-5 are sketches
        "index": torch.arange(6),
    }
    model.compute_class_centres([batch])
    t = F.normalize(model.teacher_forward(images), dim=-1)
    assert torch.allclose(model.centres[0], t[:2].mean(0), atol=1e-6)  # photos only
    assert torch.allclose(model.centres[1], t[2], atol=1e-6)
    assert model.has_centre.tolist() == [True, True, False, False]
    assert torch.allclose(model.sketch_centres[1], t[3], atol=1e-6)  # sketches only
    assert torch.allclose(model.sketch_centres[2], t[4], atol=1e-6)
    assert torch.allclose(model.sketch_centres[0], t[5], atol=1e-6)
    assert model.has_sketch_centre.tolist() == [True, True, True, False]
    assert bool(model.centres_ready)


def test_embedding_induced_uses_each_domains_centres(model):
    torch.manual_seed(0)
    d_t = model.teacher_info.feature_dim
    emb, labels = torch.randn(8, d_t), torch.arange(8) % 4
    domains = torch.tensor([0, 1] * 4)
    model.set_class_centres(emb, labels, domains)
    t, logits = torch.randn(6, d_t), torch.randn(6, 4)
    rows = torch.tensor([0, 0, 1, 1, 1, 1])
    k, tau = model.hparams.top_k, model.hparams.tau_eis
    sk = embedding_induced_loss(
        logits[:2], t[:2], model.sketch_centres, model.has_sketch_centre, k, tau
    )
    ph = embedding_induced_loss(logits[2:], t[2:], model.centres, model.has_centre, k, tau)
    got = model.embedding_induced(logits, t, rows)
    assert got.item() == pytest.approx((sk * 2 / 6 + ph * 4 / 6).item(), rel=1e-5)


def test_forward_backward_gradients_and_frozen_teacher(model):
    model.set_class_centres(torch.randn(8, model.teacher_info.feature_dim), torch.arange(8) % 4)
    model.zero_grad(set_to_none=True)
    out = model.losses(_images(8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith("teacher."):
            assert not p.requires_grad and p.grad is None, name
        elif name.startswith(("projection.", "classifier.", "to_teacher.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    student = dict(model.student.named_parameters())
    assert student["conv_head.weight"].grad is not None  # trained stage
    assert student["conv_stem.weight"].grad is None  # frozen stage
    assert model.teacher.training is False


def test_teacher_never_changes_in_a_training_step(model):
    model.set_class_centres(torch.randn(8, model.teacher_info.feature_dim), torch.arange(8) % 4)
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    opt = model.configure_optimizers()["optimizer"]
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model.losses(_images(8), torch.arange(8) % 4)["loss"].backward()
        opt.step()
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert not torch.equal(head_before, model.classifier.weight)
    assert model.teacher.training is False
    assert all(
        id(p) not in {id(q) for q in model.teacher.parameters()}
        for g in opt.param_groups
        for p in g["params"]
    )


def test_shared_trunk_equals_two_full_forwards(model):
    model.train()
    assert model.shared_stages is not None and model.shared_stages > 0
    x = _images(4)
    z, logits, t = model.student_and_teacher(x)
    n, model.shared_stages = model.shared_stages, None
    try:
        z2, logits2, t2 = model.student_and_teacher(x)
    finally:
        model.shared_stages = n
    assert torch.allclose(z, z2, atol=1e-5) and torch.allclose(t, t2, atol=1e-5)
    assert torch.allclose(logits, logits2, atol=1e-5)


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    m = Rpkd(num_classes=3, trainable_stages=2, embedding_dim=32, top_k=2, lr=1e-3)
    m.train()
    labels = torch.arange(12) % 3
    # class-coloured images: a small problem the student can fit in a few steps
    images = torch.randn(12, 3, 32, 32) * 0.3
    images[:, 0] += labels.view(-1, 1, 1).float() - 1.0
    domain = torch.ones(12, dtype=torch.long)
    m.compute_class_centres([{"image": images, "label": labels, "domain": domain}])
    opt = m.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = m.losses(images, labels)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
