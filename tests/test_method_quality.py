"""Every registered method learns: after a short fixed budget on a small learnable synthetic
set, its unseen-class score is above chance by a margin computed from zsbench.chance, and above
the same method after a single training step.

This is the registry-driven test of every method (a new method gets it automatically, through
the CLI, as a user runs it). A method that cannot show it within the budget is marked
`xfail(strict=True)` with the measured reason: fixing it turns the test red until the mark is
removed. Margins: 3 standard deviations of a random ranking's mean score on the same queries
(SBIR: simulated by zsbench.chance.random_map_spread; CIR: binomial R@K).
"""

from __future__ import annotations

import json

import pytest
from conftest import one_result
from test_bench import needs_wordnet

from zsbench.cli import main
from zsbench.registry import METHODS
from zsbench.regress import REGRESSION_DIR, RegressConfig, chance_margins

# The regression gate's subsets and budgets (benchmarks/regression/config.yaml), so the two
# stay one setting: synthetic is 16 classes (4 unseen), 12 sketches + 12 photos each, 64 px,
# 10 epochs for the feature-space heads and 3 for the image-trained methods (chance mAP@all
# 0.305, margin 0.035); synthetic-cir is the tiny CIR set (chance R@10 0.45).
GATE = RegressConfig.load(REGRESSION_DIR / "config.yaml")
DATASET = {"sbir": "synthetic", "cir": "synthetic-cir"}
KEY = {"sbir": "mAP@all", "cir": "R@10"}
ONE_STEP = ["trainer.max_epochs=1", "trainer.limit_train_batches=1"]

# Methods that cannot show it here, with the reason (strict: a fix turns them red): the ones
# the gate declares `at_chance`.
XFAIL: dict[str, str] = GATE.at_chance


def _params():
    for name in METHODS.names():
        marks = [pytest.mark.slow]
        if name in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[name]))
        yield pytest.param(name, marks=marks)


def _bench(method: str, dataset: str, overrides: list[str], results) -> dict:
    args = ["bench", "--method", method, "--dataset", dataset, "--results-dir", str(results)]
    args += ["--no-progress", "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    return json.loads(one_result(results, method).read_text())


@pytest.mark.parametrize("method", list(_params()))
def test_method_learns_within_a_short_budget(method, tmp_path, request):
    if needs_wordnet(method):
        request.getfixturevalue("wordnet_dir")
    meta = METHODS.get(method).metadata
    dataset, key = DATASET[meta.task], KEY[meta.task]
    setup = [*GATE.datasets[dataset]["overrides"], *GATE.methods.get(method, [])]
    trained = _bench(method, dataset, setup, tmp_path / "trained")
    chance, margin = trained["chance"][key], chance_margins(trained)[key]
    score = trained["metrics"][key]
    assert score >= chance + margin, (
        f"{method}: {key} {score:.4f} < chance {chance:.4f} + margin {margin:.4f}"
    )
    if meta.trains:
        start = _bench(method, dataset, [*setup, *ONE_STEP], tmp_path / "one-step")
        before = start["metrics"][key]
        assert score >= before + margin, (
            f"{method}: {key} {score:.4f} after the budget, {before:.4f} after one step "
            f"(margin {margin:.4f}): training does not help"
        )
