"""`zsbench report`: the HTML dashboard, on fake results (+ extras with real PNGs), on a real tiny
bench result, and rendered by headless Chromium (skipped without it, except under CI=true)."""

from __future__ import annotations

import html
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from zsbench.report import Run, mean_pr_curves, report_main, write_report
from zsbench.results import extras_path, result_path, write_json_atomic

CLASSES = {"cat": (230, 140, 20), "dog": (120, 60, 30), "owl": (110, 30, 150)}
# method -> (base mAP@all, extras written?) ; "legacy" stands for results from before extras
METHODS = {"supervised": (0.6, True), "frozen": (0.3, True), "legacy": (0.45, False)}
SEEDS = (0, 1)


def _images(folder: Path) -> dict[str, list[str]]:
    """Per class three small photos and one transparent sketch (PNG, written with PIL)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, colour in CLASSES.items():
        paths = []
        for i in range(3):
            im = Image.new("RGB", (120, 90), "white")
            ImageDraw.Draw(im).ellipse((5 + 10 * i, 10, 110, 80), fill=colour)
            im.save(folder / f"{name}{i}.png")
            paths.append(str(folder / f"{name}{i}.png"))
        sketch = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
        ImageDraw.Draw(sketch).line((10, 10, 90, 90), fill="black", width=4)
        sketch.save(folder / f"{name}_sketch.png")
        out[name] = [str(folder / f"{name}_sketch.png"), *paths]
    return out


def _extras(images: dict[str, list[str]], base: float, seed: int) -> dict:
    recall = np.linspace(0, 1, 11)
    examples = []
    for query, (sketch, *_) in images.items():
        top = [
            {"path": p, "label": c, "correct": c == query}
            for c, (_, *photos) in images.items()
            for p in photos
        ]
        top.append({"path": "/nonexistent/photo.jpg", "label": "dog", "correct": query == "dog"})
        examples.append({"query": sketch, "label": query, "top": top})
    precision = np.clip(1 - recall * (1 - base) + 0.02 * seed, 0, 1)
    return {
        "pr_curve": {"recall": recall.tolist(), "precision": precision.tolist()},
        "examples": examples,
    }


CHANCE = {"sketchy": 0.05, "synthetic": 0.08}  # mAP@all of a random ranking, per fake dataset


def _write(root, dataset, method, seed, metrics, extras=None, task="sbir", leak=None) -> Path:
    rec = {
        "schema_version": 1,
        **{"task": task, "dataset": dataset, "split": "default", "method": method},
        **{"seed": seed, "status": "ok", "metrics": metrics, "spec": {"name": "default"}},
        "leakage": {"leak": leak},
    }
    if dataset in CHANCE:
        rec["chance"] = {"mAP@all": CHANCE[dataset]}
    path = result_path(root, task, dataset, "default", method, seed)
    write_json_atomic(path, rec)
    if extras is not None:
        write_json_atomic(extras_path(path), extras)
    return path


def make_results(root: Path, datasets=("sketchy", "synthetic")) -> dict:
    """Fake results; returns {(dataset, method): [mAP@all per seed]} to check against."""
    images = _images(root.parent / "images")
    values = {}
    for d, dataset in enumerate(datasets):
        for method, (base, with_extras) in METHODS.items():
            for seed in SEEDS:
                m = base + 0.03 * seed + 0.01 * d
                values.setdefault((dataset, method), []).append(m)
                extras = _extras(images, base, seed) if with_extras else None
                metrics = {"mAP@all": m, "P@100": m / 2, "mAP@all.class_mean": m}
                _write(root, dataset, method, seed, metrics, extras, leak=method == "frozen")
    return values


class Tables(HTMLParser):
    """Cell texts of every <table class="leaderboard">: [[row cells], ...] per table."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("class", "leaderboard") in attrs:
            self.tables.append([])
        elif tag == "tr" and ("class", "row") in attrs:
            self.tables[-1].append([])
        elif tag == "td" and self.tables and self.tables[-1]:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[-1][-1].append(self._cell)
            self._cell = None


def _page(path: Path) -> str:
    """The page's text with character references (the file is pure ASCII) decoded."""
    return html.unescape(path.read_text())


def _section(page: str, name: str) -> str:
    return page.split(f'<section id="{name}">')[1].split("</section>")[0]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "results"
    values = make_results(root)
    return root, values, _page(write_report(root))


def test_table_rows_mean_std_n_seeds_and_leak(fake):
    root, values, page = fake
    parser = Tables()
    parser.feed(page)
    assert len(parser.tables) == 2  # one per (task, dataset, split)
    for table, dataset in zip(parser.tables, ("sketchy", "synthetic")):
        methods = [row[0] for row in table]
        expected = sorted(METHODS, key=lambda m: -np.mean(values[dataset, m]))
        assert methods == expected  # sorted by the main metric, best first
        for row in table:
            v = values[dataset, row[0]]
            assert row[2] == str(len(SEEDS)) and row[3] == "0 1"
            assert row[4] == ("yes" if row[0] == "frozen" else "no")
            assert row[5] == f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}"
            gap = np.mean(v) - np.mean(values[dataset, "frozen"])
            assert row[7] == ("" if row[0] == "frozen" else f"{gap:+.4f}")
            assert row[8] == ""  # vs centred: no frozen-centred row in this grid
            assert len(row) == 10  # mAP@all, P@100, vs frozen, vs centred, notes (CSV: per class)


def test_one_bar_chart_per_dataset_heights_follow_means(fake):
    _, values, page = fake
    figures = re.findall(r'<figure class="bars">(.*?)</figure>', _section(page, "charts"), re.S)
    assert len(figures) == 2
    for fig, dataset in zip(figures, ("sketchy", "synthetic")):
        assert f"{dataset}: mAP@all" in fig
        bars = re.findall(r'height="([\d.]+)" fill="#\w+"><title>(\w+):', fig)
        assert {m for _, m in bars} == set(METHODS)
        heights = {m: float(h) for h, m in bars}
        means = {m: np.mean(values[dataset, m]) for m in METHODS}
        ratio = [heights[m] / means[m] for m in METHODS]
        assert np.allclose(ratio, ratio[0], rtol=0.01)  # bar height is proportional to the mean
        assert fig.count('class="err"') == len(METHODS)  # error bars: every row has 2 seeds
        # the chance line sits where a bar of the chance value would end
        (y_chance,) = re.findall(r'y1="([\d.]+)" y2="[\d.]+" class="chance"', fig)
        (y_axis,) = re.findall(r'y1="([\d.]+)" y2="[\d.]+" class="axis"', fig)
        chance_height = float(y_axis) - float(y_chance)
        assert chance_height / CHANCE[dataset] == pytest.approx(ratio[0], rel=0.02)
        assert f"random ranking (expected): {CHANCE[dataset]:.4f}" in fig


def test_pr_curves_mean_over_seeds_and_one_line_per_method(fake, tmp_path):
    root, _, page = fake
    pr = _section(page, "pr")
    assert pr.count("<polyline") == 2 * 2  # 2 datasets x 2 methods with extras
    assert re.search(r"No PR curve \(no extras file[^<]*\): legacy seed 0, legacy seed 1<", pr)
    recs = [Run({"method": "m", "seed": s}, extras=_extras({}, 0.5, s)) for s in SEEDS] + [
        Run({"method": "m", "seed": 9}, note="no extras file")
    ]
    curves, notes = mean_pr_curves(recs)
    expected = np.mean([_extras({}, 0.5, s)["pr_curve"]["precision"] for s in SEEDS], axis=0)
    np.testing.assert_allclose(curves["m"][1], expected)
    assert curves["m"][2] == 2 and notes == ["No PR curve (no extras file): m seed 9"]


def test_grids_embed_thumbnails_and_mark_correct_and_wrong(fake):
    _, _, page = fake
    grids = _section(page, "grids")
    blocks = re.findall(r'<div class="grid" data-method="(\w+)">(.*?)(?=<div class="grid"|<h3>|$)',
                        grids, re.S)  # fmt: skip
    assert sorted(m for m, _ in blocks) == ["frozen", "frozen", "supervised", "supervised"]
    for _, block in blocks:
        assert block.count('class="grid-row"') == len(CLASSES)
        assert block.count('class="tile query"') == len(CLASSES)
        # per query: its 3 photos are correct, the 6 others and the missing one (not dog) wrong
        assert block.count('class="tile correct"') == 3 * len(CLASSES) + 1
        assert block.count('class="tile wrong"') == 7 * len(CLASSES) - 1
        assert block.count("image not found") == len(CLASSES)
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', grids)
    assert len(thumbs) == 4 * len(CLASSES) * 10  # 4 grids x 3 rows x (query + 9 photos found)
    assert re.search(r"No grid \(no extras file[^<]*\): legacy<", grids)


def test_page_is_self_contained(fake):
    root, _, page = fake
    assert "<script" not in page and "<link" not in page
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}  # only the SVG namespace, never fetched
    assert not re.search(r'src="(?!data:)', page)
    assert (root / "report.html").read_text().isascii()


def test_partial_and_broken_extras_are_noted_not_fatal(tmp_path):
    root = tmp_path / "results"
    path = _write(root, "synthetic", "prsonly", 0, {"mAP@all": 0.5}, extras={"pr_curve": None})
    _write(root, "synthetic", "gridonly", 0, {"mAP@all": 0.4}, extras={"examples": []})
    broken = _write(root, "synthetic", "broken", 0, {"mAP@all": 0.3})
    extras_path(broken).write_text("{not json")
    write_json_atomic(extras_path(path), {"pr_curve": {"recall": [0, 1], "precision": [1, 0.5]}})
    page = _page(write_report(root))
    pr, grids = _section(page, "pr"), _section(page, "grids")
    assert pr.count("<polyline") == 1 and "prsonly (n=1)" in pr
    assert "No PR curve (no pr_curve in the extras file): gridonly seed 0" in pr
    assert f"No PR curve (unreadable extras file {extras_path(broken)}" in pr
    assert "broken seed 0" in pr
    assert grids.count('class="grid"') == 0
    assert "No grid (no examples in the extras file): gridonly, prsonly" in grids
    assert "unreadable extras file" in grids
    assert 'class="err"' not in page  # one seed: no error bars


def test_cir_main_metric_is_first_present(tmp_path):
    root = tmp_path / "results"
    for seed, r1 in enumerate((0.2, 0.3)):
        _write(root, "cirr", "pic2word", seed, {"R@5": 0.5, "R@1": r1}, task="cir")
    page = _page(write_report(root))
    assert "cir · cirr: R@1" in _section(page, "charts")
    assert "cir · cirr · default" in _section(page, "leaderboard")
    assert "No PR curve (no extras file" in page  # CIR results carry no extras yet


def test_empty_and_missing_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main(["--results-dir", str(empty)]) == 0
    page = (empty / "report.html").read_text()
    assert "No results in" in page and "<table" not in page
    assert report_main(["--results-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--results-dir" in err


def test_report_main_output_file_is_atomic_and_readable(tmp_path, capsys):
    root = tmp_path / "results"
    _write(root, "synthetic", "frozen", 0, {"mAP@all": 0.25})
    out = tmp_path / "site" / "index.html"
    assert report_main(["--results-dir", str(root), "--output", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert "frozen" in out.read_text() and not (root / "report.html").exists()
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others: a page to share
    assert list(tmp_path.rglob("*.tmp")) == []


@pytest.mark.slow
def test_real_tiny_bench_result(tmp_path, tiny):
    from zsbench.runner import bench

    out = bench("frozen", "synthetic", overrides=tiny, results=tmp_path, progress=False)
    page = _page(write_report(tmp_path))
    mAP = out.record["metrics"]["mAP@all"]
    variant = out.record["variant"]  # the tiny overrides make it a variant (zsbench.identity)
    assert variant != "default" and f">frozen [{variant}]</td>" in page
    assert 'title="dataset.' in page and f"{mAP:.4f}" in page
    if extras_path(out.path).exists():  # the runner writes extras: a real grid with real images
        assert 'data-method="frozen"' in page and "data:image/jpeg;base64," in page
    else:
        assert re.search(r"No grid \([^<]*\): frozen", page)


# ---------------------------------------------------------------- real browser


def _browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}"
    return done


def test_headless_chromium_renders_table_charts_and_grid(tmp_path, chromium):
    binary = chromium
    root = tmp_path / "results"
    make_results(root, datasets=("synthetic",))  # one dataset: the grids fit in 2000 px
    url = write_report(root).resolve().as_uri()
    shot = tmp_path / "out.png"
    _browser(binary, tmp_path / "p1", f"--screenshot={shot}", "--window-size=1280,2000", url)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 10  # not a blank page
    colours = {tuple(c) for c in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 50  # text anti-aliasing, bars, thumbnails
    # correct / wrong frames, query frames + a bar: each drawn many times, not one stray tile
    for hex_colour, at_least in (("#1a9e3a", 8000), ("#d62728", 16000), ("#0072b2", 3000)):
        rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(-1) <= 6).sum() > at_least, hex_colour

    dom = _browser(binary, tmp_path / "p2", "--dump-dom", url).stdout
    rendered = re.findall(r'<td class="method">(\w+)</td>', dom)
    assert sorted(rendered) == sorted(METHODS)
    assert json.dumps("zsbench report")[1:-1] in dom


def test_every_registered_method_gets_its_own_colour():
    """A report of the whole registry never draws two methods in one colour."""
    from zsbench.registry import METHODS as REGISTERED
    from zsbench.report import PALETTE

    assert len(set(PALETTE)) == len(PALETTE) >= len(REGISTERED.names())
