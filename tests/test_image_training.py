"""The image-training path: augmentations, triplets, partial fine-tuning, an images method
through the runner."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import one_result

from zsbench.backbones import create_backbone, set_trainable_stages
from zsbench.datamodules.base import PHOTO, SKETCH, TripletDataset
from zsbench.datamodules.synthetic import SyntheticSketchy
from zsbench.methods.base import ImageMethod, MethodMetadata, RetrievalMethod
from zsbench.registry import METHODS


@pytest.fixture
def dm(tmp_path):
    d = SyntheticSketchy(
        n_shapes=3,
        n_patterns=3,
        photos_per_class=4,
        sketches_per_class=4,
        render_size=32,
        image_size=32,
        cache=str(tmp_path),
    )
    d.setup()
    return d


def test_triplets_have_same_class_positive_and_other_class_negative(dm):
    triplets = TripletDataset(dm, dm.partitions["train"], "class")
    torch.manual_seed(0)
    for k in range(len(triplets)):
        t = triplets[k]
        assert dm.items[t["index"]].domain == SKETCH
        assert t["negative_label"] != t["label"]
        assert t["sketch"].shape == t["photo"].shape == t["negative"].shape == (3, 32, 32)
    batch = next(iter(dm.triplet_train_dataloader()))
    assert {"sketch", "photo", "negative", "label", "negative_label"} <= set(batch)


def test_training_images_are_augmented_evaluation_images_are_not(dm):
    i = int(dm.partitions["train"][0])
    torch.manual_seed(0)
    a, b = dm.row(i, train=True), dm.row(i, train=True)
    assert not torch.equal(a, b)
    assert torch.equal(dm.row(i), dm.row(i))
    dm.set_augment(False)
    assert torch.equal(dm.row(i, train=True), dm.row(i))
    assert dm.train_transform(PHOTO) is not dm.train_transform(SKETCH)


def test_set_trainable_stages_counts():
    model, _ = create_backbone("efficientnet_lite0", "random")
    n_all = sum(p.numel() for p in model.parameters())
    counts = []
    for stages in (0, 1, 2, None):
        set_trainable_stages(model, stages)
        counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert counts[0] == 0 and counts[-1] == n_all
    assert 0 < counts[1] < counts[2] < n_all
    set_trainable_stages(model, 1)  # the last group is the head conv + its norm
    assert model.conv_head.weight.requires_grad and not model.conv_stem.weight.requires_grad


class TinyImageMethod(RetrievalMethod):
    """A test-only images method: random-weight backbone, last stage trained with CE."""

    metadata = MethodMetadata("tiny", "sbir", "images", True, "test", None, None, "x", None)
    train_on = "triplets"

    def __init__(self, num_classes: int, backbone: str = "resnet10t") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net, self.backbone_info = create_backbone(backbone, "random")
        set_trainable_stages(self.net, 1)
        self.head = torch.nn.Linear(self.backbone_info.feature_dim, num_classes)
        self.net.train()

    def training_step(self, batch, _):
        z = self.net(torch.cat([batch["sketch"], batch["photo"]]))
        return F.cross_entropy(self.head(z), batch["label"].repeat(2))

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.01)

    def encode_query(self, batch):
        return self.net(batch["image"])

    encode_gallery = encode_query


def test_images_method_through_the_runner(tmp_path, tiny, monkeypatch):
    from zsbench.cli import main

    monkeypatch.setattr(METHODS, "_added", {})  # in-process registration, undone afterwards
    METHODS.register("tiny-images")(TinyImageMethod)
    args = ["bench", "--method", "tiny-images", "--results-dir", str(tmp_path), "--no-progress"]
    for o in [*tiny, "trainer.max_epochs=1"]:
        args += ["--set", o]
    assert main(args) == 0
    rec = json.loads(one_result(tmp_path, "tiny-images").read_text())
    assert rec["backbone"]["name"] == "resnet10t" and rec["backbone"]["weights"] == "random"
    assert "features_s" not in rec["timings"]  # no feature extraction for images methods


class _TwoTowers(ImageMethod):
    """A shared backbone with its last stage trained, a frozen teacher and a head."""

    def __init__(self, trainable_stages: int | None = 2) -> None:
        super().__init__()
        self.net, _ = create_backbone("resnet10t", "random", trainable_stages)
        self.photo_net = self.net  # shared: its parameters are counted once
        self.teacher, _ = create_backbone("resnet10t", "random", trainable_stages=0)
        self.head = torch.nn.Linear(512, 4)

    def fine_tuned_backbones(self):
        return list({id(n): n for n in (self.net, self.photo_net)}.values())

    def frozen_modules(self):
        return [self.teacher]


def test_image_method_owns_modes_and_optimizer_groups():
    m = _TwoTowers()
    heads, backbone = m.parameter_groups(head_lr=1.0, backbone_lr=0.1)
    trained = [p for p in m.net.parameters() if p.requires_grad]
    assert 0 < len(trained) < len(list(m.net.parameters()))
    assert {id(p) for p in backbone["params"]} == {id(p) for p in trained}
    assert len(backbone["params"]) == len(trained) and backbone["lr"] == 0.1
    assert {id(p) for p in heads["params"]} == {id(p) for p in m.head.parameters()}
    assert heads["lr"] == 1.0
    m.train()
    assert m.head.training and m.net.training and not m.teacher.training
    bns = [b for b in m.net.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    frozen = [b for b in bns if not any(p.requires_grad for p in b.parameters())]
    assert frozen and all(not b.training for b in frozen)
    assert all(b.training for b in bns if b not in frozen)
    assert not any(mod.training for mod in m.eval().modules())
    # nothing of the backbone trains: no backbone group at all
    assert len(_TwoTowers(trainable_stages=0).parameter_groups(1.0, 0.1)) == 1
