"""Scoped overrides, dataset variants, sweep files and the Slurm options (no Slurm needed)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from zsbench import sweep
from zsbench.cli import build_parser, main
from zsbench.errors import ZsbenchError
from zsbench.registry import METHODS
from zsbench.sweepfile import load_sweep_file, spec_from_args

REPO = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["sweep", *argv])


def test_scoped_overrides_reach_their_cells_only():
    overrides = [
        "trainer.max_epochs=1",
        "supervised:trainer.max_epochs=3",
        "synthetic:dataset.n_shapes=3",
        "model.weights=/a:b=c",  # a colon in the value is not a scope
    ]
    cells, _ = sweep.expand_grid(["frozen", "supervised"], ["synthetic"], [0], overrides)
    by_method = {c.method: c.overrides for c in cells}
    assert by_method["frozen"] == (
        "trainer.max_epochs=1",
        "dataset.n_shapes=3",
        "model.weights=/a:b=c",
    )
    assert by_method["supervised"] == (
        "trainer.max_epochs=1",
        "trainer.max_epochs=3",  # later wins, as in `zsbench bench`
        "dataset.n_shapes=3",
        "model.weights=/a:b=c",
    )
    assert sweep.worker_command(cells[1], ["eval.spec=default"], None, False)[-2:] == [
        "--set",
        "model.weights=/a:b=c",
    ]


def test_unknown_scope_fails_with_did_you_mean():
    with pytest.raises(ZsbenchError, match="Did you mean: drcpl"):
        sweep.expand_grid(["frozen"], ["synthetic"], [0], ["drpcl:model.clip=tiny"])
    with pytest.raises(ZsbenchError, match="Did you mean: sketchy21-mini@s1"):
        sweep.expand_grid(
            ["frozen"], ["sketchy21-mini@s1"], [0], ["sketchy21-mini@s2:dataset.split_seed=1"]
        )
    # a registered method outside the grid is a valid scope (a file run with --methods subset)
    sweep.expand_grid(["frozen"], ["synthetic"], [0], ["drcpl:model.clip=tiny"])


def test_dataset_variants_are_labelled_cells_of_one_dataset():
    overrides = ["sketchy21-mini@s1:dataset.split_seed=1", "sketchy21-mini:dataset.n_unseen=6"]
    cells, _ = sweep.expand_grid(
        ["frozen"], ["sketchy21-mini@s0", "sketchy21-mini@s1"], [0], overrides
    )
    assert [c.name for c in cells] == [
        "frozen/sketchy21-mini@s0/seed0",
        "frozen/sketchy21-mini@s1/seed0",
    ]
    assert {c.dataset for c in cells} == {"sketchy21-mini"}
    assert cells[0].overrides == ("dataset.n_unseen=6",)
    assert cells[1].overrides == ("dataset.split_seed=1", "dataset.n_unseen=6")
    cmd = sweep.worker_command(cells[1], [], None, False)
    assert cmd[cmd.index("--dataset") + 1] == "sketchy21-mini"
    with pytest.raises(ZsbenchError, match="sketchy21-mini"):
        sweep.expand_grid(["frozen"], ["sketchy21-mni@s0"], [0])


def test_sweep_file_mapping_forms_order_and_hash(tmp_path):
    text = """
description: a test
methods:
  frozen:
  supervised: {set: [trainer.max_epochs=3]}
datasets:
  synthetic: {set: [dataset.n_shapes=3]}
seeds: [0, 1]
set: [trainer.max_epochs=1]
launcher: {name: slurm, jobs: 2, slurm: {timeout_min: 60, partition: debug}}
"""
    path = tmp_path / "s.yaml"
    path.write_text(text)
    spec = load_sweep_file(path)
    assert spec.methods == ["frozen", "supervised"] and spec.seeds == [0, 1]
    assert spec.overrides == [
        "trainer.max_epochs=1",
        "synthetic:dataset.n_shapes=3",
        "supervised:trainer.max_epochs=3",
    ]
    assert (spec.launcher, spec.jobs, spec.slurm) == (
        "slurm",
        2,
        {"timeout_min": 60, "partition": "debug"},
    )
    assert spec.sha256 == hashlib.sha256(text.encode()).hexdigest()
    # the command line wins: lists replaced, --set appended, --slurm merged
    argv = ["--config", str(path), "--methods", "frozen", "--launcher", "local", "--seeds", "2"]
    argv += ["--set", "trainer.max_epochs=5", "--slurm", "timeout_min=30"]
    spec = spec_from_args(_args(*argv))
    assert spec.methods == ["frozen"] and spec.seeds == [2] and spec.launcher == "local"
    assert spec.overrides[-1] == "trainer.max_epochs=5"
    assert spec.slurm == {"timeout_min": 30, "partition": "debug"}
    assert spec.record()["sha256"] == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "text, message",
    [
        ("method: [frozen]\ndatasets: [synthetic]", "Did you mean: methods"),
        ("methods: [frozen]\nlauncher: {name: slurn}", "Did you mean: slurm"),
        ("methods: [frozen]\nlauncher: {job: 2}", "Did you mean: jobs"),
        ("methods: [frozen]\nset:\n  - trainer.max_epochs: 1", "write `- trainer.max_epochs=1`"),
        ("methods: {frozen: {sets: []}}", "Did you mean: set"),
        ("methods: [frozen]\nseeds: [a]", "seeds must be a list of integers"),
    ],
)
def test_sweep_file_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ZsbenchError, match=message.replace("[", r"\[")):
        load_sweep_file(path)


def test_reference_sweep_file_expands():
    spec = spec_from_args(_args("--config", str(REPO / "sweeps" / "reference.yaml")))
    cells, notes = sweep.expand_grid(
        spec.methods, spec.datasets, spec.seeds, spec.overrides, spec.labels
    )
    sbir = [n for n in METHODS.names() if METHODS.get(n).metadata.task == "sbir"]
    missing = sorted(set(sbir) - set(spec.methods))
    assert not missing, f"add {missing} to sweeps/reference.yaml: it lists every SBIR method"
    assert sorted(spec.methods) == sorted(sbir) and not notes
    assert spec.seeds == [0, 1, 2]
    labels = {c.label or c.dataset for c in cells}
    assert labels == {
        "synthetic",
        "sketchy21-mini@split0",
        "sketchy21-mini@split1",
        "sketchy-mini",
    }
    assert len(cells) == len(sbir) * 4 * 3
    split1 = [c for c in cells if c.label == "sketchy21-mini@split1"]
    assert all("dataset.split_seed=1" in c.overrides for c in split1)


def test_slurm_parameters_map_to_submitit():
    pytest.importorskip("submitit")
    from zsbench.launchers import slurm_parameters

    params = slurm_parameters({"partition": "gpu", "gpus_per_node": 1, "slurm_qos": "high"})
    assert params["slurm_partition"] == "gpu" and params["slurm_qos"] == "high"
    assert params["gpus_per_node"] == 1 and params["timeout_min"] == 24 * 60
    with pytest.raises(ZsbenchError, match="Did you mean: partition"):
        slurm_parameters({"partiton": "gpu"})


def test_emit_wandb_refuses_scoped_overrides(tmp_path):
    out = tmp_path / "w.yaml"
    args = ["sweep", "--methods", "frozen", "--emit-wandb", str(out)]
    assert main([*args, "--set", "frozen:trainer.max_epochs=1"]) == 2
    assert main(args) == 0 and yaml.safe_load(out.read_text())["method"] == "grid"


@pytest.mark.slow
def test_sweep_file_hash_recorded_in_results(tmp_path, tiny):
    """A local sweep from a file: its sha256 and the cell land in the result's provenance."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"methods": ["frozen"], "seeds": [0], "set": tiny}))
    results = tmp_path / "results"
    argv = ["sweep", "--config", str(path), "--results-dir", str(results), "--no-progress"]
    assert main(argv) == 0
    (result,) = [p for p in results.rglob("seed0.json")]
    record = json.loads(result.read_text())
    assert record["provenance"]["sweep"] == {
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "launcher": "local",
        "cell": "frozen/synthetic/seed0",
    }
