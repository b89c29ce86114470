"""The leaderboard: a pure function of the result files.

One row per (task, dataset, split, metric spec, method); for each metric its mean and std over
seeds and the number of seeds. A metric some seed lacks stays empty for that row (never
averaged over the seeds that have it), and a method that lacks a metric has an empty cell.
Two reference columns say what a number means without a second table: `chance`, the expected
headline metric of a random ranking on that data, and `vs frozen`, the headline metric minus
the `frozen` baseline's in the same (task, dataset, split, spec) group (a trained method that
does not beat the features it starts from has learnt nothing usable for unseen classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from zsbench.metrics_version import METRICS_VERSION
from zsbench.results import load_results, write_text_atomic

KEY = ["task", "dataset", "split", "spec", "method"]
# per-row columns that are not metrics
INFO_COLUMNS = ("n_seeds", "seeds", "leak", "notes", "chance", "vs frozen")
BASELINE = "frozen"  # the method `vs frozen` is measured against
PREFERRED = ["mAP@all", "P@100", "mAP@200", "P@200"]
# ZS-CIR main metrics, each dataset's headline first: FashionIQ's category means, CIRCO's mAP@k,
# CIRR's R@k and R_subset@k (the synthetic data uses CIRCO's protocol)
PREFERRED_CIR = ["mean/R@10", "mean/R@50", "mAP@5", "mAP@10", "mAP@25", "mAP@50"]
PREFERRED_CIR += ["R@1", "R@5", "R@10", "R@25", "R@50", "R_subset@1", "R_subset@2", "R_subset@3"]
PREFERRED += PREFERRED_CIR


def metric_order(names: set[str]) -> list[str]:
    first = [m for m in PREFERRED if m in names]
    return first + sorted(names - set(first))


def metric_columns(board: pd.DataFrame) -> list[str]:
    """The metric columns of leaderboard rows that hold a value, in leaderboard order (means
    only: no `std`, no per-class `.class_mean`)."""
    names = {
        c
        for c in board.columns
        if c not in (*KEY, *INFO_COLUMNS)
        and not c.startswith("_")
        and not c.endswith(" std")
        and "." not in c
        and board[c].notna().any()
    }
    return metric_order(names)


def headline_metric(board: pd.DataFrame) -> str | None:
    """The one metric rows are ranked, charted and compared with frozen by: the first present
    in leaderboard order (SBIR mAP@all; CIRCO mAP@5, CIRR R@1, FashionIQ mean/R@10)."""
    metrics = metric_columns(board)
    return metrics[0] if metrics else None


def spec_label(spec: dict | None) -> str:
    """The leaderboard's spec column: the spec's name, plus its tie rule when that is not the
    default and its metric version when older, so that rows never mix two definitions."""
    spec = spec or {}
    label = str(spec.get("name", "?"))
    if spec.get("ties", "expected") != "expected":
        label += f" ties={spec['ties']}"
    version = spec.get("version")
    if version is not None and version != METRICS_VERSION:
        label += f" v{version}"
    return label


def build_leaderboard(records: list[dict]) -> pd.DataFrame:
    """Rows per KEY with `<metric>` (mean), `<metric> std` and `n_seeds`; only status 'ok'."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return pd.DataFrame(columns=[*KEY, "n_seeds"])
    metrics = metric_order({m for r in ok for m in r["metrics"]})
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        key = (r["task"], r["dataset"], r["split"], spec_label(r.get("spec")), r["method"])
        groups.setdefault(key, []).append(r)
    rows = []
    for key, runs in sorted(groups.items()):
        row = dict(zip(KEY, key))
        row["n_seeds"] = len(runs)
        row["seeds"] = " ".join(str(s) for s in sorted(r["seed"] for r in runs))
        # True when the backbone's pretraining classes include unseen classes (zsbench.leakage)
        leaks = [(r.get("leakage") or {}).get("leak") for r in runs]
        row["leak"] = any(leaks) if any(v is not None for v in leaks) else None
        # the method's caveat (MethodMetadata.notes) as recorded by its newest run
        newest = max(runs, key=lambda r: r.get("date", ""))
        row["notes"] = (newest.get("method_metadata") or {}).get("notes") or ""
        row["_chance"] = newest.get("chance") or {}
        for m in metrics:
            values = [r["metrics"].get(m) for r in runs]
            complete = all(v is not None and np.isfinite(v) for v in values)
            row[m] = float(np.mean(values)) if complete else np.nan
            row[f"{m} std"] = (
                float(np.std(values, ddof=1)) if complete and len(values) > 1 else np.nan
            )
        rows.append(row)
    df = pd.DataFrame(rows)
    # best first within each (task, dataset, split, spec) by its own headline metric
    df["_main"] = np.nan
    df["chance"] = np.nan
    df["vs frozen"] = np.nan
    for _, idx in df.groupby(KEY[:4]).groups.items():
        main = headline_metric(df.loc[idx])
        if main:
            df.loc[idx, "_main"] = df.loc[idx, main]
            df.loc[idx, "chance"] = [_float(c.get(main)) for c in df.loc[idx, "_chance"]]
            frozen = df.loc[idx][df.loc[idx, "method"] == BASELINE]
            if len(frozen) == 1 and pd.notna(frozen[main].iloc[0]):
                others = [i for i in idx if df.loc[i, "method"] != BASELINE]
                df.loc[others, "vs frozen"] = df.loc[others, main] - frozen[main].iloc[0]
    df = df.sort_values([*KEY[:4], "_main"], ascending=[True] * 4 + [False], na_position="last")
    # the reference columns after the metrics, so the CSV reads "scores, then what they mean"
    order = [c for c in df.columns if c not in ("chance", "vs frozen")] + ["chance", "vs frozen"]
    return df[order].drop(columns=["_main", "_chance"]).reset_index(drop=True)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return np.nan


def _sig4(x: float) -> str:
    """4 significant digits (0.6585, 0.01987, 1.000): a regression check can read the change."""
    return f"{x:#.4g}"


def format_table(df: pd.DataFrame, max_metrics: int = 4) -> str:
    """Markdown table with `mean ± std` cells (4 significant digits; metrics are fractions in
    [0, 1], as the result files store them) for the main metrics."""
    if df.empty:
        return "(no results yet)"
    metrics = [c for c in df.columns if c in PREFERRED or ("@" in c and not c.endswith(" std"))]
    metrics = [m for m in metric_order(set(metrics)) if "." not in m]
    # the first `max_metrics` each task has (a mixed SBIR + CIR table shows both tasks' own)
    keep: set[str] = set()
    for _, rows in df.groupby("task"):
        keep.update([m for m in metrics if rows[m].notna().any()][:max_metrics])
    metrics = [m for m in metrics if m in keep]
    out = df[[*KEY, "n_seeds"]].copy()
    if "leak" in df:
        out["leak"] = ["yes" if v is True else "" for v in df["leak"]]
    for m in metrics:
        mean, std = df[m], df[f"{m} std"]
        out[m] = [
            "" if pd.isna(a) else (_sig4(a) if pd.isna(b) else f"{_sig4(a)} ± {_sig4(b)}")
            for a, b in zip(mean, std)
        ]
    if "chance" in df and df["chance"].notna().any():
        out["chance"] = ["" if pd.isna(c) else _sig4(c) for c in df["chance"]]
    if "vs frozen" in df and df["vs frozen"].notna().any():
        out["vs frozen"] = ["" if pd.isna(d) else f"{d:+#.4g}" for d in df["vs frozen"]]
    if "notes" in df and df["notes"].fillna("").astype(bool).any():
        out["notes"] = df["notes"].fillna("")
    # numparse off: tabulate would turn "0.6000" into 0.6 and "+0.1500" into 0.15
    return out.to_markdown(index=False, disable_numparse=True)


def update_leaderboard(results_dir: Path) -> pd.DataFrame:
    """Rebuild leaderboard.csv and leaderboard.md from every result under `results_dir`.

    Serialised by a file lock; each file is replaced atomically, so a crash leaves the previous
    leaderboard intact.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(results_dir / ".leaderboard.lock")):
        df = build_leaderboard(load_results(results_dir))
        write_text_atomic(results_dir / "leaderboard.csv", df.to_csv(index=False))
        write_text_atomic(results_dir / "leaderboard.md", format_table(df, max_metrics=99) + "\n")
    return df


def push_to_wandb(df: pd.DataFrame, results_dir: Path) -> str:
    """Log the leaderboard as a W&B Table in a run of its own; returns the run's folder.

    WANDB_PROJECT (default "zsbench") and WANDB_MODE apply; with WANDB_MODE=offline the run
    stays on disk under `results_dir`/wandb for `wandb sync`.
    """
    import os

    import wandb

    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "zsbench"),
        job_type="leaderboard",
        name="leaderboard",
        dir=str(results_dir),
    )
    table = df.astype(object).where(df.notna(), None)  # missing cells stay empty, not NaN
    run.log({"leaderboard": wandb.Table(dataframe=table)})
    folder = run.dir
    run.finish()
    return folder
