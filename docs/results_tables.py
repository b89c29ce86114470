"""Print the `sketchy21`-protocol tables of docs/results.md from a results folder, so that the
page's numbers are generated from the result files rather than copied by hand.

The folder is the one the reference sweeps wrote (sweeps/reference.yaml with `--datasets
sketchy-mini`, and sweeps/reference-resnet50.yaml); every table is read from its result JSONs
and from the published numbers in zsbench/reported/sbir.yaml:

  python docs/results_tables.py --results-dir results > /tmp/tables.md

Tables: the default-spec grid per backbone (mean ± std over seeds, `vs frozen`, `vs centred`,
chance), the papers' own evaluators (each method under its paper's spec, beside frozen under
the same spec), the table beside the papers' numbers with the setting of each, and the time of
every cell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsbench.leaderboard import build_leaderboard  # noqa: E402
from zsbench.reported import load_reported  # noqa: E402
from zsbench.results import load_results  # noqa: E402

DATASET = "sketchy-mini"
ORDER = [
    "frozen", "frozen-centred", "supervised", "cvae", "caae", "sem-pcyc", "sem-pcyc-binary",
    "lcale", "cfsa", "doodle2search", "sketchgcn", "rpkd", "clip-zeroshot", "drcpl",
]  # fmt: skip
# the grid's configs: (label, the leaderboard's `config` cell)
BACKBONES = {
    "": "EfficientNet-Lite0",
    'model.backbone="resnet50"': "ResNet-50 (Keras ImageNet)",
    'model.clip="tiny"': "tiny random CLIP",
}
# the spec each method's paper evaluates with, and the metrics the paper prints
PAPER_SPEC = {
    "cvae": ("yelamarthi", ["mAP@200", "P@200"]),
    "caae": ("yelamarthi", ["mAP@200", "P@200"]),
    "sem-pcyc": ("sem-pcyc", ["mAP@all", "P@100"]),
    "sem-pcyc-binary": ("sem-pcyc", ["mAP@all", "P@100"]),
    "rpkd": ("sake", ["mAP@all", "P@100"]),
    "drcpl": ("sake", ["mAP@all", "P@100"]),
}


def cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def grid(board: pd.DataFrame) -> pd.DataFrame:
    rows = board[(board["dataset"] == DATASET) & board["config"].isin(BACKBONES)].copy()
    rows["backbone"] = rows["config"].map(BACKBONES)
    rows["_order"] = rows["method"].map(lambda m: ORDER.index(m) if m in ORDER else len(ORDER))
    return rows.sort_values(["_order"])


def default_table(rows: pd.DataFrame) -> list[str]:
    out = [
        "| backbone | method | n seeds | mAP@all | P@100 | mAP@all − frozen | − centred |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    d = rows[rows["spec"] == "default"]
    chance = d["chance"].dropna()
    if len(chance):
        out.append(f"| | random ranking (expected) | | {chance.iloc[0]:.3f} | | | |")
    for config, label in BACKBONES.items():
        for _, r in d[d["config"] == config].iterrows():
            vs = "" if pd.isna(r["vs frozen"]) else f"{r['vs frozen']:+.3f}"
            vc = "" if pd.isna(r.get("vs centred")) else f"{r['vs centred']:+.3f}"
            out.append(
                f"| {label} | {r['method']} | {int(r['n_seeds'])} | "
                f"{cell(r['mAP@all'], r['mAP@all std'])} | {cell(r['P@100'], r['P@100 std'])} "
                f"| {vs} | {vc} |"
            )
    return out


def paper_spec_table(rows: pd.DataFrame) -> list[str]:
    out = [
        "| method | paper's evaluator (spec) | backbone | method's numbers | frozen, same spec |",
        "|---|---|---|---|---|",
    ]
    for method, (spec, metrics) in PAPER_SPEC.items():
        mine = rows[(rows["method"] == method) & (rows["spec"] == spec)]
        for _, r in mine.iterrows():
            frozen = rows[
                (rows["method"] == "frozen")
                & (rows["spec"] == spec)
                & (rows["config"] == (r["config"] if "backbone" in r["config"] else ""))
            ]
            text = ", ".join(f"{m} {cell(r[m], r[m + ' std'])}" for m in metrics)
            ftext = ", ".join(f"{m} {frozen.iloc[0][m]:.3f}" for m in metrics if len(frozen))
            out.append(
                f"| {method} ({int(r['n_seeds'])} seeds) | `{spec}` | {r['backbone']} | {text} "
                f"| {ftext} |"
            )
    return out


def beside_papers(rows: pd.DataFrame, records: list[dict]) -> list[str]:
    """Each method's zsbench number under its paper's evaluator beside the paper's number on
    `sketchy21` (zsbench/reported/sbir.yaml), the settings of both in the same row."""
    reported = [p for p in load_reported() if p.task == "sbir"]
    out = [
        "| method | zsbench: spec, numbers (backbone) | zsbench setting "
        "| paper: numbers | paper setting, source |",
        "|---|---|---|---|---|",
    ]
    setting = {}
    for r in records:
        if r.get("dataset") == DATASET and r.get("status") == "ok":
            counts = (r.get("split_manifest") or {}).get("counts") or {}
            size = (r.get("config") or {}).get("dataset", {}).get("image_size")
            setting[r["method"]] = (
                f"104 x (25 photos + 25 sketches), {counts.get('train')} train items; "
                f"gallery {counts.get('gallery')} photos, 100 a class; {size} px"
            )
    for method in ORDER[2:]:  # frozen and supervised have no paper
        papers = [
            p
            for p in reported
            if p.method == method and p.dataset == "sketchy" and p.split == "sketchy21"
        ]
        spec = papers[0].spec if papers else PAPER_SPEC.get(method, ("default",))[0]
        metrics = [p.metric for p in papers] or PAPER_SPEC.get(method, ("", ["mAP@all", "P@100"]))[
            1
        ]
        mine = rows[(rows["method"] == method) & (rows["spec"] == spec)]
        if mine.empty:
            continue
        ours = "; ".join(
            ", ".join(f"{m} {r[m]:.3f}" for m in metrics if m in r and pd.notna(r[m]))
            + f" ({r['backbone']})"
            for _, r in mine.iterrows()
        )
        if papers:
            p = papers[0]
            theirs = ", ".join(f"{q.metric} {q.value:.3f}" for q in papers)
            src = f"{p.source['authors']} {p.source['year']}, read from {p.read_from.split(',')[0]}"
            where = f"{p.backbone}; {p.training_data}; {src}"
        else:
            elsewhere = sorted({f"{q.dataset}/{q.split}" for q in reported if q.method == method})
            theirs = "none found on sketchy21"
            where = (
                ("reported elsewhere: " + ", ".join(elsewhere)) if elsewhere else "no number found"
            )
        out.append(
            f"| {method} | `{spec}`: {ours} | {setting.get(method, '')} | {theirs} | {where} |"
        )
    return out


def times_table(records: list[dict]) -> list[str]:
    per: dict[str, list[float]] = {}
    for r in records:
        if r.get("dataset") != DATASET or r.get("status") != "ok":
            continue
        if (r.get("provenance") or {}).get("respecified_from") or r.get("scored_with"):
            continue  # a re-scored sibling: no time of its own
        total = (r.get("timings") or {}).get("total_s")
        if total is None:
            continue
        key = r["method"] + (" (ResNet-50)" if "resnet50" in str(r.get("config_diff")) else "")
        per.setdefault(key, []).append(float(total))
    out = ["| method | cells | time per cell (s, mean) | sum (s) |", "|---|---:|---:|---:|"]
    for key in sorted(per, key=lambda k: (ORDER.index(k.split()[0]), k)):
        v = per[key]
        out.append(f"| {key} | {len(v)} | {np.mean(v):.0f} | {sum(v):.0f} |")
    total = sum(sum(v) for v in per.values())
    n_cells = sum(len(v) for v in per.values())
    out.append(f"| all | {n_cells} | | {total:.0f} ({total / 3600:.1f} h) |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-dir", default="results", type=Path)
    args = ap.parse_args()
    records = load_results(args.results_dir)
    rows = grid(build_leaderboard(records))
    for title, lines in (
        ("Default spec", default_table(rows)),
        ("The papers' evaluators", paper_spec_table(rows)),
        ("Beside the papers' numbers", beside_papers(rows, records)),
        ("Time per cell", times_table(records)),
    ):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
