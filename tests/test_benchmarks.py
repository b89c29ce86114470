"""The evaluator benchmark runs and meets its size-independent targets (benchmarks/README.md)."""

from __future__ import annotations

import json
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
