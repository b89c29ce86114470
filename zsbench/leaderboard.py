"""The leaderboard: a pure function of the result files.

One row per (task, dataset, split, metric spec, method); for each metric its mean and std over
seeds and the number of seeds. A metric some seed lacks stays empty for that row (never
averaged over the seeds that have it), and a method that lacks a metric has an empty cell.
Three reference columns say what a number means without a second table: `chance`, the
expected headline metric of a random ranking on that data; `vs frozen`, the headline metric
minus the `frozen` baseline's in the same (task, dataset, split, spec) group (a trained method
that does not beat the features it starts from has learnt nothing usable for unseen classes);
and `vs centred`, the same against `frozen-centred` (those features centred per domain by
seen-class training means, the stronger no-training reference, issue 29).

Published numbers (zsbench.reported) join only when asked (`build_leaderboard(records,
reported)`, `zsbench leaderboard --reported`): each one as its own row, method `<name> [paper]`,
right after the measured rows of every group with the same task, dataset family, split and spec
(a measured result's family is its split manifest's `family`, else its dataset, so a paper's
`sketchy` number sits beside `sketchy-mini` rows on the same split). A reported row is never
averaged with measured rows, ranked among them or used for `chance` / `vs frozen`; its `notes`
give the paper's setting and where it differs from the measured rows', its `source` column the
paper and table. Without reported numbers the table is exactly the measured one.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from zsbench.errors import ZsbenchError
from zsbench.metrics_version import METRICS_VERSION
from zsbench.results import load_checked_results, write_text_atomic

KEY = ["task", "dataset", "split", "spec", "method", "variant"]
# per-row columns that are not metrics
# the reference columns: `vs <name>` = headline metric minus that baseline method's
BASELINES = {"vs frozen": "frozen", "vs centred": "frozen-centred"}
REFERENCE_COLUMNS = ("chance", *BASELINES)
NEAR_BEST = "≈ best"  # not significantly below the group's best row (zsbench.significance)
INFO_COLUMNS = (
    "config", "n_seeds", "seeds", NEAR_BEST, "leak", "notes", *REFERENCE_COLUMNS, "source"
)  # fmt: skip
REPORTED_PREFIX = "reported: "  # the `source` cell of a published number's row
REPORTED_CSV = "leaderboard-reported.csv"  # `zsbench leaderboard --reported` (and its .md)
BASELINE = BASELINES["vs frozen"]  # the method `vs frozen` is measured against
PREFERRED = ["mAP@all", "P@100", "mAP@200", "P@200"]
# ZS-CIR main metrics, each dataset's headline first: FashionIQ's category means, CIRCO's mAP@k,
# CIRR's R@k and R_subset@k (the synthetic data uses CIRCO's protocol)
PREFERRED_CIR = ["mean/R@10", "mean/R@50", "mAP@5", "mAP@10", "mAP@25", "mAP@50"]
PREFERRED_CIR += ["R@1", "R@5", "R@10", "R@25", "R@50", "R_subset@1", "R_subset@2", "R_subset@3"]
PREFERRED_CIR += ["Avg"]  # CIRR's (R@5 + R_subset@1) / 2
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


def build_leaderboard(records: list[dict], reported: list | None = None) -> pd.DataFrame:
    """Rows per KEY with `<metric>` (mean), `<metric> std` and `n_seeds`; status 'ok', and
    'untrained' (eval.untrained) as its own row, method `<name> [untrained]`.

    `reported`: published numbers (zsbench.reported.Reported) to add as marked rows beside the
    measured groups they match (see the module docstring); None or no match changes nothing.
    """
    board = _measured(records)
    if reported:
        board = add_reported(board, [r for r in records if r.get("status") == "ok"], reported)
    return board


UNTRAINED = " [untrained]"  # the method label of results scored untrained on purpose


def _measured(records: list[dict]) -> pd.DataFrame:
    ok = [r for r in records if r.get("status") in ("ok", "untrained")]
    if not ok:
        return pd.DataFrame(columns=[*KEY, "n_seeds"])
    metrics = metric_order({m for r in ok for m in r["metrics"]})
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        method = r["method"] + (UNTRAINED if r.get("status") == "untrained" else "")
        key = (r["task"], r["dataset"], r["split"], spec_label(r.get("spec")), method)
        groups.setdefault((*key, r.get("variant") or "default"), []).append(r)
    rows = []
    for key, runs in sorted(groups.items()):
        row = dict(zip(KEY, key))
        row["config"] = config_label(max(runs, key=lambda r: r.get("date", "")))
        row["_backbone"] = _backbone(runs[0])
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
    for column in BASELINES:
        df[column] = np.nan
    for _, idx in df.groupby(KEY[:4]).groups.items():
        main = headline_metric(df.loc[idx])
        if main:
            df.loc[idx, "_main"] = df.loc[idx, main]
            df.loc[idx, "chance"] = [_float(c.get(main)) for c in df.loc[idx, "_chance"]]
            for i in idx:
                for column, baseline in BASELINES.items():
                    ref = _frozen_reference(df.loc[idx], df.loc[i], baseline)
                    if ref is not None and pd.notna(df.loc[ref, main]):
                        df.loc[i, column] = df.loc[i, main] - df.loc[ref, main]
    df = df.sort_values([*KEY[:4], "_main"], ascending=[True] * 4 + [False], na_position="last")
    # the reference columns after the metrics, so the CSV reads "scores, then what they mean"
    order = [c for c in df.columns if c not in REFERENCE_COLUMNS] + list(REFERENCE_COLUMNS)
    return df[order].drop(columns=["_main", "_chance", "_backbone"]).reset_index(drop=True)


def config_label(record: dict) -> str:
    """What a variant changed, for the `config` column: `key=value` pairs of its config diff
    (zsbench.identity), the spec and tie rule left out (the spec column shows them)."""
    diff = record.get("config_diff") or {}
    items = [(k, v) for k, v in diff.items() if k not in ("eval.spec", "eval.ties")]
    return " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in items)


def _backbone(record: dict) -> str:
    return str((record.get("backbone") or {}).get("name") or "")


def _frozen_reference(group: pd.DataFrame, row: pd.Series, baseline: str = BASELINE):
    """The `baseline` row a row is compared with: the one on the same backbone, else the
    default-config one (no override but the spec: a result re-scored with another spec has a
    variant of its own but the default config); None for the baseline's rows themselves or
    when neither is unique."""
    if row["method"] == baseline:
        return None
    frozen = group[group["method"] == baseline]
    same = frozen[frozen["_backbone"] == row["_backbone"]]
    if len(same) == 1:
        return same.index[0]
    default = frozen[frozen["config"] == ""]
    return default.index[0] if len(default) == 1 else None


def family(record: dict) -> str:
    """The dataset whose published numbers a result compares with: its split manifest's
    `family` (e.g. `sketchy` for `sketchy-mini`), else its dataset name."""
    return (record.get("split_manifest") or {}).get("family") or record["dataset"]


def is_reported(board: pd.DataFrame) -> pd.Series:
    """True for the rows of published numbers (their `source` starts with `reported: `)."""
    if "source" not in board:
        return pd.Series(False, index=board.index)
    return board["source"].fillna("").astype(str).str.startswith(REPORTED_PREFIX)


def add_reported(board: pd.DataFrame, records: list[dict], reported: list) -> pd.DataFrame:
    """`board` with a row per (setting, metric spec) of `reported` after the measured rows of
    each group it matches: same task, split and spec label, and its dataset equal to the family
    of the group's results. Measured rows are unchanged; a `source` column says which row is
    whose (empty for measured rows)."""
    if board.empty:
        return board
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["task"], r["dataset"], r["split"], spec_label(r.get("spec")))
        groups.setdefault(key, []).append(r)
    parts, added = [], 0
    for key, rows in board.groupby(KEY[:4], sort=False, dropna=False):
        parts.append(rows)
        runs = groups.get(tuple(key), [])
        families = {family(r) for r in runs}
        task, dataset, split, spec = key
        matches = [
            p
            for p in reported
            if p.task == task and p.dataset in families and p.split == split and p.spec == spec
        ]
        new = _reported_rows(key, matches, runs)
        if new:
            parts.append(pd.DataFrame(new))
            added += len(new)
    if not added:
        return board
    out = pd.concat(parts, ignore_index=True)
    out["source"] = out["source"].fillna("") if "source" in out else ""
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    for p in {p.metric for p in reported}:  # a metric only a paper has: an empty std beside it
        if p in out and f"{p} std" not in out:
            out[f"{p} std"] = np.nan
    # metric columns a reported row brought keep leaderboard order; reference columns last
    info = [c for c in out.columns if c not in (*REFERENCE_COLUMNS, "source")]
    return out[[*info, *REFERENCE_COLUMNS, "source"]]


def _reported_rows(key: tuple, matches: list, runs: list[dict]) -> list[dict]:
    """One row per published setting (method, source, backbone, ...) of one group."""
    by_setting: dict[tuple, list] = {}
    for p in matches:
        setting = (p.method, p.backbone, p.backbone_id, p.image_size, p.training_data,
                   p.photos, p.notes, p.split_note, p.read_from,
                   tuple(sorted(p.source.items())))  # fmt: skip
        by_setting.setdefault(setting, []).append(p)
    rows = []
    for ps in by_setting.values():
        first = ps[0]
        row = dict(zip(KEY, key))
        row.update(method=first.label, variant="", config="", n_seeds=0, seeds="", leak=None)
        row["notes"] = _differences(first, runs)
        row["source"] = first.source_label()
        row.update({p.metric: p.value for p in ps})
        rows.append(row)
    return rows


def _norm(text: str) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def _differences(p, runs: list[dict]) -> str:
    """`paper: <its setting> -- measured: <the group's> -- differs: <what differs>` (no `|`:
    the text goes into Markdown table cells)."""
    backbones = sorted({str((r.get("backbone") or {}).get("name") or "?") for r in runs})
    sizes = sorted({s for r in runs if (s := _image_size(r))})
    counts = sorted({c for r in runs if (c := _train_items(r))})
    datasets = sorted({r["dataset"] for r in runs})
    measured = [", ".join(backbones)]
    measured += [", ".join(f"{s} px" for s in sizes)] if sizes else []
    measured += [f"{', '.join(f'{c:,}' for c in counts)} training items"] if counts else []
    measured.append(f"on {', '.join(datasets)}")
    differs = []
    if not _same_backbone(p, backbones):
        differs.append("backbone")
    if p.image_size and sizes and sizes != [p.image_size]:
        differs.append("image size")
    if datasets != [p.dataset]:
        differs.append(f"data (the paper used the full {p.dataset})")
    text = f"{p.setting()} -- measured: {'; '.join(measured)}"
    text += f" -- differs: {', '.join(differs)}" if differs else ""
    return text.replace("|", "/")


def _same_backbone(p, measured: list[str]) -> bool:
    """The measured rows use the paper's backbone: each measured name equals its `backbone_id`
    (a local folder by its last path part), or without one appears in its `backbone` text."""
    if p.backbone_id:
        return all(_norm(Path(b).name) == _norm(Path(p.backbone_id).name) for b in measured)
    return all(_norm(b) and _norm(b) in _norm(p.backbone) for b in measured)


def _image_size(record: dict) -> int | None:
    size = ((record.get("config") or {}).get("dataset") or {}).get("image_size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _train_items(record: dict) -> int | None:
    counts = (record.get("split_manifest") or {}).get("counts") or {}
    value = counts.get("train", record.get("n_train_items"))
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return np.nan


def _sig4(x: float) -> str:
    """4 significant digits (0.6585, 0.01987, 1.000): a regression check can read the change."""
    return f"{x:#.4g}"


def _zero(std: float) -> float:
    """A spread that is float noise (identical values averaged in another order) as 0."""
    return 0.0 if abs(std) < 1e-12 else std


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
    out["variant"] = out["variant"].fillna("")
    if "config" in df and df["config"].fillna("").astype(bool).any():
        out.insert(len(KEY), "config", df["config"].fillna(""))
    reported = is_reported(df)
    if reported.any():  # a published number was not measured over seeds here
        out["n_seeds"] = ["" if r else str(n) for n, r in zip(df["n_seeds"], reported)]
    if "leak" in df:
        out["leak"] = ["yes" if v is True else "" for v in df["leak"]]
    if NEAR_BEST in df and df[NEAR_BEST].fillna("").astype(bool).any():
        out[NEAR_BEST] = df[NEAR_BEST].fillna("")
    for m in metrics:
        mean, std = df[m], df[f"{m} std"]
        out[m] = [
            "" if pd.isna(a) else (_sig4(a) if pd.isna(b) else f"{_sig4(a)} ± {_sig4(_zero(b))}")
            for a, b in zip(mean, std)
        ]
    if "chance" in df and df["chance"].notna().any():
        out["chance"] = ["" if pd.isna(c) else _sig4(c) for c in df["chance"]]
    for column in BASELINES:
        if column in df and df[column].notna().any():
            out[column] = ["" if pd.isna(d) else f"{d:+#.4g}" for d in df[column]]
    if "notes" in df and df["notes"].fillna("").astype(bool).any():
        out["notes"] = df["notes"].fillna("")
    if reported.any():
        out["source"] = df["source"].fillna("")
    # numparse off: tabulate would turn "0.6000" into 0.6 and "+0.1500" into 0.15
    return out.to_markdown(index=False, disable_numparse=True)


def update_leaderboard(results_dir: Path, reported: list | None = None) -> pd.DataFrame:
    """Rebuild leaderboard.csv and leaderboard.md from every result under `results_dir`.

    With `reported` (published numbers, zsbench.reported) it also writes
    leaderboard-reported.csv / .md, the same table with the matching published rows added, and
    returns that one; leaderboard.csv stays the measured results alone.

    Serialised by a file lock; each file is replaced atomically, so a crash leaves the previous
    leaderboard intact.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(results_dir, os.W_OK):  # someone else's results: show, write nothing
        records, problems = load_checked_results(results_dir)
        for line in problems:
            print(f"warning: {line}", file=sys.stderr)
        return add_near_best(build_leaderboard(records, reported), results_dir)
    with FileLock(str(results_dir / ".leaderboard.lock")):
        records, problems = load_checked_results(results_dir)
        for line in problems:  # named and left out, never averaged in; the table still prints
            print(f"warning: {line}", file=sys.stderr)
        df = add_near_best(build_leaderboard(records), results_dir)
        write_text_atomic(results_dir / "leaderboard.csv", df.to_csv(index=False))
        write_text_atomic(results_dir / "leaderboard.md", _markdown_file(df))
        if reported is not None:
            df = add_near_best(build_leaderboard(records, reported), results_dir)
            write_text_atomic(results_dir / REPORTED_CSV, df.to_csv(index=False))
            write_text_atomic(results_dir / REPORTED_CSV.replace(".csv", ".md"), _markdown_file(df))
    return df


def add_near_best(board: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """The board with the `≈ best` column (zsbench.significance.near_best) after `seeds`:
    read from the per-query files beside the results, so it is added where the folder is
    known, and build_leaderboard stays a function of the records."""
    board = board.copy()
    flags = near_best(board, results_dir)
    where = list(board.columns).index("seeds") + 1 if "seeds" in board else len(board.columns)
    board.insert(where, NEAR_BEST, flags)
    return board


def near_best_note(df: pd.DataFrame) -> str:
    """The footnote that names the test behind `≈ best` ("" when the column is empty)."""
    return f"{NEAR_BEST_NOTE}." if NEAR_BEST in df and df[NEAR_BEST].astype(bool).any() else ""


def _markdown_file(df: pd.DataFrame) -> str:
    note = near_best_note(df)
    return format_table(df, max_metrics=99) + "\n" + (f"\n{note}\n" if note else "")


# ---------------------------------------------------------------- the leaderboard's flag

NEAR_BEST_ALPHA = 0.05
NEAR_BEST_RESAMPLES = 2_000
NEAR_BEST_NOTE = (
    "≈ best: 'best' is the group's best row by its headline metric; 'yes' a row not "
    f"significantly different from it (paired permutation test over queries, sign flips, "
    f"{NEAR_BEST_RESAMPLES} resamples, p >= {NEAR_BEST_ALPHA}; per-query values averaged over "
    "the seeds both rows have), 'no' one that is; empty where a row has no per-query values "
    "(older results, CIR) or the rows were scored on different queries"
)


def _per_query_index(results: Path) -> dict[tuple, dict[int, tuple[dict, str]]]:
    """(task, dataset, split, spec label, method, variant) -> seed -> (values, query order),
    for every SBIR result with a readable per-query file of the same run."""
    from zsbench.results import read_result, record_problem, result_files
    from zsbench.significance import per_query_path, read_per_query

    index: dict[tuple, dict[int, tuple[dict, str]]] = {}
    for path in result_files(Path(results)):
        pq = per_query_path(path)
        if not pq.exists():
            continue
        try:
            r = read_result(path)
            if record_problem(path, r) or r.get("status") != "ok" or r.get("task") != "sbir":
                continue
            values, meta = read_per_query(pq)
        except ZsbenchError:
            continue  # the leaderboard names unreadable results; a bad npz only loses the flag
        if meta.get("run_id") != r.get("run_id"):
            continue
        key = (
            r["task"], r["dataset"], r["split"], spec_label(r.get("spec")), r["method"],
            r.get("variant") or "default",
        )  # fmt: skip
        index.setdefault(key, {})[int(r["seed"])] = (values, meta.get("query_order_sha256"))
    return index


def near_best(board, results: Path, n_resamples: int = NEAR_BEST_RESAMPLES) -> list[str]:
    """The `≈ best` cell of every leaderboard row (NEAR_BEST_NOTE says what it means), in the
    board's order. Within each (task, dataset, split, spec) group the best measured row by
    the headline metric is compared with every other row by :func:`paired_test`."""
    from zsbench.significance import paired_test

    flags = [""] * len(board)
    if board.empty:
        return flags
    index = _per_query_index(results)
    reported = is_reported(board)
    position = {label: i for i, label in enumerate(board.index)}
    for _, rows in board[~reported].groupby(KEY[:4], sort=False):
        main = headline_metric(rows)
        if not main or rows[main].isna().all():
            continue
        best = rows[main].idxmax()
        per_row = {i: index.get(tuple(rows.loc[i, KEY])) for i in rows.index}
        if not per_row[best] or len(rows) < 2:
            continue
        flags[position[best]] = "best"
        for i in rows.index:
            if i == best or not per_row[i]:
                continue
            seeds = sorted(set(per_row[i]) & set(per_row[best]))
            usable = [
                s for s in seeds
                if main in per_row[i][s][0] and main in per_row[best][s][0]
                and per_row[i][s][1] == per_row[best][s][1]
            ]  # fmt: skip
            if not usable:
                continue
            try:
                with warnings.catch_warnings():  # a query without positives is NaN in every seed
                    warnings.simplefilter("ignore", RuntimeWarning)
                    a = np.nanmean(np.stack([per_row[i][s][0][main] for s in usable]), 0)
                    b = np.nanmean(np.stack([per_row[best][s][0][main] for s in usable]), 0)
                p = paired_test(a, b, n_resamples=n_resamples)["p_value"]
            except (ZsbenchError, ValueError):  # too few queries; arrays of other lengths
                continue
            flags[position[i]] = "yes" if p >= NEAR_BEST_ALPHA else "no"
    return flags


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
