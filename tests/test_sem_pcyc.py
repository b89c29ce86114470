"""SEM-PCYC and its ITQ-hashed variant: losses, gradients, ITQ, training and a bench smoke run."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import zsbench.methods.sem_pcyc as sp
from zsbench.errors import ZsbenchError

C, D, S = 4, 16, 8  # classes, feature dim, semantic dim


def _side_info(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"minilm": rng.normal(size=(C, 6)), "wordnet": rng.uniform(size=(C, 5))}


def _model(cls=sp.SemPcyc, **kw) -> sp.SemPcyc:
    torch.manual_seed(0)
    return cls(feature_dim=D, num_classes=C, class_embeddings=_side_info(), dim_out=S, **kw)


def _batch(n: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    centres = torch.randn(C, D, generator=g) * 3
    return {
        "sketch": centres[y] + torch.randn(n, D, generator=g),
        "photo": centres[y] + 1.0 + torch.randn(n, D, generator=g),
        "label": y,
        "index": torch.arange(n),
    }


def _params(*modules) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def test_losses_finite_and_each_optimiser_reaches_only_its_modules():
    m = _model()
    gens = _params(m.gen_sk2se, m.gen_im2se, m.gen_se2sk, m.gen_se2im)
    discs = _params(m.disc_se, m.disc_sk, m.disc_im)
    classifiers = _params(m.classifier_se, m.classifier_sk, m.classifier_im)
    ae = _params(m.autoencoder)
    loss = m.losses(_batch())
    assert all(torch.isfinite(v) for v in loss.values())
    assert set(m.configure_optimizers()[0].param_groups[0]["params"]) == set(gens)
    for key, trained, untouched in (
        ("ae", ae, gens + discs),
        ("gen", gens, ae),  # the semantic targets are detached for the generators
        ("disc", discs, gens + ae),  # fakes detached: discriminators only
    ):
        m.zero_grad(set_to_none=True)
        loss[key].backward(retain_graph=True)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained), key
        assert all(p.grad is None for p in untouched), key
        assert all(p.grad is None and not p.requires_grad for p in classifiers)  # frozen


def test_lsgan_loss_closed_forms():
    ones, zeros = torch.ones(5, 1), torch.zeros(5, 1)
    assert sp.lsgan_loss(ones, True, soft=False) == 0
    assert sp.lsgan_loss(zeros, True, soft=False) == 1
    assert sp.lsgan_loss(ones, False, soft=False) == 1
    # soft targets: real ~ U(0.7, 1), fake ~ U(0, 0.3): a prediction in the middle is within 0.15
    mid_real, mid_fake = torch.full((1000,), 0.85), torch.full((1000,), 0.15)
    for loss in (sp.lsgan_loss(mid_real, True), sp.lsgan_loss(mid_fake, False)):
        assert 0 < loss <= 0.15**2
        assert loss == pytest.approx(0.3**2 / 12, rel=0.15)  # E[(U - mid)^2] = var of U


def test_autoencoder_group_sparsity_is_the_sum_of_input_column_norms():
    ae = sp.SemanticAutoEncoder(dim=2, hid_dim=2)
    with torch.no_grad():
        ae.enc[0].weight.copy_(torch.tensor([[3.0, 0.0], [4.0, 0.0]]))
    assert ae.group_sparsity().item() == pytest.approx(5.0)


def test_classification_loss_with_zero_classifiers_is_weighted_log_num_classes():
    m = _model()
    for clf in (m.classifier_se, m.classifier_sk, m.classifier_im):
        clf.weight.data.zero_()
    # lambda_gen_cls * (lambda_se * 2 + lambda_sk + lambda_im) * log C = (20 + 10 + 10) log 4
    assert m.losses(_batch())["gen_cls"].item() == pytest.approx(40 * math.log(C), rel=1e-5)


def test_itq_recovers_rotated_binary_codes():
    g = torch.Generator().manual_seed(0)
    # 2 bits: the four corners (+-1, +-1) rotated by an arbitrary angle are found back exactly
    codes = torch.where(torch.rand(200, 2, generator=g) > 0.5, 1.0, -1.0)
    q, _ = torch.linalg.qr(torch.randn(2, 2, generator=g))
    x = codes @ q.T
    x = x - x.mean(0)
    proj, errors = sp.fit_itq(x, n_bits=2, n_iter=50)
    found = torch.where(x @ proj >= 0, 1.0, -1.0)
    torch.testing.assert_close(found @ found.T, codes @ codes.T)  # same Hamming distances
    assert errors[-1] < 0.05
    # more bits (non-convex): the quantisation error never increases and ends well below its start
    # more bits (non-convex): the quantisation error never increases, and it ends below that of
    # plain PCA hashing (no rotation), the comparison of Gong & Lazebnik
    x = torch.randn(300, 12, generator=g) @ torch.randn(12, 12, generator=g)
    x = x - x.mean(0)
    proj, errors = sp.fit_itq(x, n_bits=8, n_iter=50)
    assert proj.shape == (12, 8)
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:]))
    evals, evecs = torch.linalg.eigh(x.double().T @ x.double())
    v = x.double() @ evecs[:, torch.argsort(evals, descending=True)[:8]]
    assert errors[-1] < sp.itq_quantization_error(v, torch.eye(8, dtype=v.dtype))
    with pytest.raises(ZsbenchError, match="n_bits"):
        sp.fit_itq(x, n_bits=13)


def test_binary_codes_and_hamming_equivalence():
    m = _model(sp.SemPcycBinary, n_bits=4)
    item = {"feature": torch.randn(5, D), "label": torch.zeros(5), "domain": torch.zeros(5)}
    with pytest.raises(ZsbenchError, match="ITQ"):
        m.encode_query(item)
    errors = m.fit_itq([_batch(), _batch(seed=1)])
    assert len(errors) == m.hparams.itq_iters and bool(m.itq_fitted)
    q = m.eval().encode_query(item)
    g = m.encode_gallery({**item, "domain": torch.ones(5)})
    assert q.shape == (5, 4) and set(q.unique().tolist()) <= {-1.0, 1.0}
    hamming = (q[:, None, :] != g[None, :, :]).sum(-1)
    torch.testing.assert_close(q @ g.T, (4 - 2 * hamming).float())
    assert sp.SemPcycBinary.similarity == "dot" and sp.SemPcyc.similarity == "euclidean"


def _fit(model, epochs: int) -> None:
    data = [{k: v[i] for k, v in _batch(64, seed=3).items()} for i in range(64)]
    L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, DataLoader(data, batch_size=16, shuffle=True))


def test_short_training_lowers_the_generator_losses_and_fits_itq():
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    m = _model(sp.SemPcycBinary, n_bits=4, lr=3e-3)
    batch = _batch(64, seed=3)

    def terms() -> dict:
        m.eval()
        with torch.no_grad():
            out = {k: float(v) for k, v in m.losses(batch).items()}
        m.train()
        return out

    before = terms()
    _fit(m, epochs=25)
    after = terms()
    assert after["gen_cls"] < 0.8 * before["gen_cls"]  # generators become discriminative
    assert after["ae"] < 0.8 * before["ae"]
    assert after["gen_cyc"] < before["gen_cyc"] and after["gen_reg"] < before["gen_reg"]
    assert bool(m.itq_fitted)  # learnt in on_train_end from the training pairs


def test_bn_from_real_refits_the_encoders_on_real_training_features_only():
    """`model.bn_from_real=true`: after training, the BatchNorm statistics of gen_sk2se and
    gen_im2se are the plain average over the real training sketches / photos (in training
    they also saw generated inputs); off by default, as in the official code."""
    from zsbench.methods.sem_pcyc import SemPcyc, refit_batchnorm

    torch.manual_seed(0)
    feats = {"minilm": np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)}
    model = SemPcyc(feature_dim=16, num_classes=4, class_embeddings=feats, dim_out=8)
    assert model.hparams.bn_from_real is False
    sketches = [torch.randn(10, 16) + 3.0, torch.randn(6, 16) + 3.0]
    photos = [torch.randn(10, 16) - 2.0, torch.randn(6, 16) - 2.0]
    loader = [
        {"sketch": s, "photo": p, "label": torch.zeros(len(s))} for s, p in zip(sketches, photos)
    ]
    model.gen_sk2se.train()
    model.gen_sk2se(torch.randn(32, 16) * 5)  # running stats from other (e.g. generated) inputs
    model.refit_batchnorm(loader)
    first_linear, first_bn = model.gen_sk2se[0], model.gen_sk2se[1]
    # the average over the batches of each batch's statistics (as torch.optim.swa_utils.update_bn)
    pre = [first_linear(x) for x in sketches]
    mean = torch.stack([x.mean(0) for x in pre]).mean(0)
    var = torch.stack([x.var(0, unbiased=True) for x in pre]).mean(0)
    assert torch.allclose(first_bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(first_bn.running_var, var, rtol=1e-4, atol=1e-5)
    pre_photo = [model.gen_im2se[0](x) for x in photos]
    photo_mean = torch.stack([x.mean(0) for x in pre_photo]).mean(0)
    assert torch.allclose(model.gen_im2se[1].running_mean, photo_mean, atol=1e-5)
    assert first_bn.momentum == 0.1 and model.gen_sk2se.training  # restored
    # the helper alone: a module in eval mode stays in eval mode, dropout off while refitting
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.9))
    net.eval()
    refit_batchnorm(net, [torch.ones(5, 3)])
    assert not net.training and torch.isfinite(net[1].running_var).all()


@pytest.mark.parametrize("cls", [sp.SemPcyc, sp.SemPcycBinary])
def test_validation_logs_the_real_valued_map_for_both_variants(cls):
    """`val/mAP` is the seen-class retrieval mAP of the real-valued embedding (Euclidean), also
    for the binary variant, whose hash exists only once training has ended."""
    from zsbench.evaluation import evaluate_sbir

    b = _batch(24, seed=5)
    items = [
        {"feature": b[key][i], "label": b["label"][i], "domain": d, "index": 2 * i + d}
        for i in range(24)
        for d, key in ((0, "sketch"), (1, "photo"))
    ]
    m = _model(cls, **({"n_bits": 4} if cls is sp.SemPcycBinary else {}))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (logged,) = trainer.validate(m, DataLoader(items, batch_size=10), verbose=False)
    m.eval()
    with torch.no_grad():
        q, g = m.gen_sk2se(b["sketch"]), m.gen_im2se(b["photo"])
    ref = evaluate_sbir(q, b["label"], g, b["label"], similarity="euclidean", device="cpu")
    assert logged["val/mAP"] == pytest.approx(ref["metrics"]["mAP@all"], abs=1e-6)
