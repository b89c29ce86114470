"""The embedded synthetic ZS-CIR dataset (zsbench.datamodules.synthetic_cir)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zsbench.datamodules.synthetic_cir import (
    ATTRIBUTES,
    caption,
    combos,
    modification_text,
    partition_combos,
    read_synthetic_cir,
    render_cir_image,
    text_triplets,
    write_synthetic_cir,
)
from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import cir_metrics

SMALL = dict(n_shapes=3, n_colours=3, n_patterns=2, instances=3, image_size=24, n_text_triplets=40)
VOCAB = {
    "shape": ("circle", "square", "star"),
    "colour": ("red", "blue", "green"),
    "pattern": ("plain", "striped"),
    "size": ("small", "large"),
}


def combo_of(name: str) -> tuple[str, ...]:
    return tuple(name.split("-")[:4])


def instance_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_synthetic_cir(tmp_path_factory.mktemp("scir") / "d", **SMALL)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------------------- text, partitions


def test_captions_and_modifications():
    ref, tgt = ("star", "red", "striped", "large"), ("star", "blue", "plain", "large")
    assert caption(ref) == "a large red striped star"
    rng = np.random.default_rng(0)
    texts = {modification_text(ref, tgt, rng) for _ in range(30)}
    assert all(" and " in t and "blue" in t for t in texts)
    assert all(("plain" in t or "remove the pattern" in t) for t in texts)
    assert len(texts) > 1  # templates and order vary
    small = modification_text(ref, ("star", "red", "striped", "small"), rng)
    assert small in ("make it smaller", "shrink it")
    with pytest.raises(ZsbenchError, match="1 or 2"):
        modification_text(ref, ("circle", "blue", "plain", "small"), rng)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partitions_hold_out_combinations_but_not_attributes(seed):
    all_c = combos(VOCAB)
    parts = partition_combos(all_c, 0.15, 0.25, seed)
    train, val, test = (set(parts[p]) for p in ("train", "val", "test"))
    assert train | val | test == set(all_c) and not (train & val or train & test or val & test)
    assert len(test) == round(0.25 * len(all_c)) and len(val) == round(0.15 * len(all_c))
    for a, attr in enumerate(ATTRIBUTES):
        assert {c[a] for c in train} == set(VOCAB[attr])
    assert parts == partition_combos(all_c, 0.15, 0.25, seed)
    assert parts != partition_combos(all_c, 0.15, 0.25, seed + 10)


# ----------------------------------------------------------------------------- rendering


def _object_mean(img) -> np.ndarray:
    a = np.asarray(img, np.float64)
    bg = a[0, 0]
    mask = np.abs(a - bg).sum(-1) > 60
    return a[mask].mean(0), mask.sum()


def test_rendering_follows_the_attributes():
    base = ("square", "red", "plain", "large")
    img = render_cir_image(base, 0, 48)
    assert img.size == (48, 48) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(render_cir_image(base, 0, 48)))
    red, area_large = _object_mean(img)
    blue, _ = _object_mean(render_cir_image(("square", "blue", "plain", "large"), 0, 48))
    assert red[0] > red[2] + 100 and blue[2] > blue[0] + 100
    _, area_small = _object_mean(render_cir_image(("square", "red", "plain", "small"), 0, 48))
    assert area_large > 2 * area_small
    striped = np.asarray(render_cir_image(("square", "red", "striped", "large"), 0, 48), float)
    assert striped.std() > np.asarray(img, float).std()  # a second colour inside the object
    other_scene = render_cir_image(base, 1, 48)
    assert not np.array_equal(np.asarray(img), np.asarray(other_scene))
    with pytest.raises(ZsbenchError, match="not a synthetic CIR combination"):
        render_cir_image(("blob", "red", "plain", "large"), 0)


# ----------------------------------------------------------------------------- written dataset


def test_written_layout_and_queries(small):
    meta = json.loads((small / "synthetic_cir.json").read_text())
    images = json.loads((small / "images.json").read_text())
    n_combos = 3 * 3 * 2 * 2
    assert len(images) == n_combos * SMALL["instances"]
    assert len(list((small / "images").glob("*.png"))) == len(images)
    parts = {p: {tuple(c.split("-")) for c in v} for p, v in meta["partitions"].items()}
    for split in ("train", "val", "test"):
        s = read_synthetic_cir(small, split)
        assert set(s.gallery) == {n for n, a in images.items() if a["partition"] == split}
        assert s.queries, split
        for q in s.queries:
            ref, tgt = combo_of(q.reference), combo_of(q.target)
            assert ref in parts[split] and tgt in parts[split]
            changed = [a for a, x, y in zip(ATTRIBUTES, ref, tgt) if x != y]
            assert 1 <= len(changed) <= 2
            assert instance_of(q.target) == instance_of(q.reference)  # same scene
            assert {combo_of(t) for t in q.targets} == {tgt}
            assert sorted(instance_of(t) for t in q.targets) == list(range(SMALL["instances"]))
    anns = json.loads((small / "annotations" / "test.json").read_text())
    a = anns[0]
    assert a["target_caption"] == caption(combo_of(a["target"]))
    assert a["changed"] == [
        x for x, r, t in zip(ATTRIBUTES, combo_of(a["reference"]), combo_of(a["target"])) if r != t
    ]
    img = read_synthetic_cir(small, "test").load_image(a["reference"])
    assert img.size == (24, 24)


def test_text_triplets_use_training_combinations(small):
    meta = json.loads((small / "synthetic_cir.json").read_text())
    train_caps = {caption(tuple(c.split("-"))) for c in meta["partitions"]["train"]}
    trips = text_triplets(small)
    assert 0 < len(trips) <= SMALL["n_text_triplets"]
    for t in trips:
        assert t["reference_caption"] in train_caps and t["target_caption"] in train_caps
        assert t["reference_caption"] != t["target_caption"] and t["modification"]


def test_oracle_and_random_scores(small):
    s = read_synthetic_cir(small, "test")
    labels = s.labels()
    assert labels.protocol == "circo"
    combo_id = {c: i for i, c in enumerate(sorted({combo_of(n) for n in s.gallery}))}
    g_combo = torch.tensor([combo_id[combo_of(n)] for n in s.gallery])
    g_inst = torch.tensor([instance_of(n) for n in s.gallery])
    q_combo = torch.tensor([combo_id[combo_of(q.target)] for q in s.queries])
    q_inst = torch.tensor([instance_of(q.reference) for q in s.queries])
    # right combination first, the reference's scene first among those
    oracle = (g_combo[None] == q_combo[:, None]).double() + 0.5 * (g_inst[None] == q_inst[:, None])
    m = cir_metrics(oracle, labels)
    assert m["mAP@5"] == pytest.approx(1.0) and m["R@5"] == 1.0
    rand = cir_metrics(torch.rand(len(s.queries), len(s.gallery), dtype=torch.float64), labels)
    assert rand["mAP@10"] < 0.6


def test_reuse_determinism_and_conflicts(small, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*.png")}
    assert write_synthetic_cir(small, **SMALL) == small
    assert before == {p: p.stat().st_mtime_ns for p in small.rglob("*.png")}
    again = write_synthetic_cir(tmp_path / "again", **SMALL)
    assert files(again) == files(small)
    assert not list(tmp_path.glob(".again.partial-*"))
    with pytest.raises(ZsbenchError, match="other parameters"):
        write_synthetic_cir(small, **{**SMALL, "seed": 1})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ZsbenchError, match="not empty"):
        write_synthetic_cir(tmp_path / "full", **SMALL)
    with pytest.raises(ZsbenchError, match="synthetic_cir.json"):
        read_synthetic_cir(tmp_path / "nothing", "test")
    with pytest.raises(ZsbenchError, match="instances"):
        write_synthetic_cir(tmp_path / "x", **{**SMALL, "instances": 1})
    with pytest.raises(ZsbenchError, match="n_colours"):
        write_synthetic_cir(tmp_path / "x", **{**SMALL, "n_colours": 99})
