"""The dashboard: one self-contained static HTML page built from the result files.

`zsbench report` writes `<results_dir>/report.html` next to leaderboard.csv. The page fetches
nothing and runs no JavaScript (inline CSS, charts as inline SVG, thumbnails as base64 data
URIs), so it can be attached to a CI run, mailed or opened from a file share as it is.

Sections, in reading order: the leaderboard per (task, dataset, split); per dataset a bar chart
of the main metric with error bars over seeds; precision-recall curves; retrieval grids. Like
the leaderboard, the page is a pure function of the result files (status "ok" only), plus the
papers' published numbers (zsbench.reported), shown as marked rows of the leaderboard tables
next to measured rows of the same dataset family, split and spec only (never in the charts, the
bold best values or `vs frozen`). The last
two sections come from the optional `seed<N>.extras.json` beside each result (zsbench.extras);
a run without one, or with an unreadable one, is named in a note, never an error.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import html
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from zsbench import __version__
from zsbench.errors import ZsbenchError
from zsbench.leaderboard import (
    BASELINES,
    KEY,
    NEAR_BEST,
    add_near_best,
    build_leaderboard,
    headline_metric,
    is_reported,
    metric_columns,
    near_best_note,
)
from zsbench.results import extras_path, read_result, result_files, write_text_atomic
from zsbench.results import results_dir as resolve_results_dir

THUMB_PX = 96
MAX_QUERIES = 5
TOP_K = 10
# Colour-blind-safe (Okabe-Ito) first, then Paul Tol's muted scheme: one distinct colour for
# each registered method (tests/test_report.py checks there are enough); a method keeps its
# colour in every chart.
PALETTE = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9",
    "#D55E00", "#F0E442", "#000000", "#7F7F7F", "#8C564B",
    "#332288", "#117733", "#882255", "#44AA99", "#999933",
    "#AA4499", "#88CCEE", "#DDCC77", "#CC6677", "#661100",
]  # fmt: skip


@dataclass
class Run:
    """One result record with its extras ({} when absent) and why they are absent."""

    record: dict
    extras: dict = field(default_factory=dict)
    note: str = ""


# ---------------------------------------------------------------- public API


def write_report(
    results_dir: str | Path, output: str | Path | None = None, reported: bool | list = True
) -> Path:
    """Write the report for `results_dir` (default `<results_dir>/report.html`) atomically.

    `reported`: True shows the packaged published numbers (zsbench.reported) beside matching
    measured rows, False none, a list those records."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ZsbenchError(
            f"Results folder {root} does not exist. Run `zsbench bench ... --results-dir {root}` "
            "first, or pass the folder that holds your results with --results-dir."
        )
    out = Path(output) if output is not None else root / "report.html"
    if reported is True:
        from zsbench.reported import load_reported

        reported = load_reported()
    page = render_report(load_runs(root), root, reported=reported or None)
    # pure ASCII (non-ASCII as character references): correct whatever the locale encoding
    write_text_atomic(out, page.encode("ascii", "xmlcharrefreplace").decode("ascii"))
    out.chmod(0o644)  # a page to share; the temp file behind the atomic write was 0600
    return out


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(resolve_results_dir(args.results_dir), args.output)
    print(f"Wrote {path}")
    return 0


def report_main(argv: list[str] | None = None) -> int:
    """`zsbench report [--results-dir DIR] [--output FILE]`; exit 2 with the fix on user error."""
    from zsbench.cli import main

    return main(["report", *(sys.argv[1:] if argv is None else argv)])


# ---------------------------------------------------------------- loading


def load_runs(root: Path) -> list[Run]:
    """Every result with status "ok" under `root`, each with its extras if readable."""
    runs = []
    for path in result_files(root):
        record = read_result(path)
        if record.get("status") == "ok":
            runs.append(_with_extras(record, extras_path(path)))
    return runs


def _with_extras(record: dict, path: Path) -> Run:
    if not path.exists():
        return Run(record, note="no extras file (a result from before extras existed)")
    try:
        extras = json.loads(path.read_text())
        if not isinstance(extras, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return Run(record, note=f"unreadable extras file {path} ({err})")
    if extras.get("run_id") != record.get("run_id"):  # a write interrupted between the two
        return Run(record, note=f"{path} belongs to another run (an interrupted write); no curves")
    return Run(record, extras=extras)


# ---------------------------------------------------------------- page


def render_report(
    runs: list[Run], root: Path, now: dt.datetime | None = None, reported: list | None = None
) -> str:
    """The whole page as a string (a function of `runs`, `root` and the published numbers
    `reported` only, plus the time)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    full = add_near_best(build_leaderboard([r.record for r in runs], reported), root)
    board = full[~is_reported(full)]  # the measured rows: charts, colours, counts
    methods = sorted(set(board["method"]))
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    body = [header_section(root, now, runs, board)]
    if board.empty:
        body.append(
            f'<p class="empty">No results in {_e(root.resolve())}. Run <code>zsbench bench '
            f"--method frozen --results-dir {_e(root)}</code> (or <code>make bench</code>) "
            "first, then <code>zsbench report</code> again.</p>"
        )
    else:
        body += [
            leaderboard_section(full),
            bar_chart_section(board, colours),
            pr_section(runs, colours),
            grid_section(runs),
        ]
    return PAGE.format(css=CSS, body="\n".join(body))


def header_section(root: Path, now: dt.datetime, runs: list[Run], board: pd.DataFrame) -> str:
    stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        "<header><h1>zsbench report</h1>"
        f"<p>Generated {_e(stamp)} from <code>{_e(Path(root).resolve())}</code> by zsbench "
        f"{_e(__version__)}: {len(runs)} result(s), {board['method'].nunique()} method(s). "
        "Built from the result files (status ok), like leaderboard.csv.</p></header>"
    )


# ---------------------------------------------------------------- leaderboard


def _cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def _gap(value) -> str:
    """The signed gap to the frozen baseline ("" where there is none)."""
    return "" if value is None or pd.isna(value) else f"{value:+.4f}"


def leaderboard_section(board: pd.DataFrame) -> str:
    parts = ['<section id="leaderboard"><h2>Leaderboard</h2>']
    paper_rows = is_reported(board)
    for (task, dataset, split), rows in board.groupby(KEY[:3], sort=True):
        metrics = metric_columns(rows)
        reported = paper_rows[rows.index]
        near = bool(NEAR_BEST in rows and rows[NEAR_BEST].astype(bool).any())
        columns = ["method", "spec", "n_seeds", "seeds", *[NEAR_BEST] * near, "leak", *metrics]
        columns += [*BASELINES, "notes"]
        head = "".join(f"<th>{_e(h)}</th>" for h in columns + ["source"] * bool(reported.any()))
        # best among the measured rows only: a paper's number is another setting
        best = {m: rows.loc[~reported, m].max() for m in metrics}
        body = []
        for i, r in rows.iterrows():
            if reported[i]:
                body.append(_reported_row(r, metrics, near))
                continue
            leak = {True: '<td class="leak">yes</td>', False: "<td>no</td>"}.get(
                r["leak"], '<td title="not recorded">?</td>'
            )
            cells = "".join(
                f"<td{' class=best' if r[m] == best[m] else ''}>{_e(_cell(r[m], r[m + ' std']))}"
                "</td>"
                for m in metrics
            )
            body.append(
                f'<tr class="row"><td class="method"{_config_title(r)}>{_e(method_label(r))}'
                f"</td><td>{_e(r['spec'])}"
                f"</td><td>{r['n_seeds']}</td><td>{_e(r['seeds'])}</td>"
                + (f"<td>{_e(r[NEAR_BEST])}</td>" if near else "")
                + f"{leak}{cells}"
                + "".join(f"<td>{_e(_gap(r.get(c)))}</td>" for c in BASELINES)
                + f'<td class="notes">{_e(r.get("notes") or "")}</td>'
                + ("<td></td>" if reported.any() else "")
                + "</tr>"
            )
        parts.append(
            f"<h3>{_e(task)} · {_e(dataset)} · {_e(split)}</h3>"
            f'<table class="leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    paper = (
        " Rows marked <em>[paper]</em> (shaded) are numbers published in the paper named in "
        "<em>source</em>, shown beside our measured rows of the same dataset, split and metric "
        "spec; their notes give the paper's setting and what differs from ours. They are not "
        "measured here, not ranked, and take no part in the best values or vs frozen."
        if paper_rows.any()
        else ""
    )
    parts.append(
        '<p class="note">mean ± std over seeds (std with ddof=1, empty for one seed); best per '
        "column in bold; leak = the backbone's pretraining classes overlap the unseen classes; "
        "vs frozen = the main metric minus the frozen baseline's on the same data; vs centred "
        "= the same against frozen-centred (the frozen features centred per domain by "
        "seen-class training means, the stronger no-training reference). "
        f"Per-class means are in leaderboard.csv.{paper}"
        + (f" {_e(near_best_note(board))}" if near_best_note(board) else "")
        + "</p></section>"
    )
    return "\n".join(parts)


def method_label(r: pd.Series) -> str:
    """The method, and its variant when the row is not the default config (zsbench.identity)."""
    variant = r.get("variant")
    if not isinstance(variant, str) or variant in ("", "default"):
        return str(r["method"])
    return f"{r['method']} [{variant}]"


def _config_title(r: pd.Series) -> str:
    config = r.get("config")
    return f' title="{_e(config)}"' if isinstance(config, str) and config else ""


def _reported_row(r: pd.Series, metrics: list[str], near: bool = False) -> str:
    """A published number's row: marked, no seeds, no std, no leak flag, no vs frozen."""
    cells = "".join(f"<td>{'' if pd.isna(r[m]) else f'{r[m]:.4f}'}</td>" for m in metrics)
    return (
        f'<tr class="row reported"><td class="method">{_e(r["method"])}</td>'
        f"<td>{_e(r['spec'])}</td><td></td><td></td>{'<td></td>' * near}<td></td>{cells}"
        + "<td></td>"
        * len(BASELINES)
        + f'<td class="notes">{_e(r.get("notes") or "")}</td>'
        f'<td class="source">{_e(r.get("source") or "")}</td></tr>'
    )


# ---------------------------------------------------------------- bar charts


def bar_chart_section(board: pd.DataFrame, colours: dict[str, str]) -> str:
    parts = ['<section id="charts"><h2>Main metric per dataset</h2>']
    for (task, dataset), rows in board.groupby(KEY[:2], sort=True):
        metric = headline_metric(rows)
        if metric is None:
            continue
        rows = rows[rows[metric].notna()]
        # the split / spec join the label only when the dataset has more than one
        extra = [c for c in ("split", "spec") if rows[c].nunique() > 1]
        labels = [" · ".join([method_label(r), *(r[c] for c in extra)]) for _, r in rows.iterrows()]
        # one dashed line at the random ranking's expected value, when the bars share it
        chances = rows["chance"].dropna().unique() if "chance" in rows else []
        chance = float(chances[0]) if len(chances) == 1 else None
        parts.append(
            f'<figure class="bars"><figcaption>{_e(task)} · {_e(dataset)}: {_e(metric)} '
            "(error bars: std over seeds)</figcaption>"
            + bar_chart_svg(
                labels,
                rows[metric].tolist(),
                rows[f"{metric} std"].tolist(),
                rows["n_seeds"].tolist(),
                [colours[m] for m in rows["method"]],
                metric,
                chance,
            )
            + "</figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _nice_top(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above `value` (an axis end)."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(value))
    return float(next(s * exp for s in (1, 2, 2.5, 5, 10) if s * exp >= value - 1e-12))


def bar_chart_svg(labels, means, stds, n_seeds, colours, metric: str, chance=None) -> str:
    h, top, bottom = 320, 24, 110
    right = 20 if chance is None else 56  # room for the chance line's label
    slot = min(110, 680 / max(len(labels), 1))  # few bars stay narrow, many fit in 760 px
    # labels are rotated by 30 degrees and end under their bar: a long first label reaches
    # left of the axis (about 6.2 px per character at 11 px, times cos 30 degrees)
    full = [f"{label} (n={n})" for label, n in zip(labels, n_seeds)]
    left = max([60] + [len(s) * 5.4 - (i + 0.5) * slot + 8 for i, s in enumerate(full)])
    w = left + right + slot * len(labels)
    tops = [m + (0 if pd.isna(s) else s) for m, s in zip(means, stds)]
    y_max = _nice_top(max([*tops, chance or 0]))

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - v / y_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h}" role="img">']
    for i in range(6):  # 5 intervals of a 1/2/2.5/5 x 10^k top are round numbers
        v = y_max * i / 5
        out.append(
            f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
        )
    for i, (label, m, s, n, c) in enumerate(zip(labels, means, stds, n_seeds, colours)):
        x0 = left + i * slot + slot * 0.2
        bw, xc = slot * 0.6, left + (i + 0.5) * slot
        out.append(
            f'<rect x="{x0:.1f}" y="{y(m):.1f}" width="{bw:.1f}" height="{y(0) - y(m):.1f}" '
            f'fill="{c}"><title>{_e(label)}: {_e(_cell(m, s))} (n={n})</title></rect>'
        )
        if not pd.isna(s) and s > 0:
            lo, hi = y(max(m - s, 0)), y(m + s)
            out.append(
                f'<path d="M{xc:.1f} {lo:.1f}V{hi:.1f}M{xc - 6:.1f} {hi:.1f}h12'
                f'M{xc - 6:.1f} {lo:.1f}h12" class="err"/>'
            )
        ytext = y(m + (0 if pd.isna(s) else s)) - 5
        out.append(f'<text x="{xc:.1f}" y="{ytext:.1f}" text-anchor="middle">{m:.3f}</text>')
        out.append(
            f'<text transform="translate({xc:.1f},{y(0) + 14:.1f}) rotate(-30)" '
            f'text-anchor="end">{_e(label)} (n={n})</text>'
        )
    if chance is not None:
        out.append(
            f'<line x1="{left}" x2="{w - right}" y1="{y(chance):.1f}" y2="{y(chance):.1f}" '
            f'class="chance"><title>random ranking (expected): {chance:.4f}</title></line>'
            f'<text x="{w - right + 4}" y="{y(chance) + 4:.1f}">chance</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{w - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" class="axis"/>'
        f'<text transform="translate(14,{(top + h - bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{_e(metric)}</text></svg>'
    )
    return "".join(out)


# ---------------------------------------------------------------- precision-recall


def _pr_curve(extras: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(recall, precision) sorted by recall, or None when absent or malformed."""
    curve = extras.get("pr_curve")
    try:
        r = np.asarray(curve["recall"], dtype=float)
        p = np.asarray(curve["precision"], dtype=float)
    except (TypeError, KeyError, ValueError):
        return None
    if r.ndim != 1 or r.shape != p.shape or len(r) < 2:
        return None
    order = np.argsort(r)
    return r[order], p[order]


def mean_pr_curves(runs: list[Run]) -> tuple[dict[str, tuple], list[str]]:
    """{method: (recall, mean precision over seeds)} of one split, and notes on the rest.

    Curves are averaged on the first run's recall grid (the 11 levels; np.interp is the
    identity there); NaN points (no query reached them) are left out of the line.
    """
    curves: dict[str, list] = {}
    missing: list[tuple[str, str]] = []
    for run in sorted(runs, key=lambda r: (r.record["method"], r.record["seed"])):
        method, seed = run.record["method"], run.record["seed"]
        curve = _pr_curve(run.extras)
        if curve is None:
            missing.append((f"{method} seed {seed}", run.note or "no pr_curve in the extras file"))
        else:
            curves.setdefault(method, []).append(curve)
    means = {}
    for method, cs in curves.items():
        grid = cs[0][0]
        stack = np.stack([np.interp(grid, r, p) for r, p in cs])
        means[method] = (grid, np.nanmean(stack, axis=0), len(cs))
    return means, _missing_notes(missing, "PR curve")


def pr_section(runs: list[Run], colours: dict[str, str]) -> str:
    parts = ['<section id="pr"><h2>Precision-recall (interpolated, mean over seeds)</h2>']
    for key, group in _by_split(runs).items():
        curves, notes = mean_pr_curves(group)
        parts.append(f"<h3>{_e(' · '.join(key))}</h3>")
        if curves:
            parts.append(f'<figure class="pr">{pr_svg(curves, colours)}</figure>')
        parts += [f'<p class="note missing">{_e(n)}</p>' for n in notes]
    parts.append("</section>")
    return "\n".join(parts)


def pr_svg(curves: dict[str, tuple], colours: dict[str, str]) -> str:
    w, h, left, top, size = 620, 340, 50, 14, 280

    def xy(r: float, p: float) -> str:
        return f"{left + size * r:.1f},{top + size * (1 - p):.1f}"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    for i in range(6):
        v = i / 5
        out.append(
            f'<line x1="{left}" x2="{left + size}" y1="{top + size * (1 - v):.1f}" '
            f'y2="{top + size * (1 - v):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{top + size * (1 - v) + 4:.1f}" text-anchor="end">{v:.1f}'
            f'</text><text x="{left + size * v:.1f}" y="{top + size + 16}" '
            f'text-anchor="middle">{v:.1f}</text>'
        )
    for j, (method, (r, p, n)) in enumerate(sorted(curves.items())):
        ok = np.isfinite(p)
        points = " ".join(xy(a, b) for a, b in zip(r[ok], p[ok]))
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colours.get(method, "#333")}" '
            f'stroke-width="2.5"><title>{_e(method)} (n={n})</title></polyline>'
            f'<rect x="{left + size + 20}" y="{top + 18 * j}" width="14" height="10" '
            f'fill="{colours.get(method, "#333")}"/><text x="{left + size + 40}" '
            f'y="{top + 18 * j + 10}">{_e(method)} (n={n})</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" class="frame"/>'
        f'<text x="{left + size / 2}" y="{h - 4}" text-anchor="middle">recall</text>'
        f'<text transform="translate(12,{top + size / 2}) rotate(-90)" '
        'text-anchor="middle">precision</text></svg>'
    )
    return "".join(out)


# ---------------------------------------------------------------- retrieval grids


@functools.lru_cache(maxsize=4096)
def thumbnail_uri(path: str, px: int = THUMB_PX) -> str | None:
    """A JPEG data URI of the image at `path`, at most `px` on a side; None if unreadable.

    Transparent sketches are put on white first (an RGB conversion would make them black).
    """
    try:
        with Image.open(path) as im:
            im.thumbnail((px, px))
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                flat = Image.new("RGB", im.size, "white")
                flat.paste(im, mask=im.getchannel("A"))
                im = flat
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=85)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tile(path: str, caption: str, cls: str) -> str:
    uri = thumbnail_uri(str(path))
    title = _e(f"{caption}: {path}")
    if uri is None:
        img = f'<div class="noimg" title="{title}">image not found</div>'
    else:
        img = f'<img src="{uri}" alt="{_e(caption)}" title="{title}">'
    return f'<figure class="tile {cls}">{img}<figcaption>{_e(caption)}</figcaption></figure>'


def grid_html(examples: list) -> str:
    """Rows of query then top-K tiles; correct results framed green, wrong ones red."""
    rows = []
    for ex in [e for e in examples if isinstance(e, dict)][:MAX_QUERIES]:
        label = str(ex.get("label", "?"))
        tiles = [_tile(ex.get("query", ""), f"query: {label}", "query")]
        top = [t for t in ex.get("top") or [] if isinstance(t, dict)]
        for rank, item in enumerate(top[:TOP_K], start=1):
            correct = item.get("correct", item.get("label") == label)
            tiles.append(
                _tile(item.get("path", ""), f"{rank}. {item.get('label', '?')}",
                      "correct" if correct else "wrong")
            )  # fmt: skip
        rows.append(f'<div class="grid-row">{"".join(tiles)}</div>')
    return "".join(rows)


def grid_section(runs: list[Run]) -> str:
    parts = [
        '<section id="grids"><h2>Retrieval examples</h2><p class="note">Unseen-class sketch, '
        "then its top-10 photos: green frame = same class, red = another class.</p>"
    ]
    for key, group in _by_split(runs).items():
        parts.append(f"<h3>{_e(' · '.join(key))}</h3>")
        by_method: dict[str, list[Run]] = {}
        missing: list[tuple[str, str]] = []
        for run in sorted(group, key=lambda r: r.record["seed"]):
            by_method.setdefault(run.record["method"], []).append(run)
        for method, method_runs in sorted(by_method.items()):
            # the lowest seed that has examples stands for the method
            shown = next((r for r in method_runs if _examples(r.extras)), None)
            if shown is None:
                missing.append((method, method_runs[0].note or "no examples in the extras file"))
                continue
            parts.append(
                f'<div class="grid" data-method="{_e(method)}"><h4>{_e(method)} (seed '
                f"{shown.record['seed']})</h4>{grid_html(_examples(shown.extras))}</div>"
            )
        parts += [f'<p class="note missing">{_e(n)}</p>' for n in _missing_notes(missing, "grid")]
    parts.append("</section>")
    return "\n".join(parts)


# ---------------------------------------------------------------- helpers and template


def _examples(extras: dict) -> list:
    examples = extras.get("examples")
    return examples if isinstance(examples, list) else []


def _missing_notes(missing: list[tuple[str, str]], what: str) -> list[str]:
    """One line per reason: 'No <what> (<reason>): a, b' (many old runs share one reason)."""
    by_reason: dict[str, list[str]] = {}
    for who, reason in missing:
        by_reason.setdefault(reason, []).append(who)
    return [f"No {what} ({reason}): {', '.join(who)}" for reason, who in by_reason.items()]


def _by_split(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        r = run.record
        groups.setdefault((r["task"], r["dataset"], r["split"]), []).append(run)
    return dict(sorted(groups.items()))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { margin: 0 0 4px; } h2 { border-bottom: 2px solid #ddd; margin-top: 32px; }
code { background: #f3f3f3; padding: 1px 4px; }
table.leaderboard { border-collapse: collapse; margin: 8px 0 16px; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 4px 10px; }
table.leaderboard th { background: #eef3f8; }
table.leaderboard tbody tr:nth-child(even) { background: #fafafa; }
td.best { font-weight: bold; } td.leak { color: #b00; font-weight: bold; }
td.method { font-family: monospace; }
table.leaderboard tr.reported, table.leaderboard tbody tr.reported:nth-child(even) {
  background: #fff4d6; font-style: italic; }
td.source { font-size: 12px; }
.note { color: #555; font-size: 13px; } .missing { color: #8a6d00; }
.empty { font-size: 18px; padding: 16px; background: #fff4d6; border: 1px solid #e0c060; }
svg text { font-size: 11px; fill: #222; } svg .grid { stroke: #e3e3e3; }
svg .axis { stroke: #333; } svg .err { stroke: #222; stroke-width: 1.5; fill: none; }
svg .chance { stroke: #b00; stroke-dasharray: 5 4; }
svg .frame { fill: none; stroke: #333; }
figure { margin: 8px 0; } figcaption { font-weight: 600; }
.grid-row { display: flex; gap: 6px; margin: 6px 0; align-items: flex-start; }
.tile { margin: 0; width: 104px; text-align: center; }
.tile img, .tile .noimg { width: 96px; height: 96px; object-fit: contain; border: 4px solid #999;
  background: #fff; display: block; }
.tile .noimg { font-size: 11px; color: #777; line-height: 96px; background: #eee; }
.tile figcaption { font-weight: normal; font-size: 11px; overflow: hidden; white-space: nowrap; }
.tile.query img, .tile.query .noimg { border-color: #0072B2; margin-right: 14px; }
.tile.correct img, .tile.correct .noimg { border-color: #1a9e3a; }
.tile.wrong img, .tile.wrong .noimg { border-color: #d62728; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zsbench report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{css}</style></head>
<body>
{body}
</body></html>
"""


if __name__ == "__main__":
    sys.exit(report_main())
