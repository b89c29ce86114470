"""Regression checks: every method on small subsets with fixed budgets, against a baseline.

`benchmarks/regression/config.yaml` names the datasets (with their subset/budget overrides),
per-method overrides and per-metric tolerances; `benchmarks/regression/baseline.csv` holds the
expected values (one row per method, dataset, metric). A metric regresses when it falls more
than its tolerance below the baseline; a missing baseline row, a failed run and a dataset that
is not there (`needs_data`) are reported too. Runs are in-process `bench` calls into a scratch
results folder, always overwritten, so the check measures the code as it is now. They use one
torch thread: training results change with the thread count (reduction order), and a baseline
must not depend on the machine's core count; for the same reason they keep their own cache
(`$ZSBENCH_CACHE/regress`), so every feature they use was extracted under those settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from zsbench.errors import ZsbenchError
from zsbench.registry import DATASETS, METHODS
from zsbench.results import write_text_atomic

REGRESSION_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "regression"
COLUMNS = ["method", "dataset", "metric", "baseline", "value", "tolerance", "status"]


@dataclasses.dataclass
class RegressConfig:
    tolerance: dict[str, float]
    seed: int
    datasets: dict[str, dict]
    methods: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path) -> RegressConfig:
        if not Path(path).is_file():
            raise ZsbenchError(f"Regression config {path} does not exist.")
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(raw) - {"tolerance", "seed", "datasets", "methods"}
        if unknown:
            raise ZsbenchError(f"{path}: unknown keys {sorted(unknown)}.")
        if not raw.get("tolerance") or not raw.get("datasets"):
            raise ZsbenchError(f"{path} needs `tolerance` and `datasets` sections.")
        return cls(
            tolerance={k: float(v) for k, v in raw["tolerance"].items()},
            seed=int(raw.get("seed", 0)),
            datasets=raw["datasets"],
            methods=raw.get("methods") or {},
        )


def _data_available(dataset: str, overrides: list[str]) -> bool:
    """Whether a `needs_data` dataset can be set up here (real data present)."""
    try:
        dm = DATASETS.get(dataset)(**_dataset_kwargs(overrides))
        dm.setup()
        return True
    except ZsbenchError:
        return False


def _dataset_kwargs(overrides: list[str]) -> dict:
    out = {}
    for o in overrides:
        key, _, value = o.partition("=")
        if key.startswith("dataset."):
            out[key.split(".", 1)[1]] = yaml.safe_load(value)
    return out


def run_checks(
    config: RegressConfig,
    methods: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    results: str | Path | None = None,
    progress: bool = False,
) -> dict[tuple[str, str], dict]:
    """{(method, dataset): metrics or {"error": text} or {"skipped": reason}}."""
    import torch

    from zsbench.features import cache_dir

    threads, cache = torch.get_num_threads(), os.environ.get("ZSBENCH_CACHE")
    torch.set_num_threads(1)  # results depend on the thread count: one thread everywhere
    # a cache of its own: features (and class embeddings) that other runs extracted with
    # another thread count differ in the last bits, and adversarial methods amplify that
    os.environ["ZSBENCH_CACHE"] = str(cache_dir() / "regress")
    try:
        return _run_checks(config, methods, datasets, results, progress)
    finally:
        torch.set_num_threads(threads)
        if cache is None:
            os.environ.pop("ZSBENCH_CACHE", None)
        else:
            os.environ["ZSBENCH_CACHE"] = cache


def _run_checks(config, methods, datasets, results, progress) -> dict[tuple[str, str], dict]:
    from zsbench.runner import bench

    results = Path(results or tempfile.mkdtemp(prefix="zsbench-regress-"))
    out: dict[tuple[str, str], dict] = {}
    names = list(methods) if methods else METHODS.names()
    for dataset in datasets or list(config.datasets):
        spec = config.datasets.get(dataset)
        if spec is None:
            raise ZsbenchError(f"Dataset {dataset!r} is not in the regression config.")
        overrides = list(spec.get("overrides") or [])
        task = DATASETS.get(dataset).task
        todo = [m for m in names if METHODS.get(m).metadata.task == task]
        if spec.get("needs_data") and not _data_available(dataset, overrides):
            for m in todo:
                out[(m, dataset)] = {"skipped": "data not found (set ZSBENCH_DATA)"}
            continue
        for method in todo:
            extra = list(config.methods.get(method) or [])
            if progress:
                print(f"regress: {method} on {dataset}", flush=True)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Lightning's notes would bury the table
                    outcome = bench(
                        method,
                        dataset,
                        seed=config.seed,
                        overrides=[*extra, *overrides],
                        results=results,
                        overwrite=True,
                        progress=False,
                    )
                out[(method, dataset)] = dict(outcome.record["metrics"])
            except Exception as err:  # a crash is a regression, reported with its cause
                last = traceback.format_exception_only(type(err), err)[-1].strip()
                out[(method, dataset)] = {"error": last}
    return out


def compare(
    measured: dict[tuple[str, str], dict], baseline: pd.DataFrame, tolerance: dict[str, float]
) -> pd.DataFrame:
    """One row per (method, dataset, metric) with status ok / REGRESSED / improved / FAILED /
    NO BASELINE / skipped."""
    base = {
        (r.method, r.dataset, r.metric): float(r.value) for r in baseline.itertuples(index=False)
    }
    rows = []
    for (method, dataset), metrics in sorted(measured.items()):
        for metric, tol in tolerance.items():
            if metric not in metrics and not ({"error", "skipped"} & set(metrics)):
                continue  # another task's metric
            expected = base.get((method, dataset, metric), math.nan)
            row = dict(method=method, dataset=dataset, metric=metric, baseline=expected)
            row.update(value=math.nan, tolerance=tol)
            if "skipped" in metrics:
                row["status"] = f"skipped: {metrics['skipped']}"
            elif "error" in metrics:
                row["status"] = f"FAILED: {metrics['error']}"
            else:
                value = float(metrics.get(metric, math.nan))
                row["value"] = value
                if math.isnan(expected):
                    row["status"] = "NO BASELINE (run `zsbench regress --update`)"
                elif math.isnan(value) or value < expected - tol:
                    row["status"] = "REGRESSED"
                elif value > expected + tol:
                    row["status"] = "improved (update the baseline)"
                else:
                    row["status"] = "ok"
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def failures(table: pd.DataFrame) -> pd.DataFrame:
    bad = table["status"].str.startswith(("REGRESSED", "FAILED", "NO BASELINE"))
    return table[bad]


def write_baseline(measured: dict[tuple[str, str], dict], tolerance, path: Path) -> int:
    """Replace the baseline rows of the measured (method, dataset) pairs; keep the others."""
    old = read_baseline(path) if Path(path).exists() else pd.DataFrame(columns=_BASE_COLS)
    fresh = [
        dict(method=m, dataset=d, metric=k, value=round(float(v[k]), 6))
        for (m, d), v in sorted(measured.items())
        if "skipped" not in v and "error" not in v
        for k in tolerance
        if k in v
    ]
    keep = old[~old.apply(lambda r: (r.method, r.dataset) in measured, axis=1)] if len(old) else old
    df = pd.concat([keep, pd.DataFrame(fresh, columns=_BASE_COLS)], ignore_index=True)
    df = df.sort_values(["dataset", "method", "metric"]).reset_index(drop=True)
    write_text_atomic(Path(path), df.to_csv(index=False))
    return len(fresh)


_BASE_COLS = ["method", "dataset", "metric", "value"]


def read_baseline(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ZsbenchError(
            f"Regression baseline {path} does not exist; create it with `zsbench regress --update`."
        )
    df = pd.read_csv(path)
    missing = set(_BASE_COLS) - set(df.columns)
    if missing:
        raise ZsbenchError(f"{path} lacks columns {sorted(missing)}; expected {_BASE_COLS}.")
    return df


def regress_main(args) -> int:
    """`zsbench regress`: run, compare, print a table; 1 when anything regressed or failed."""
    args.config = args.config or os.fspath(REGRESSION_DIR / "config.yaml")
    args.baseline = args.baseline or os.fspath(REGRESSION_DIR / "baseline.csv")
    config = RegressConfig.load(Path(args.config))
    measured = run_checks(
        config, args.methods or None, args.datasets or None, args.results_dir, not args.quiet
    )
    if args.update:
        n = write_baseline(measured, config.tolerance, Path(args.baseline))
        print(f"Wrote {n} baseline values to {args.baseline}")
        errors = {k: v for k, v in measured.items() if "error" in v}
        for (m, d), v in errors.items():
            print(f"FAILED {m} on {d}: {v['error']}")
        return 1 if errors else 0
    table = compare(measured, read_baseline(Path(args.baseline)), config.tolerance)
    bad = failures(table)
    shown = table if args.verbose else table[table["status"] != "ok"]
    print(shown.to_markdown(index=False, floatfmt=".4f") if len(shown) else "(all ok)")
    n_ok = int((table["status"] == "ok").sum())
    print(f"\nregress: {n_ok} ok, {len(bad)} regressed or failed, {len(table)} checks")
    return 1 if len(bad) else 0
