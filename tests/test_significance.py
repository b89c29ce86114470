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
    # the leaderboard flags the rows from the same files (CSV, Markdown with the test named)
    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 0
    assert "paired permutation test" in capsys.readouterr().out
    import pandas as pd

    board = pd.read_csv(tmp_path / "leaderboard.csv", keep_default_na=False)
    flags = dict(zip(board["method"], board["≈ best"]))
    best = board.loc[board["mAP@all"].idxmax(), "method"]
    assert flags[best] == "best" and set(flags.values()) <= {"best", "yes", "no"}
    assert "≈ best" in (tmp_path / "leaderboard.md").read_text()
    # a method without results: named
    assert main(["compare", "cvae", f"frozen@{variant}", "--dataset", "synthetic",
                 "--results-dir", str(tmp_path)]) != 0  # fmt: skip
    assert "no cvae result on synthetic" in capsys.readouterr().err


def _board(rows):
    import pandas as pd

    base = {"task": "sbir", "dataset": "d", "split": "s", "spec": "default", "variant": "default"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_near_best_flags_rows_by_the_paired_test(monkeypatch):
    from zsbench import leaderboard as significance

    rng = np.random.default_rng(0)
    best = rng.uniform(0.2, 0.8, 300)
    values = {
        "best": best,
        "same": best.copy(),  # identical per-query values: p = 1
        "close": best + rng.normal(0, 0.05, 300) - 0.001,  # below by chance only
        "worse": best - 0.1 + rng.normal(0, 0.02, 300),  # clearly below
    }
    index = {}
    for name, v in values.items():
        key = ("sbir", "d", "s", "default", name, "default")
        index[key] = {0: ({"mAP@all": v}, "order-a"), 1: ({"mAP@all": v}, "order-a")}
    index[("sbir", "d", "s", "default", "other-queries", "default")] = {
        0: ({"mAP@all": best}, "order-b")
    }
    monkeypatch.setattr(significance, "_per_query_index", lambda results: index)
    names = [*values, "no-files", "other-queries"]
    board = _board([{"method": m, "mAP@all": float(np.mean(values.get(m, best)))} for m in names])
    board.loc[board["method"] == "best", "mAP@all"] += 1  # the best row by its mean
    flags = dict(zip(names, significance.near_best(board, "unused")))
    assert flags == {
        "best": "best", "same": "yes", "close": "yes", "worse": "no",
        "no-files": "", "other-queries": "",
    }  # fmt: skip
    # each (task, dataset, split, spec) group has its own best
    other = _board([{"method": "worse", "mAP@all": 0.1, "split": "s2"}])
    both = significance.near_best(pd_concat(board, other), "unused")
    assert both[:6] == list(flags.values()) and both[6] == ""  # a lone row is not flagged


def pd_concat(a, b):
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def test_permutation_p_and_bootstrap_match_a_small_exact_enumeration():
    import itertools

    d = np.array([0.31, -0.05, 0.12, 0.2, -0.02, 0.15, 0.07, -0.11])
    observed = abs(d.mean())
    signs = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    exact_p = float((np.abs((signs * d).mean(1)) >= observed - 1e-15).mean())
    t = paired_test(d, np.zeros_like(d), n_resamples=20_000, seed=1)
    assert t["p_value"] == pytest.approx(exact_p, abs=0.01)
    same = paired_test(d, d, n_resamples=2_000)  # identical runs: p = 1 and a zero interval
    assert same["p_value"] == 1.0 and same["ci_low"] == same["ci_high"] == 0.0
    small = d[:4]
    idx = np.array(list(itertools.product(range(4), repeat=4)))
    means = small[idx].mean(1)  # all 4^4 equally likely bootstrap resamples of 4 queries
    b = paired_test(small, np.zeros(4), n_resamples=20_000, seed=1)
    assert b["ci_low"] == pytest.approx(np.percentile(means, 2.5), abs=0.01)
    assert b["ci_high"] == pytest.approx(np.percentile(means, 97.5), abs=0.01)
