"""Result records: one JSON per (task, dataset, split, method, seed), written atomically.

    <results_dir>/<task>/<dataset>/<split>/<method>/seed<N>.json

A result is written to a temporary file in the same folder and renamed into place, so a crash
never leaves a partial file and readers never see one. An existing result is kept unless the
caller asks to overwrite it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from zsbench.errors import ZsbenchError

SCHEMA_VERSION = 1
REQUIRED_FIELDS = (
    "schema_version",
    "task",
    "dataset",
    "split",
    "method",
    "seed",
    "status",
    "metrics",
)


def results_dir(path: str | Path | None = None) -> Path:
    """--results-dir, else ZSBENCH_RESULTS, else ./results."""
    return Path(path or os.environ.get("ZSBENCH_RESULTS") or "results")


def result_path(root: Path, task: str, dataset: str, split: str, method: str, seed: int) -> Path:
    return Path(root) / task / dataset / split / method / f"seed{seed}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` via temp file + fsync + rename (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ZsbenchError(f"Result file {path} is unreadable ({err}); move it away.") from err
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ZsbenchError(f"Result file {path} lacks fields {missing}; is it a zsbench result?")
    if data["schema_version"] > SCHEMA_VERSION:
        raise ZsbenchError(
            f"Result file {path} has schema_version {data['schema_version']}, newer than this "
            f"zsbench ({SCHEMA_VERSION}); upgrade zsbench."
        )
    return data


def load_results(root: Path) -> list[dict]:
    """Every result under `root` (hidden temp files ignored)."""
    root = Path(root)
    if not root.exists():
        return []
    return [read_result(p) for p in sorted(root.rglob("seed*.json")) if not p.name.startswith(".")]
