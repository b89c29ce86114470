"""Paired significance between rows: per-query values beside each result, `zsbench compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_result

from zsbench.cli import main
from zsbench.errors import ZsbenchError
from zsbench.significance import paired_test, per_query_path, read_per_query


def test_paired_test_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 400)
    better = np.clip(base + 0.05 + rng.normal(0, 0.02, 400), 0, 1)
    t = paired_test(better, base, n_resamples=2000)
    assert t["ci_low"] > 0 and t["p_value"] < 0.001
    assert t["ci_low"] < t["mean_diff"] < t["ci_high"]
    noise = base + rng.normal(0, 0.05, 400)  # no shift: the difference is chance
    n = paired_test(noise, base, n_resamples=2000)
    assert n["ci_low"] < 0 < n["ci_high"] and n["p_value"] > 0.05
    # seeded: the same inputs give the same numbers
    assert paired_test(better, base, n_resamples=2000) == t
    # NaN (no relevant item) in either row: left out and counted
    a, b = better.copy(), base.copy()
    a[:3], b[5] = np.nan, np.nan
    assert paired_test(a, b, n_resamples=100)["n_queries_left_out"] == 4


def test_paired_test_bad_input():
    with pytest.raises(ZsbenchError, match="align"):
        paired_test([0.1, 0.2], [0.1])
    with pytest.raises(ZsbenchError, match="nothing to test"):
        paired_test([0.1, np.nan], [0.2, 0.3])


def test_compare_two_methods_from_their_result_files(tmp_path, tiny, capsys):
    def run(method, seed):
        args = ["bench", "--method", method, "--dataset", "synthetic", "--seed", str(seed)]
        args += ["--results-dir", str(tmp_path), "--no-progress", "--quiet"]
        for o in [*tiny, "trainer.max_epochs=1"]:
            args += ["--set", o]
        assert main(args) == 0

    for seed in (0, 1):
        run("supervised", seed)
    run("frozen", 0)
    res = one_result(tmp_path, "supervised", 1)
    values, meta = read_per_query(per_query_path(res))
    rec = json.loads(res.read_text())
    assert meta["run_id"] == rec["run_id"] and len(values["mAP@all"]) == rec["n_queries"]
    assert np.nanmean(values["mAP@all"]) == pytest.approx(rec["metrics"]["mAP@all"], abs=1e-6)
    variant = rec["variant"]  # the tiny overrides make a variant (zsbench.identity)
    capsys.readouterr()
    argv = ["compare", f"supervised@{variant}", f"frozen@{variant}", "--dataset", "synthetic"]
    argv += ["--results-dir", str(tmp_path), "--resamples", "500"]
    assert main([*argv, "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["seeds"] == [0] and c["metric"] == "mAP@all" and c["n_resamples"] == 500
    frozen = json.loads(one_result(tmp_path, "frozen").read_text())
    sup0 = json.loads(one_result(tmp_path, "supervised", 0).read_text())
    want = sup0["metrics"]["mAP@all"] - frozen["metrics"]["mAP@all"]
    assert c["mean_diff"] == pytest.approx(want, abs=1e-5)
    assert c["ci_low"] <= c["mean_diff"] <= c["ci_high"] and 0 < c["p_value"] <= 1
    # two seeds on both sides: the seed-level spread is reported too
    run("frozen", 1)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "per seed:" in out and "95 % CI" in out and "seeds 0, 1" in out
    # a method without results: named
    assert main(["compare", "cvae", f"frozen@{variant}", "--dataset", "synthetic",
                 "--results-dir", str(tmp_path)]) != 0  # fmt: skip
    assert "no cvae result on synthetic" in capsys.readouterr().err
