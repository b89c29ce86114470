"""The SBIR evaluator: rank a gallery for every query and compute a metric spec, in chunks.

The only place where test metrics are computed. Memory is O(chunk x G): the gallery is
sorted by label once, queries are grouped by label, and for each chunk of same-label queries
the score block [chunk, G] is split into the contiguous block of relevant items and the rest;
:func:`zsbench.metrics.ranking.rank_stats` then counts, per relevant item, how many items score
at least / more than it (sort R positives, ``searchsorted`` the negatives, histogram) -- exact
and tie-aware, faster than one full sort of the score matrix (benchmarks/README.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zsbench.errors import ZsbenchError, unknown_name
from zsbench.metrics import TIE_SE_TARGET, MetricSpec, get_spec, rank_stats

__all__ = [
    "SIMILARITIES",
    "default_chunk_size",
    "evaluate_cir",
    "evaluate_sbir",
    "score_rows",
    "similarity_matrix",
    "tie_warning",
]

SIMILARITIES = ("cosine", "dot", "euclidean")
_CHUNK_BYTES = 64 * 2**20  # target size of one [chunk, G] score block


def _check_similarity(similarity: str) -> str:
    if similarity not in SIMILARITIES:
        raise unknown_name("similarity", similarity, SIMILARITIES)
    return similarity


def _to_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ZsbenchError(
            f"{name} could not be converted to a tensor ({e}); pass a torch.Tensor or numpy array."
        ) from None


def _features(x, name: str) -> Tensor:
    t = _to_tensor(x, name)
    if t.ndim != 2:
        raise ZsbenchError(
            f"{name} must be a 2-D array [N, D] of features, got shape {tuple(t.shape)}; "
            "reshape (e.g. flatten all but the first axis) before evaluating."
        )
    if t.shape[0] == 0:
        raise ZsbenchError(f"{name} is empty (0 rows); evaluation needs at least one item.")
    if t.shape[1] == 0:
        raise ZsbenchError(f"{name} has 0 feature dimensions; check the encoder output.")
    if t.dtype == torch.bool or t.is_complex():
        raise ZsbenchError(f"{name} has dtype {t.dtype}; pass real-valued features.")
    if not torch.is_floating_point(t):
        t = t.to(torch.float32)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten()
        raise ZsbenchError(
            f"{name} contains NaN or inf in {rows.numel()} row(s) (first: row "
            f"{int(rows[0])}); fix the encoder or drop those items before evaluating."
        )
    return t


def _labels(x, name: str, n: int, feat_name: str) -> Tensor:
    t = _to_tensor(x, name)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ZsbenchError(f"{name} must be 1-D [N] class ids, got shape {tuple(t.shape)}.")
    if t.shape[0] != n:
        raise ZsbenchError(
            f"{name} has {t.shape[0]} entries but {feat_name} has {n} rows; pass one label "
            "per item."
        )
    if torch.is_floating_point(t):
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise ZsbenchError(
                f"{name} must be integer class ids, got non-integer floats; map class names "
                "to ids first (e.g. np.unique(..., return_inverse=True))."
            )
    elif t.dtype == torch.bool or t.is_complex():
        raise ZsbenchError(f"{name} must be integer class ids, got dtype {t.dtype}.")
    return t.to(torch.int64)


def _work_dtype(*ts: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _prepare(x: Tensor, similarity: str) -> Tensor:
    return F.normalize(x, dim=1) if similarity == "cosine" else x


def _scores(q: Tensor, g: Tensor, similarity: str) -> Tensor:
    """Scores of prepared (normalised for cosine) features; higher = more similar."""
    if similarity == "euclidean":
        return torch.cdist(q, g).neg_()
    return q @ g.T


def similarity_matrix(a, b, similarity: str = "cosine") -> Tensor:
    """Scores [A, B] between rows of ``a`` [A, D] and ``b`` [B, D]; higher = more similar.

    ``cosine``: dot product of L2-normalised rows (a zero row scores 0 with everything);
    ``dot``: plain dot product; ``euclidean``: negative L2 distance. Float64 inputs stay
    float64, anything else is computed in float32, on ``a``'s device.
    """
    _check_similarity(similarity)
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ZsbenchError(
            f"feature dimensions differ: a has D={a.shape[1]}, b has D={b.shape[1]}; both must "
            "come from the same embedding space."
        )
    dt = _work_dtype(a, b)
    a = a.to(dt)
    b = b.to(device=a.device, dtype=dt)
    return _scores(_prepare(a, similarity), _prepare(b, similarity), similarity)


def default_chunk_size(n_gallery: int, bytes_per_score: int = 4) -> int:
    """Queries per chunk so that one [chunk, G] score block is about 64 MiB."""
    return max(1, _CHUNK_BYTES // max(1, n_gallery * bytes_per_score))


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ZsbenchError(
            f"invalid device {device!r}; use e.g. 'cpu', 'cuda', 'cuda:0'."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZsbenchError(f"device {device!r} requested but CUDA is not available; use 'cpu'.")
    return dev


def _class_name(label: int, class_names) -> str:
    if class_names is None:
        return str(label)
    try:
        if isinstance(class_names, Mapping):
            return str(class_names[label])
        return str(class_names[label])
    except (IndexError, KeyError):
        raise ZsbenchError(
            f"class_names has no entry for label {label}; pass a sequence indexed by label id "
            "or a mapping {label: name} covering every query label."
        ) from None


TIE_WARN_FRACTION = 0.01


def tie_warning(tie_fraction: float, ties: str) -> str | None:
    """The warning to print when enough scores tie across relevance that the tie rule moves
    the numbers (None below 1 %)."""
    if tie_fraction <= TIE_WARN_FRACTION:
        return None
    return (
        f"{100 * tie_fraction:.1f}% of the scores tie a relevant with a non-relevant item, so "
        f"the tie rule changes the numbers (ties={ties}: "
        + (
            "expected value over random orders inside tie groups, as the official "
            "argsort-based code gives on average"
            if ties == "expected"
            else "a bound, not what the official code gives"
        )
        + "; the pessimistic and optimistic rules give the range)."
    )


def _nanmean(x: Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def evaluate_sbir(
    query,
    query_labels,
    gallery,
    gallery_labels,
    spec: str | MetricSpec = "default",
    similarity: str = "cosine",
    chunk_size: int | None = None,
    device=None,
    class_names: Sequence | Mapping | None = None,
    return_per_query: bool = False,
    ties: str | None = None,
) -> dict:
    """Rank ``gallery`` for every query and compute the metrics of ``spec``.

    ``query`` [Q, D] and ``gallery`` [G, D] features (Tensor or ndarray), ``query_labels`` [Q]
    and ``gallery_labels`` [G] integer class ids; an item is relevant to a query when the
    labels are equal. ``similarity``: ``cosine`` | ``dot`` | ``euclidean`` (negative L2
    distance). ``chunk_size``: queries per chunk (default: a ~64 MiB score block).
    ``device``: where to rank (default: CUDA when available). ``class_names``: sequence
    indexed by label or {label: name}, for ``per_class`` keys (default: the label as str).
    ``ties``: the tie rule (expected | pessimistic | optimistic; default: the spec's).

    Returns ``{"metrics": {key: micro mean over queries, key + ".class_mean": mean over
    classes of the per-class mean}, "per_class": {name: {key: mean, "n_queries": int,
    "n_relevant": int}}, "spec": spec.to_dict(), "n_queries", "n_gallery",
    "n_queries_without_positive", "tie_fraction", "tie_se", "seconds"}`` (+ ``"per_query":
    {key: list[float]}`` in the original query order when ``return_per_query``). Values
    excluded by the spec's ``no_positive`` policy are NaN per query and left out of all means.
    ``tie_fraction``: the fraction of (query, gallery item) scores of evaluated queries equal to
    the score of an item of the other relevance (where the tie rule matters); ``tie_se``:
    {key: standard error of the mean} for metrics estimated by sampling (0 when exact).
    """
    t_start = time.perf_counter()
    spec = get_spec(spec, ties)
    _check_similarity(similarity)
    q = _features(query, "query features")
    g = _features(gallery, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ZsbenchError(
            f"feature dimensions differ: query D={q.shape[1]}, gallery D={g.shape[1]}; both "
            "must come from the same embedding space (check encode_query / encode_gallery)."
        )
    ql = _labels(query_labels, "query labels", q.shape[0], "query features")
    gl = _labels(gallery_labels, "gallery labels", g.shape[0], "gallery features")
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ZsbenchError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
    dev = _resolve_device(device)
    dt = _work_dtype(q, g)
    n_q, n_g = q.shape[0], g.shape[0]
    if chunk_size is None:
        chunk_size = default_chunk_size(n_g, 8 if dt == torch.float64 else 4)

    # gallery sorted by label: each class's relevant items are one contiguous block
    g_order = torch.argsort(gl, stable=True)
    g_sorted = _prepare(g.to(device=dev, dtype=dt)[g_order.to(dev)], similarity)
    g_labels_sorted = gl[g_order]
    uniq, counts = torch.unique_consecutive(g_labels_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    block = {int(u): (int(s), int(s + c)) for u, s, c in zip(uniq, starts, counts)}

    q_dev = _prepare(q.to(device=dev, dtype=dt), similarity)
    q_order = torch.argsort(ql, stable=True)
    q_uniq, q_counts = torch.unique_consecutive(ql[q_order], return_counts=True)

    values = {m.key: torch.empty(n_q, dtype=torch.float64) for m in spec.metrics}
    variances = {m.key: torch.zeros(n_q, dtype=torch.float64) for m in spec.metrics}
    generator = torch.Generator(device=dev).manual_seed(0)
    relevant_count = {}
    n_without = 0
    n_tied = 0.0
    pos = 0
    for label_t, cnt_t in zip(q_uniq, q_counts):
        label, cnt = int(label_t), int(cnt_t)
        idx = q_order[pos : pos + cnt]
        pos += cnt
        lo, hi = block.get(label, (0, 0))
        relevant_count[label] = hi - lo
        if hi == lo:
            n_without += cnt
            for m in spec.metrics:
                values[m.key][idx] = float("nan") if m.no_positive == "exclude" else 0.0
            continue
        for c0 in range(0, cnt, chunk_size):
            cidx = idx[c0 : c0 + chunk_size]
            s = _scores(q_dev[cidx.to(dev)], g_sorted, similarity)
            neg = torch.cat([s[:, :lo], s[:, hi:]], dim=1)
            st = rank_stats(s[:, lo:hi], neg, keep_scores=spec.needs_scores)
            del s, neg
            n_tied += float(st.n_tied().sum())
            budget = TIE_SE_TARGET**2 * n_q * len(cidx)
            for key, (v, var) in spec.compute(st, budget, generator).items():
                values[key][cidx] = v.cpu()
                if var is not None:
                    variances[key][cidx] = var.cpu()

    metrics: dict[str, float] = {}
    per_class: dict[str, dict] = {}
    class_vals: dict[str, list[float]] = {m.key: [] for m in spec.metrics}
    pos = 0
    for label_t, cnt_t in zip(q_uniq, q_counts):
        label, cnt = int(label_t), int(cnt_t)
        idx = q_order[pos : pos + cnt]
        pos += cnt
        entry: dict = {}
        for m in spec.metrics:
            v = _nanmean(values[m.key][idx])
            entry[m.key] = v
            class_vals[m.key].append(v)
        entry["n_queries"] = cnt
        entry["n_relevant"] = relevant_count[label]
        per_class[_class_name(label, class_names)] = entry
    for m in spec.metrics:
        metrics[m.key] = _nanmean(values[m.key])
    for m in spec.metrics:
        cv = [v for v in class_vals[m.key] if not math.isnan(v)]
        metrics[f"{m.key}.class_mean"] = float(np.mean(cv)) if cv else float("nan")

    tie_se = {}
    for m in spec.metrics:
        if m.sampled(spec.ties):
            counted = ~torch.isnan(values[m.key])
            n_counted = max(int(counted.sum()), 1)
            tie_se[m.key] = float(variances[m.key][counted].sum().sqrt()) / n_counted

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    res = {
        "metrics": metrics,
        "per_class": per_class,
        "spec": spec.to_dict(),
        "n_queries": n_q,
        "n_gallery": n_g,
        "n_queries_without_positive": n_without,
        "tie_fraction": n_tied / max((n_q - n_without) * n_g, 1),
        "tie_se": tie_se,
        "seconds": time.perf_counter() - t_start,
    }
    if return_per_query:
        res["per_query"] = {k: v.tolist() for k, v in values.items()}
    return res


def evaluate_cir(
    query,
    gallery,
    labels,
    similarity: str = "cosine",
    chunk_size: int | None = None,
    ties: str = "expected",
) -> dict[str, float]:
    """Score ``gallery`` [G, D] for every composed query [Q, D] and compute the CIR metrics.

    ``labels``: a :class:`zsbench.metrics.cir.CIRLabels` (protocol ``fashioniq`` | ``cirr``
    | ``circo``, with the targets, references, image sets or ground truths as gallery rows).
    Scores are computed ``chunk_size`` queries at a time (default: a ~64 MiB block), so the
    full [Q, G] matrix is never held (:func:`score_rows`). Returns {metric key: value in
    [0, 1]}. ``ties``: the order
    inside tie groups, as for SBIR: ``expected`` (the expected value over random orders; the
    official scripts' argsort order is arbitrary), ``pessimistic`` or ``optimistic``
    (zsbench.metrics.cir).
    """
    from zsbench.metrics.cir import CIRLabels, cir_metrics

    if not isinstance(labels, CIRLabels):
        raise ZsbenchError(
            f"labels must be a zsbench.metrics.cir.CIRLabels, got {type(labels).__name__}; "
            "build it with CIRLabels(protocol, target, reference, members=..., gt=...)."
        )
    scores = score_rows(query, gallery, similarity)
    if chunk_size is None:
        chunk_size = default_chunk_size(scores.shape[1])
    if len(scores) != len(labels):
        raise ZsbenchError(f"{len(scores)} query features but {len(labels)} queries in labels.")
    return cir_metrics(scores, labels, chunk_size=chunk_size, ties=ties)


def score_rows(query, gallery, similarity: str = "cosine") -> _LazyScores:
    """The score matrix [Q, G] of :func:`similarity_matrix`, computed when a slice of its rows
    is read (``scores[lo:hi]``): ``cir_metrics`` and the test-server writers
    (zsbench.cir_submission) read it a query block at a time, so a large gallery (CIRCO's
    123,403 images) never becomes a full matrix. The features are checked and prepared once."""
    _check_similarity(similarity)
    q = _features(query, "query features")
    g = _features(gallery, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ZsbenchError(
            f"feature dimensions differ: query D={q.shape[1]}, gallery D={g.shape[1]}."
        )
    dt = _work_dtype(q, g)
    g = _prepare(g.to(dt), similarity)
    q = _prepare(q.to(device=g.device, dtype=dt), similarity)
    return _LazyScores(q, g, similarity)


class _LazyScores:
    """Rows of the score matrix computed on demand (see :func:`score_rows`)."""

    def __init__(self, q: Tensor, g: Tensor, similarity: str) -> None:
        self.q, self.g, self.similarity = q, g, similarity
        self.shape = (len(q), len(g))

    def __len__(self) -> int:
        return len(self.q)

    def __getitem__(self, sl: slice) -> Tensor:
        return _scores(self.q[sl], self.g, self.similarity)
