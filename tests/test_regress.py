"""`zsbench regress`: a two-sided gate that knows chance. A broken loss, an inflated score and a
broken real-data reader each fail it; the committed baseline sits above chance."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

import zsbench.methods.supervised as supervised
from zsbench import regress
from zsbench.errors import ZsbenchError
from zsbench.registry import METHODS

CONFIG = regress.RegressConfig.load(regress.REGRESSION_DIR / "config.yaml")
BASELINE = regress.REGRESSION_DIR / "baseline.csv"


def test_compare_statuses_two_sided():
    measured = {
        ("a", "d"): {"mAP@all": 0.50},
        ("b", "d"): {"mAP@all": 0.40},
        ("c", "d"): {"mAP@all": 0.60},
        ("e", "d"): {"error": "RuntimeError: boom"},
        ("f", "d"): {"mAP@all": 0.5},
        ("g", "d"): {"skipped": "no data"},
        ("h", "d"): {"mAP@all": 0.545},  # within its own (row) tolerance 0.05
    }
    rows = [(m, "d", "mAP@all", 0.5, 0.03, 0.2, 0.05) for m in "abceg"]
    rows.append(("h", "d", "mAP@all", 0.5, 0.05, 0.2, 0.05))
    base = pd.DataFrame(rows, columns=regress._BASE_COLS)
    table = regress.compare(measured, base, {"mAP@all": 0.03})
    status = dict(zip(table["method"], table["status"]))
    assert status["a"] == "ok" and status["h"] == "ok"
    assert status["b"] == "REGRESSED"
    assert status["c"].startswith("IMPROVED")  # a gain beyond tolerance must be accepted
    assert status["e"].startswith("FAILED") and "boom" in status["e"]
    assert status["f"].startswith("NO BASELINE")
    assert status["g"].startswith("skipped")
    assert sorted(regress.failures(table)["method"]) == ["b", "c", "e", "f"]


def test_baseline_rows_tolerance_from_seed_spread_and_chance_check():
    cfg = dataclasses.replace(CONFIG, tolerance={"mAP@all": 0.01}, spread_factor=3.0)
    chance = {"_chance": {"mAP@all": 0.3}, "_margin": {"mAP@all": 0.03}}
    by_seed = {
        0: {("m", "d"): {"mAP@all": 0.50, **chance}, ("low", "d"): {"mAP@all": 0.31, **chance}},
        1: {("m", "d"): {"mAP@all": 0.54, **chance}, ("low", "d"): {"mAP@all": 0.30, **chance}},
        2: {("m", "d"): {"mAP@all": 0.46, **chance}, ("low", "d"): {"mAP@all": 0.32, **chance}},
    }
    rows, problems = regress.baseline_rows(by_seed, dataclasses.replace(cfg, at_chance={}))
    row = rows.set_index("method").loc["m"]
    assert row["value"] == 0.5 and row["tolerance"] == pytest.approx(3 * 0.04)  # std = 0.04
    assert len(problems) == 1 and "low on d" in problems[0] and "at_chance" in problems[0]
    low = rows.set_index("method").loc["low"]
    assert low["tolerance"] == pytest.approx(max(0.01, 3 * 0.01))
    rows, problems = regress.baseline_rows(
        by_seed, dataclasses.replace(cfg, at_chance={"low": "x"})
    )
    assert not problems


@pytest.mark.slow
def test_regress_catches_a_broken_loss_and_an_inflated_score(tmp_path, monkeypatch):
    cfg = dataclasses.replace(CONFIG, calibration_seeds=(0,))
    good = regress.run_checks(cfg, ["supervised", "frozen"], ["synthetic"], tmp_path / "r1")
    baseline = tmp_path / "baseline.csv"
    n, problems = regress.write_baseline({0: good}, cfg, baseline)
    assert n >= 1 and not problems
    written = regress.read_baseline(baseline)  # margins computed (lazily) from each record
    assert (written["margin"] > 0).all() and (written["margin"] < 0.2).all()
    table = regress.compare(good, regress.read_baseline(baseline), cfg.tolerance)
    assert set(table["status"]) == {"ok"} and len(table) == 2

    original = supervised.Supervised._step

    def ascent(self, batch, stage):  # gradient ascent on the training loss
        loss = original(self, batch, stage)
        return -loss if stage == "train" else loss

    with monkeypatch.context() as m:
        m.setattr(supervised.Supervised, "_step", ascent)
        bad = regress.run_checks(cfg, ["supervised"], ["synthetic"], tmp_path / "r2")
    flagged = regress.failures(regress.compare(bad, regress.read_baseline(baseline), cfg.tolerance))
    assert list(flagged["status"].str[:9]) == ["REGRESSED"]

    import zsbench.runner.sbir as run_sbir

    evaluate = run_sbir.evaluate_sbir

    def inflated_eval(*args, **kwargs):  # e.g. a leak of unseen labels into the scores
        ev = evaluate(*args, **kwargs)
        ev["metrics"] = {k: min(1.0, v + 0.2) for k, v in ev["metrics"].items()}
        return ev

    with monkeypatch.context() as m:
        m.setattr(run_sbir, "evaluate_sbir", inflated_eval)
        # frozen: far from 1, so +0.2 is not clipped
        inflated = regress.run_checks(cfg, ["frozen"], ["synthetic"], tmp_path / "r3")
    table = regress.compare(inflated, regress.read_baseline(baseline), cfg.tolerance)
    assert list(regress.failures(table)["status"].str[:8]) == ["IMPROVED"]


def test_a_broken_real_data_reader_fails_and_only_a_missing_root_skips(
    tmp_path, monkeypatch, shared_data
):
    from zsbench.datamodules.sketchy import Sketchy21Mini

    monkeypatch.setenv("ZSBENCH_DATA", str(shared_data))

    def broken_setup(self, stage=None):
        raise ZsbenchError("the reader broke")

    monkeypatch.setattr(Sketchy21Mini, "setup", broken_setup)
    out = regress.run_checks(CONFIG, ["frozen"], ["sketchy21-mini"], tmp_path / "r")
    assert "the reader broke" in out[("frozen", "sketchy21-mini")]["error"]
    monkeypatch.delenv("ZSBENCH_DATA")
    out = regress.run_checks(CONFIG, ["frozen"], ["sketchy21-mini"], tmp_path / "r")
    assert "ZSBENCH_DATA is not set" in out[("frozen", "sketchy21-mini")]["skipped"]
    monkeypatch.setenv("ZSBENCH_DATA", str(tmp_path / "nowhere"))
    out = regress.run_checks(CONFIG, ["frozen"], ["sketchy21-mini"], tmp_path / "r")
    assert "does not exist" in out[("frozen", "sketchy21-mini")]["skipped"]


def test_committed_baseline_covers_every_method_and_sits_above_chance():
    base = regress.read_baseline(BASELINE)
    have = set(base[base["dataset"] == "synthetic"]["method"])
    sbir = {m for m in METHODS.names() if METHODS.info(m).task == "sbir"}
    assert sbir <= have, f"no baseline for {sorted(sbir - have)}: run `make regress-update`"
    assert all(math.isfinite(v) for v in base["value"])
    for r in base.itertuples(index=False):
        if r.method in CONFIG.at_chance or not math.isfinite(r.chance + r.margin):
            continue
        assert r.value >= r.chance + r.margin, (r.method, r.dataset, r.metric)
        assert r.tolerance < r.value - r.chance, (r.method, r.dataset, r.metric)
