"""`zsbench sweep --launcher slurm` against a real Slurm: a one-node cluster on this machine
(tests/slurm/start.sh: Debian's slurm-wlm, slurmdbd, munge and MariaDB), started for the test
and stopped after it. Skips with the reason when Slurm cannot be started; fails instead under
CI=true (CI runs as root on a machine with apt)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from zsbench.results import load_results

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(os.environ.get("ZSBENCH_SLURM_DIR", "/var/spool/zsbench-slurm"))
CONF = SLURM_DIR / "slurm.conf"

pytestmark = pytest.mark.slow


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    """Skip with the reason; under CI (which sets Slurm up as root) fail instead."""
    if _in_ci():
        pytest.fail(f"CI is set but {message}")
    pytest.skip(message)


def _controller_up() -> bool:
    try:  # the pid must still be slurmctld's: a stale pid file's pid may be anything now
        pid = int((SLURM_DIR / "slurmctld.pid").read_text())
        return Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld"
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def slurm():
    """A running one-node Slurm (SLURM_CONF set); daemons this fixture started are stopped."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        _unavailable("submitit is not installed (pip install -e '.[cluster]', or make install)")
    was_up = _controller_up()
    if not was_up and os.geteuid() != 0:
        _unavailable("no local Slurm and not root: run `sudo bash tests/slurm/start.sh` first")
    start = subprocess.run(
        ["bash", str(REPO / "tests" / "slurm" / "start.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if start.returncode != 0:
        _unavailable(f"tests/slurm/start.sh could not start Slurm: {start.stderr.strip()[-1500:]}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(CONF)
    yield CONF
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if not was_up:
        subprocess.run(["bash", str(REPO / "tests" / "slurm" / "stop.sh")], timeout=120)


def _sweep(args: list[str], timeout: int = 600) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "zsbench.cli", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def _array_id(out: str) -> str:
    match = re.search(r"Submitted Slurm job (?:array )?(\d+)", out)
    assert match, out
    return match.group(1)


def _sacct(array: str) -> dict[str, str]:
    """{'<array>_<index>': state} of the array's tasks, from the accounting database."""
    out = subprocess.run(
        ["sacct", "-j", array, "-X", "-n", "-P", "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if line.strip())


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _results(root: Path) -> dict[tuple[str, int], Path]:
    """(method, seed) of every result file: the method is read from the file, since runs with
    overrides live one folder deeper (`<method>/<variant>/seed<N>.json`)."""
    return {
        (json.loads(p.read_text())["method"], int(p.stem.removeprefix("seed"))): p
        for p in root.rglob("seed*.json")
        if not p.name.endswith(".extras.json")
    }


def test_slurm_job_array_sweep_and_rerun_after_scancel(slurm, tmp_path, tiny):
    results = tmp_path / "results"
    common = ["--methods", "frozen", "supervised", "--launcher", "slurm"]
    common += ["--slurm", "cpus_per_task=1", "--slurm", "timeout_min=30"]
    common += ["--results-dir", str(results), "--no-progress"]
    common += [x for o in tiny for x in ("--set", o)]
    quick = ["--set", "supervised:trainer.max_epochs=3"]

    # 1. the 2 x 2 grid as one job array; the sweep waits for it
    out = _sweep([*common, *quick, "--seeds", "0", "1"])
    assert "0 done already, 4 to run with a Slurm job array" in out
    array = _array_id(out)
    assert _sacct(array) == {f"{array}_{i}": "COMPLETED" for i in range(4)}
    found = _results(results)
    assert sorted(found) == [("frozen", 0), ("frozen", 1), ("supervised", 0), ("supervised", 1)]
    records = load_results(results)
    for r in records:
        slurm_info = r["provenance"]["slurm"]
        assert slurm_info["array_job_id"] == array and slurm_info["cluster_name"] == "zsbench"
        assert r["provenance"]["sweep"]["cell"] == f"{r['method']}/synthetic/seed{r['seed']}"
        # the scoped override reached supervised's cells only
        assert r["config"]["trainer"]["max_epochs"] == (3 if r["method"] == "supervised" else 2)
    board = pd.read_csv(results / "leaderboard.csv")
    assert sorted(board["method"]) == ["frozen", "supervised"]
    assert set(board["n_seeds"]) == {2}
    before = {k: p.read_bytes() for k, p in found.items()}

    # 2. seed 2: two new cells; submitted without waiting, then one task is cancelled while
    #    its worker runs (array index 1 = supervised/seed2, in grid order). The victim trains
    #    for 1000 epochs so that it cannot finish before the cancel arrives: the 3-epoch cell
    #    can end in the seconds `sweep --no-wait` takes to return on a loaded machine. (Seed 2
    #    alone: 1000 epochs is another config, so seeds 0 and 1 would not count as done.)
    slow = ["--set", "supervised:trainer.max_epochs=1000"]
    out = _sweep([*common, *slow, "--seeds", "2", "--no-wait"])
    assert "0 done already, 2 to run with a Slurm job array" in out
    array2 = _array_id(out)
    victim_log = results / "logs" / "sweep" / "supervised__synthetic__seed2.try1.log"
    _wait_for(victim_log.exists, 300, "the worker of supervised/seed2 to start")
    subprocess.run(["scancel", f"{array2}_1"], check=True)
    terminal = {"COMPLETED", "CANCELLED", "FAILED"}

    def finished():
        states = _sacct(array2)
        done = len(states) == 2 and all(s.split()[0] in terminal for s in states.values())
        return states if done else None

    states = _wait_for(finished, 300, f"job array {array2} to finish")
    assert states[f"{array2}_0"] == "COMPLETED"
    assert states[f"{array2}_1"].startswith("CANCELLED")
    assert ("supervised", 2) not in _results(results), "the cancelled cell wrote a result"
    assert ("frozen", 2) in _results(results)

    # 3. the same sweep again fills exactly the cancelled cell (submitit sends a single cell as
    #    a plain job rather than a one-task array)
    out = _sweep([*common, *quick, "--seeds", "0", "1", "2"])
    assert "5 done already, 1 to run with a Slurm job array" in out
    array3 = _array_id(out)
    assert _sacct(array3) == {array3: "COMPLETED"}
    found = _results(results)
    assert len(found) == 6
    assert all(found[k].read_bytes() == v for k, v in before.items())  # earlier cells untouched
    again = json.loads(found[("supervised", 2)].read_text())
    assert again["provenance"]["slurm"]["job_id"] == array3
    board = pd.read_csv(results / "leaderboard.csv")
    assert set(board["n_seeds"]) == {3}
    assert not list(results.rglob("*.tmp"))
