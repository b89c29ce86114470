"""Paired significance between two leaderboard rows, over the queries they share.

Every SBIR result keeps its per-query values (AP for mAP@all, precision for P@100, ... of its
spec) beside it as `seed<N>.perquery.npz`: float32 arrays in the evaluator's query order, the
sha256 of that order (each query's class, domain and file name), and the result's `run_id`.
That is 4 bytes a query a metric: 92,291 QuickDraw-Ext queries x 4 metrics = 1.5 MB.

`compare(A, B)` pairs the two methods' values query by query. With several seeds, each
query's value is first averaged over the seeds both rows have, then:

* mean difference (A - B) and its 95 % confidence interval from a paired bootstrap over
  queries (`n_resamples` resamples with replacement, percentile interval);
* a two-sided p-value from a paired permutation test (random sign flips of the per-query
  differences, the same number of resamples, p = (k + 1) / (n + 1));
* the seed-level spread: the difference of the per-seed means, seed by seed, and its std, so a
  reader sees whether queries or seeds dominate the uncertainty.

Queries where either row has no value (no relevant item: NaN) are left out and counted. Both
resampling loops are seeded (`seed`), so the same files give the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError

N_RESAMPLES = 10_000


def per_query_path(result: Path) -> Path:
    """`seed<N>.perquery.npz` beside the result `seed<N>.json`."""
    result = Path(result)
    return result.with_name(result.stem + ".perquery.npz")


def query_order_hash(keys: Sequence[str]) -> str:
    """sha256 of the query order (one key per query: class/domain/file name)."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def write_per_query(path: Path, values: dict[str, Sequence[float]], order: str, run_id: str):
    """Write the per-query values atomically (temp file + rename)."""
    path = Path(path)
    arrays = {f"metric:{k}": np.asarray(v, dtype=np.float32) for k, v in values.items()}
    meta = json.dumps({"query_order_sha256": order, "run_id": run_id})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, meta=np.array(meta), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_per_query(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(metric -> values, {"query_order_sha256", "run_id"}) of a per-query file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            values = {k[len("metric:") :]: z[k] for k in z.files if k.startswith("metric:")}
    except (OSError, ValueError, KeyError) as err:
        raise ZsbenchError(
            f"cannot read per-query values {path} ({err}); rerun that cell."
        ) from err
    return values, meta


def paired_test(a, b, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Mean of a - b over the queries both have, its bootstrap 95 % CI and the permutation
    p-value (see the module docstring)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ZsbenchError(f"paired values must align: {a.shape} vs {b.shape} queries.")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = (a - b)[keep]
    n = len(d)
    if n < 2:
        raise ZsbenchError(f"only {n} query with values in both rows: nothing to test.")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    flips = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # chunks bound the memory at large query counts
        m = min(256, n_resamples - start)
        boot[start : start + m] = d[rng.integers(0, n, size=(m, n))].mean(1)
        signs = rng.integers(0, 2, size=(m, n)) * 2 - 1
        flips[start : start + m] = (signs * d).mean(1)
    observed = float(d.mean())
    k = int((np.abs(flips) >= abs(observed) - 1e-15).sum())
    return {
        "mean_diff": observed,
        "ci_low": float(np.percentile(boot, 2.5)),
        "ci_high": float(np.percentile(boot, 97.5)),
        "p_value": (k + 1) / (n_resamples + 1),
        "n_queries": n,
        "n_queries_left_out": int((~keep).sum()),
        "n_resamples": n_resamples,
        "test": "paired bootstrap CI (percentile) and paired permutation p (sign flips)",
    }


def _rows(results: Path, method: str, dataset: str, split: str | None, spec: str) -> dict:
    """seed -> (result record, per-query values) of `method` (or `method@variant`)."""
    from zsbench.results import read_result, record_problem, result_files

    name, _, variant = method.partition("@")
    out = {}
    for path in result_files(Path(results)):
        try:
            r = read_result(path)
        except ZsbenchError:
            continue  # the leaderboard names unreadable files
        if record_problem(path, r):
            continue
        if r.get("task") != "sbir" or r.get("dataset") != dataset or r.get("method") != name:
            continue
        if split is not None and r.get("split") != split:
            continue
        if (r.get("spec") or {}).get("name") != spec or r.get("status") != "ok":
            continue
        if (r.get("variant") or "default") != (variant or "default"):
            continue
        pq = per_query_path(path)
        if not pq.exists():
            raise ZsbenchError(
                f"{path} has no per-query values ({pq.name}): it predates them; rerun the cell "
                f"with --overwrite to compare it."
            )
        values, meta = read_per_query(pq)
        if meta.get("run_id") != r.get("run_id"):
            raise ZsbenchError(f"{pq} belongs to another run than {path}; rerun that cell.")
        out[int(r["seed"])] = (r, values, meta)
    return out


def compare(
    results: Path,
    method_a: str,
    method_b: str,
    dataset: str,
    split: str | None = None,
    spec: str = "default",
    metric: str | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict:
    """The paired comparison of two rows (module docstring); `method` may be `name@variant`."""
    rows_a = _rows(results, method_a, dataset, split, spec)
    rows_b = _rows(results, method_b, dataset, split, spec)
    for m, rows in ((method_a, rows_a), (method_b, rows_b)):
        if not rows:
            raise ZsbenchError(
                f"no {m} result on {dataset}{'/' + split if split else ''} (spec {spec}) under "
                f"{results}; run it, or check --split / --spec."
            )
    seeds = sorted(set(rows_a) & set(rows_b))
    if not seeds:
        raise ZsbenchError(
            f"{method_a} (seeds {sorted(rows_a)}) and {method_b} (seeds {sorted(rows_b)}) share "
            "no seed; run the missing seeds."
        )
    splits = {rows_a[s][0]["split"] for s in seeds} | {rows_b[s][0]["split"] for s in seeds}
    if len(splits) > 1:
        raise ZsbenchError(f"the rows are on several splits {sorted(splits)}: pass --split.")
    orders = {rows[s][2]["query_order_sha256"] for rows in (rows_a, rows_b) for s in seeds}
    if len(orders) > 1:
        raise ZsbenchError("the two rows were scored on different query lists: not comparable.")
    first = rows_a[seeds[0]][1]
    metric = metric or next(iter(first))
    if any(metric not in rows[s][1] for rows in (rows_a, rows_b) for s in seeds):
        raise ZsbenchError(f"metric {metric!r} is not in both rows' per-query values.")
    a = np.stack([rows_a[s][1][metric] for s in seeds]).astype(np.float64)
    b = np.stack([rows_b[s][1][metric] for s in seeds]).astype(np.float64)
    out = {
        "a": method_a,
        "b": method_b,
        "dataset": dataset,
        "split": splits.pop(),
        "spec": spec,
        "metric": metric,
        "seeds": seeds,
        **paired_test(np.nanmean(a, 0), np.nanmean(b, 0), n_resamples, seed),
    }
    per_seed = [float(np.nanmean(a[i]) - np.nanmean(b[i])) for i in range(len(seeds))]
    out["seed_diffs"] = per_seed
    out["seed_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return out


def format_comparison(c: dict) -> str:
    seeds = ", ".join(map(str, c["seeds"]))
    lines = [
        f"{c['a']} - {c['b']} on {c['dataset']}/{c['split']} ({c['spec']} spec), {c['metric']}, "
        f"seeds {seeds}, {c['n_queries']} queries",
        f"  mean difference {c['mean_diff']:+.4f}, 95 % CI [{c['ci_low']:+.4f}, "
        f"{c['ci_high']:+.4f}], p = {c['p_value']:.4g}",
        f"  ({c['test']}, {c['n_resamples']} resamples over queries, per-query values averaged "
        "over the seeds)",
    ]
    if c["n_queries_left_out"]:
        lines.append(f"  {c['n_queries_left_out']} queries without a value in one row left out")
    if c["seed_std"] is not None:
        diffs = ", ".join(f"{d:+.4f}" for d in c["seed_diffs"])
        lines.append(f"  per seed: {diffs} (std {c['seed_std']:.4f} across seeds)")
    return "\n".join(lines)
