"""Generalized ZS-SBIR (`eval.protocol=generalized`): seen-class sketches and photos held out of
training join the queries and the gallery (SEM-PCYC's --gzs-sbir), so a method that confuses
unseen sketches with seen classes is punished; every SBIR method runs under it."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import one_result
from test_bench import bench_args, needs_wordnet, run

from zsbench.datamodules.base import PHOTO, SKETCH
from zsbench.datamodules.synthetic import SyntheticSketchy
from zsbench.errors import ZsbenchError
from zsbench.evaluation import evaluate_sbir
from zsbench.registry import METHODS

SBIR_METHODS = [m for m in METHODS.names() if METHODS.get(m).metadata.task == "sbir"]


def _dm(protocol: str = "generalized", fraction: float = 0.2, **kw) -> SyntheticSketchy:
    dm = SyntheticSketchy(
        **{"photos_per_class": 10, "sketches_per_class": 10, "render_size": 32, **kw}
    )
    dm.set_protocol(protocol, fraction)
    dm.setup()
    return dm


def test_held_out_seen_items_join_the_test_and_never_train():
    zs, gz = _dm("zero-shot"), _dm()
    seen = set(gz.split.seen)
    parts = {k: set(v.tolist()) for k, v in gz.partitions.items()}
    zs_parts = {k: set(v.tolist()) for k, v in zs.partitions.items()}
    seen_q = {i for i in parts["query"] if gz.items[i].label in seen}
    seen_g = {i for i in parts["gallery"] if gz.items[i].label in seen}
    n_unseen_q, n_unseen_g = len(zs_parts["query"]), len(zs_parts["gallery"])
    assert len(seen_q) == int(0.2 * n_unseen_q) > 0 and len(seen_g) == int(0.2 * n_unseen_g) > 0
    assert {gz.items[i].domain for i in seen_q} == {SKETCH}
    assert {gz.items[i].domain for i in seen_g} == {PHOTO}
    # nothing held out reaches training; validation and the unseen test are the zero-shot ones
    assert not (seen_q | seen_g) & parts["train"]
    assert parts["train"] == zs_parts["train"] - seen_q - seen_g
    assert parts["val"] == zs_parts["val"]
    assert zs_parts["query"] <= parts["query"] and zs_parts["gallery"] <= parts["gallery"]
    # drawn from several seen classes, reproducibly (the seed is the split hash's), recorded
    assert len({gz.items[i].label for i in seen_g}) > 3
    again = _dm()
    assert np.array_equal(again.partitions["gallery"], gz.partitions["gallery"])
    m = gz.manifest()
    assert m["protocol"] == "generalized" and m["generalized"]["n_seen_gallery"] == len(seen_g)
    assert m["generalized"]["seed"] == int(gz.split.hash[:8], 16)
    assert zs.manifest()["protocol"] == "zero-shot" and "generalized" not in zs.manifest()
    assert (gz.split_label, zs.split_label) == ("default-generalized", "default")
    # the fraction is the number of seen items per unseen one
    assert len(_dm(fraction=0.5).partitions["gallery"]) == n_unseen_g + int(0.5 * n_unseen_g)


def test_confusing_unseen_sketches_with_a_seen_class_is_punished_only_when_generalized():
    """Both models retrieve each unseen sketch's own class first among unseen photos (equal
    under zero-shot); the second also pulls unseen sketches towards one seen class."""
    dm = _dm()
    n_classes = len(dm.class_names)
    seen_ids = set(range(dm.num_seen_classes))
    q_idx, g_idx = dm.partitions["query"], dm.partitions["gallery"]
    ql, gl = torch.as_tensor(dm.label_ids[q_idx]), torch.as_tensor(dm.label_ids[g_idx])
    lure = int(next(label for label in gl.tolist() if label in seen_ids))  # a seen test class
    eye = torch.eye(n_classes)

    def scores(confused: bool, labels_q, labels_g) -> float:
        q = eye[labels_q].clone()
        if confused:
            unseen = torch.tensor([int(y) not in seen_ids for y in labels_q])
            q[unseen, lure] += 2.0  # nearer the lure class than their own
        return evaluate_sbir(q, labels_q, eye[labels_g], labels_g, device="cpu")["metrics"][
            "mAP@all"
        ]

    unseen_q = torch.tensor([int(y) not in seen_ids for y in ql])
    unseen_g = torch.tensor([int(y) not in seen_ids for y in gl])
    zs = [scores(c, ql[unseen_q], gl[unseen_g]) for c in (False, True)]
    gz = [scores(c, ql, gl) for c in (False, True)]
    assert zs[0] == pytest.approx(1.0) and zs[1] == pytest.approx(1.0)
    assert gz[0] == pytest.approx(1.0) and gz[1] < gz[0] - 0.05


def test_bad_protocol_settings_are_named(tmp_path, tiny):
    dm = SyntheticSketchy()
    with pytest.raises(ZsbenchError, match="one of zero-shot, generalized"):
        dm.set_protocol("gzsl")
    with pytest.raises(ZsbenchError, match="generalized_fraction"):
        dm.set_protocol("generalized", 0.0)
    too_many = SyntheticSketchy(
        n_shapes=3, n_patterns=3, photos_per_class=6, sketches_per_class=6, render_size=32,
        unseen=["plain_circle", "striped_square", "dotted_triangle"], val_fraction=0.95,
    )  # fmt: skip
    too_many.set_protocol("generalized", 1.0)
    with pytest.raises(ZsbenchError, match="lower eval.generalized_fraction"):
        too_many.setup()


@pytest.mark.parametrize("method", SBIR_METHODS)
def test_every_sbir_method_runs_generalized(method, tmp_path, tiny, request):
    if needs_wordnet(method):
        request.getfixturevalue("wordnet_dir")
    extra = ("--set", "trainer.fast_dev_run=true", "--set", "eval.protocol=generalized")
    assert run(*bench_args(tmp_path, tiny, method, *extra)) == 0
    rec = json.loads(one_result(tmp_path, method).read_text())
    assert rec["split"].endswith("-generalized")
    assert rec["config"]["eval"]["protocol"] == "generalized"
    m = rec["split_manifest"]
    assert m["protocol"] == "generalized" and m["generalized"]["n_seen_queries"] >= 1
    assert rec["n_queries"] == m["counts"]["query"] and np.isfinite(rec["metrics"]["mAP@all"])


def test_generalized_is_its_own_leaderboard_group(tmp_path, tiny):
    for extra in ((), ("--set", "eval.protocol=generalized")):
        assert run(*bench_args(tmp_path, tiny, "frozen", *extra)) == 0
    board = (tmp_path / "leaderboard.csv").read_text()
    splits = Counter(line.split(",")[2] for line in board.splitlines()[1:])
    assert len(splits) == 2 and any(s.endswith("-generalized") for s in splits)
    # the protocol is named by the split, not by a variant hash
    recs = [json.loads(p.read_text()) for p in tmp_path.rglob("seed0.json") if "logs" not in str(p)]
    assert {r["variant"] for r in recs} == {recs[0]["variant"]}
