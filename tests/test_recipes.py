"""Paper presets as tested data: every row of configs/recipes/<method>.yaml is what
`--set preset=<preset>` resolves to (or a stated difference that holds), and the table on the
method's docs page is the one rendered from that file (tests/test_method_pages.py)."""

from __future__ import annotations

import pytest

from zsbench.config import configs_dir, load_yaml
from zsbench.errors import ZsbenchError
from zsbench.recipes import _cell, check_recipe, recipe_files

# methods with a `paper` preset whose recipe table is not written yet (issue 26 item 1);
# a new table removes its method here, a new preset without a table fails below
PENDING: set[str] = set()


@pytest.mark.parametrize("method", sorted(recipe_files()))
def test_every_recipe_row_is_what_the_preset_resolves(method):
    recipe, rows = check_recipe(recipe_files()[method])
    assert recipe["method"] == method and len(rows) >= 5
    wrong = [(r.what, r.key, r.official, r.zsbench) for r in rows if not r.ok]
    assert not wrong, f"preset {recipe['preset']} differs from the official recipe: {wrong}"


def test_every_paper_preset_has_a_recipe_or_is_listed_pending():
    with_preset = {
        p.stem for p in (configs_dir() / "methods").glob("*.yaml")
        if "paper" in (load_yaml(p).get("presets") or {})
    }  # fmt: skip
    assert set(recipe_files()) <= with_preset
    assert with_preset - set(recipe_files()) == PENDING


def test_a_changed_preset_value_fails_the_check(tmp_path, monkeypatch):
    """The check reads the preset through the same resolution a run uses: editing the
    preset (here SEARLE's GPT weight back to the 0.25 of an older commit) is caught."""
    for sub in ("methods", "datasets", "recipes"):
        (tmp_path / sub).mkdir()
    src = configs_dir()
    for name in ("methods/searle.yaml", "datasets/synthetic-cir.yaml", "recipes/searle.yaml"):
        if (src / name).exists():
            (tmp_path / name).write_text((src / name).read_text())
    monkeypatch.setenv("ZSBENCH_CONFIGS", str(tmp_path))
    (_, rows) = check_recipe(tmp_path / "recipes" / "searle.yaml")
    assert all(r.ok for r in rows)
    text = (tmp_path / "methods" / "searle.yaml").read_text()
    (tmp_path / "methods" / "searle.yaml").write_text(
        text.replace("phi_top_k: 150", "phi_top_k: 15")
    )
    (_, rows) = check_recipe(tmp_path / "recipes" / "searle.yaml")
    assert [r.key for r in rows if not r.ok] == ["model.phi_top_k"]
    # a stated difference must still hold, and a row without a key must state one
    recipe = (tmp_path / "recipes" / "searle.yaml").read_text()
    (tmp_path / "recipes" / "searle.yaml").write_text(
        recipe.replace('differs: "the files', 'key: model.lr, zsbench: 9, differs: "the files')
    )
    with pytest.raises(ZsbenchError, match="says zsbench uses 9"):
        check_recipe(tmp_path / "recipes" / "searle.yaml")


def test_a_pipe_in_a_cell_is_escaped():
    """A norm written ||x|| must not split the Markdown table row."""
    assert _cell("||x|| squared") == "\\|\\|x\\|\\| squared"
    assert _cell("a|b") == "`a\\|b`"
