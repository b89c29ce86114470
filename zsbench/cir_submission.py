"""Official CIRR / CIRCO test-submission files: write them, and score them offline on val.

Formats (the servers' READMEs; SEARLE's ``generate_test_submission.py`` writes the same):

* CIRR (https://cirr.cecs.anu.edu.au): two files, ``{"version": "rc2", "metric": "recall",
  "<pairid>": [top-50 image names, reference removed], ...}`` and the same with
  ``"metric": "recall_subset"`` and the top-3 of the query's ``img_set`` members (reference
  removed). Every pairid of the split must be there.
* CIRCO (https://circo.micc.unifi.it): ``{"<query id>": [top-50 COCO image ids], ...}`` for
  every query id 0..N-1.

Scoring (:func:`score_submission`) applies the servers' formulas to the ranked lists as given:
CIRR R@k / R_subset@k = target among the first k; CIRCO AP@k = sum of precision at each ground
truth in the first k, divided by min(#gt, k), and R@k on the main target (CIRCO's
``src/evaluation.py``). Test labels are hidden, so only val (or a split with targets) scores
offline. ``zsbench score-submission`` calls :func:`score_submission_main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from zsbench.cir_readers import CIRSplit, read_circo, read_cirr
from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import CIRCO_KS, CIRR_KS, CIRR_SUBSET_KS

__all__ = [
    "CIRCO_TOP_K",
    "CIRR_SUBSET_TOP_K",
    "CIRR_TOP_K",
    "CIRR_VERSION",
    "circo_submission",
    "cirr_submissions",
    "read_submission",
    "run",
    "score_submission",
    "score_submission_main",
    "top_k_names",
    "write_submission",
]

CIRR_VERSION = "rc2"
CIRR_TOP_K, CIRR_SUBSET_TOP_K, CIRCO_TOP_K = 50, 3, 50
_READERS = {"cirr": read_cirr, "circo": read_circo}
_MARKERS = {
    "cirr": ("captions", "cirr/captions"),
    "circo": ("annotations",),
}


# --------------------------------------------------------------------------- building


def _cpu_rows(scores, sl: slice) -> torch.Tensor:
    """Rows of a score matrix (tensor on any device, or array) as a float64 CPU tensor."""
    rows = scores[sl]
    if isinstance(rows, torch.Tensor):
        return rows.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(rows, dtype=np.float64))


def top_k_names(
    scores, gallery: Sequence[str], k: int, exclude=None, chunk_size: int = 1024
) -> list[list[str]]:
    """The k best gallery names per query (descending score), ``exclude`` [Q] or [Q, E] removed."""
    names = np.asarray(gallery, dtype=object)
    ex = None if exclude is None else torch.as_tensor(np.asarray(exclude), dtype=torch.int64)
    if ex is not None and ex.ndim == 1:
        ex = ex[:, None]
    n_ex = 0 if ex is None else ex.shape[1]
    if len(names) - n_ex < k:
        raise ZsbenchError(f"the gallery has {len(names)} images, fewer than top-{k} + excluded.")
    out: list[list[str]] = []
    for lo in range(0, len(scores), chunk_size):
        s = _cpu_rows(scores, slice(lo, lo + chunk_size))
        if s.shape[1] != len(names):
            raise ZsbenchError(f"scores have {s.shape[1]} columns, the gallery {len(names)}.")
        if ex is not None:
            e = ex[lo : lo + chunk_size]
            rows = torch.arange(len(s))[:, None].expand_as(e)
            s[rows[e >= 0], e[e >= 0]] = float("-inf")
        idx = torch.topk(s, k, dim=1).indices.numpy()
        out.extend(names[idx].tolist())
    return out


def cirr_submissions(scores, split: CIRSplit) -> tuple[dict, dict]:
    """CIRR's (recall, recall_subset) submission dicts from scores [Q, len(split.gallery)]."""
    if split.dataset != "cirr":
        raise ZsbenchError(f"cirr_submissions needs a CIRR split, got {split.dataset}.")
    index = {n: i for i, n in enumerate(split.gallery)}
    ref = [index.get(q.reference, -1) for q in split.queries]
    top = top_k_names(scores, split.gallery, CIRR_TOP_K, exclude=ref)
    recall = {"version": CIRR_VERSION, "metric": "recall"}
    subset = {"version": CIRR_VERSION, "metric": "recall_subset"}
    for i, q in enumerate(split.queries):
        recall[q.query_id] = top[i]
        members = [m for m in q.img_set if m != q.reference]
        row = _cpu_rows(scores, slice(i, i + 1))[0].numpy()
        # stable sort: ties keep img_set order; a member missing from the gallery goes last
        members.sort(key=lambda m: -row[index[m]] if m in index else np.inf)
        subset[q.query_id] = members[:CIRR_SUBSET_TOP_K]
    return recall, subset


def circo_submission(scores, split: CIRSplit) -> dict:
    """CIRCO's submission dict {query id: top-50 image ids (int)} over ``split.gallery``."""
    if split.dataset != "circo":
        raise ZsbenchError(f"circo_submission needs a CIRCO split, got {split.dataset}.")
    top = top_k_names(scores, split.gallery, CIRCO_TOP_K)
    return {q.query_id: [int(n) for n in top[i]] for i, q in enumerate(split.queries)}


def write_submission(path: str | Path, submission: Mapping) -> Path:
    """Write a submission JSON atomically (a killed run leaves no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(submission, sort_keys=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicate_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _image_id(x) -> int:
    """A CIRCO image id as the server reads it: an integer, or a string or integral float
    holding one. Anything else (1.7, "abc", True) is an error, never truncated."""
    if isinstance(x, bool):
        raise ValueError(x)
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, str) and x.strip().lstrip("+").isdigit():
        return int(x)
    raise ValueError(x)


def read_submission(path: str | Path) -> dict:
    """Load a submission file; it must be a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise ZsbenchError(f"predictions file not found: {path}")
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKey as e:
        raise ZsbenchError(
            f"{path}: query {e.args[0]!r} appears more than once; JSON keeps only the last, "
            f"so the file is not what its writer meant. One entry per query."
        ) from None
    except (OSError, ValueError) as e:
        raise ZsbenchError(f"{path} is not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise ZsbenchError(
            f"{path} must hold a JSON object {{query id: [ranked images]}}, "
            f"got {type(data).__name__}."
        )
    return data


# --------------------------------------------------------------------------- checking


def _check_keys(preds: Mapping, expected: Sequence[str], what: str) -> None:
    got, want = set(preds), set(expected)
    missing, extra = sorted(want - got), sorted(got - want)
    if missing or extra:
        msg = [f"{what} must have one entry per query of the split ({len(want)})."]
        if missing:
            msg.append(
                f"Missing {len(missing)}: {', '.join(missing[:5])}{' ...' * (len(missing) > 5)}."
            )
        if extra:
            msg.append(f"Unknown {len(extra)}: {', '.join(extra[:5])}{' ...' * (len(extra) > 5)}.")
        raise ZsbenchError(" ".join(msg))


def _check_list(qid: str, ranked, max_len: int, what: str) -> list:
    if not isinstance(ranked, list) or not ranked:
        raise ZsbenchError(
            f"{what}: query {qid}: expected a non-empty list of images, got {ranked!r:.80}."
        )
    if len(ranked) > max_len:
        raise ZsbenchError(
            f"{what}: query {qid} lists {len(ranked)} images; the server takes the top {max_len}."
        )
    if len(set(map(str, ranked))) != len(ranked):
        dup = next(x for x in ranked if list(map(str, ranked)).count(str(x)) > 1)
        raise ZsbenchError(f"{what}: query {qid} lists image {dup!r} more than once.")
    return ranked


# --------------------------------------------------------------------------- scoring


def _score_cirr(sub: Mapping, split: CIRSplit, what: str) -> dict[str, float]:
    preds = dict(sub)
    version, metric = preds.pop("version", None), preds.pop("metric", None)
    if version != CIRR_VERSION:
        raise ZsbenchError(f'{what}: needs "version": "{CIRR_VERSION}", got {version!r}.')
    if metric not in ("recall", "recall_subset"):
        raise ZsbenchError(f'{what}: "metric" must be "recall" or "recall_subset", got {metric!r}.')
    _check_keys(preds, [q.query_id for q in split.queries], what)
    gallery = set(split.gallery)
    subset = metric == "recall_subset"
    ks = CIRR_SUBSET_KS if subset else CIRR_KS
    hits = {k: 0 for k in ks}
    for q in split.queries:
        ranked = _check_list(
            q.query_id, preds[q.query_id], CIRR_SUBSET_TOP_K if subset else CIRR_TOP_K, what
        )
        allowed = set(q.img_set) - {q.reference} if subset else gallery
        bad = [n for n in ranked if n not in allowed]
        if bad:
            where = "members of its img_set other than the reference" if subset else "split images"
            raise ZsbenchError(f"{what}: query {q.query_id}: {bad[0]!r} is not one of the {where}.")
        for k in ks:
            hits[k] += q.target in ranked[:k]
    prefix = "R_subset@" if subset else "R@"
    return {f"{prefix}{k}": hits[k] / len(split.queries) for k in ks}


def _score_circo(sub: Mapping, split: CIRSplit, what: str) -> dict[str, float]:
    _check_keys(sub, [q.query_id for q in split.queries], what)
    ap = {k: 0.0 for k in CIRCO_KS}
    rec = {k: 0.0 for k in CIRCO_KS}
    for q in split.queries:
        ranked = _check_list(q.query_id, sub[q.query_id], CIRCO_TOP_K, what)
        try:
            numbers = [_image_id(x) for x in ranked]
        except ValueError as e:
            raise ZsbenchError(
                f"{what}: query {q.query_id}: image id {e.args[0]!r} is not an integer."
            ) from None
        if len(set(numbers)) != len(numbers):  # after conversion: 355099 == "0355099" == 355099.0
            dup = next(n for n in numbers if numbers.count(n) > 1)
            raise ZsbenchError(f"{what}: query {q.query_id} lists image {dup} more than once.")
        ids = [str(n) for n in numbers]
        gts = set(q.targets)
        hit = 0
        prec = []
        for pos, name in enumerate(ids, start=1):
            hit += name in gts
            prec.append(hit / pos if name in gts else 0.0)
        for k in CIRCO_KS:
            ap[k] += sum(prec[:k]) / min(len(gts), k)
            rec[k] += float(q.target in ids[:k])
    n = len(split.queries)
    out = {f"mAP@{k}": ap[k] / n for k in CIRCO_KS}
    out.update({f"R@{k}": rec[k] / n for k in CIRCO_KS})
    return out


def score_submission(submission: Mapping | str | Path, split: CIRSplit) -> dict[str, float]:
    """Score a CIRR or CIRCO submission (a dict or a file) against ``split``'s annotations.

    Metrics are fractions in [0, 1]. CIRR: R@1/5/10/50 for a ``recall`` file,
    R_subset@1/2/3 for a ``recall_subset`` file. CIRCO: mAP@5/10/25/50 and R@5/10/25/50.
    """
    what = str(submission) if isinstance(submission, (str, Path)) else "submission"
    sub = read_submission(submission) if isinstance(submission, (str, Path)) else submission
    if not split.has_targets:
        raise ZsbenchError(
            f"{split.dataset} {split.split} has no public targets: only its server can score it; "
            "score a val submission offline (--split val)."
        )
    if split.dataset == "cirr":
        return _score_cirr(sub, split, what)
    if split.dataset == "circo":
        return _score_circo(sub, split, what)
    raise ZsbenchError(f"no submission format for {split.dataset}; use cirr or circo.")


# --------------------------------------------------------------------------- command line


def _dataset_dir(root: Path, dataset: str) -> Path:
    """The dataset folder under ``root``: root itself, root/<dataset> or root/cir/<dataset>."""
    for cand in (root, root / dataset, root / "cir" / dataset, root / dataset.upper()):
        if any((cand / m).is_dir() for m in _MARKERS[dataset]):
            return cand
    raise ZsbenchError(
        f"no {dataset} annotations under {root} (looked in it, {dataset}/ and cir/{dataset}/ for "
        f"{' or '.join(_MARKERS[dataset])}/). Pass --data-root <the {dataset} folder>."
    )


def run(args: argparse.Namespace) -> int:
    """Score each predictions file and print the metrics (x100, as the servers report them)."""
    if not args.data_root:
        raise ZsbenchError("no data root: pass --data-root DIR or set ZSBENCH_DATA.")
    where = _dataset_dir(Path(args.data_root), args.dataset)
    # scoring a ranked list needs the queries and their targets, not CIRCO's gallery list
    extra = {"annotation_gallery": True} if args.dataset == "circo" else {}
    split = _READERS[args.dataset](where, args.split, **extra)
    results = {str(p): score_submission(Path(p), split) for p in args.predictions}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for path, metrics in results.items():
        print(f"{args.dataset} {split.split}: {path} ({len(split.queries)} queries)")
        width = max(len(k) for k in metrics)
        print(f"  {'metric':<{width}}  value (%)")
        for k, v in metrics.items():
            print(f"  {k:<{width}}  {100 * v:#9.4g}")  # 4 significant digits, in %
    return 0


def score_submission_main(argv: Sequence[str] | None = None) -> int:
    """``zsbench score-submission --dataset {cirr,circo} --split val --predictions FILE ...``."""
    from zsbench.cli import main

    return main(["score-submission", *(sys.argv[1:] if argv is None else argv)])
