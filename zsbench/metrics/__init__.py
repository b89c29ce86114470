"""Retrieval metrics: pure, exact, tie-aware torch functions and the named metric specs.

* :mod:`zsbench.metrics.ranking`: the metric functions (each docstring gives the definition).
* :mod:`zsbench.metrics.specs`: :class:`MetricSpec` / ``METRIC_SPECS`` (``default`` plus the
  paper evaluators ``sake``, ``voc``, ``drcpl``, ``zse-sbir``, ``sem-pcyc``, ``yelamarthi``,
  ``precision-min-k-r``), each with a tie rule (``expected`` by default).
* :mod:`zsbench.metrics.tie_sampling`: the expected VOC AP over tie orders, by sampling.
* :func:`per_query_values` / :func:`per_query_ap`: per-query values from a full score matrix
  and a relevance mask (any relevance pattern; used by tests and for cross-checks).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from zsbench.errors import ZsbenchError
from zsbench.metrics import ranking
from zsbench.metrics.ranking import RankStats, rank_stats
from zsbench.metrics.specs import (
    METRIC_SPECS,
    METRICS_VERSION,
    TIE_SE_TARGET,
    MetricDef,
    MetricSpec,
    get_spec,
)

__all__ = [
    "METRIC_SPECS",
    "METRICS_VERSION",
    "TIE_SE_TARGET",
    "MetricDef",
    "MetricSpec",
    "RankStats",
    "get_spec",
    "per_query_ap",
    "per_query_values",
    "rank_stats",
    "ranking",
]


def _as_2d(x, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2:
        raise ZsbenchError(f"{name} must be [Q, G], got shape {tuple(t.shape)}.")
    return t


def per_query_values(
    scores, relevant, spec: str | MetricSpec = "default", ties: str | None = None
) -> dict[str, Tensor]:
    """Per-query metric values of ``spec`` for a full score matrix.

    ``scores`` [Q, G] (higher = more similar), ``relevant`` [Q, G] bool (any pattern; a 1-D
    pair is one query). ``ties``: replaces the spec's tie rule. Returns {metric key: float64
    Tensor [Q]}; a query without any relevant item gets NaN for ``exclude`` metrics and 0 for
    ``zero`` metrics. Loops over queries: meant for tests and cross-checks;
    :func:`zsbench.evaluation.evaluate_sbir` is the fast path and returns the same values
    (sampled ones within their standard error).
    """
    spec = get_spec(spec, ties)
    s = _as_2d(scores, "scores")
    if not torch.is_floating_point(s):
        s = s.to(torch.float64)
    rel = _as_2d(relevant, "relevant").to(torch.bool)
    if s.shape != rel.shape:
        raise ZsbenchError(
            f"scores {tuple(s.shape)} and relevant {tuple(rel.shape)} must have the same shape."
        )
    if not torch.isfinite(s).all():
        raise ZsbenchError("scores contain NaN or inf; fix the features that produced them.")
    out = {m.key: torch.empty(s.shape[0], dtype=torch.float64) for m in spec.metrics}
    generator = torch.Generator().manual_seed(0)
    budget = TIE_SE_TARGET**2 * s.shape[0]
    for i in range(s.shape[0]):
        row, mask = s[i], rel[i]
        if not bool(mask.any()):
            for m in spec.metrics:
                out[m.key][i] = float("nan") if m.no_positive == "exclude" else 0.0
            continue
        st = rank_stats(row[mask][None], row[~mask][None], keep_scores=spec.needs_scores)
        for key, (v, _) in spec.compute(st, budget, generator).items():
            out[key][i] = v[0].cpu()
    return out


def per_query_ap(scores, relevant) -> Tensor:
    """Per-query AP exactly as ``sklearn.metrics.average_precision_score(relevant[i], scores[i])``.

    Float64 [Q]; NaN for a query without any relevant item (sklearn warns and returns 0 there;
    zsbench treats AP as undefined and leaves such queries out of its means).
    """
    return per_query_values(scores, relevant, "default")["mAP@all"]
