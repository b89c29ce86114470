"""Result records: one JSON per (task, dataset, split, method, seed, variant), written atomically.

    <results_dir>/<task>/<dataset>/<split>/<method>/seed<N>.json            the default config
    <results_dir>/<task>/<dataset>/<split>/<method>/<variant>/seed<N>.json  any other (identity)

A result is written to a temporary file in the same folder and renamed into place, so a crash
never leaves a partial file and readers never see one. An existing result is kept unless the
caller asks to overwrite it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
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


def result_path(
    root: Path,
    task: str,
    dataset: str,
    split: str,
    method: str,
    seed: int,
    variant: str = "default",
) -> Path:
    """`<task>/<dataset>/<split>/<method>/seed<N>.json` for the default config; another
    variant (zsbench.identity) gets its own folder, `<method>/<variant>/seed<N>.json`."""
    folder = Path(root) / task / dataset / split / method
    return (folder if variant == "default" else folder / variant) / f"seed{seed}.json"


def extras_path(result: Path) -> Path:
    """The run's artefacts for the report (zsbench.extras) next to its result JSON."""
    result = Path(result)
    return result.with_name(result.stem + ".extras.json")


_RESULT_NAME = re.compile(r"^seed\d+\.json$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = socket.gethostname().replace(".", "_")
STALE_TEMP_S = 24 * 3600  # another host's temp file older than this is a dead writer's


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}.{os.getpid()}."


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files of `path` that dead writers left (a SIGKILL between mkstemp and
    rename): on this host those whose process is gone, from other hosts (a shared results
    folder under Slurm) those older than a day. Returns what was removed."""
    removed = []
    for tmp in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        parts = tmp.name[len(Path(path).name) + 2 :].split(".")
        host, pid = (parts[0], parts[1]) if len(parts) >= 3 else ("", "")
        try:
            if host == _HOST and pid.isdigit():
                dead = not _alive(int(pid))
            else:  # another host's, or a name from before hosts were recorded
                dead = time.time() - tmp.stat().st_mtime > STALE_TEMP_S
            if dead:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via temp file + fsync + rename (all or nothing), with the
    permissions a plain `open(path, "w")` would give (mkstemp's temp files are 0600). Temp
    files that dead writers left beside `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` atomically (see `write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_result(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ZsbenchError(f"Result file {path} is unreadable ({err}); move it away.") from err
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ZsbenchError(f"Result file {path} lacks fields {missing}; is it a zsbench result?")
    if not isinstance(data["schema_version"], int) or isinstance(data["schema_version"], bool):
        raise ZsbenchError(
            f"Result file {path} has schema_version {data['schema_version']!r}, not an integer."
        )
    if data["schema_version"] > SCHEMA_VERSION:
        raise ZsbenchError(
            f"Result file {path} has schema_version {data['schema_version']}, newer than this "
            f"zsbench ({SCHEMA_VERSION}); upgrade zsbench."
        )
    return data


def result_files(root: Path) -> list[Path]:
    """Every result file `seed<N>.json` under `root`, sorted (temp files and extras left out)."""
    root = Path(root)
    if not root.exists():
        return []
    return [p for p in sorted(root.rglob("seed*.json")) if _RESULT_NAME.match(p.name)]


def load_results(root: Path) -> list[dict]:
    """Every result under `root` (hidden temp files ignored)."""
    return [read_result(p) for p in result_files(root)]


def record_problem(path: Path, data: dict) -> str | None:
    """Why a result file cannot be averaged into the leaderboard, or None: its identity must be
    the one its path names (a copied `seed0.json` saved as `seed1.json` is the same run twice)
    and every metric a finite number in [0, 1] (all zsbench metrics are fractions)."""
    path = Path(path)
    seed = int(path.stem.removeprefix("seed"))
    if data.get("seed") != seed:
        return f"its seed is {data.get('seed')!r} but the file is seed{seed}.json"
    fields = [data.get(k) for k in ("task", "dataset", "split", "method")]
    if all(isinstance(x, str) and x for x in fields):
        own = result_path(Path(), *fields, seed, str(data.get("variant") or "default"))
        if path.parts[-len(own.parts) :] != own.parts:  # a results folder may sit in another
            return f"its identity names {own} but the file is {path}"
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return "it has no metrics"
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric {name} is {value!r}, not a number"
        if not (0.0 <= float(value) <= 1.0):  # NaN fails this too
            return f"metric {name} is {value!r}, outside [0, 1]"
    return None


def load_checked_results(root: Path) -> tuple[list[dict], list[str]]:
    """Every result under `root` that passes `read_result` and `record_problem`, and one line
    per file left out (naming it and why), for the leaderboard to warn about."""
    records, problems = [], []
    for p in result_files(root):
        try:
            data = read_result(p)
        except ZsbenchError as err:
            problems.append(str(err))
            continue
        why = record_problem(p, data)
        if why:
            problems.append(f"{p}: left out of the leaderboard: {why}.")
            continue
        records.append(data)
    return records, problems
