"""The real ZS-CIR annotation readers on ../shared/data/cir, scored end to end with random
feature vectors keyed by image name (no images needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zsbench.cir_readers import (
    FASHIONIQ_CATEGORIES,
    fashioniq_caption_pair,
    read_circo,
    read_cirr,
    read_fashioniq,
)
from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import cir_metrics, combine_caption_orders

pytestmark = pytest.mark.needs_data

FIQ_COUNTS = {  # (queries, gallery images) per category and split
    ("dress", "val"): (2017, 3817),
    ("shirt", "val"): (2038, 6346),
    ("toptee", "val"): (1961, 5373),
    ("dress", "test"): (2024, 3818),
    ("shirt", "test"): (2038, 6346),
    ("toptee", "test"): (2056, 5374),
}


@pytest.fixture
def cir(shared_data) -> Path:
    root = shared_data / "cir"
    if not root.is_dir():
        pytest.skip(f"real CIR annotations not found at {root}")
    return root


def features(names, dim=32, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: F.normalize(torch.randn(dim, generator=g), dim=0) for n in names}


def gallery_matrix(split, feats) -> torch.Tensor:
    return torch.stack([feats[n] for n in split.gallery])


# ----------------------------------------------------------------------------- counts


def test_cirr_counts_and_structure(cir):
    val = read_cirr(cir / "cirr", "val")
    assert len(val.queries) == 4181 and len(val.gallery) == 2297
    assert len({q.query_id for q in val.queries}) == 4181
    q = val.queries[0]
    assert q.query_id == "12060" and q.reference == "dev-244-0-img0"
    assert q.target == "dev-1028-1-img1" and len(q.img_set) == 6
    assert val.image_path(q.reference) == cir / "dev" / "dev-244-0-img0.png"
    labels = val.labels()
    assert labels.protocol == "cirr" and labels.members.shape == (4181, 6)
    names = np.asarray(val.gallery)
    assert (names[labels.target] == [q.target for q in val.queries]).all()
    assert (labels.members == labels.reference[:, None]).any(1).all()  # reference in img_set
    assert (labels.members == labels.target[:, None]).any(1).all()
    test = read_cirr(cir / "cirr", "test")
    assert test.split == "test1" and len(test.queries) == 4148 and len(test.gallery) == 2315
    assert not test.has_targets
    with pytest.raises(ZsbenchError, match="no public targets"):
        test.labels()


def test_circo_counts_and_ground_truths(cir):
    val = read_circo(cir / "circo", "val", annotation_gallery=True)
    assert len(val.queries) == 220
    assert sorted(int(q.query_id) for q in val.queries) == list(range(220))
    raw = json.loads((cir / "circo" / "annotations" / "val.json").read_text())
    for q, r in zip(val.queries, raw):
        assert q.target == str(r["target_img_id"]) and list(q.targets) == [
            str(x) for x in r["gt_img_ids"]
        ]
    assert "not the official gallery" in val.gallery_source
    labels = val.labels()
    assert labels.gt.shape == (220, max(len(q.targets) for q in val.queries))
    assert ((labels.gt >= 0).sum(1) == torch.tensor([len(q.targets) for q in val.queries])).all()
    assert val.image_path("50").name == "000000000050.jpg"
    test = read_circo(cir / "circo", "test", annotation_gallery=True)
    assert len(test.queries) == 800 and not test.has_targets


@pytest.mark.parametrize("category", FASHIONIQ_CATEGORIES)
@pytest.mark.parametrize("split", ["val", "test"])
def test_fashioniq_counts(cir, category, split):
    s = read_fashioniq(cir / "fashioniq", split, category)
    assert (len(s.queries), len(s.gallery)) == FIQ_COUNTS[(category, split)]
    assert all(len(q.captions) == 2 and q.category == category for q in s.queries)
    assert s.has_targets == (split == "val")
    if split == "val":
        assert set(s.labels().target.tolist()) <= set(range(len(s.gallery)))


def test_fashioniq_caption_pair_on_real_captions(cir):
    q = read_fashioniq(cir / "fashioniq", "val", "dress").queries[0]
    assert q.captions == ("is shiny and silver with shorter sleeves", "fit and flare")
    assert fashioniq_caption_pair(q.captions) == (
        "is shiny and silver with shorter sleeves and fit and flare",
        "fit and flare and is shiny and silver with shorter sleeves",
    )
    assert fashioniq_caption_pair([" a.", "b?"]) == ("a and b", "b and a")


# ----------------------------------------------------------------------------- end to end


def test_cirr_random_and_oracle_features_end_to_end(cir):
    s = read_cirr(cir / "cirr", "val")
    feats = features(s.gallery)
    g = gallery_matrix(s, feats)
    labels = s.labels()
    q_rand = F.normalize(
        torch.randn(len(s.queries), 32, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    rand = cir_metrics(q_rand @ g.T, labels)
    # chance level: R@50 ~ 50/2296, R_subset@1 ~ 1/5
    assert rand["R@50"] < 0.06 and 0.15 < rand["R_subset@1"] < 0.25
    # a query feature equal to the target's: rank 1 everywhere (the reference is removed)
    oracle = torch.stack([feats[q.target] for q in s.queries])
    m = cir_metrics(oracle @ g.T, labels)
    assert m["R@1"] == 1.0 and m["R_subset@1"] == 1.0
    # a query equal to the reference: R@1 counts the next item, not the removed reference
    ref = torch.stack([feats[q.reference] for q in s.queries])
    assert cir_metrics(ref @ g.T, labels)["R@1"] < 0.05


def test_circo_end_to_end_map_of_mean_of_ground_truths(cir):
    s = read_circo(cir / "circo", "val", annotation_gallery=True)
    feats = features(s.gallery, dim=1024)  # near-orthogonal, so the mean is closest to its parts
    g = gallery_matrix(s, feats)
    # the mean of a query's ground truths retrieves them first: mAP@k = 1
    q = torch.stack([torch.stack([feats[t] for t in q.targets]).mean(0) for q in s.queries])
    m = cir_metrics(q @ g.T, s.labels())
    assert m["mAP@5"] == pytest.approx(1.0) and m["mAP@50"] == pytest.approx(1.0)
    assert m["R@25"] == 1.0


def test_fashioniq_end_to_end_both_orders(cir):
    s = read_fashioniq(cir / "fashioniq", "val", "shirt")
    feats = features(s.gallery)
    g = gallery_matrix(s, feats)
    tgt = torch.stack([feats[q.target] for q in s.queries])
    noise = torch.randn(tgt.shape, generator=torch.Generator().manual_seed(2))
    fwd, rev = tgt + 0.3 * noise, tgt - 0.3 * noise  # the two orders err in opposite ways
    both = cir_metrics(combine_caption_orders(fwd, rev) @ g.T, s.labels())
    one = cir_metrics(F.normalize(fwd, dim=-1) @ g.T, s.labels())
    assert both["R@10"] == 1.0 and one["R@10"] < both["R@10"]


# ----------------------------------------------------------------------------- layouts, errors


def test_cirr_dataset_root_and_images(cir, tmp_path):
    (tmp_path / "cirr").symlink_to(cir / "cirr")
    s = read_cirr(tmp_path, "val")
    assert s.image_root == tmp_path and len(s.queries) == 4181
    name = s.gallery[0]
    with pytest.raises(ZsbenchError, match="dev/<name>.png"):
        s.load_image(name)
    s.image_path(name).parent.mkdir(parents=True)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(s.image_path(name))
    assert s.load_image(name).size == (4, 4)
    with pytest.raises(ZsbenchError, match="no image named"):
        s.image_path("dev-nope")


def test_fashioniq_png_or_jpg(cir, tmp_path):
    root = tmp_path / "fiq"
    root.mkdir()
    for sub in ("captions", "image_splits"):
        (root / sub).symlink_to(cir / "fashioniq" / sub)
    s = read_fashioniq(root, "val", "toptee")
    a, b = s.gallery[:2]
    (root / "images").mkdir()
    Image.new("RGB", (3, 3)).save(root / "images" / f"{a}.png")
    Image.new("RGB", (5, 5)).save(root / "images" / f"{b}.jpg")
    assert s.load_image(a).size == (3, 3) and s.load_image(b).size == (5, 5)
    with pytest.raises(ZsbenchError, match=r"images/<name>.png"):
        s.load_image(s.gallery[2])


def test_circo_gallery_from_coco_image_info(cir, tmp_path):
    (tmp_path / "annotations").symlink_to(cir / "circo" / "annotations")
    val = read_circo(cir / "circo", "val", annotation_gallery=True)
    extra = [999999991, 999999992]
    ids = [int(n) for n in val.gallery] + extra
    info = tmp_path / "COCO2017_unlabeled" / "annotations"
    info.mkdir(parents=True)
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
    (info / "image_info_unlabeled2017.json").write_text(json.dumps({"images": images}))
    s = read_circo(tmp_path, "val")
    assert s.gallery_source == "image_info_unlabeled2017.json"
    assert len(s.gallery) == len(val.gallery) + 2 and s.gallery[-1] == "999999992"


def test_circo_without_its_gallery_list_is_an_error_unless_asked(cir, tmp_path):
    """A missing image_info_unlabeled2017.json must not silently shrink the gallery to the
    annotations' images (mAP inflated); the datamodule's flag asks for it and records it."""
    from zsbench.datamodules.circo import CIRCO

    with pytest.raises(ZsbenchError, match="annotation_gallery=true"):
        read_circo(cir / "circo", "val")
    with pytest.raises(ZsbenchError, match="image_info_unlabeled2017.json"):
        CIRCO(root=str(cir / "circo")).read_groups()
    (group,) = CIRCO(root=str(cir / "circo"), annotation_gallery=True).read_groups()
    assert "not the official gallery" in group.data.gallery_source


def test_missing_annotations_name_the_layout(tmp_path):
    with pytest.raises(ZsbenchError, match=r"cap\.rc2\.<split>\.json"):
        read_cirr(tmp_path, "val")
    with pytest.raises(ZsbenchError, match="COCO2017_unlabeled"):
        read_circo(tmp_path, "val")
    with pytest.raises(ZsbenchError, match=r"captions/cap\.<dress\|shirt\|toptee>"):
        read_fashioniq(tmp_path, "val", "dress")
    with pytest.raises(ZsbenchError, match="category"):
        read_fashioniq(tmp_path, "val", "shoes")
    with pytest.raises(ZsbenchError, match="split"):
        read_cirr(tmp_path, "dev")
