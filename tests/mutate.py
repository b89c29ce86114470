"""`make mutate`: mutation testing of the metric core (zsbench/metrics/, zsbench/evaluation.py).

Runs mutmut (configured in pyproject.toml, [tool.mutmut]) from a fresh ``mutants/`` folder,
then writes a report of every mutant that was not killed, marks the ones listed as equivalent
in tests/mutation_equivalent.toml (with the reason given there), and exits 1 when the score

    score = (killed + timeout) / (tested - equivalent)

is below ``--min-score`` (default 95 %), or 2 when mutmut itself fails. A mutant that timed
out is run a second time and keeps that verdict: on a loaded machine mutmut's wall-clock
limit can stop a mutant before its tests finish.

``--sample N``: test a fixed sample of N mutants instead of all (every (total/N)-th mutant in
name order, the same sample for the same code); CI runs a sample (tests/README.md).
``--only GLOB`` (repeatable): test only the mutants whose name matches, e.g. every mutant of
the functions that changed since a full run (``'zsbench.metrics.cir.x_ap_at_k__mutmut_*'``).
``--only-from FILE``: the same, one name or glob per line (e.g. the survivors of a run).
``--report-only``: no run; rewrite the report from the statuses already in ``mutants/`` (after
editing tests/mutation_equivalent.toml).

Usage: python tests/mutate.py [--sample N] [--only GLOB ...] [--only-from FILE] [--jobs J]
       [--min-score 95] [--report PATH]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mutmut depends on toml there
    import toml as tomllib

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "tests" / "mutation_equivalent.toml"
DETECTED = {"killed", "timeout", "segfault"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def _mutated_files(cfg: dict) -> list[Path]:
    files = []
    for src in cfg["source_paths"]:
        for path in sorted((ROOT / src).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if any(fnmatch.fnmatch(str(rel), p) for p in cfg["only_mutate"]):
                files.append(rel)
    return files


def all_mutant_names(cfg: dict) -> list[str]:
    """Every mutant mutmut generates for the configured files, in name order."""
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    names = []
    for rel in _mutated_files(cfg):
        mutated = mutate_file_contents(str(rel), (ROOT / rel).read_text())
        names += [get_mutant_name(rel, n) for n in mutated.mutant_names]
    return sorted(names)


def fixed_sample(names: list[str], n: int) -> list[str]:
    """Every (len/n)-th name: a sample that depends only on the code."""
    if n >= len(names):
        return names
    return [names[(i * len(names)) // n] for i in range(n)]


def _results(cfg: dict) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    out = {}
    for rel in _mutated_files(cfg):
        meta = ROOT / "mutants" / (str(rel) + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            out.update({k: status_by_exit_code[v] for k, v in codes.items()})
    return out


def _diff(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        lines = get_diff_for_mutant(name).splitlines()
    finally:
        os.chdir(cwd)
    return "\n".join(ln for ln in lines if ln[:1] in "-+" and ln[:3] not in ("---", "+++"))


def _equivalents() -> list[tuple[str, str, str]]:
    """(function, mutated line, reason) from tests/mutation_equivalent.toml."""
    data = tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    out = []
    for group in data.get("equivalent", []):
        for entry in group["mutants"]:
            function, _, line = entry.partition(": ")
            out.append((function, line.strip(), group["reason"]))
    return out


def _equivalent_reason(name: str, diff: str, table) -> str | None:
    function = name.partition("__mutmut_")[0]
    added = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+")]
    if not added:  # a pure deletion: its entry names the deleted line, prefixed with '-'
        added = ["-" + ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-")]
    for fn, line, reason in table:
        if fn == function and line in added:
            return reason
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sample", type=int, default=0, help="test N mutants (0: all)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GLOB",
        help="test only mutants whose name matches (repeatable)",
    )
    p.add_argument(
        "--only-from",
        metavar="FILE",
        help="like --only, one name or glob per line of FILE (e.g. the survivors of a run)",
    )
    p.add_argument("--report-only", action="store_true", help="no run: report what is there")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--min-score", type=float, default=95.0)
    p.add_argument("--report", default=str(ROOT / "mutants" / "report.md"))
    args = p.parse_args(argv)
    listed = []
    if args.only_from:
        listed = [ln.strip() for ln in Path(args.only_from).read_text().splitlines() if ln.strip()]
        if not listed:
            p.error(f"--only-from {args.only_from}: the file lists no mutant")
    patterns = [*args.only, *listed]  # --only as typed stays in args.only, for the report
    os.chdir(ROOT)
    cfg = _config()

    if not args.report_only:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    names = all_mutant_names(cfg)
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in patterns)]
        if not names:
            print(f"no mutant matches {patterns}", file=sys.stderr)
            return 2
    chosen = fixed_sample(names, args.sample) if args.sample else names
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)  # mutmut puts mutants/ first; nothing may shadow it
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut), "run", "--max-children", str(args.jobs)]
    if args.sample or patterns:
        cmd += chosen
    (ROOT / "mutants").mkdir(exist_ok=True)
    t0, rc = time.time(), 0
    retried = 0
    chosen_set = set(chosen)
    if not args.report_only:
        with open(ROOT / "mutants" / "mutmut.log", "w") as log:
            rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            # mutmut's wall-clock limit is half its CPU limit: on a loaded machine a mutant the
            # tests would kill can time out instead. Each timeout is run once more (a named
            # mutant is always re-run) and keeps the verdict of that second run.
            timeouts = [k for k, v in _results(cfg).items() if v == "timeout" and k in chosen_set]
            if rc == 0 and timeouts:
                retried = len(timeouts)
                log.write(f"\n# re-running {retried} timeout(s)\n")
                log.flush()
                rc = subprocess.call(
                    [*cmd[:4], *timeouts], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
    seconds = time.time() - t0
    if rc != 0:
        print(f"mutmut failed (exit {rc}); see mutants/mutmut.log", file=sys.stderr)
        return 2

    status = _results(cfg)
    status = {k: v for k, v in status.items() if k in chosen_set}
    # an unfinished run (stopped, or reported with --report-only midway): score what was tested
    pending = sum(v == "not checked" for v in status.values())
    status = {k: v for k, v in status.items() if v != "not checked"}
    table = _equivalents()
    counts: dict[str, int] = {}
    for v in status.values():
        counts[v] = counts.get(v, 0) + 1
    detected = sum(n for s, n in counts.items() if s in DETECTED)
    missed = sorted(k for k, v in status.items() if v not in DETECTED)
    rows, n_equivalent = [], 0
    for name in missed:
        diff = _diff(name)
        reason = _equivalent_reason(name, diff, table)
        n_equivalent += reason is not None
        rows.append((name, status[name], reason, diff))
    tested = len(status)
    score = 100.0 * detected / max(tested - n_equivalent, 1)
    raw = 100.0 * detected / max(tested, 1)
    scope = f"fixed sample of {len(chosen)} of {len(names)}" if args.sample else f"all {len(names)}"
    if patterns:
        scope += " matching " + (
            " ".join(patterns) if len(patterns) <= 4 else f"{len(patterns)} names or globs"
        )
    head = [
        "# Mutation report: zsbench/metrics/ and zsbench/evaluation.py",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; mutants: {scope}; "
        + (
            "report rewritten from an earlier run (--report-only)"
            if args.report_only
            else f"wall time {seconds / 60:.1f} min with {args.jobs} workers"
        ),
        f"- command: `python tests/mutate.py{f' --sample {args.sample}' if args.sample else ''}"
        + "".join(f" --only '{g}'" for g in args.only)
        + (f" --only-from {args.only_from}" if args.only_from else "")
        + "`",
        f"- statuses: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}"
        + (f"; not run yet {pending} (the score covers the tested ones)" if pending else "")
        + (f"; {retried} timeout(s) run a second time" if retried else ""),
        f"- killed (incl. timeouts) {detected} / {tested} tested = {raw:.1f} %; "
        f"{n_equivalent} survivors are equivalent (tests/mutation_equivalent.toml): "
        f"score {detected} / {tested - n_equivalent} = **{score:.1f} %** "
        f"(gate: >= {args.min_score:g} %)",
        "",
        f"## Not killed, not equivalent ({len(rows) - n_equivalent})",
        "",
    ]
    body = [f"### {n} ({s})\n```diff\n{d}\n```\n" for n, s, r, d in rows if r is None]
    body += [f"## Equivalent ({n_equivalent})", ""]
    body += [f"### {n} ({s})\n{r}\n```diff\n{d}\n```\n" for n, s, r, d in rows if r is not None]
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(head + body))
    print("\n".join(head[2:6]))
    print(f"report: {report}")
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    raise SystemExit(main())
