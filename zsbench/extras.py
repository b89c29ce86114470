"""Per-run artefacts for people to look at: a precision-recall curve and retrieval examples.

Written by the runner next to a result as `seed<N>.extras.json` and read by `zsbench report`.
They are views of the ranking, not metrics: the leaderboard never reads them. The PR curve is
the 11-point interpolated precision (precision at recall >= r, maximised), averaged over up to
`max_queries` queries drawn with a fixed seed, so it costs O(max_queries x G log G) whatever
the dataset size. Ties are broken by gallery order (a view, not an exact metric).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from zsbench.evaluation import similarity_matrix

RECALL_LEVELS = tuple(round(0.1 * i, 1) for i in range(11))


def interpolated_pr(scores: Tensor, relevant: Tensor) -> Tensor:
    """11-point interpolated precision [Q, 11] of score rows [Q, G] with relevance [Q, G].

    Queries without a relevant item get NaN rows (left out of the mean by the caller).
    """
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    rel = torch.gather(relevant.to(torch.float64), 1, order)
    hits = rel.cumsum(1)
    n_rel = rel.sum(1, keepdim=True)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    precision = hits / ranks
    recall = hits / n_rel.clamp_min(1)
    out = torch.empty(rel.shape[0], len(RECALL_LEVELS), dtype=torch.float64)
    for j, level in enumerate(RECALL_LEVELS):
        reached = recall >= level - 1e-12
        out[:, j] = torch.where(reached, precision, torch.zeros_like(precision)).amax(1)
    out[n_rel[:, 0] == 0] = float("nan")
    return out


def run_extras(
    query: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    similarity: str,
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    class_names: Sequence[str],
    seed: int = 0,
    max_queries: int = 500,
    n_examples: int = 5,
    top_k: int = 10,
    chunk_size: int = 256,
) -> dict:
    """{"pr_curve": {...}, "examples": [...]} for `zsbench report` (see the module docstring).

    Examples: the first query of each of `n_examples` classes (in label order), with its top
    `top_k` gallery items and whether each is of the query's class.
    """
    rng = np.random.default_rng(seed)
    n_q = len(query)
    picked = np.sort(rng.choice(n_q, size=min(n_q, max_queries), replace=False))
    ql, gl = query_labels.cpu(), gallery_labels.cpu()
    curves = []
    for start in range(0, len(picked), chunk_size):
        idx = torch.as_tensor(picked[start : start + chunk_size])
        s = similarity_matrix(query[idx], gallery, similarity).cpu()
        curves.append(interpolated_pr(s, ql[idx, None] == gl[None, :]))
    curve = torch.cat(curves)
    mean = torch.nanmean(curve, dim=0)

    firsts: dict[int, int] = {}
    for i, label in enumerate(ql.tolist()):
        firsts.setdefault(label, i)
    example_ids = [firsts[label] for label in sorted(firsts)][:n_examples]
    examples = []
    if example_ids:
        idx = torch.as_tensor(example_ids)
        s = similarity_matrix(query[idx], gallery, similarity).cpu()
        top = torch.argsort(s, dim=1, descending=True, stable=True)[:, :top_k]
        for row, qi in enumerate(example_ids):
            q_label = int(ql[qi])
            examples.append(
                {
                    "query": str(query_paths[qi]),
                    "label": str(class_names[q_label]),
                    "top": [
                        {
                            "path": str(gallery_paths[gi]),
                            "label": str(class_names[int(gl[gi])]),
                            "correct": bool(int(gl[gi]) == q_label),
                            "score": float(s[row, gi]),
                        }
                        for gi in top[row].tolist()
                    ],
                }
            )
    return {
        "pr_curve": {
            "recall": list(RECALL_LEVELS),
            "precision": [float(x) for x in mean.tolist()],
            "n_queries": int(len(picked)),
            "interpolation": "11-point, max precision at recall >= r",
        },
        "examples": examples,
    }


def cir_examples(scores, labels, data, n_examples: int = 5, top_k: int = 10) -> list[dict]:
    """Report examples: the first `n_examples` queries with their top-k gallery images
    (reference removed under CIRR's protocol), each flagged correct when it is a ground truth."""
    examples = []
    for qi in range(min(n_examples, len(data.queries))):
        q = data.queries[qi]
        row = scores[qi].clone()
        if labels.protocol == "cirr" and int(labels.reference[qi]) >= 0:
            row[int(labels.reference[qi])] = float("-inf")
        relevant = set(q.targets)
        top = torch.argsort(row, descending=True, stable=True)[:top_k].tolist()
        text = " / ".join(q.captions)
        examples.append(
            {
                "query": str(data.image_path(q.reference)),
                "label": text,
                "top": [
                    {
                        "path": str(data.image_path(data.gallery[gi])),
                        "label": data.gallery[gi],
                        "correct": data.gallery[gi] in relevant,
                        "score": float(row[gi]),
                    }
                    for gi in top
                ],
            }
        )
    return examples
