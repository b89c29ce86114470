"""Where a result came from: code version, packages, device."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

import zsbench

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "timm", "numpy", "pandas")


def git_state(repo: Path | None = None) -> dict:
    """Commit and dirty flag of the zsbench checkout (None outside a git checkout)."""
    repo = repo or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _toplevel(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder,
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


PLUGIN_PACKAGES = ("zsbench.methods", "zsbench.datamodules")


def plugin_git_states() -> dict:
    """The checkout each plug-in package (methods, datamodules) comes from, where it is not the
    core's: an editable install maps `zsbench.methods` to its own checkout, so a core found on
    PYTHONPATH in a second checkout runs with the first one's methods. {} when all is one tree."""
    import importlib

    core = _toplevel(Path(zsbench.__file__).resolve().parent)
    out = {}
    for name in PLUGIN_PACKAGES:
        folder = Path(next(iter(importlib.import_module(name).__path__))).resolve()
        if _toplevel(folder) != core:
            out[name] = {"path": str(folder), **git_state(folder)}
    return out


def package_versions() -> dict[str, str | None]:
    out = {"zsbench": zsbench.__version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: torch.device) -> dict:
    info = {
        "type": device.type,
        "host": platform.node(),
        "cpu": platform.processor() or None,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    return info


def launch_info() -> dict:
    """How the run was started: the sweep (file, sha256, launcher, cell) from ZSBENCH_SWEEP,
    which `zsbench sweep` sets for its workers, and the Slurm job when there is one."""
    out: dict = {}
    if os.environ.get("ZSBENCH_SWEEP"):
        try:
            out["sweep"] = json.loads(os.environ["ZSBENCH_SWEEP"])
        except json.JSONDecodeError:
            out["sweep"] = {"raw": os.environ["ZSBENCH_SWEEP"]}
    if os.environ.get("SLURM_JOB_ID"):
        keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_CLUSTER_NAME")
        out["slurm"] = {k.removeprefix("SLURM_").lower(): os.environ.get(k) for k in keys}
    return out


def provenance(device: torch.device) -> dict:
    plugins = plugin_git_states()
    return {
        "git": git_state(),
        **({"plugins_git": plugins} if plugins else {}),
        "packages": package_versions(),
        "device": device_info(device),
        **launch_info(),
    }
