"""Chance levels: what a random ranking of the gallery scores, to print beside every result
(SBIR: chance_metrics, CIR: cir_chance)."""

from __future__ import annotations

from collections import Counter

import numpy as np


def expected_random_ap(n_relevant: int, n_gallery: int) -> float:
    """Expected non-interpolated AP of a uniformly random ranking with R relevant of N.

    A relevant item at rank r has, in expectation, 1 + (R-1)(r-1)/(N-1) relevant items at or
    above it; averaging precision over r uniform in 1..N gives
    E[AP] = (R-1)/(N-1) + H_N (N-R) / (N (N-1)),  H_N the N-th harmonic number.
    """
    r, n = n_relevant, n_gallery
    if r <= 0:
        return float("nan")
    if n == 1:
        return 1.0
    h_n = float(np.sum(1.0 / np.arange(1, n + 1)))
    return (r - 1) / (n - 1) + h_n * (n - r) / (n * (n - 1))


def chance_metrics(query_labels, gallery_labels) -> dict[str, float]:
    """Expected mAP@all and P@K of a random ranking, micro-averaged over queries.

    P@K: min(K, N) items are retrieved, each relevant with probability R/N, over K.
    """
    counts = Counter(np.asarray(gallery_labels).tolist())
    n = len(gallery_labels)
    labels = [q for q in np.asarray(query_labels).tolist() if counts.get(q, 0) > 0]
    if not labels:
        return {}
    ap = float(np.mean([expected_random_ap(counts[q], n) for q in labels]))
    out = {"mAP@all": ap}
    for k in (100, 200):
        out[f"P@{k}"] = float(np.mean([counts[q] / n * min(k, n) / k for q in labels]))
    return out


def random_map_spread(query_labels, gallery_labels, draws: int = 200, seed: int = 0) -> float:
    """Standard deviation of the mean-over-queries AP of a uniformly random ranking.

    By simulation (`draws` random rankings, seeded): the scale of what luck alone moves a
    chance-level mAP@all by on this query/gallery set, used to set test and gate margins.
    """
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    q = q[np.isin(q, g)]
    if not len(q):
        return float("nan")
    rng = np.random.default_rng(seed)
    rel = q[:, None] == g[None, :]  # [Q, G]
    n_rel = rel.sum(1)
    positions = np.tile(np.arange(len(g)), (len(q), 1))
    ranks = np.arange(1, len(g) + 1)
    means = []
    for _ in range(draws):
        hits = np.take_along_axis(rel, rng.permuted(positions, axis=1), 1)
        prec = np.cumsum(hits, 1) / ranks
        means.append(float(((prec * hits).sum(1) / n_rel).mean()))
    return float(np.std(means, ddof=1))


def cir_chance(labels, n_gallery: int) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking (exact, per query, then averaged).

    R@k: min(k, n) / n over the n candidates (CIRR: the gallery minus the reference);
    R_subset@k the same over the image set minus the reference; CIRCO's AP@k with m ground
    truths: sum_{r <= k} (m / n) (1 + (m - 1)(r - 1) / (n - 1)) / r, divided by min(m, k).
    """
    import torch

    from zsbench.metrics.cir import CIRCO_KS, CIRR_KS, CIRR_SUBSET_KS, FASHIONIQ_KS

    ref_in = (labels.reference >= 0).to(torch.float64)
    n = torch.full_like(ref_in, float(n_gallery))
    if labels.protocol == "cirr":
        n = n - ref_in
    ks = {"cirr": CIRR_KS, "circo": CIRCO_KS, "fashioniq": FASHIONIQ_KS}[labels.protocol]
    out = {f"R@{k}": float((n.clamp(max=k) / n).mean()) for k in ks}
    if labels.protocol == "cirr":
        m = labels.members
        valid = (m >= 0) & (m != labels.reference[:, None])
        s = valid.sum(1).to(torch.float64)
        out.update({f"R_subset@{k}": float((s.clamp(max=k) / s).mean()) for k in CIRR_SUBSET_KS})
    if labels.protocol == "circo":
        m = (labels.gt >= 0).sum(1).to(torch.float64)
        for k in CIRCO_KS:
            r = torch.arange(1, k + 1, dtype=torch.float64)[None]
            prec = (1 + (m[:, None] - 1) * (r - 1) / (n[:, None] - 1).clamp(min=1)) / r
            ap = (m[:, None] / n[:, None] * prec * (r <= n[:, None])).sum(1) / m.clamp(max=k)
            out[f"mAP@{k}"] = float(ap.mean())
    return out
