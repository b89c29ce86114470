"""Result files and the leaderboard built from them."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from zsbench.chance import chance_metrics, expected_random_ap
from zsbench.errors import ZsbenchError
from zsbench.leaderboard import (
    build_leaderboard,
    format_table,
    headline_metric,
    update_leaderboard,
)
from zsbench.results import SCHEMA_VERSION, load_results, result_path, write_json_atomic


def record(method, seed, metrics, dataset="synthetic", status="ok"):
    return {
        "schema_version": SCHEMA_VERSION,
        "task": "sbir",
        "dataset": dataset,
        "split": "default",
        "method": method,
        "seed": seed,
        "status": status,
        "metrics": metrics,
        "spec": {"name": "default"},
    }


def test_leaderboard_mean_std_and_missing_cells():
    recs = [
        record("a", 0, {"mAP@all": 0.5, "P@100": 0.6}),
        record("a", 1, {"mAP@all": 0.7, "P@100": 0.8}),
        record("b", 0, {"mAP@all": 0.4}),  # b has no P@100: its cell stays empty
        record("c", 0, {"mAP@all": 0.9, "P@100": 0.9}),
        record("c", 1, {"mAP@all": 0.9}),  # one seed lacks P@100: not averaged away
        record("d", 0, {"mAP@all": 0.99}, status="fast_dev_run"),  # not a real result
    ]
    df = build_leaderboard(recs).set_index("method")
    assert list(df.index) == ["c", "a", "b"]  # sorted by mAP@all, best first
    assert df.loc["a", "mAP@all"] == pytest.approx(0.6)
    assert df.loc["a", "mAP@all std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert df.loc["a", "n_seeds"] == 2
    assert math.isnan(df.loc["b", "P@100"])
    assert math.isnan(df.loc["c", "P@100"])
    assert math.isnan(df.loc["b", "mAP@all std"])  # one seed: no std
    table = format_table(df.reset_index())
    assert "0.6000 ± 0.1414" in table


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"ok": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"ok": Boom()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_update_leaderboard_writes_csv_and_md(tmp_path):
    write_json_atomic(
        result_path(tmp_path, "sbir", "synthetic", "default", "a", 0),
        record("a", 0, {"mAP@all": 0.5}),
    )
    df = update_leaderboard(tmp_path)
    assert len(df) == 1
    assert (tmp_path / "leaderboard.csv").read_text().startswith("task,dataset,split")
    assert "| a " in (tmp_path / "leaderboard.md").read_text()


def test_unreadable_or_foreign_result_is_named(tmp_path):
    bad = result_path(tmp_path, "sbir", "x", "y", "m", 0)
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ZsbenchError, match=str(bad)):
        load_results(tmp_path)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ZsbenchError, match="lacks fields"):
        load_results(tmp_path)


def test_expected_random_ap_matches_simulation():
    rng = np.random.default_rng(0)
    r, n = 5, 40
    sims = []
    for _ in range(20000):
        rel = rng.permutation(np.r_[np.ones(r), np.zeros(n - r)])
        hits = np.cumsum(rel)
        sims.append(np.sum(hits[rel == 1] / (np.flatnonzero(rel) + 1)) / r)
    assert expected_random_ap(r, n) == pytest.approx(np.mean(sims), abs=3e-3)
    assert expected_random_ap(n, n) == pytest.approx(1.0)
    assert expected_random_ap(1, 1) == 1.0
    c = chance_metrics(np.array([0, 1]), np.array([0, 0, 1, 1, 1, 2]))
    # a 6-item gallery: the top 100 holds all 6, so P@100 = R / 100
    assert c["P@100"] == pytest.approx((2 / 100 + 3 / 100) / 2)
    big = chance_metrics(np.array([0]), np.r_[np.zeros(50), np.ones(950)])
    assert big["P@100"] == pytest.approx(50 / 1000)


def test_chance_and_gap_to_frozen_per_group():
    """`chance` is the group's headline chance, `vs frozen` the headline minus frozen's, both
    per (dataset, split, spec): a method is never compared with another dataset's baseline."""
    recs = []
    for ds, frozen, chance in [("synthetic", 0.3, 0.116), ("sketchy21-mini", 0.25, 0.175)]:
        for seed, delta in [(0, 0.1), (1, 0.2)]:
            r = record("trained", seed, {"mAP@all": frozen + delta, "P@100": 0.5}, dataset=ds)
            r["chance"] = {"mAP@all": chance, "P@100": 0.1}
            recs.append(r)
        r = record("frozen", 0, {"mAP@all": frozen, "P@100": 0.4}, dataset=ds)
        r["chance"] = {"mAP@all": chance, "P@100": 0.1}
        recs.append(r)
    recs.append(record("alone", 0, {"mAP@all": 0.5}, dataset="no-baseline"))
    # the centred baseline on synthetic only: `vs centred` there, empty on the other dataset
    recs.append(record("frozen-centred", 0, {"mAP@all": 0.35, "P@100": 0.4}, dataset="synthetic"))
    df = build_leaderboard(recs).set_index(["dataset", "method"])
    assert df.loc[("synthetic", "trained"), "vs centred"] == pytest.approx(0.1)
    assert df.loc[("synthetic", "frozen"), "vs centred"] == pytest.approx(-0.05)
    assert math.isnan(df.loc[("synthetic", "frozen-centred"), "vs centred"])
    assert math.isnan(df.loc[("sketchy21-mini", "trained"), "vs centred"])
    assert df.loc[("synthetic", "trained"), "vs frozen"] == pytest.approx(0.15)
    assert df.loc[("sketchy21-mini", "trained"), "vs frozen"] == pytest.approx(0.15)
    assert df.loc[("synthetic", "trained"), "chance"] == pytest.approx(0.116)
    assert df.loc[("sketchy21-mini", "frozen"), "chance"] == pytest.approx(0.175)
    assert math.isnan(df.loc[("synthetic", "frozen"), "vs frozen"])  # not against itself
    assert math.isnan(df.loc[("no-baseline", "alone"), "vs frozen"])  # no frozen row
    assert math.isnan(df.loc[("no-baseline", "alone"), "chance"])  # not recorded
    assert list(df.columns[-3:]) == ["chance", "vs frozen", "vs centred"]
    table = format_table(df.reset_index())
    assert "vs frozen" in table.splitlines()[0] and "+0.1500" in table
    assert "vs centred" in table.splitlines()[0] and "-0.05000" in table
    # one seed everywhere: the cell is text "0.5000", not a number tabulate shortens to 0.5
    assert "| 0.5000 " in format_table(build_leaderboard([record("x", 0, {"mAP@all": 0.5})]))


def test_headline_metric_is_the_first_present_mean():
    """One rule ranks the rows, picks `chance` / `vs frozen` and names the report's chart: the
    first metric in leaderboard order with a value, never a per-class mean or a std."""
    recs = [
        record("frozen", 0, {"P@100": 0.2, "mAP@all.class_mean": 0.9, "R@1": 0.1}),
        record("trained", 0, {"P@100": 0.5, "mAP@all.class_mean": 0.1, "R@1": 0.9}),
    ]
    df = build_leaderboard(recs)
    assert headline_metric(df) == "P@100"
    assert list(df["method"]) == ["trained", "frozen"]  # ranked by P@100, not the class mean
    assert df.set_index("method").loc["trained", "vs frozen"] == pytest.approx(0.3)
    assert headline_metric(build_leaderboard([record("a", 0, {"mAP@all": 0.5, "P@100": 1})])) == (
        "mAP@all"
    )
    assert headline_metric(build_leaderboard([])) is None


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda r: r, "seed is 0 but the file is seed1.json"),  # cp seed0.json seed1.json
        (lambda r: {**r, "seed": 1, "metrics": {"mAP@all": 29.3}}, "outside \\[0, 1\\]"),
        (lambda r: {**r, "seed": 1, "metrics": {"mAP@all": "0.5"}}, "not a number"),
        (lambda r: {**r, "seed": 1, "metrics": {"mAP@all": float("nan")}}, "outside"),
        (lambda r: {**r, "seed": 1, "method": "b"}, "names sbir/synthetic/default/b/seed1"),
        (lambda r: {**r, "seed": 1, "schema_version": "1"}, "not an integer"),
        (lambda r: {**r, "seed": 1, "variant": "3f2a9c1e"}, "names .*/a/3f2a9c1e/seed1.json"),
    ],
    ids=["copied-seed", "x100", "string", "nan", "moved", "schema-string", "variant"],
)
def test_a_bad_result_file_is_named_and_left_out_never_averaged(tmp_path, capsys, tamper, why):
    good = record("a", 0, {"mAP@all": 0.5})
    write_json_atomic(result_path(tmp_path, "sbir", "synthetic", "default", "a", 0), good)
    bad = result_path(tmp_path, "sbir", "synthetic", "default", "a", 1)
    bad.write_text(json.dumps(tamper(dict(good))))
    df = update_leaderboard(tmp_path).set_index("method")
    assert df.loc["a", "n_seeds"] == 1 and df.loc["a", "mAP@all"] == pytest.approx(0.5)
    err = capsys.readouterr().err
    assert str(bad) in err
    assert re.search(why, err), err


def test_a_read_only_results_folder_still_shows_its_leaderboard(tmp_path, monkeypatch):
    """Someone else's results folder: the table is built, nothing written, no lock taken."""
    import zsbench.leaderboard as lb

    write_json_atomic(
        result_path(tmp_path, "sbir", "synthetic", "default", "a", 0),
        record("a", 0, {"mAP@all": 0.5}),
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(lb.os, "access", lambda path, mode: False)  # as for a non-owner
    df = update_leaderboard(tmp_path)
    assert list(df["method"]) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no csv, md or lock file


def test_leaderboard_into_a_closed_pipe_ends_quietly(tmp_path, monkeypatch, capsys):
    """`zsbench leaderboard | head`: the reader left; exit 0 without a BrokenPipeError."""
    write_json_atomic(
        result_path(tmp_path, "sbir", "synthetic", "default", "a", 0),
        record("a", 0, {"mAP@all": 0.5}),
    )
    sink = open(tmp_path / "stdout", "w")  # noqa: SIM115  (its descriptor is redirected)

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    from zsbench.cli import main

    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 0
    sink.close()


def test_a_results_folder_inside_another_is_read_as_it_is(tmp_path, capsys):
    """Paths are checked from the end: results/<sub>/sbir/... is as good as results/sbir/..."""
    write_json_atomic(
        result_path(tmp_path / "sub", "sbir", "synthetic", "default", "a", 0),
        record("a", 0, {"mAP@all": 0.5}),
    )
    assert list(update_leaderboard(tmp_path)["method"]) == ["a"]
    assert "left out" not in capsys.readouterr().err
