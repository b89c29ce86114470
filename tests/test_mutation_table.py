"""tests/mutation_equivalent.toml is read the way its header says, and every entry still points
at code that exists: a function renamed or removed leaves entries that can only hide a future
survivor of the same name, so they must go with the code."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutate():
    return load_script(ROOT / "tests" / "mutate.py", "mutate_tool")


def _resolve(function: str):
    """The object behind a mutmut function name: `pkg.mod.x_f`, `pkg.mod.xǁClassǁmethod`."""
    module_name, _, leaf = function.rpartition(".")
    obj = importlib.import_module(module_name)
    if leaf.startswith("xǁ"):
        for part in leaf[2:].split("ǁ"):
            obj = getattr(obj, part)
        return obj
    assert leaf.startswith("x_"), function
    return getattr(obj, leaf[2:])


def test_every_equivalent_entry_names_an_existing_function_and_gives_a_reason(mutate):
    table = mutate._equivalents()
    assert len(table) > 50  # the file was read (not an empty table from a wrong path)
    for function, line, reason in table:
        assert callable(_resolve(function)), function
        assert line and len(reason) > 40, (function, line)


def test_equivalence_matches_added_lines_and_pure_deletions(mutate):
    fn = "zsbench.metrics.tie_sampling.xǁTieOrderSamplerǁsample"
    table = [(fn, "1,", "low 1"), (fn, "-0,", "low deleted")]
    name = fn + "__mutmut_7"
    assert mutate._equivalent_reason(name, "-        0,\n+        1,", table) == "low 1"
    assert mutate._equivalent_reason(name, "-        0,", table) == "low deleted"
    # a '-' entry never matches a mutant that also adds a line, nor another function
    assert mutate._equivalent_reason(name, "-        0,\n+        2,", table) is None
    other = "zsbench.metrics.tie_sampling.x_expected_voc_ap__mutmut_1"
    assert mutate._equivalent_reason(other, "-        0,", table) is None
