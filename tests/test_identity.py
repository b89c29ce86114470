"""Run identity: a result is the config it was run with (zsbench.identity, runner.plan_run)."""

from __future__ import annotations

import json

import pytest

from zsbench.cli import main
from zsbench.errors import ZsbenchError
from zsbench.identity import config_diff, same_config, variant_name
from zsbench.results import load_results, result_path
from zsbench.runner import bench, plan_run, resolve_identity

BASE = {"model": {"lr": 0.1, "hidden": 8}, "dataset": {"root": None}, "eval": {"spec": "default"}}


def test_config_diff_names_what_differs_and_ignores_where_it_ran():
    cfg = json.loads(json.dumps(BASE))
    assert config_diff(cfg, BASE) == {} and variant_name({}) == "default"
    cfg["model"]["lr"] = 0.01
    cfg["dataset"]["root"] = "/data"  # where the data is, not what it is
    assert config_diff(cfg, BASE) == {"model.lr": 0.01}
    cfg["eval"]["spec"] = "sake"
    diff = config_diff(cfg, BASE)
    assert diff == {"eval.spec": "sake", "model.lr": 0.01}
    name = variant_name(diff)
    assert len(name) == 8 and name != "default"
    assert variant_name(dict(reversed(list(diff.items())))) == name  # stable, order-free
    assert variant_name({"eval.spec": "voc", "model.lr": 0.01}) != name
    assert variant_name(diff, tag="my-run") == "my-run"
    assert config_diff({"model": {"new": 1}}, {"model": {}}) == {"model.new": 1}
    assert same_config(BASE, json.loads(json.dumps(BASE)))
    assert not same_config(BASE, cfg)


@pytest.mark.parametrize("tag", ["default", "a b", "../up", "", "-x"])
def test_bad_tags_are_refused(tag):
    with pytest.raises(ZsbenchError, match="tag"):
        variant_name({"model.lr": 1}, tag=tag or "/")


def test_split_choosing_keys_are_named_by_the_split_not_the_variant():
    a = resolve_identity("frozen", "sketchy21-mini", ["dataset.split_seed=1"])
    assert a.variant == "default" and a.diff == {}
    b = resolve_identity("frozen", "sketchy21-mini", ["dataset.max_per_class=5"])
    assert b.diff == {"dataset.max_per_class": 5} and b.variant != "default"
    c = resolve_identity("frozen", "sketchy", ["dataset.split=sketchy21"])
    assert c.variant == "default"


def test_two_specs_are_two_results_and_each_rerun_is_skipped(tmp_path, tiny):
    """The issue's example: a default run, then --set eval.spec=sake: two rows, both kept."""
    first = bench("frozen", "synthetic", overrides=tiny, results=tmp_path, progress=False)
    sake = bench(
        "frozen", "synthetic", overrides=[*tiny, "eval.spec=sake"], results=tmp_path, progress=False
    )
    assert not first.skipped and not sake.skipped and first.path != sake.path
    assert sake.record["config_diff"]["eval.spec"] == "sake"
    assert sake.record["variant"] == variant_name(sake.record["config_diff"])
    again = bench("frozen", "synthetic", overrides=tiny, results=tmp_path, progress=False)
    again_sake = bench(
        "frozen", "synthetic", overrides=[*tiny, "eval.spec=sake"], results=tmp_path, progress=False
    )
    assert again.skipped and again.path == first.path
    assert again_sake.skipped and again_sake.path == sake.path
    records = load_results(tmp_path)
    assert sorted(r["spec"]["name"] for r in records) == ["default", "sake"]
    # --overwrite replaces only its own variant
    before = json.loads(first.path.read_text())
    bench(
        "frozen",
        "synthetic",
        overrides=[*tiny, "eval.spec=sake"],
        results=tmp_path,
        progress=False,
        overwrite=True,
    )
    assert json.loads(first.path.read_text()) == before


def test_a_result_of_another_config_at_the_default_path_is_moved_not_reused(tmp_path):
    """A file written before variants existed (or under older defaults) holds another config:
    planning the default run moves it to its own variant's path instead of skipping."""
    plan = plan_run("frozen", "synthetic", 0, (), tmp_path)
    assert plan.variant == "default"
    old_cfg = json.loads(json.dumps(plan.cfg, default=str))
    old_cfg["eval"]["spec"] = "sake"
    record = {"method": "frozen", "config": old_cfg, "metrics": {"mAP@all": 0.5}}
    plan.path.write_text(json.dumps(record))
    plan.path.with_name("seed0.extras.json").write_text("{}")
    again = plan_run("frozen", "synthetic", 0, (), tmp_path)
    assert not again.path.exists()  # nothing there now: the default run will run
    moved = result_path(
        tmp_path, "sbir", "synthetic", "default", "frozen", 0, variant_name({"eval.spec": "sake"})
    )
    # the same record, now saying which variant it is (the leaderboard groups by it)
    diff = {"eval.spec": "sake"}
    assert json.loads(moved.read_text()) == {
        **record,
        "variant": variant_name(diff),
        "config_diff": diff,
    }
    assert moved.with_name("seed0.extras.json").exists()
    # a file whose config is the defaults (missing keys read as defaults) stays where it is
    same = json.loads(json.dumps(plan.cfg, default=str))
    same["model"].pop(next(iter(same["model"])))
    plan.path.write_text(json.dumps({"config": same}))
    plan_run("frozen", "synthetic", 0, (), tmp_path)
    assert plan.path.exists()


def test_a_tag_reused_for_another_config_is_an_error(tmp_path):
    plan = plan_run("frozen", "synthetic", 0, ["eval.spec=sake"], tmp_path, tag="mine")
    assert plan.path.parent.name == "mine"
    plan.path.write_text(json.dumps({"config": plan.cfg}))
    plan_run("frozen", "synthetic", 0, ["eval.spec=sake"], tmp_path, tag="mine")  # same: fine
    with pytest.raises(ZsbenchError, match="another config"):
        plan_run("frozen", "synthetic", 0, ["eval.spec=voc"], tmp_path, tag="mine")


def test_print_config_shows_the_variant_without_running(tmp_path, capsys):
    code = main(
        [
            "bench",
            "--method",
            "frozen",
            "--dataset",
            "synthetic",
            "--set",
            "eval.spec=sake",
            "--print-config",
            "--results-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "spec: sake" in out
    assert f"# variant: {variant_name({'eval.spec': 'sake'})}" in out
    assert '#   eval.spec: "sake"' in out
    assert not any(tmp_path.iterdir())


def _record(method, variant, backbone, value, diff=None, seed=0):
    return {
        "task": "sbir",
        "dataset": "d",
        "split": "s",
        "method": method,
        "seed": seed,
        "status": "ok",
        "variant": variant,
        "config_diff": diff or {},
        "spec": {"name": "default"},
        "metrics": {"mAP@all": value},
        "backbone": {"name": backbone},
    }


def test_leaderboard_keeps_variants_apart_and_compares_each_with_its_own_frozen():
    from zsbench.leaderboard import build_leaderboard, format_table

    r50 = {"model.backbone": "resnet50"}
    records = [
        _record("frozen", "default", "effnet", 0.10),
        _record("frozen", "r50", "resnet50", 0.20, r50),
        _record("cvae", "default", "effnet", 0.15),
        _record("cvae", "default", "effnet", 0.17, seed=1),
        _record("cvae", "r50", "resnet50", 0.18, r50),
        _record("clip", "default", "clip", 0.30),  # no frozen on its backbone: the default's
        {**_record("old", "default", "effnet", 0.40), "variant": None},  # written before variants
    ]
    board = build_leaderboard(records).set_index(["method", "variant"])
    assert board.loc[("cvae", "default"), "n_seeds"] == 2
    assert board.loc[("cvae", "default"), "vs frozen"] == pytest.approx(0.06)
    assert board.loc[("cvae", "r50"), "vs frozen"] == pytest.approx(-0.02)
    assert board.loc[("clip", "default"), "vs frozen"] == pytest.approx(0.20)
    assert board.loc[("old", "default"), "mAP@all"] == pytest.approx(0.40)
    assert board.loc[("cvae", "r50"), "config"] == 'model.backbone="resnet50"'
    table = format_table(build_leaderboard(records))
    assert "| config" in table and 'model.backbone="resnet50"' in table


def test_vs_frozen_under_another_spec_falls_back_to_the_default_config_frozen():
    """`eval.also_specs` re-scores a run under the papers' specs: each such result has a
    variant of its own, but its config is the default one, so a method on a backbone without
    a frozen row (CLIP) is still compared with the default frozen row under that spec."""
    from zsbench.leaderboard import build_leaderboard

    sake = {"eval.spec": "sake"}
    records = [
        _record("frozen", "f-sake", "effnet", 0.10, sake),
        _record("frozen", "r50-sake", "resnet50", 0.20, {**sake, "model.backbone": "resnet50"}),
        _record("clip", "c-sake", "clip", 0.30, {**sake, "model.clip": "tiny"}),
    ]
    board = build_leaderboard(records).set_index(["method", "variant"])
    assert board.loc[("clip", "c-sake"), "vs frozen"] == pytest.approx(0.20)


def test_also_specs_write_each_spec_as_its_own_variant_from_one_run(tmp_path, tiny):
    """eval.also_specs scores one run's embeddings under more specs; each lands where a run
    with eval.spec=<spec> would, so that run is then skipped and the numbers agree."""
    out = bench(
        "frozen",
        "synthetic",
        overrides=[*tiny, "eval.also_specs=[sake,yelamarthi]"],
        results=tmp_path,
        progress=False,
    )
    assert (
        out.record["variant"]
        == bench(
            "frozen", "synthetic", overrides=tiny, results=tmp_path / "x", progress=False
        ).record["variant"]
    )  # also_specs is not part of the main run's identity
    records = {r["spec"]["name"]: r for r in load_results(tmp_path)}
    assert set(records) == {"default", "sake", "yelamarthi"}
    assert records["sake"]["scored_with"] == str(out.path)
    direct = bench(
        "frozen", "synthetic", overrides=[*tiny, "eval.spec=sake"], results=tmp_path, progress=False
    )
    assert direct.skipped  # the also_specs result is that cell's result
    fresh = bench(
        "frozen",
        "synthetic",
        overrides=[*tiny, "eval.spec=sake"],
        results=tmp_path / "fresh",
        progress=False,
    )
    assert fresh.record["metrics"] == pytest.approx(records["sake"]["metrics"])
    assert fresh.record["variant"] == records["sake"]["variant"]
    with pytest.raises(ZsbenchError, match="metric spec"):
        plan_run("frozen", "synthetic", 0, ["eval.also_specs=[nosuch]"], tmp_path)


def test_an_also_specs_result_of_older_defaults_is_moved_not_kept(tmp_path, tiny):
    """A spec result already at the sibling's path that was run with another config (here:
    a stored model default that has changed since) is another experiment: eval.also_specs
    moves it to its own variant and writes this run's, instead of keeping the old number."""
    import json

    overrides = [*tiny, "eval.also_specs=[sake]"]
    bench("frozen", "synthetic", overrides=overrides, results=tmp_path, progress=False)
    sake = next(r for r in load_results(tmp_path) if r["spec"]["name"] == "sake")
    path = next(p for p in tmp_path.rglob("seed0.json") if json.loads(p.read_text()) == sake)
    main = next(p for p in tmp_path.rglob("seed0.json") if p != path)
    stale = json.loads(path.read_text())
    stale["config"]["dataset"]["val_fraction"] = 0.25  # as if run under older defaults
    stale["metrics"] = {k: -1.0 for k in stale["metrics"]}
    path.write_text(json.dumps(stale))
    main.unlink()  # so the main run is planned again
    bench("frozen", "synthetic", overrides=overrides, results=tmp_path, progress=False)
    assert json.loads(path.read_text())["metrics"] == sake["metrics"]  # this run's, fresh
    moved = [r for r in load_results(tmp_path) if r["metrics"].get("mAP@all") == -1.0]
    assert len(moved) == 1 and moved[0]["variant"] not in (sake["variant"], "default")
