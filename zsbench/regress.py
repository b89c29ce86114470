"""Regression checks: every method on small subsets with fixed budgets, against a baseline.

`benchmarks/regression/config.yaml` names the datasets (with their subset/budget overrides),
per-method overrides and the tolerance rule; `benchmarks/regression/baseline.csv` holds, per
(method, dataset, metric), the expected value, its tolerance and the chance level. The gate is
two-sided: a metric that moves more than its tolerance in either direction fails (a gain must
be accepted with `zsbench regress --update`, so it shows in the diff; a leak that inflates
scores is caught like a broken loss). Tolerances come from the seed-to-seed spread measured
when the baseline is written (`calibration_seeds`), never below a floor; a baseline row must sit
above its chance level by a margin (3 random-ranking standard deviations) unless the config
declares the method `at_chance` with the reason. A failed run, a missing baseline row and a
real-data reader or set-up error are failures; only an absent data root (`needs_data` without
ZSBENCH_DATA) skips. Runs are in-process `bench` calls into a scratch
results folder, always overwritten, so the check measures the code as it is now. They use one
torch thread: training results change with the thread count (reduction order), and a baseline
must not depend on the machine's core count; for the same reason they keep their own cache
(`$ZSBENCH_CACHE/regress`), so every feature they use was extracted under those settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from zsbench.config import find_root
from zsbench.errors import ZsbenchError
from zsbench.registry import DATASETS, METHODS
from zsbench.results import write_text_atomic

REGRESSION_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "regression"
COLUMNS = ["method", "dataset", "metric", "baseline", "value", "tolerance", "status"]


@dataclasses.dataclass
class RegressConfig:
    tolerance: dict[str, float]  # per metric: the floor of a tolerance
    seed: int
    datasets: dict[str, dict]
    methods: dict[str, list[str]]
    calibration_seeds: tuple[int, ...] = (0, 1, 2)
    spread_factor: float = 3.0  # tolerance = max(floor, factor x seed-to-seed std)
    at_chance: dict[str, str] = dataclasses.field(default_factory=dict)  # method -> reason

    @classmethod
    def load(cls, path: Path) -> RegressConfig:
        if not Path(path).is_file():
            raise ZsbenchError(f"Regression config {path} does not exist.")
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {
            "tolerance",
            "seed",
            "datasets",
            "methods",
            "calibration_seeds",
            "spread_factor",
            "at_chance",
        }
        unknown = set(raw) - known
        if unknown:
            raise ZsbenchError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}.")
        if not raw.get("tolerance") or not raw.get("datasets"):
            raise ZsbenchError(f"{path} needs `tolerance` and `datasets` sections.")
        return cls(
            tolerance={k: float(v) for k, v in raw["tolerance"].items()},
            seed=int(raw.get("seed", 0)),
            datasets=raw["datasets"],
            methods=raw.get("methods") or {},
            calibration_seeds=tuple(int(x) for x in raw.get("calibration_seeds", (0, 1, 2))),
            spread_factor=float(raw.get("spread_factor", 3.0)),
            at_chance={str(k): str(v) for k, v in (raw.get("at_chance") or {}).items()},
        )


def _data_root_missing(dataset: str, overrides: list[str]) -> str | None:
    """Why a `needs_data` dataset is skipped (no data root configured or present), else None.
    Anything else that goes wrong setting it up is a failure of its reader, not a skip."""
    root = find_root(_dataset_kwargs(overrides).get("root"))
    if root is None:
        return "ZSBENCH_DATA is not set"
    if not root.is_dir():
        return f"data root {root} does not exist"
    return None


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
        task = DATASETS.info(dataset).task
        todo = [m for m in names if METHODS.info(m).task == task]
        if spec.get("needs_data") and (why := _data_root_missing(dataset, overrides)):
            for m in todo:
                out[(m, dataset)] = {"skipped": f"{why} (real data for {dataset})"}
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
                        overrides=[*overrides, *extra],  # the method's win
                        results=results,
                        overwrite=True,
                        progress=False,
                    )
                out[(method, dataset)] = _measured(outcome.record)
            except Exception as err:  # a crash is a regression, reported with its cause
                last = traceback.format_exception_only(type(err), err)[-1].strip()
                out[(method, dataset)] = {"error": last}
    return out


def _measured(record: dict) -> dict:
    """A run's metrics plus its chance levels (`_chance`) and, computed only if a baseline is
    written (a simulation), its chance margins (`_margin`, a callable)."""
    metrics = dict(record["metrics"])
    metrics["_chance"] = dict(record.get("chance") or {})
    used = ("task", "per_class", "n_gallery", "n_queries", "chance")
    subset = {k: record[k] for k in used if k in record}
    metrics["_margin"] = functools.partial(chance_margins, subset)
    return metrics


def chance_margins(record: dict) -> dict[str, float]:
    """3 standard deviations of a random ranking's score, per metric where one is known:
    SBIR mAP@all (simulated, zsbench.chance.random_map_spread), CIR R@k (binomial)."""
    from zsbench.chance import random_map_spread

    out: dict[str, float] = {}
    chance = record.get("chance") or {}
    if record.get("task") == "sbir" and record.get("per_class"):
        per = record["per_class"]
        q = [i for i, c in enumerate(per) for _ in range(per[c]["n_queries"])]
        g = [i for i, c in enumerate(per) for _ in range(per[c]["n_relevant"])]
        g += [-1] * (record.get("n_gallery", len(g)) - len(g))  # classes without queries
        out["mAP@all"] = 3 * random_map_spread(q, g)
    for key, p in chance.items():
        if key.startswith("R@") and record.get("n_queries"):
            out[key] = 3 * math.sqrt(p * (1 - p) / record["n_queries"])
    return out


def compare(
    measured: dict[tuple[str, str], dict], baseline: pd.DataFrame, tolerance: dict[str, float]
) -> pd.DataFrame:
    """One row per (method, dataset, metric) with status ok / REGRESSED / IMPROVED / FAILED /
    NO BASELINE / skipped. `tolerance`: per-metric floor, used where a baseline row has none."""
    base = {
        (r.method, r.dataset, r.metric): float(r.value) for r in baseline.itertuples(index=False)
    }
    tols = {}
    if "tolerance" in baseline:
        tols = {
            (r.method, r.dataset, r.metric): float(r.tolerance)
            for r in baseline.itertuples(index=False)
        }
    rows = []
    for (method, dataset), metrics in sorted(measured.items()):
        for metric, tol in tolerance.items():
            if metric not in metrics and not ({"error", "skipped"} & set(metrics)):
                continue  # another task's metric
            expected = base.get((method, dataset, metric), math.nan)
            tol = tols.get((method, dataset, metric), tol)
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
                    row["status"] = "IMPROVED (accept: zsbench regress --update; review the diff)"
                else:
                    row["status"] = "ok"
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def failures(table: pd.DataFrame) -> pd.DataFrame:
    bad = table["status"].str.startswith(("REGRESSED", "IMPROVED", "FAILED", "NO BASELINE"))
    return table[bad]


def baseline_rows(
    by_seed: dict[int, dict[tuple[str, str], dict]], config: RegressConfig
) -> tuple[pd.DataFrame, list[str]]:
    """Baseline rows from runs at `config.calibration_seeds`: the value at `config.seed`, the
    tolerance max(floor, spread_factor x std over seeds), the chance level and its margin.
    Returns (rows, problems): a row below chance + margin is a problem unless its method is
    declared `at_chance` in the config."""
    rows, problems = [], []
    ref = by_seed[config.seed]
    for (m, d), v in sorted(ref.items()):
        if "skipped" in v or "error" in v:
            continue
        for k, floor in config.tolerance.items():
            if k not in v:
                continue
            values = [
                float(by_seed[s][(m, d)][k]) for s in by_seed if k in by_seed[s].get((m, d), {})
            ]
            spread = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else 0.0
            tol = max(floor, config.spread_factor * spread)
            chance = float(v.get("_chance", {}).get(k, math.nan))
            margins = v.get("_margin", {})
            margins = v["_margin"] = margins() if callable(margins) else margins
            margin = float(margins.get(k, math.nan))
            value = float(v[k])
            rows.append(
                dict(
                    method=m,
                    dataset=d,
                    metric=k,
                    value=round(value, 6),
                    tolerance=round(tol, 6),
                    chance=round(chance, 6),
                    margin=round(margin, 6),
                )
            )
            if m in config.at_chance or math.isnan(chance + margin):
                continue
            if value < chance + margin:
                problems.append(
                    f"{m} on {d}: {k} {value:.4f} is not above chance {chance:.4f} + margin "
                    f"{margin:.4f}, so the gate could not see it collapse to chance. Give it a "
                    "budget that learns (methods: in the regression config), or declare it "
                    "`at_chance` with the reason."
                )
    return pd.DataFrame(rows, columns=_BASE_COLS), problems


def write_baseline(by_seed, config: RegressConfig, path: Path) -> tuple[int, list[str]]:
    """Replace the baseline rows of the measured (method, dataset) pairs; keep the others.
    Returns (rows written, problems); nothing is written when there is a problem."""
    fresh, problems = baseline_rows(by_seed, config)
    if problems:
        return 0, problems
    _replace_rows(fresh, by_seed[config.seed], path)
    return len(fresh), []


def _replace_rows(fresh: pd.DataFrame, measured: dict, path: Path) -> None:
    """Write `fresh` in place of the baseline rows of the `measured` (method, dataset) pairs."""
    old = read_baseline(path) if Path(path).exists() else pd.DataFrame(columns=_BASE_COLS)
    keep = old[~old.apply(lambda r: (r.method, r.dataset) in measured, axis=1)] if len(old) else old
    df = pd.concat([keep, fresh], ignore_index=True)
    df = df.sort_values(["dataset", "method", "metric"]).reset_index(drop=True)
    write_text_atomic(Path(path), df.to_csv(index=False))


_BASE_COLS = ["method", "dataset", "metric", "value", "tolerance", "chance", "margin"]
_REQUIRED_COLS = ["method", "dataset", "metric", "value"]


def read_baseline(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ZsbenchError(
            f"Regression baseline {path} does not exist; create it with `zsbench regress --update`."
        )
    df = pd.read_csv(path)
    missing = set(_REQUIRED_COLS) - set(df.columns)
    if missing:
        raise ZsbenchError(f"{path} lacks columns {sorted(missing)}; expected {_BASE_COLS}.")
    return df


def regress_main(args) -> int:
    """`zsbench regress`: run, compare, print a table; 1 when anything regressed or failed."""
    args.config = args.config or os.fspath(REGRESSION_DIR / "config.yaml")
    args.baseline = args.baseline or os.fspath(REGRESSION_DIR / "baseline.csv")
    config = RegressConfig.load(Path(args.config))
    methods, datasets = args.methods or None, args.datasets or None
    if args.update:  # every calibration seed: the spread sets each row's tolerance
        by_seed = {}
        for seed in dict.fromkeys([config.seed, *config.calibration_seeds]):
            seeded = dataclasses.replace(config, seed=seed)
            by_seed[seed] = run_checks(seeded, methods, datasets, args.results_dir, not args.quiet)
        rows, problems = baseline_rows(by_seed, config)
        per_seed = {
            f"seed{s}": [
                by_seed[s].get((r.method, r.dataset), {}).get(r.metric) for r in rows.itertuples()
            ]
            for s in by_seed
        }
        print(rows.assign(**per_seed).to_markdown(index=False, floatfmt=".4f"))
        n = 0 if problems else len(rows)
        if n:
            _replace_rows(rows, by_seed[config.seed], Path(args.baseline))
        errors = {k: v for k, v in by_seed[config.seed].items() if "error" in v}
        for (m, d), v in errors.items():
            problems.append(f"FAILED {m} on {d}: {v['error']}")
        for p in problems:
            print(p)
        if n:
            print(f"Wrote {n} baseline rows to {args.baseline} (seeds {sorted(by_seed)})")
        return 1 if problems else 0
    measured = run_checks(config, methods, datasets, args.results_dir, not args.quiet)
    table = compare(measured, read_baseline(Path(args.baseline)), config.tolerance)
    bad = failures(table)
    shown = table if args.verbose else table[table["status"] != "ok"]
    print(shown.to_markdown(index=False, floatfmt=".4f") if len(shown) else "(all ok)")
    n_ok = int((table["status"] == "ok").sum())
    print(f"\nregress: {n_ok} ok, {len(bad)} regressed or failed, {len(table)} checks")
    return 1 if len(bad) else 0
