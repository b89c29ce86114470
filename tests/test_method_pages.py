"""The generated parts of the method pages are what the code holds: each recipe table is the
one rendered from configs/recipes/<method>.yaml, each deviation list is the method's
`metadata.deviations` (docs/method_pages.py writes both)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import load_script

from zsbench.recipes import docs_page, recipe_files, render_table
from zsbench.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pages():
    return load_script(ROOT / "docs" / "method_pages.py", "method_pages")


def test_the_pages_are_up_to_date(pages):
    assert pages.main(["--check"]) == 0, "run: python docs/method_pages.py"


def test_every_recipe_table_is_on_its_page():
    for path in recipe_files().values():
        assert render_table(path) in (ROOT / "docs" / "methods" / docs_page(path)).read_text()


def test_every_method_with_deviations_lists_them_on_one_page(pages):
    where = pages.deviation_pages()
    for name in METHODS.names():
        deviations = METHODS.get(name).metadata.deviations
        if not deviations:
            continue
        text = where[name].read_text()
        assert pages.render_deviations(name) in text
        # every deviation is in the page, word for word (modulo line breaks)
        flat = " ".join(text.split())
        for d in deviations:
            assert " ".join(d.split()) in flat, (name, d[:60])


def test_a_page_that_restates_a_deviation_by_hand_is_stale(pages, tmp_path, monkeypatch):
    """Editing the generated list, or changing the metadata, makes --check fail."""
    docs = tmp_path / "methods"
    shutil.copytree(ROOT / "docs" / "methods", docs)
    monkeypatch.setattr(pages, "DOCS", docs)
    assert pages.main(["--check"]) == 0
    page = docs / "cvae.md"
    first = METHODS.get("cvae").metadata.deviations[0].split()[0]
    text = page.read_text()
    marker = pages.DEVIATIONS_BEGIN.format(name="cvae")
    head, rest = text.split(marker, 1)
    page.write_text(head + marker + rest.replace(first, "EDITED", 1))
    assert pages.main(["--check"]) == 1
    assert pages.main([]) == 0 and pages.main(["--check"]) == 0
    assert "EDITED" not in page.read_text().split(marker, 1)[1].split(pages.DEVIATIONS_END)[0]


def test_a_method_without_a_page_is_named(pages, tmp_path, monkeypatch):
    docs = tmp_path / "methods"
    shutil.copytree(ROOT / "docs" / "methods", docs)
    (docs / "rtd.md").write_text("# RTD\n")  # the page listing the RTD variants loses them
    monkeypatch.setattr(pages, "DOCS", docs)
    with pytest.raises(SystemExit, match=r"lincir\+rtd.*add docs/methods/<name>.md"):
        pages.deviation_pages()
