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


def test_default_bench_installs_no_system_package():
    assert "apt-get" not in dry_run("bench")
    assert "apt-get" not in dry_run("bench", "METHOD=lcale")


def test_bench_of_a_wordnet_method_installs_wordnet_only():
    recipe = dry_run("bench", "METHOD=sem-pcyc")
    assert "wordnet-base" in recipe and "apt-get" in recipe
    assert "slurm-wlm" not in recipe and "chromium" not in recipe
    # the resolved config decides, not the method name
    assert "apt-get" not in dry_run("bench", "METHOD=sem-pcyc", "OVERRIDES=model.semantics=minilm")


def test_test_target_installs_every_system_package():
    recipe = dry_run("test")
    assert all(pkg in recipe for pkg in ("wordnet-base", "chromium", "slurm-wlm", "mariadb-server"))
