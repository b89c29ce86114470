"""The evaluator benchmark runs and meets its size-independent targets (benchmarks/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_evaluator_benchmark_quick(tmp_path):
    """`benchmarks/evaluator.py --quick` (300 x 3,000): warm imports, best of 2 for every
    contender, exit status 0 only when zsbench's mAP@all equals sklearn's and torchmetrics'
    (the speed targets are checked at full size only)."""
    out = tmp_path / "quick.json"
    cmd = [
        sys.executable,
        "benchmarks/evaluator.py",
        "--quick",
        "--repeats",
        "2",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["missed"] == [] and res["repeats"] == 2
    assert res["sklearn_loop"]["abs_diff_map"] < 1e-5
    assert res["torchmetrics"]["abs_diff_map"] < 1e-5
    assert set(res["zsbench_specs"]) == {
        "sake",
        "voc",
        "drcpl",
        "zse-sbir",
        "sem-pcyc",
        "yelamarthi",
        "precision-min-k-r",
    }


@pytest.mark.slow
def test_generator_regression_scores_like_the_run(tmp_path):
    """benchmarks/generator_regression.py finds a bench run's weights from the same options and
    embeds the unseen queries as the method retrieves: its unseen-test mAP@all is the result's."""
    env = {**os.environ, "ZSBENCH_RESULTS": str(tmp_path / "results")}
    sets = ["--dataset", "synthetic", "--set", "trainer.max_epochs=1"]
    sets += ["--set", "trainer.limit_train_batches=2"]
    bench = [sys.executable, "-m", "zsbench", "bench", "--method", "cvae", "--save-weights"]
    proc = subprocess.run(bench + sets + ["--quiet", "--no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "rows.json"
    script = [sys.executable, "benchmarks/generator_regression.py", "--method", "cvae"]
    proc = subprocess.run(script + sets + ["--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    result = json.loads(Path(rows["result"]).read_text())
    unseen = {r["set"]: r for r in rows["rows"]}["unseen test"]
    assert unseen["mAP@all"] == pytest.approx(result["metrics"]["mAP@all"], abs=1e-6)
    assert -1 <= unseen["cos(mean generated, mean train photo)"] <= 1
