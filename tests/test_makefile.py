"""`make bench` needs only Python: the Debian packages come from the targets that use them.

`make -n` prints each recipe without running it (lines that call $(MAKE) do run, so the
wordnet check of `bench` runs for real, against this environment's zsbench)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(target: str, *variables: str) -> str:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", target, f"VENV={sys.prefix}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_default_bench_installs_no_system_package():
    assert "apt-get" not in dry_run("bench")
    assert "apt-get" not in dry_run("bench", "METHOD=lcale")


@pytest.mark.slow
def test_bench_of_a_wordnet_method_installs_wordnet_only():
    recipe = dry_run("bench", "METHOD=sem-pcyc")
    assert "wordnet-base" in recipe and "apt-get" in recipe
    assert "slurm-wlm" not in recipe and "chromium" not in recipe
    # the resolved config decides, not the method name
    assert "apt-get" not in dry_run("bench", "METHOD=sem-pcyc", "OVERRIDES=model.semantics=minilm")


@pytest.mark.parametrize("target", ["test", "test-full"])
def test_test_targets_install_every_system_package(target):
    recipe = dry_run(target)
    assert all(pkg in recipe for pkg in ("wordnet-base", "chromium", "slurm-wlm", "mariadb-server"))
    # the fast target leaves the slow tests out, the full one (CI's) runs them
    assert ('-m "not slow"' in recipe) == (target == "test")


def test_ci_runs_the_full_suite():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test-full" in ci and "make test " not in ci


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_grid_runs_every_package_from_a_clean_clone_of_head(tmp_path):
    """`make grid` in a checkout runs that checkout's HEAD, core, methods and datamodules alike,
    although the editable install points at this one: a commit only the second checkout has
    is what its result names, with no second tree."""
    import json

    def git(*args, cwd):
        out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                             cwd=cwd, capture_output=True, text=True)  # fmt: skip
        if out.returncode != 0:
            pytest.skip(f"git {args[0]} failed here: {out.stderr.strip()}")
        return out.stdout.strip()

    checkout, tree, results = tmp_path / "checkout", tmp_path / "tree", tmp_path / "results"
    git("clone", "--quiet", str(ROOT), str(checkout), cwd=tmp_path)
    for name in ("Makefile", "benchmarks/clean_tree/sitecustomize.py"):  # this tree's versions
        shutil.copy(ROOT / name, checkout / name)
    git("commit", "--quiet", "--allow-empty", "-am", "only in the second checkout", cwd=checkout)
    head = git("rev-parse", "HEAD", cwd=checkout)
    os.utime(checkout / "pyproject.toml", (0, 0))  # else make reinstalls the venv from it
    out = subprocess.run(
        ["make", "--no-print-directory", "grid", f"VENV={sys.prefix}", f"GRID_TREE={tree}",
         f"RESULTS={results}", "METHODS=frozen", "DATASETS=synthetic", "SEEDS=0",
         "BENCH_ARGS=--no-progress",
         "OVERRIDES=dataset.photos_per_class=6 dataset.sketches_per_class=6"],
        cwd=checkout, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(next((results / "sbir" / "synthetic").rglob("seed0.json")).read_text())
    provenance = result["provenance"]
    assert provenance["git"] == {"commit": head, "dirty": False}
    assert "plugins_git" not in provenance, provenance["plugins_git"]
