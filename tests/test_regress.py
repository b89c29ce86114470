"""`zsbench regress`: statuses, a deliberately broken method caught, the baseline complete."""

from __future__ import annotations

import math

import pandas as pd

import zsbench.methods.supervised as supervised
from zsbench import regress
from zsbench.registry import METHODS

CONFIG = regress.RegressConfig.load(regress.REGRESSION_DIR / "config.yaml")


def test_compare_statuses():
    measured = {
        ("a", "d"): {"mAP@all": 0.50},
        ("b", "d"): {"mAP@all": 0.40},
        ("c", "d"): {"mAP@all": 0.60},
        ("e", "d"): {"error": "RuntimeError: boom"},
        ("f", "d"): {"mAP@all": 0.5},
        ("g", "d"): {"skipped": "no data"},
    }
    base = pd.DataFrame(
        [(m, "d", "mAP@all", 0.5) for m in "abce" + "g"], columns=regress._BASE_COLS
    )
    table = regress.compare(measured, base, {"mAP@all": 0.03})
    status = dict(zip(table["method"], table["status"]))
    assert status["a"] == "ok"
    assert status["b"] == "REGRESSED"
    assert status["c"].startswith("improved")
    assert status["e"].startswith("FAILED") and "boom" in status["e"]
    assert status["f"].startswith("NO BASELINE")
    assert status["g"].startswith("skipped")
    assert sorted(regress.failures(table)["method"]) == ["b", "e", "f"]


def test_regress_catches_a_deliberately_broken_loss(tmp_path, monkeypatch):
    baseline = tmp_path / "baseline.csv"
    good = regress.run_checks(CONFIG, ["supervised"], ["synthetic"], tmp_path / "r1")
    checked = [k for k in CONFIG.tolerance if k in good[("supervised", "synthetic")]]
    assert "mAP@all" in checked
    assert regress.write_baseline(good, CONFIG.tolerance, baseline) == len(checked)
    table = regress.compare(good, regress.read_baseline(baseline), CONFIG.tolerance)
    assert set(table["status"]) == {"ok"}

    original = supervised.Supervised._step

    def broken(self, batch, stage):  # gradient ascent on the training loss
        loss = original(self, batch, stage)
        return -loss if stage == "train" else loss

    monkeypatch.setattr(supervised.Supervised, "_step", broken)
    bad = regress.run_checks(CONFIG, ["supervised"], ["synthetic"], tmp_path / "r2")
    table = regress.compare(bad, regress.read_baseline(baseline), CONFIG.tolerance)
    flagged = regress.failures(table)
    assert len(flagged) >= 1 and set(flagged["method"]) == {"supervised"}
    assert "mAP@all" in set(flagged["metric"])


def test_committed_baseline_covers_every_method_on_synthetic():
    base = regress.read_baseline(regress.REGRESSION_DIR / "baseline.csv")
    have = set(base[base["dataset"] == "synthetic"]["method"])
    sbir = {m for m in METHODS.names() if METHODS.get(m).metadata.task == "sbir"}
    assert sbir <= have, f"no baseline for {sorted(sbir - have)}: run `make regress-update`"
    assert all(math.isfinite(v) for v in base["value"])
