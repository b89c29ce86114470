"""The real `sketchy21` protocol (Yelamarthi et al. 2018) on Sketchy's 125 classes.

A user has one Sketchy folder; the shared data has two (the 21 unseen classes, the 104 seen
ones). The tests join them into one folder of class-folder symlinks and read it with the plain
`sketchy` reader, and check `sketchy-mini`, the dataset entry that does the same in the cache.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from zsbench.datamodules.base import PHOTO, SKETCH, Item, PairDataset
from zsbench.datamodules.sketchy import Sketchy, SketchyMini, photo_id
from zsbench.errors import ZsbenchError

pytestmark = pytest.mark.needs_data

TX = "tx_000000000000_ready"
MANIFEST = Path(__file__).resolve().parents[1] / "datamodules" / "splits" / "sketchy21.json"


@pytest.fixture
def seen104(shared_data) -> Path:
    folder = shared_data / "sketchy-seen104"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (the 104 seen Sketchy classes of ../shared/data)")
    return folder


@pytest.fixture
def sketchy125(shared_data, seen104, tmp_path) -> Path:
    """A user's Sketchy folder: the 125 class folders of both parts, as symlinks."""
    root = tmp_path / "data"
    for part in (shared_data / "sketchy21", seen104):
        for domain in ("sketch", "photo"):
            src = part / "Sketchy" / "256x256" / domain / TX
            dst = root / "Sketchy" / "256x256" / domain / TX
            dst.mkdir(parents=True, exist_ok=True)
            for class_dir in src.iterdir():
                (dst / class_dir.name).symlink_to(class_dir, target_is_directory=True)
    return root


def _relative(dm, part: str) -> set[tuple[str, int, str]]:
    return {
        (dm.items[i].label, dm.items[i].domain, Path(dm.items[i].path).name)
        for i in dm.partitions[part]
    }


def test_sketchy21_on_a_125_class_folder(sketchy125, shared_data):
    dm = Sketchy(root=str(sketchy125), split="sketchy21")
    dm.setup()
    manifest = json.loads(MANIFEST.read_text())
    m = dm.manifest()
    # the manifest's classes, found by Sketchy's own folder names (car_(sedan), hot-air_balloon)
    assert sorted(dm.split.seen) == sorted(manifest["seen"]) and len(dm.split.seen) == 104
    assert sorted(dm.split.unseen) == sorted(manifest["unseen"]) and len(dm.split.unseen) == 21
    assert {"car_(sedan)", "hot-air_balloon", "jack-o-lantern"} <= set(dm.split.seen)
    assert m["name"] == "sketchy21" and m["family"] == "sketchy" and len(m["hash"]) == 16
    assert m["counts"] == {"train": 4669, "val": 531, "query": 2100, "gallery": 2100}
    # nothing of the 21 unseen classes reaches training or validation: not by class ...
    unseen = set(manifest["unseen"])
    train_val = [dm.items[i] for p in ("train", "val") for i in dm.partitions[p]]
    assert not {it.label for it in train_val} & unseen
    # ... and not by file: every training / validation file lies in the seen part
    test_files = {p.name for p in (shared_data / "sketchy21").rglob("*") if p.is_file()}
    assert not {Path(it.path).name for it in train_val} & test_files
    assert {Path(dm.items[i].path).name for i in dm.partitions["query"]} <= test_files
    # queries are all the unseen sketches (.png), the gallery all the unseen photos (.jpg)
    query = [dm.items[i] for i in dm.partitions["query"]]
    gallery = [dm.items[i] for i in dm.partitions["gallery"]]
    assert {it.domain for it in query} == {SKETCH} and {it.domain for it in gallery} == {PHOTO}
    assert {Path(it.path).suffix for it in query} == {".png"}
    assert {Path(it.path).suffix for it in gallery} == {".jpg"}
    assert Counter(it.label for it in query) == {c: 100 for c in manifest["unseen"]}


def test_validation_holds_out_whole_instances_and_training_sketches_keep_their_photo(
    sketchy125,
):
    dm = Sketchy(root=str(sketchy125), split="sketchy21")
    dm.setup()
    ids = {
        p: {(dm.items[i].label, photo_id(dm.items[i])) for i in dm.partitions[p]}
        for p in ("train", "val")
    }
    assert ids["val"] and not ids["train"] & ids["val"]  # a photo and its sketches stay together
    val_domains = Counter(dm.items[i].domain for i in dm.partitions["val"])
    assert val_domains[SKETCH] > 100 and val_domains[PHOTO] > 100
    pairs = PairDataset(dm, dm.partitions["train"], "instance")
    assert len(pairs.sketches) > 2000 and len(pairs.partner) == len(pairs.sketches)
    for sketch, photo in list(pairs.partner.items())[:200]:
        assert photo_id(dm.items[sketch]) == Path(dm.items[photo].path).stem


def test_generalized_holds_out_whole_seen_instances(sketchy125):
    dm = Sketchy(root=str(sketchy125), split="sketchy21")
    dm.set_protocol("generalized")
    dm.setup()
    seen = set(dm.split.seen)
    held = [i for p in ("query", "gallery") for i in dm.partitions[p] if dm.items[i].label in seen]
    assert Counter(dm.items[i].domain for i in held) == {SKETCH: 420, PHOTO: 420}  # 20 % of 2100
    held_ids = {(dm.items[i].label, photo_id(dm.items[i])) for i in held}
    train_ids = {(dm.items[i].label, photo_id(dm.items[i])) for i in dm.partitions["train"]}
    assert not held_ids & train_ids  # no held-out photo's sketch (or photo) is trained on
    assert dm.manifest()["generalized"]["n_seen_queries"] == 420


def test_photo_id_reads_sketchy_names():
    assert photo_id(Item("a/cat/n02121808_1421-3.png", "cat", SKETCH)) == "n02121808_1421"
    assert photo_id(Item("a/cat/n02121808_1421.jpg", "cat", PHOTO)) == "n02121808_1421"
    assert photo_id(Item("a/cat/ext_12.jpg", "cat", PHOTO)) == "ext_12"
    assert photo_id(Item("a/cat/odd-name.png", "cat", SKETCH)) == "odd-name"


def test_sketchy_mini_is_sketchy_on_the_joined_folder(sketchy125, shared_data, tmp_path):
    mini = SketchyMini(root=str(shared_data))
    mini.setup()
    plain = Sketchy(root=str(sketchy125), split="sketchy21")
    plain.setup()
    for part in ("train", "val", "query", "gallery"):
        assert _relative(mini, part) == _relative(plain, part)
    assert mini.manifest()["hash"] == plain.manifest()["hash"]
    # the joined view is reused, and its links point into the shared folders
    again = SketchyMini(root=str(shared_data))
    again.setup()
    assert [it.path for it in again.items] == [it.path for it in mini.items]
    first = Path(mini.items[0].path)
    assert first.resolve().is_relative_to(shared_data.resolve())


def test_sketchy_mini_names_the_missing_part(tmp_path, shared_data):
    (tmp_path / "sketchy21").symlink_to(shared_data / "sketchy21", target_is_directory=True)
    with pytest.raises(ZsbenchError, match="sketchy-seen104"):
        SketchyMini(root=str(tmp_path)).setup()


@pytest.mark.slow
def test_frozen_and_a_trained_method_run_the_real_protocol(
    shared_data, seen104, tmp_path, monkeypatch
):
    """At a CPU-test resolution (96 px); the reference grid runs at the methods' defaults."""
    from zsbench.runner import bench

    monkeypatch.setenv("ZSBENCH_DATA", str(shared_data))
    small = ["dataset.image_size=96"]
    frozen = bench("frozen", "sketchy-mini", overrides=small, results=tmp_path, progress=False)
    sup = bench(
        "supervised",
        "sketchy-mini",
        overrides=[*small, "trainer.max_epochs=5"],
        results=tmp_path,
        progress=False,
    )
    f, s = frozen.record, sup.record
    for rec in (f, s):
        assert rec["dataset"] == "sketchy-mini" and rec["split"] == "sketchy21"
        assert rec["split_manifest"]["n_seen_classes"] == 104
        assert rec["split_manifest"]["n_unseen_classes"] == 21
        assert rec["n_queries"] == 2100 and rec["n_gallery"] == 2100
    assert f["split_manifest"]["hash"] == s["split_manifest"]["hash"]
    # generalized ZS-SBIR on the same data (features cached): 420 seen sketches and photos more
    gz = bench(
        "frozen",
        "sketchy-mini",
        overrides=[*small, "eval.protocol=generalized"],
        results=tmp_path,
        progress=False,
    ).record
    assert (
        gz["split"] == "sketchy21-generalized" and gz["split_manifest"]["protocol"] == "generalized"
    )
    assert (gz["n_queries"], gz["n_gallery"]) == (2520, 2520)
    assert gz["metrics"]["mAP@all"] > 1.5 * gz["chance"]["mAP@all"]
    assert f["metrics"]["mAP@all"] > 1.5 * f["chance"]["mAP@all"]
    assert s["metrics"]["mAP@all"] > f["chance"]["mAP@all"]
    assert sup.path.is_file() and sup.path.parent.parent.name == "supervised"  # a variant
