"""Tests of the embedded synthetic ZS-SBIR generator (zsbench.datamodules.synthetic_render)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsbench.datamodules.synthetic_render import (
    FORMAT_VERSION,
    PATTERNS,
    SHAPES,
    class_names,
    default_unseen,
    parse_class,
    render_image,
    write_synthetic_sketchy,
)

SMALL = dict(n_shapes=3, n_patterns=3, photos_per_class=3, sketches_per_class=4, image_size=48)
READY = Path("Sketchy") / "256x256" / "{}" / "tx_000000000000_ready"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


# ----------------------------------------------------------------------------- classes / splits


def test_vocabulary_and_class_names():
    assert len(SHAPES) >= 8 and len(PATTERNS) >= 5
    assert len(set(SHAPES)) == len(SHAPES) and len(set(PATTERNS)) == len(PATTERNS)
    names = class_names(8, 5)
    assert len(names) == 40 and names == sorted(names) and len(set(names)) == 40
    assert "striped_star" in names and "plain_circle" in names
    assert all(re.fullmatch(r"[a-z]+_[a-z]+", n) for n in names)
    assert parse_class("striped_star") == ("star", "striped")
    assert class_names(8, 5) == class_names(8, 5)
    with pytest.raises(ValueError, match="n_shapes"):
        class_names(len(SHAPES) + 1, 2)
    with pytest.raises(ValueError, match="n_patterns"):
        class_names(2, 0)
    with pytest.raises(ValueError):
        parse_class("sparkly_star")


@pytest.mark.parametrize(
    "ns,np_",
    [(8, 5), (2, 2), (3, 6), (len(SHAPES), len(PATTERNS)), (5, 5), (2, 6), (12, 2)],
)
def test_default_unseen_keeps_every_attribute_seen(ns, np_):
    classes = set(class_names(ns, np_))
    hi = ns * np_ - max(ns, np_)
    for n_unseen in [None, *sorted({1, hi // 2 or 1, hi})]:
        for seed in range(4):
            unseen = default_unseen(ns, np_, n_unseen, seed=seed)
            assert unseen == sorted(set(unseen)) and set(unseen) <= classes
            if n_unseen is not None:
                assert len(unseen) == n_unseen
            seen = classes - set(unseen)
            assert {parse_class(c)[0] for c in seen} == set(SHAPES[:ns])
            assert {parse_class(c)[1] for c in seen} == set(PATTERNS[:np_])
            assert default_unseen(ns, np_, n_unseen, seed=seed) == unseen


def test_default_unseen_defaults_and_errors():
    unseen = default_unseen(8, 5)
    assert len(unseen) == 10  # 25 % of 40
    # balanced: no shape or pattern holds out more than its share (rounded up)
    shapes = [parse_class(c)[0] for c in unseen]
    patterns = [parse_class(c)[1] for c in unseen]
    assert max(shapes.count(s) for s in set(shapes)) <= 2
    assert max(patterns.count(p) for p in set(patterns)) <= 3
    assert len({tuple(default_unseen(8, 5, seed=s)) for s in range(5)}) > 1  # seed matters
    with pytest.raises(ValueError, match="n_unseen"):
        default_unseen(8, 5, 8 * 5 - 8 + 1)
    with pytest.raises(ValueError, match="n_unseen"):
        default_unseen(8, 5, 0)


# ----------------------------------------------------------------------------- rendering


def test_render_deterministic_and_seeded():
    for domain in ("photo", "sketch"):
        a = render_image("dotted_heart", domain, 3, 64, seed=1)
        b = render_image("dotted_heart", domain, 3, 64, seed=1)
        assert a.mode == "RGB" and a.size == (64, 64)
        assert a.tobytes() == b.tobytes()
        assert render_image("dotted_heart", domain, 4, 64, seed=1).tobytes() != a.tobytes()
        assert render_image("dotted_heart", domain, 3, 64, seed=2).tobytes() != a.tobytes()
    with pytest.raises(ValueError, match="domain"):
        render_image("dotted_heart", "painting", 0)


def test_sketches_are_strokes_on_white_photos_are_not():
    sk = np.stack([_arr(render_image(c, "sketch", i, 64)) for c in class_names(8, 5) for i in (0,)])
    ph = np.stack([_arr(render_image(c, "photo", i, 64)) for c in class_names(8, 5) for i in (0,)])
    gray = sk.mean(-1)
    assert np.allclose(sk[..., 0], sk[..., 1]) and np.allclose(sk[..., 0], sk[..., 2])
    white = (gray > 240).mean(axis=(1, 2))
    dark = (gray < 100).mean(axis=(1, 2))
    assert white.min() > 0.6, "sketches should be mostly white"
    assert dark.min() > 0.01, "every sketch should have dark strokes"
    assert (gray[:, :3, :].mean() > 250) and (gray[:, -3:, :].mean() > 250), "white borders"
    # photos: coloured, not white
    assert (ph.mean(-1) > 240).mean() < 0.1
    assert np.abs(ph[..., 0] - ph[..., 1]).mean() > 10  # colour


def test_pattern_is_visible():
    """Sketch ink and photo edge density grow with the pattern; the statistics differ."""

    def ink(cls):
        return np.mean(
            [(_arr(render_image(cls, "sketch", i, 64)).mean(-1) < 128).mean() for i in range(12)]
        )

    def edges(cls):
        vals = []
        for i in range(12):
            g = _arr(render_image(cls, "photo", i, 64)).mean(-1)
            vals.append(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())
        return np.mean(vals)

    for shape in ("circle", "square", "heart"):
        plain = ink(f"plain_{shape}")
        for pattern in ("striped", "dotted", "checkered", "zigzag"):
            assert ink(f"{pattern}_{shape}") > 1.3 * plain, (shape, pattern)
        assert edges(f"striped_{shape}") > 1.2 * edges(f"plain_{shape}"), shape


def test_every_class_renders():
    for cls in class_names(len(SHAPES), len(PATTERNS)):
        for domain in ("photo", "sketch"):
            img = render_image(cls, domain, 0, 32)
            assert img.size == (32, 32) and img.mode == "RGB"


# ----------------------------------------------------------------------------- dataset writer


def test_layout_and_counts(tmp_path):
    root = write_synthetic_sketchy(tmp_path / "ds", progress=False, **SMALL)
    assert root == (tmp_path / "ds").absolute()
    classes = class_names(3, 3)
    pdir, sdir = root / str(READY).format("photo"), root / str(READY).format("sketch")
    assert sorted(p.name for p in pdir.iterdir()) == classes
    assert sorted(p.name for p in sdir.iterdir()) == classes
    wnids = set()
    for cls in classes:
        photos = sorted(pdir.joinpath(cls).iterdir())
        sketches = sorted(sdir.joinpath(cls).iterdir())
        assert len(photos) == 3 and len(sketches) == 4
        ids = {p.stem for p in photos}
        assert all(re.fullmatch(r"n\d{8}_\d+\.jpg", p.name) for p in photos)
        wnids |= {i.split("_")[0] for i in ids}
        for s in sketches:
            m = re.fullmatch(r"(n\d{8}_\d+)-(\d+)\.png", s.name)
            assert m and m.group(1) in ids, s.name  # refers to a photo of the same class
        with Image.open(photos[0]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (48, 48)
        with Image.open(sketches[0]) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (48, 48)
    assert len(wnids) == len(classes)  # one fake wnid per class
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["params"] == dict(SMALL, seed=0)
    assert meta["classes"] == classes and meta["default_unseen"] == default_unseen(3, 3)
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_deterministic_dataset(tmp_path):
    a = write_synthetic_sketchy(tmp_path / "a", progress=False, **SMALL)
    b = write_synthetic_sketchy(tmp_path / "b", progress=False, **SMALL)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and len(fa) == 9 * 7 + 1
    assert fa == fb  # byte-identical (same Pillow/libjpeg/zlib)
    c = write_synthetic_sketchy(tmp_path / "c", progress=False, **dict(SMALL, seed=1))
    assert _files(c) != fa


def test_fast_path_and_parameter_change(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_sketchy(root, progress=False, **SMALL)
    marker = root / "synthetic.json"
    mtime = marker.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert write_synthetic_sketchy(root, progress=False, **SMALL) == root.absolute()
    assert time.perf_counter() - t0 < 0.5
    assert marker.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different parameters"):
        write_synthetic_sketchy(root, progress=False, **dict(SMALL, image_size=64))
    with pytest.raises(ValueError, match="different parameters"):
        write_synthetic_sketchy(root, progress=False, **dict(SMALL, seed=3))


def test_parameter_validation(tmp_path):
    bad = [
        dict(n_shapes=len(SHAPES) + 1),
        dict(n_patterns=len(PATTERNS) + 1),
        dict(n_shapes=0),
        dict(photos_per_class=0),
        dict(sketches_per_class=-1),
        dict(image_size=4),
        dict(seed=-1),
        dict(image_size=32.5),
    ]
    for kw in bad:
        with pytest.raises(ValueError, match=next(iter(kw))):
            write_synthetic_sketchy(tmp_path / "x", progress=False, **dict(SMALL, **kw))
    assert not (tmp_path / "x").exists()


def test_refuses_foreign_folder_and_cleans_stale_partials(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic_sketchy(foreign, progress=False, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"
    # an existing empty folder is fine; a stale partial from a killed run is removed
    empty = tmp_path / "empty"
    empty.mkdir()
    stale = tmp_path / ".empty.partial-deadbeef"
    (stale / "Sketchy").mkdir(parents=True)
    write_synthetic_sketchy(empty, progress=False, **SMALL)
    assert (empty / "synthetic.json").is_file() and not stale.exists()


def test_interrupted_generation_leaves_nothing_complete(tmp_path, monkeypatch):
    import zsbench.datamodules.synthetic_render as sr

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sr, "render_image", boom)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_sketchy(tmp_path / "ds", progress=False, **SMALL)
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_concurrent_writers(tmp_path):
    root = tmp_path / "ds"
    errors: list[BaseException] = []

    def go():
        try:
            write_synthetic_sketchy(root, progress=False, **SMALL)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_files(root)) == 9 * 7 + 1
    assert not list(tmp_path.glob(".ds.partial-*"))


@pytest.mark.slow
def test_contact_sheet_and_default_generation(tmp_path):
    """Render a small contact sheet (for eyeballing) and generate the default dataset."""
    classes = class_names(8, 5)
    size = 48
    sheet = Image.new("RGB", (size * 6, size * len(classes)), "white")
    for r, cls in enumerate(classes):
        for i in range(3):
            sheet.paste(render_image(cls, "sketch", i, size), (i * size, r * size))
            sheet.paste(render_image(cls, "photo", i, size), ((3 + i) * size, r * size))
    sheet.save(tmp_path / "sheet.png")
    t0 = time.perf_counter()
    root = write_synthetic_sketchy(tmp_path / "default", progress=False)
    dt = time.perf_counter() - t0
    n = sum(1 for p in root.rglob("*") if p.is_file())
    print(f"default synthetic dataset: {n - 1} images in {dt:.1f}s")
    assert n == 40 * 60 + 1
