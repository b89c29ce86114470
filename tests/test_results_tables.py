"""The reference grid's numbers in docs/results.md and in the method pages are generated from
the result files committed in benchmarks/reference-results (docs/results_tables.py,
docs/method_pages.py), so no page can hold a number the files contradict."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from zsbench.results import record_problem, result_files

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "reference-results"


@pytest.fixture(scope="module")
def tables():
    return load_script(ROOT / "docs" / "results_tables.py", "results_tables")


@pytest.fixture(scope="module")
def pages():
    return load_script(ROOT / "docs" / "method_pages.py", "method_pages")


def test_the_results_page_is_generated_from_the_committed_results(tables):
    assert tables.main(["--check"]) == 0, "run: python docs/results_tables.py"


def test_the_committed_results_are_result_files_only():
    files = [p for p in REFERENCE.rglob("*") if p.is_file()]
    results = result_files(REFERENCE)
    assert len(results) >= 10  # the grid's cells, not an empty folder
    assert sorted(set(files) - set(results)) == [REFERENCE / "README.md"]
    for path in results:
        data = json.loads(path.read_text())
        assert record_problem(path, data) is None, path
        assert data["status"] == "ok" and data["dataset"] == "sketchy-mini", path


def test_a_hand_edit_of_a_generated_table_is_stale(tables, tmp_path, monkeypatch):
    page = tmp_path / "results.md"
    shutil.copyfile(ROOT / "docs" / "results.md", page)
    monkeypatch.setattr(tables, "RESULTS_PAGE", page)
    head, rest = page.read_text().split(tables.TABLES_BEGIN, 1)
    body, tail = rest.split(tables.TABLES_END, 1)
    edited = re.sub(r"\d\.\d{3}", "0.999", body, count=1)
    assert edited != body
    page.write_text(head + tables.TABLES_BEGIN + edited + tables.TABLES_END + tail)
    assert tables.main(["--check"]) == 1
    assert tables.main([]) == 0 and tables.main(["--check"]) == 0
    assert page.read_text().endswith(tail)  # the hand-written text after the tables is kept


def _default_means() -> dict[str, float]:
    """{method: mean mAP@all over its committed default-spec EfficientNet-Lite0 seeds}, read
    from the JSON files without the leaderboard's code."""
    values: dict[str, list[float]] = {}
    for path in result_files(REFERENCE):
        r = json.loads(path.read_text())
        diff = set(r.get("config_diff") or {}) - {"model.clip"}
        if r["spec"]["name"] == "default" and not diff:
            values.setdefault(r["method"], []).append(r["metrics"]["mAP@all"])
    return {m: float(np.mean(v)) for m, v in values.items()}


def test_each_method_page_shows_the_mean_of_its_seed_files(pages):
    where = pages.grid_pages()
    means = _default_means()
    assert {"cvae", "rpkd", "lcale"} <= set(means)
    for method, page in where.items():
        text = page.read_text()
        begin = pages.GRID_BEGIN.format(name=method)
        assert begin in text, f"{page.name} has no grid rows of {method}"
        block = text.split(begin, 1)[1].split(pages.GRID_END, 1)[0]
        if method in means:
            assert f"| {means[method]:.3f}" in block, (method, means[method])
        else:
            assert "No result of" in block


def test_collect_copies_the_result_jsons_and_nothing_else(tables, tmp_path):
    src = tmp_path / "results" / "sbir" / "sketchy-mini" / "sketchy21" / "cvae"
    (src / "3f2a9c1e").mkdir(parents=True)
    for name in ("seed0.json", "seed0.extras.json", "seed0.perquery.npz", "seed0.weights.pt"):
        (src / name).write_text("{}")
    (src / "3f2a9c1e" / "seed1.json").write_text("{}")
    other = tmp_path / "results" / "sbir" / "synthetic" / "default" / "cvae"
    other.mkdir(parents=True)
    (other / "seed0.json").write_text("{}")  # not the grid's dataset
    dest = tmp_path / "reference"
    copied = tables.collect(tmp_path / "results", dest)
    rel = sorted(str(p.relative_to(dest)) for p in copied)
    assert rel == [
        "sbir/sketchy-mini/sketchy21/cvae/3f2a9c1e/seed1.json",
        "sbir/sketchy-mini/sketchy21/cvae/seed0.json",
    ]
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["seed0.json", "seed1.json"]
