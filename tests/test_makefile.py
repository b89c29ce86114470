"""`make bench` needs only Python: the Debian packages come from the targets that use them.

`make -n` prints each recipe without running it (lines that call $(MAKE) do run, so the
wordnet check of `bench` runs for real, against this environment's zsbench)."""

from __future__ import annotations

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
