"""Pic2Word: phi's architecture, the symmetric contrastive loss, and one training step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zsbench.clip import encode_with_pseudo_tokens
from zsbench.methods.pic2word import (
    Phi,
    Pic2Word,
    symmetric_contrastive_loss,
    with_global_negatives,
)

_GLOBAL_BATCH, _DIM, _WORLD = 8, 4, 2


def _global_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(_GLOBAL_BATCH, _DIM, generator=g), torch.randn(
        _GLOBAL_BATCH, _DIM, generator=g
    )


def _ddp_rank(rank: int, folder: str) -> None:
    """One of two gloo processes: its shard of the global batch, the loss over the gathered
    negatives, and the gradients of its own rows, saved for the test to compare."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank,
                            world_size=_WORLD)  # fmt: skip
    try:
        image, text = _global_pairs()
        n = _GLOBAL_BATCH // _WORLD
        image = image[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        text = text[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = symmetric_contrastive_loss(*with_global_negatives(image, text), 3.0)
        loss.backward()
        local = symmetric_contrastive_loss(image.detach(), text.detach(), 3.0)
        torch.save({"loss": loss.detach(), "local": local, "image": image.grad,
                    "text": text.grad}, f"{folder}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def model():
    return Pic2Word(clip="tiny")


def test_phi_is_the_official_im2text_shape(model):
    linears = [m for m in model.phi.modules() if isinstance(m, torch.nn.Linear)]
    dropouts = [m for m in model.phi.modules() if isinstance(m, torch.nn.Dropout)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (model.backbone_info.feature_dim, 512),
        (512, 512),
        (512, model.clip.text_model.config.hidden_size),
    ]
    assert [d.p for d in dropouts] == [0.1, 0.1]
    assert Phi(4, 3, hidden_dim=8, n_layers=1)(torch.zeros(2, 4)).shape == (2, 3)


def test_symmetric_loss_on_a_hand_built_case():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # normalised: cos = [[1, 1/sqrt2], [0, 1/sqrt2]], scale 2
    s = 1 / math.sqrt(2)
    logits = 2 * torch.tensor([[1.0, s], [0.0, s]])
    i2t = -(F.log_softmax(logits, 1)[0, 0] + F.log_softmax(logits, 1)[1, 1]) / 2
    t2i = -(F.log_softmax(logits.T, 1)[0, 0] + F.log_softmax(logits.T, 1)[1, 1]) / 2
    loss = symmetric_contrastive_loss(image, text, 2.0)
    assert float(loss) == pytest.approx(float((i2t + t2i) / 2), rel=1e-6)
    # swapping the texts makes every pair wrong: the loss rises
    assert symmetric_contrastive_loss(image, text.flip(0), 2.0) > loss
    # a single pair has nothing to contrast with
    assert float(symmetric_contrastive_loss(image[:1], text[:1], 2.0)) == pytest.approx(0.0)


def test_ddp_negatives_are_the_global_batch_as_the_official_aggregate(tmp_path):
    """Two processes, four pairs each: each process's loss is the single-process loss over all
    eight pairs, and its rows' gradients are that loss's gradients (DDP then averages the
    parameters' gradients over the processes, as the official trainer's DDP does)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(str(tmp_path),), nprocs=_WORLD, join=True)
    image, text = (x.clone().requires_grad_(True) for x in _global_pairs())
    full = symmetric_contrastive_loss(image, text, 3.0)
    full.backward()
    n = _GLOBAL_BATCH // _WORLD
    for rank in range(_WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(got["loss"]) == pytest.approx(float(full), rel=1e-6)
        assert float(got["local"]) != pytest.approx(float(full), rel=1e-3)  # gathering matters
        rows = slice(rank * n, (rank + 1) * n)
        torch.testing.assert_close(got["image"], image.grad[rows])
        torch.testing.assert_close(got["text"], text.grad[rows])


def test_without_a_process_group_the_negatives_are_the_batch():
    a, b = torch.randn(3, 2), torch.randn(3, 2)
    ga, gb = with_global_negatives(a, b)
    assert ga is a and gb is b


def test_one_training_step_updates_only_phi(model):
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64)
    model.train()
    assert not model.clip.training  # CLIP stays in eval mode
    loss = model.training_step({"image": images, "index": torch.arange(4)}, 0)
    loss.backward()
    assert all(p.grad is not None for p in model.phi.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.clip.parameters())
    opt = torch.optim.SGD(model.phi.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.phi.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.phi.parameters()))
    model.zero_grad()


def test_query_is_the_prompt_with_phi_injected(model):
    model.eval()
    torch.manual_seed(1)
    batch = {"reference": torch.randn(2, 3, 64, 64), "text": ["is red", "is blue"]}
    z = model.encode_query(batch)
    tokens = model.phi(model.image_features(batch["reference"]).float())
    prompts = ["a photo of $ that is red", "a photo of $ that is blue"]
    expect = encode_with_pseudo_tokens(model.clip, model.tokenizer, prompts, tokens)
    assert torch.allclose(z, F.normalize(expect, dim=-1), atol=1e-5)
    assert torch.allclose(z.norm(dim=-1), torch.ones(2))
    other = Pic2Word(clip="tiny", prompt="a photo of * , {}", placeholder="*")
    other.phi.load_state_dict(model.phi.state_dict())
    assert not torch.allclose(other.eval().encode_query(batch), z)


def fashioniq_batch() -> dict:
    return {
        "reference": torch.zeros(2, 3, 64, 64),
        "index": torch.arange(2),
        "text": ["is red and has long sleeves", "is blue and shorter"],
        "text_reversed": ["has long sleeves and is red", "shorter and is blue"],
        "caption_1": ["is red.", "is blue "],
        "caption_2": ["has long sleeves", "shorter?"],
    }


@pytest.mark.parametrize(
    "rule, want",
    [
        # the benchmark's rule: both stripped orders, two encodings averaged
        ("both-orders", ["is red and has long sleeves", "is blue and shorter",
                         "has long sleeves and is red", "shorter and is blue"]),
        # Pic2Word's official src/data.py: one order, second caption first, as written
        ("pic2word-official", ["has long sleeves and is red.", "shorter? and is blue "]),
    ],
)  # fmt: skip
def test_fashioniq_caption_rule(rule, want, monkeypatch):
    model = Pic2Word(clip="tiny", fashioniq_captions=rule)
    texts: list[str] = []

    def encode_query(batch):
        texts.extend(batch["text"])
        return torch.ones(len(batch["text"]), 4)

    monkeypatch.setattr(model, "encode_query", encode_query)
    z, index = model.embed([fashioniq_batch()], "query")
    assert texts == want and z.shape == (2, 4) and index.tolist() == [0, 1]


def test_fashioniq_caption_rule_is_checked():
    from zsbench.errors import ZsbenchError

    model = Pic2Word(clip="tiny", fashioniq_captions="c1-first")
    with pytest.raises(ZsbenchError, match="both-orders, pic2word-official"):
        model.embed([fashioniq_batch()], "query")


def test_official_presets_set_caption_rule_and_training_crop():
    from zsbench.identity import resolve_identity

    def model_cfg(*overrides):
        return resolve_identity("pic2word", "synthetic-cir", list(overrides)).cfg["model"]

    official = model_cfg("preset=official-prompt")
    assert official["fashioniq_captions"] == "pic2word-official"
    assert model_cfg()["train_crop_scale"] is None
    paper = model_cfg("preset=paper")
    assert paper["train_crop_scale"] == [0.9, 1.0]


def test_training_crop_only_on_training_images():
    from PIL import Image
    from torchvision import transforms as T

    from zsbench.datamodules.synthetic_cir import SyntheticCIR
    from zsbench.errors import ZsbenchError

    dm = SyntheticCIR(image_size=32)
    dm.set_normalization((0.5,) * 3, (0.5,) * 3)
    assert dm.train_transform is dm.transform  # no crop asked: the evaluation transform
    dm.set_train_crop([0.9, 1.0])
    crops = [t for t in dm.train_transform.transforms if isinstance(t, T.RandomResizedCrop)]
    assert len(crops) == 1 and crops[0].scale == (0.9, 1.0)
    assert not any(isinstance(t, T.RandomResizedCrop) for t in dm.transform.transforms)
    image = Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy())
    torch.manual_seed(0)
    a, b = dm.train_transform(image), dm.train_transform(image)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ZsbenchError, match="train_crop_scale"):
        dm.set_train_crop([0.5, 1.5])
