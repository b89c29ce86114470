"""The SBIR protocol partitions: unseen data only in query/gallery, deterministic splits."""

from __future__ import annotations

import numpy as np
import pytest

from zsbench.datamodules.base import PHOTO, SKETCH
from zsbench.datamodules.sketchy_layout import scan_sketchy_folder
from zsbench.datamodules.synthetic import SyntheticSketchy
from zsbench.errors import ZsbenchError
from zsbench.splits import Split, split_from_unseen


@pytest.fixture
def dm(tmp_path):
    d = SyntheticSketchy(
        n_shapes=3,
        n_patterns=3,
        photos_per_class=5,
        sketches_per_class=5,
        render_size=32,
        image_size=32,
        cache=str(tmp_path),
        val_fraction=0.2,
    )
    d.setup()
    return d


def test_partitions_follow_the_protocol(dm):
    seen, unseen = set(dm.split.seen), set(dm.split.unseen)
    assert seen and unseen and not seen & unseen
    label = {i: dm.items[i].label for i in range(len(dm.items))}
    for name in ("train", "val"):
        assert {label[i] for i in dm.partitions[name]} <= seen
    assert {label[i] for i in dm.partitions["query"]} == unseen
    assert {label[i] for i in dm.partitions["gallery"]} == unseen
    assert all(dm.items[i].domain == SKETCH for i in dm.partitions["query"])
    assert all(dm.items[i].domain == PHOTO for i in dm.partitions["gallery"])
    all_idx = np.concatenate(list(dm.partitions.values()))
    assert sorted(all_idx) == list(range(len(dm.items)))  # every item in exactly one partition
    # training labels are 0..S-1; unseen classes come after
    assert dm.label_ids[dm.partitions["train"]].max() < dm.num_seen_classes
    assert dm.label_ids[dm.partitions["query"]].min() >= dm.num_seen_classes
    assert len(dm.partitions["val"]) > 0


def test_batches_are_dicts_with_image_label_domain(dm):
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "domain", "index"}
    assert batch["image"].shape[1:] == (3, 32, 32)
    dm.use_features(np.ones((len(dm.items), 4), dtype=np.float32))
    batch = next(iter(dm.query_dataloader()))
    assert batch["feature"].shape[1] == 4 and "image" not in batch


def test_split_is_deterministic_and_hashed(tmp_path, dm):
    again = SyntheticSketchy(
        n_shapes=3,
        n_patterns=3,
        photos_per_class=5,
        sketches_per_class=5,
        render_size=32,
        image_size=32,
        cache=str(tmp_path),
        val_fraction=0.2,
    )
    again.setup()
    assert again.split == dm.split and again.split.hash == dm.split.hash
    assert all((again.partitions[k] == dm.partitions[k]).all() for k in dm.partitions)
    m = dm.manifest()
    assert m["hash"] == dm.split.hash and m["counts"]["query"] == len(dm.partitions["query"])


def test_bad_splits_fail_clearly():
    with pytest.raises(ZsbenchError, match="not in the dataset"):
        split_from_unseen("x", ["a", "b"], ["c"])
    with pytest.raises(ZsbenchError, match="both seen and unseen"):
        Split("x", ("a",), ("a",)).check({"a"}, "here")
    with pytest.raises(ZsbenchError, match="does not have"):
        Split("x", ("a",), ("z",)).check({"a"}, "here")


def test_custom_unseen_from_override(tmp_path):
    d = SyntheticSketchy(
        n_shapes=3,
        n_patterns=3,
        photos_per_class=2,
        sketches_per_class=2,
        render_size=32,
        image_size=32,
        cache=str(tmp_path),
        unseen="plain_circle,striped_square",
    )
    d.setup()
    assert d.split.name == "custom" and d.split.unseen == ("plain_circle", "striped_square")


def test_missing_sketchy_layout_names_the_layout(tmp_path):
    with pytest.raises(ZsbenchError, match="tx_000000000000_ready"):
        scan_sketchy_folder(tmp_path)


def test_pairs_are_same_class_and_instance_paired_when_names_say_so(dm):
    from pathlib import Path

    from zsbench.datamodules.base import PairDataset

    dm.use_features(np.arange(len(dm.items), dtype=np.float32)[:, None].repeat(2, 1))
    pairs = PairDataset(dm, dm.partitions["train"], "instance")
    assert len(pairs) == sum(dm.items[i].domain == SKETCH for i in dm.partitions["train"])
    assert pairs.partner  # synthetic sketches are named <photo-id>-<n>.png like Sketchy's
    for k in range(len(pairs)):
        b = pairs[k]
        sk, ph = int(b["sketch"][0]), int(b["photo"][0])  # features are the item indices
        assert dm.items[sk].domain == SKETCH and dm.items[ph].domain == PHOTO
        assert dm.items[sk].label == dm.items[ph].label and ph in dm.partitions["train"]
        if sk in pairs.partner:
            assert Path(dm.items[sk].path).stem.startswith(Path(dm.items[ph].path).stem)
    by_class = PairDataset(dm, dm.partitions["train"], "class")
    assert not by_class.partner
    batch = next(iter(dm.paired_train_dataloader("class")))
    assert set(batch) == {"sketch", "photo", "label", "index"}
    with pytest.raises(ZsbenchError, match="pairing"):
        PairDataset(dm, dm.partitions["train"], "pixel")
