"""The centred frozen baseline: means from seen-class training items only, recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import one_result
from test_bench import bench_args

from zsbench.cli import main
from zsbench.datamodules.base import PHOTO, SKETCH
from zsbench.datamodules.synthetic import SyntheticSketchy
from zsbench.errors import ZsbenchError
from zsbench.methods.frozen import FrozenCentred


@pytest.fixture
def dm(tmp_path):
    d = SyntheticSketchy(
        n_shapes=3, n_patterns=3, photos_per_class=6, sketches_per_class=6, render_size=32,
        image_size=32, cache=str(tmp_path), unseen=["plain_circle", "striped_square"],
    )  # fmt: skip
    d.setup()
    rng = np.random.default_rng(0)
    d.use_features(rng.standard_normal((len(d.items), 8)).astype(np.float32))
    return d


def test_means_come_from_seen_training_items_only(dm):
    train = list(dm.partitions["train"])
    others = sorted(set(range(len(dm.items))) - set(train))
    seen = set(dm.split.seen)
    assert all(dm.items[i].label in seen for i in train)
    assert any(dm.items[i].label not in seen for i in others) and len(dm.partitions["val"])
    model = FrozenCentred()
    fitted = model.fit_statistics(dm)
    for domain, mean in ((SKETCH, model.sketch_mean), (PHOTO, model.photo_mean)):
        rows = [i for i in train if dm.items[i].domain == domain]
        want = dm.features[rows].astype(np.float64).mean(0)
        np.testing.assert_allclose(mean.numpy(), want, rtol=1e-6)
    assert fitted["n_items"] == {
        "sketch": sum(dm.items[i].domain == SKETCH for i in train),
        "photo": sum(dm.items[i].domain == PHOTO for i in train),
    }
    # unseen-class and validation features can be anything: the means do not move
    before = (model.sketch_mean.clone(), model.photo_mean.clone())
    dm.features[others] += 1000.0
    model.fit_statistics(dm)
    assert torch.equal(model.sketch_mean, before[0]) and torch.equal(model.photo_mean, before[1])


def test_each_domain_loses_its_own_mean(dm):
    model = FrozenCentred()
    model.fit_statistics(dm)
    f = torch.tensor(dm.features[:3])
    torch.testing.assert_close(model.encode_query({"feature": f}), f - model.sketch_mean)
    torch.testing.assert_close(model.encode_gallery({"feature": f}), f - model.photo_mean)
    shared = FrozenCentred(center="shared")
    shared.fit_statistics(dm)
    assert torch.equal(shared.sketch_mean, shared.photo_mean)
    assert not torch.allclose(model.sketch_mean, model.photo_mean)


def test_bad_input_is_named():
    with pytest.raises(ZsbenchError, match="center='median'"):
        FrozenCentred(center="median")
    with pytest.raises(ZsbenchError, match="fit_statistics"):
        FrozenCentred().encode_query({"feature": torch.zeros(1, 4)})


def test_bench_records_the_fit_and_beats_raw_frozen_on_synthetic(tmp_path, tiny):
    assert main(bench_args(tmp_path, tiny, "frozen", "--quiet")) == 0
    assert main(bench_args(tmp_path, tiny, "frozen-centred", "--quiet")) == 0
    raw = json.loads(one_result(tmp_path, "frozen").read_text())
    rec = json.loads(one_result(tmp_path, "frozen-centred").read_text())
    assert rec["fitted"]["center"] == "domain"
    assert rec["fitted"]["from"] == "seen-class training items"
    assert rec["fitted"]["n_items"]["sketch"] > 0 and rec["fitted"]["n_items"]["photo"] > 0
    assert rec["metrics"]["mAP@all"] != raw["metrics"]["mAP@all"]
