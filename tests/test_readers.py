"""The real dataset readers (Sketchy, TU-Berlin, QuickDraw, sketchy21-mini) on tiny fixtures
written in each official layout, the published split manifests, and the real 21-class slice."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from zsbench.config import signature_defaults
from zsbench.datamodules.base import PHOTO, SKETCH
from zsbench.datamodules.quickdraw import QuickDraw
from zsbench.datamodules.sketchy import Sketchy, Sketchy21Mini
from zsbench.datamodules.split_manifests import manifest_names, read_manifest
from zsbench.datamodules.tuberlin import TUBerlin
from zsbench.errors import ZsbenchError
from zsbench.registry import DATASETS
from zsbench.splits import class_key

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "datasets"
ODD = ["alarm clock", "car (sedan)", "hot-air_balloon"]  # spaces, parentheses, hyphen
SK_TX = "256x256/sketch/tx_000000000000_ready"
PH_TX = "256x256/photo/tx_000000000000_ready"


def img(path: Path, color: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.new("RGB", (8, 8), (color, 255 - color, 0)).save(path, fmt)
    return path


def fill(folder: Path, classes, n: int, suffix: str) -> None:
    for c in classes:
        for i in range(n):
            img(folder / c / f"{i}{suffix}", color=10 * i)


def all_classes(split: str) -> list[str]:
    m = read_manifest(split)
    return m["seen"] + m["unseen"]


def write_sketchy(root: Path, classes, n_sketch=3, n_photo=2, n_ext=0) -> Path:
    sk = root / "Sketchy"
    fill(sk / SK_TX, classes, n_sketch, ".png")
    fill(sk / PH_TX, classes, n_photo, ".jpg")
    if n_ext:
        fill(sk / "EXTEND_image_sketchy_ready", classes, n_ext, ".jpg")
    return sk


def labels(dm, part: str) -> set[str]:
    return {dm.items[i].label for i in dm.partitions[part]}


def assert_follows_split(dm) -> None:
    seen, unseen = set(dm.split.seen), set(dm.split.unseen)
    assert not seen & unseen
    assert labels(dm, "train") | labels(dm, "val") <= seen
    assert labels(dm, "query") == labels(dm, "gallery") == unseen
    assert all(dm.items[i].domain == SKETCH for i in dm.partitions["query"])
    assert all(dm.items[i].domain == PHOTO for i in dm.partitions["gallery"])


def keys(names) -> set[str]:
    return {class_key(c) for c in names}


# -- split manifests --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,dataset,n_seen,n_unseen",
    [
        ("sketchy21", "sketchy", 104, 21),
        ("sketchy25", "sketchy", 100, 25),
        ("tuberlin30", "tuberlin", 220, 30),
        ("quickdraw30", "quickdraw", 80, 30),
        ("sempcyc-sketchy", "sketchy", 100, 25),
        ("sempcyc-tuberlin", "tuberlin", 220, 30),
    ],
)
def test_manifests_have_the_published_counts(name, dataset, n_seen, n_unseen):
    m = read_manifest(name)
    assert m["dataset"] == dataset and name in manifest_names(dataset)
    assert (len(m["seen"]), len(m["unseen"])) == (n_seen, n_unseen)
    assert len(keys(m["seen"])) == n_seen and len(keys(m["unseen"])) == n_unseen
    assert not keys(m["seen"]) & keys(m["unseen"])


def test_sketchy_manifests_cover_the_same_125_classes():
    assert keys(all_classes("sketchy21")) == keys(all_classes("sketchy25"))
    assert keys(all_classes("sketchy25")) == keys(all_classes("sempcyc-sketchy"))
    assert keys(all_classes("tuberlin30")) == keys(all_classes("sempcyc-tuberlin"))


# -- registry and configs ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,cls",
    [
        ("sketchy", Sketchy),
        ("sketchy21-mini", Sketchy21Mini),
        ("tuberlin", TUBerlin),
        ("quickdraw", QuickDraw),
    ],
)
def test_registered_with_a_valid_config(name, cls):
    assert DATASETS.get(name) is cls
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert set(config["dataset"] or {}) <= set(signature_defaults(cls))
    assert signature_defaults(cls)["image_size"] == 224


# -- Sketchy ----------------------------------------------------------------------------------
def test_sketchy_scans_the_original_layout_with_a_user_split(tmp_path):
    write_sketchy(tmp_path, ODD + ["bat", "cow"])
    dm = Sketchy(root=str(tmp_path), unseen="car (sedan),bat", val_fraction=0.0)
    dm.setup()
    assert sorted({it.label for it in dm.items}) == sorted(ODD + ["bat", "cow"])
    assert sum(it.domain == SKETCH for it in dm.items) == 5 * 3
    assert sum(it.domain == PHOTO for it in dm.items) == 5 * 2
    assert all(Path(it.path).parent.name == it.label for it in dm.items)
    assert dm.split.name == "custom" and set(dm.split.unseen) == {"car (sedan)", "bat"}
    assert_follows_split(dm)
    assert dm.manifest()["counts"] == {"train": 15, "val": 0, "query": 6, "gallery": 4}


def test_sketchy_user_split_from_a_list_or_a_file(tmp_path):
    write_sketchy(tmp_path, ODD + ["bat"])
    listed = Sketchy(root=str(tmp_path), unseen=["Alarm Clock", "hot air balloon"])
    listed.setup()
    path = tmp_path / "unseen.txt"
    path.write_text("alarm_clock 0\nhot-air_balloon 1\n")  # cname_cid.txt style
    from_file = Sketchy(root=str(tmp_path), unseen=str(path))
    from_file.setup()
    assert (
        set(listed.split.unseen)
        == set(from_file.split.unseen)
        == {"alarm clock", "hot-air_balloon"}
    )
    assert listed.split.hash == from_file.split.hash


@pytest.fixture(scope="module")
def full_sketchy(tmp_path_factory) -> Path:
    """All 125 Sketchy classes in the manifests' spelling, 1 sketch + 1 photo each."""
    root = tmp_path_factory.mktemp("sketchy125")
    write_sketchy(root, all_classes("sketchy25"), n_sketch=1, n_photo=1)
    return root


@pytest.mark.parametrize("split", ["sketchy25", "sketchy21", "sempcyc-sketchy"])
def test_sketchy_named_splits_resolve(full_sketchy, split):
    dm = Sketchy(root=str(full_sketchy), split=split)
    dm.setup()
    m = read_manifest(split)
    assert dm.split.name == split
    assert keys(dm.split.unseen) == keys(m["unseen"]) and keys(dm.split.seen) == keys(m["seen"])
    assert_follows_split(dm)
    assert dm.manifest()["counts"]["query"] == len(m["unseen"])


def test_default_split_is_sketchy25(full_sketchy):
    dm = Sketchy(root=str(full_sketchy / "Sketchy"))  # the Sketchy folder itself works too
    dm.setup()
    assert dm.split.name == "sketchy25" and len(dm.split.unseen) == 25


def test_class_missing_for_a_split_is_named(tmp_path):
    write_sketchy(tmp_path, [c for c in all_classes("sketchy25") if c != "pig"], 1, 1)
    with pytest.raises(ZsbenchError, match=r"sketchy25.*pig"):
        Sketchy(root=str(tmp_path)).setup()


def test_unknown_split_name_suggests(tmp_path):
    with pytest.raises(ZsbenchError, match="Did you mean: sketchy25"):
        Sketchy(root=str(tmp_path), split="sketchy_25")


def test_sketchy_extended_photos(tmp_path):
    write_sketchy(tmp_path, ["bat", "cow", "car_(sedan)"], n_sketch=2, n_photo=1, n_ext=3)
    plain = Sketchy(root=str(tmp_path), unseen="bat")
    plain.setup()
    ext = Sketchy(root=str(tmp_path), unseen="bat", extended_photos=True)
    ext.setup()
    assert sum(it.domain == PHOTO for it in plain.items) == 3
    assert sum(it.domain == PHOTO for it in ext.items) == 3 + 9
    assert sum(it.domain == SKETCH for it in ext.items) == 6
    assert {it.label for it in ext.items} == {"bat", "cow", "car_(sedan)"}
    assert ext.manifest()["counts"]["gallery"] == 4


def test_extended_photos_under_other_names_and_spellings(tmp_path):
    sk = write_sketchy(tmp_path, ["hot-air_balloon", "cow"], n_sketch=1, n_photo=1)
    fill(sk / "extended_photo", ["hot_air_balloon", "cow"], 2, ".jpg")  # Doodle2Search rename
    dm = Sketchy(root=str(tmp_path), unseen="cow", extended_photos=True)
    dm.setup()
    assert {it.label for it in dm.items} == {"hot-air_balloon", "cow"}  # one spelling
    assert sum(it.domain == PHOTO for it in dm.items) == 6


def test_missing_extended_folder_is_an_error(tmp_path):
    write_sketchy(tmp_path, ["bat", "cow"])
    with pytest.raises(ZsbenchError, match="EXTEND_image_sketchy"):
        Sketchy(root=str(tmp_path), unseen="bat", extended_photos=True).setup()


def write_lists(folder: Path, lines: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in lines.items():
        (folder / name).write_text("".join(f"{r} {i % 3}\n" for i, r in enumerate(rows)))


def test_sketchy_file_lists(tmp_path):
    classes = ["alarm clock", "bat", "cow"]
    sk = write_sketchy(tmp_path, classes, n_sketch=3, n_photo=2, n_ext=2)
    # the lists name only part of what is on disk: they, not the folders, define the items
    sketches = [f"{SK_TX}/{c}/{i}.png" for c in classes for i in range(2)]
    photos = [f"{PH_TX}/{c}/0.jpg" for c in classes]
    ext = [f"EXTEND_image_sketchy_ready/{c}/1.jpg" for c in classes]
    write_lists(
        sk / "zeroshot1",
        {
            "sketch_tx_000000000000_ready_filelist_train.txt": sketches[2:],
            "sketch_tx_000000000000_ready_filelist_zero.txt": sketches[:2],
            "all_photo_filelist_train.txt": photos[1:] + ext[1:],
            "all_photo_filelist_zero.txt": photos[:1] + ext[:1],
            "cname_cid.txt": ["bat", "cow"],
        },
    )
    dm = Sketchy(
        root=str(tmp_path), unseen="alarm clock", file_lists="zeroshot1", extended_photos=True
    )
    dm.setup()
    assert sorted(it.path for it in dm.items) == sorted(
        str(sk / p) for p in sketches + photos + ext
    )
    assert {it.label for it in dm.items} == set(classes)  # 'alarm clock' with its space
    assert dm.manifest()["counts"]["query"] == 2 and dm.manifest()["counts"]["gallery"] == 2
    # an absolute folder works as well; extended_photos=False drops the extended entries
    plain = Sketchy(root=str(tmp_path), unseen="alarm clock", file_lists=str(sk / "zeroshot1"))
    plain.setup()
    assert sum(it.domain == PHOTO for it in plain.items) == 3


def test_file_lists_errors(tmp_path):
    sk = write_sketchy(tmp_path, ["bat", "cow"])
    with pytest.raises(ZsbenchError, match="no such folder"):
        Sketchy(root=str(tmp_path), unseen="bat", file_lists="zeroshot9").setup()
    write_lists(sk / "only_sketch", {"sketch_tx_000000000000_ready_filelist_zero.txt": []})
    with pytest.raises(ZsbenchError, match="No photo file list"):
        Sketchy(root=str(tmp_path), unseen="bat", file_lists="only_sketch").setup()
    write_lists(
        sk / "lists",
        {
            "sketch_tx_000000000000_ready_filelist_zero.txt": [
                f"{SK_TX}/bat/0.png",
                # cow/1, not cow/0: Sketchy holds out whole instances, and instance cow/0
                # hashes into the validation tenth, which would leave train empty
                f"{SK_TX}/cow/1.png",
            ],
            "all_photo_filelist_zero.txt": [f"{PH_TX}/bat/0.jpg", f"{PH_TX}/cow/9.jpg"],
        },
    )
    with pytest.raises(ZsbenchError, match=r"1 of 4 files .*cow/9\.jpg"):
        Sketchy(root=str(tmp_path), unseen="bat", file_lists="lists").setup()
    dm = Sketchy(root=str(tmp_path), unseen="bat", file_lists="lists", skip_bad=True)
    dm.setup()
    assert dm.manifest()["n_skipped_bad"] == 1


def test_missing_root_names_the_layout_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("ZSBENCH_DATA", raising=False)
    for cls in (Sketchy, TUBerlin, QuickDraw, Sketchy21Mini):
        with pytest.raises(ZsbenchError, match="no data root") as err:
            cls().setup()
        assert "ZSBENCH_DATA" in str(err.value) and "dataset.root" in str(err.value)
        assert "Get the data" in str(err.value)
    with pytest.raises(ZsbenchError, match="does not exist"):
        Sketchy(root=str(tmp_path / "nowhere")).setup()


def test_root_from_the_environment(tmp_path, monkeypatch):
    write_sketchy(tmp_path, ["bat", "cow"])
    monkeypatch.setenv("ZSBENCH_DATA", str(tmp_path))
    dm = Sketchy(unseen="cow")
    dm.setup()
    assert len(dm.items) == 10


@pytest.mark.parametrize(
    "cls,layout",
    [(Sketchy, "tx_000000000000_ready"), (TUBerlin, "png_ready"), (QuickDraw, "sketches")],
)
def test_wrong_layout_names_the_expected_one(tmp_path, cls, layout):
    fill(tmp_path / "pictures", ["bat"], 1, ".png")
    with pytest.raises(ZsbenchError, match=layout) as err:
        cls(root=str(tmp_path)).setup()
    assert "Get the data" in str(err.value)


def test_class_in_one_domain_only_is_an_error(tmp_path):
    sk = write_sketchy(tmp_path, ["bat", "cow"])
    fill(sk / PH_TX, ["horse"], 1, ".jpg")
    with pytest.raises(ZsbenchError, match="photos only.*horse"):
        Sketchy(root=str(tmp_path), unseen="bat").setup()


def test_skip_bad(tmp_path):
    write_sketchy(tmp_path, ["bat", "cow"], n_sketch=2, n_photo=2)
    bad = img(tmp_path / "Sketchy" / PH_TX / "bat" / "9.jpg")
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    dm = Sketchy(root=str(tmp_path), unseen="bat")
    dm.setup()
    dm.eval_batch_size = 2
    with pytest.raises(ZsbenchError, match=r"Cannot read image .*9\.jpg"):
        list(dm.gallery_dataloader())
    ok = Sketchy(root=str(tmp_path), unseen="bat", skip_bad=True)
    ok.setup()
    assert ok.manifest()["n_skipped_bad"] == 1 and ok.manifest()["skipped_bad"] == [str(bad)]
    assert str(bad) not in {it.path for it in ok.items}
    assert len(list(ok.gallery_dataloader())) == 1


# -- TU-Berlin --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_tuberlin(tmp_path_factory) -> Path:
    """All 250 TU-Berlin classes in SAKE's layout and spelling ('alarm clock', 'car (sedan)')."""
    root = tmp_path_factory.mktemp("tuberlin250")
    classes = all_classes("tuberlin30")
    fill(root / "TUBerlin" / "png_ready", classes, 1, ".png")
    fill(root / "TUBerlin" / "ImageResized_ready", classes, 1, ".JPEG")
    return root


@pytest.mark.parametrize("split", ["tuberlin30", "sempcyc-tuberlin"])
def test_tuberlin_named_splits_resolve(full_tuberlin, split):
    dm = TUBerlin(root=str(full_tuberlin), split=split)
    dm.setup()
    m = read_manifest(split)
    assert keys(dm.split.unseen) == keys(m["unseen"]) and len(dm.split.seen) == 220
    assert_follows_split(dm)
    assert len(dm.items) == 500 and dm.manifest()["counts"]["gallery"] == 30


def test_tuberlin_default_split_and_odd_names(full_tuberlin):
    dm = TUBerlin(root=str(full_tuberlin))
    dm.setup()
    assert dm.split.name == "tuberlin30"
    names = set(dm.split.seen) | set(dm.split.unseen)
    assert {"alarm clock", "car (sedan)", "wrist-watch"} <= names  # the folders' own spelling


def test_tuberlin_doodle2search_layout_gives_the_same_split(tmp_path, full_tuberlin):
    classes = [c.replace(" ", "_") for c in all_classes("tuberlin30")]  # 'car_(sedan)'
    fill(tmp_path / "TU-Berlin" / "sketches", classes, 1, ".png")
    fill(tmp_path / "TU-Berlin" / "images", classes, 1, ".jpg")
    dm, ref = TUBerlin(root=str(tmp_path)), TUBerlin(root=str(full_tuberlin))
    dm.setup()
    ref.setup()
    assert "car_(sedan)" in dm.split.seen + dm.split.unseen
    assert dm.split.hash == ref.split.hash


def test_tuberlin_small_user_split_and_file_lists(tmp_path):
    tb = tmp_path / "TUBerlin"
    fill(tb / "png_ready", ODD, 2, ".png")
    fill(tb / "ImageResized_ready", ODD, 2, ".JPEG")
    dm = TUBerlin(root=str(tmp_path), unseen=["car (sedan)"])
    dm.setup()
    assert dm.split.name == "custom" and len(dm.items) == 12
    assert_follows_split(dm)
    write_lists(
        tb / "zeroshot",
        {
            "png_ready_filelist_train.txt": [f"png_ready/{c}/0.png" for c in ODD],
            "ImageResized_ready_filelist_train.txt": [
                f"ImageResized_ready/{c}/1.JPEG" for c in ODD
            ],
        },
    )
    listed = TUBerlin(root=str(tmp_path), unseen=["car (sedan)"], file_lists="zeroshot")
    listed.setup()
    assert len(listed.items) == 6 and {it.label for it in listed.items} == set(ODD)


# -- QuickDraw --------------------------------------------------------------------------------
def test_quickdraw_quickdraw30_in_both_layouts(tmp_path):
    classes = all_classes("quickdraw30")
    fill(tmp_path / "zse" / "QuickDraw" / "sketches", classes, 1, ".png")
    fill(tmp_path / "zse" / "QuickDraw" / "images", classes, 1, ".jpg")
    fill(tmp_path / "d2s" / "QuickDraw_sketches_final", classes, 1, ".png")
    fill(tmp_path / "d2s" / "QuickDraw_images_final", classes, 1, ".jpeg")
    hashes = set()
    for sub in ("zse", "d2s"):
        dm = QuickDraw(root=str(tmp_path / sub))
        dm.setup()
        assert dm.split.name == "quickdraw30"
        assert (len(dm.split.seen), len(dm.split.unseen)) == (80, 30)
        assert len(dm.items) == 220
        assert_follows_split(dm)
        hashes.add(dm.split.hash)
    assert len(hashes) == 1


def test_quickdraw_file_lists_with_spaces_in_paths(tmp_path):
    qd = tmp_path / "QuickDraw"
    classes = ["palm tree", "bat", "cow"]
    fill(qd / "sketches", classes, 2, ".png")
    img(qd / "images" / "palm tree" / "111. palm-tree on a beach.jpeg")
    fill(qd / "images", ["bat", "cow"], 1, ".jpg")
    write_lists(
        qd / "zeroshot",
        {
            "sketch_zero.txt": [f"sketches/{c}/0.png" for c in classes],
            "all_photo_zero.txt": [
                "images/palm tree/111. palm-tree on a beach.jpeg",
                "images/bat/0.jpg",
                "images/cow/0.jpg",
            ],
        },
    )
    dm = QuickDraw(root=str(tmp_path), unseen="palm tree", file_lists="zeroshot")
    dm.setup()
    assert len(dm.items) == 6
    gallery = [dm.items[i].path for i in dm.partitions["gallery"]]
    assert gallery == [str(qd / "images/palm tree/111. palm-tree on a beach.jpeg")]


def test_quickdraw_split_needs_its_classes(tmp_path):
    fill(tmp_path / "QuickDraw" / "sketches", ["bat"], 1, ".png")
    fill(tmp_path / "QuickDraw" / "images", ["bat"], 1, ".jpg")
    with pytest.raises(ZsbenchError, match="quickdraw30"):
        QuickDraw(root=str(tmp_path)).setup()


# -- sketchy21-mini ---------------------------------------------------------------------------
def test_mini_split_on_a_fixture(tmp_path):
    classes = [f"class{i:02d}" for i in range(21)]
    write_sketchy(tmp_path / "sketchy21", classes, n_sketch=1, n_photo=1)
    a, b = Sketchy21Mini(root=str(tmp_path)), Sketchy21Mini(root=str(tmp_path))
    a.setup()
    b.setup()
    assert a.split == b.split and a.split.name == "mini-seed0"
    assert (len(a.split.seen), len(a.split.unseen)) == (15, 6)
    other = Sketchy21Mini(root=str(tmp_path), split_seed=1, n_unseen=5)
    other.setup()
    assert other.split.name == "mini-u5-seed1" and len(other.split.unseen) == 5
    with pytest.raises(ZsbenchError, match="n_unseen"):
        Sketchy21Mini(root=str(tmp_path), n_unseen=21).setup()


@pytest.mark.needs_data
def test_mini_on_the_real_slice(shared_data):
    dm = Sketchy21Mini(root=str(shared_data))
    dm.setup()
    classes = {it.label for it in dm.items}
    assert len(classes) == 21
    assert keys(classes) == keys(read_manifest("sketchy21")["unseen"])
    assert sum(it.domain == PHOTO for it in dm.items) == 2100
    assert sum(it.domain == SKETCH for it in dm.items) == 2100
    assert dm.split.name == "mini-seed0"
    assert (len(dm.split.seen), len(dm.split.unseen)) == (15, 6)
    again = Sketchy21Mini(root=str(shared_data))
    again.setup()
    assert again.split == dm.split and again.manifest() == dm.manifest()
    assert_follows_split(dm)
    assert dm.manifest()["counts"]["query"] == dm.manifest()["counts"]["gallery"] == 600
    dm.eval_batch_size = 4
    batch = next(iter(dm.query_dataloader()))
    assert batch["image"].shape == (4, 3, 224, 224) and set(batch["domain"].tolist()) == {SKETCH}


@pytest.mark.needs_data
def test_mini_user_split_on_the_real_slice(shared_data):
    dm = Sketchy21Mini(root=str(shared_data), unseen="bat,cow,tree")
    dm.setup()
    assert dm.split.name == "custom" and dm.split.unseen == ("bat", "cow", "tree")
    assert len(dm.split.seen) == 18


@pytest.mark.needs_data
def test_sketchy_reader_on_the_real_slice_needs_all_classes(shared_data):
    """The slice has only the sketchy21 unseen classes: the full `sketchy` reader says so."""
    with pytest.raises(ZsbenchError, match="sketchy21"):
        Sketchy(root=str(shared_data / "sketchy21"), split="sketchy21").setup()
    dm = Sketchy(root=str(shared_data / "sketchy21"), unseen="bat,cow")
    dm.setup()
    assert len(dm.split.seen) == 19 and len(dm.items) == 4200
