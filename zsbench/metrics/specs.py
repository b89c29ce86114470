"""Named metric specifications: which metrics, defined how, as in which paper's official code.

A :class:`MetricSpec` is recorded (``to_dict()``) in every result so that a number always
carries its definition. ``default`` is zsbench's own, exact and tie-aware; the other specs
reproduce the evaluation code of a paper, read from its official repository (cited in
``source``), so that zsbench numbers can be compared with the numbers those papers print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

import zsbench.metrics.ranking as ranking
from zsbench.errors import unknown_name
from zsbench.metrics_version import METRICS_VERSION

# rule name -> (function(stats, k, denominator, ties) -> Tensor[C], depends on the tie order)
_RULES: dict[str, tuple[Callable[..., Tensor], bool]] = {
    "ap": (lambda st, k, d, t: ranking.ap(st), False),
    "ap_at_k": (lambda st, k, d, t: ranking.ap_at_k(st, k, t), True),
    "precision": (lambda st, k, d, t: ranking.precision(st, k, d, t), True),
    "window_precision": (lambda st, k, d, t: ranking.window_precision(st, k, t), True),
    "sempcyc_ap_at_k": (lambda st, k, d, t: ranking.sempcyc_ap_at_k(st, k, t), True),
    "yelamarthi_ap_at_k": (lambda st, k, d, t: ranking.yelamarthi_ap_at_k(st, k, t), True),
    # expected ties: sampled (zsbench.metrics.tie_sampling), see MetricSpec.compute
    "voc_ap": (lambda st, k, d, t: ranking.voc_ap(st, k, t), True),
}
_SAMPLED = {"voc_ap"}  # rules whose expected value over tie orders is estimated by sampling

NO_POSITIVE_POLICIES = ("exclude", "zero")
TIE_SE_TARGET = 5e-5  # standard error of a sampled mean over queries (VOC AP with ties)


@dataclass(frozen=True)
class MetricDef:
    """One metric of a spec.

    ``key``: name in results (``mAP@all``, ``P@100``...). ``rule``: the function in
    :mod:`zsbench.metrics.ranking` (see ``_RULES``). ``k``: cut-off (None = whole gallery).
    ``denominator``: for precision rules. ``no_positive``: what a query without any relevant
    gallery item gets: ``exclude`` (NaN, left out of every mean) or ``zero`` (0, included).
    ``definition``: the exact definition in words, recorded with every result.
    """

    key: str
    rule: str
    k: int | None
    definition: str
    denominator: str | None = None
    no_positive: str = "exclude"

    def __post_init__(self) -> None:
        if self.rule not in _RULES:
            raise ValueError(f"unknown metric rule {self.rule!r}")
        if self.no_positive not in NO_POSITIVE_POLICIES:
            raise ValueError(f"unknown no_positive policy {self.no_positive!r}")

    @property
    def tie_dependent(self) -> bool:
        """True when the order inside a tie group can change the value."""
        return _RULES[self.rule][1]

    def sampled(self, ties: str) -> bool:
        return ties == "expected" and self.rule in _SAMPLED

    def compute(self, stats: ranking.RankStats, ties: str = "expected") -> Tensor:
        """Per-query values [C] (float64) for a block of queries that all have R >= 1."""
        if self.sampled(ties):
            raise ValueError(f"{self.key}: expected ties are sampled, use MetricSpec.compute")
        return _RULES[self.rule][0](stats, self.k, self.denominator, ties)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "rule": self.rule,
            "k": self.k,
            "denominator": self.denominator,
            "tie_dependent": self.tie_dependent,
            "no_positive": self.no_positive,
            "definition": self.definition,
        }


_TIES_TEXT = {
    "expected": (
        "Ties: expected value under a uniformly random order inside every tie group (what the "
        "official np.argsort-based code gives in expectation; exact closed forms, VOC AP by "
        "sampling with a control variate, standard error of each mean < 1e-4, reported as "
        "tie_se)."
    ),
    "pessimistic": "Ties: non-relevant items ranked first inside every tie group (lower bound).",
    "optimistic": "Ties: relevant items ranked first inside every tie group (upper bound).",
}


@dataclass(frozen=True)
class MetricSpec:
    """A named set of metrics with a description, the source it reproduces and the tie rule
    (``ties``: expected | pessimistic | optimistic, see :mod:`zsbench.metrics.ranking`)."""

    name: str
    description: str
    source: str
    metrics: tuple[MetricDef, ...]
    version: str = METRICS_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)
    ties: str = "expected"

    def __post_init__(self) -> None:
        ranking.check_ties(self.ties)

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.metrics]

    @property
    def needs_scores(self) -> bool:
        """True when tie sampling may need the raw negative scores (rank_stats keep_scores)."""
        return any(m.sampled(self.ties) for m in self.metrics)

    def compute(
        self,
        stats: ranking.RankStats,
        var_budget: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, tuple[Tensor, Tensor | None]]:
        """{key: (per-query values [C], per-query variance of a sampled estimate or None)}.

        ``var_budget``: the largest sum over this block of the sampled estimates' variances
        (see :func:`zsbench.metrics.tie_sampling.expected_voc_ap`).
        """
        out: dict[str, tuple[Tensor, Tensor | None]] = {}
        sampled = [m for m in self.metrics if m.sampled(self.ties)]
        if sampled:
            from zsbench.metrics.tie_sampling import expected_voc_ap

            est = expected_voc_ap(
                stats, sorted({m.k for m in sampled}, key=str), var_budget, generator
            )
            out.update({m.key: est[m.k] for m in sampled})
        for m in self.metrics:
            if m.key not in out:
                out[m.key] = (m.compute(stats, self.ties), None)
        return {m.key: out[m.key] for m in self.metrics}

    def with_ties(self, ties: str | None) -> MetricSpec:
        return with_ties(self, ties)

    def to_dict(self) -> dict:
        return {**spec_header(self), "metrics": {m.key: m.to_dict() for m in self.metrics}}


def with_ties(spec, ties: str | None):
    """`spec` (a MetricSpec or a CIRSpec) with the tie rule `ties`; itself when None or equal."""
    return spec if ties is None or ties == spec.ties else replace(spec, ties=ties)


def spec_header(spec) -> dict:
    """What every recorded spec, SBIR or CIR, starts with: name, description, source, version,
    the tie rule and its definition, and the notes."""
    return {
        "name": spec.name,
        "description": spec.description,
        "source": spec.source,
        "version": spec.version,
        "ties": spec.ties,
        "ties_definition": _TIES_TEXT[spec.ties],
        "notes": list(spec.notes),
    }


# ------------------------------------------------------------------------- shared definitions

_MEANS = (
    "Reported means: '<metric>' = micro mean over queries (NaN values, i.e. excluded queries, "
    "left out); '<metric>.class_mean' = mean over query classes of the per-class mean."
)

_AP_ALL = MetricDef(
    "mAP@all",
    "ap",
    None,
    "Non-interpolated AP over the whole gallery, exactly "
    "sklearn.metrics.average_precision_score(relevant, scores): (1/R) * sum over relevant items "
    "p of TP(>=s_p) / (TP(>=s_p) + NEG(>=s_p)); a tie group is one threshold (precision taken "
    "at the end of the group). Queries with R = 0 are excluded (sklearn would warn and "
    "return 0).",
)
_AP_200 = MetricDef(
    "mAP@200",
    "ap_at_k",
    200,
    "Non-interpolated AP over the top 200 divided by min(200, R) (the SAKE-code convention "
    "used by ZSE-SBIR and DRCPL, but without interpolation): (1/min(200, R)) * sum over "
    "relevant items p of w_p * TP(>=s_p) / (TP(>=s_p) + NEG(>=s_p)), w_p = probability that p "
    "is in the top 200 under the spec's ties rule (1/0 without ties). Queries with R = 0 are "
    "excluded.",
)


def _p_at(k: int, denominator: str = "k") -> MetricDef:
    den = "K" if denominator == "k" else "min(K, R)"
    return MetricDef(
        f"P@{k}",
        "precision",
        k,
        f"(hits in the top {k}) / {den.replace('K', str(k))}, micro mean over queries. Tie-aware "
        f"at the rank-{k} boundary: items scoring strictly above the {k}-th highest score count "
        "fully, the tie group at the boundary by the spec's ties rule (expected: "
        "proportionally). Queries with R = 0 are excluded.",
        denominator=denominator,
    )


_PESSIMISTIC = (
    "Order inside tie groups: the spec's ties rule (the official code ranks with np.argsort, "
    "whose order inside a tie group is arbitrary; without ties every rule equals it)."
)


def _voc(k: int | None) -> MetricDef:
    key = "mAP@all" if k is None else f"mAP@{k}"
    cut = "the whole ranking" if k is None else f"the first {k} ranks"
    den = "R" if k is None else f"min({k}, R)"
    return MetricDef(
        key,
        "voc_ap",
        k,
        f"VOC-style interpolated AP (VOCap / voc_ap) over {cut}: recall = TP / {den}, precision "
        "replaced by its monotone envelope (max precision at any later rank of the cut list), "
        f"AP = (1/{den}) * sum over retrieved relevant items of the interpolated precision. "
        "Queries with R = 0 give NaN in the official code (division by zero) and are excluded "
        "(nanmean). " + _PESSIMISTIC,
    )


def _p_ranked(k: int, denominator: str, no_positive: str, extra: str = "") -> MetricDef:
    den = f"min({k}, G)" if denominator == "min_k_g" else str(k)
    return MetricDef(
        f"P@{k}",
        "precision",
        k,
        f"(relevant items among the first {k} ranks) / {den}, mean over queries; queries with "
        f"R = 0 score 0 and are {'included' if no_positive == 'zero' else 'excluded'}. "
        + extra
        + _PESSIMISTIC,
        denominator=denominator,
        no_positive=no_positive,
    )


def _sake_like(name: str, description: str, source: str, notes: tuple[str, ...]) -> MetricSpec:
    return MetricSpec(
        name=name,
        description=description,
        source=source,
        metrics=(
            _voc(None),
            _voc(200),
            _p_ranked(100, "min_k_g", "zero"),
            _p_ranked(200, "min_k_g", "zero"),
        ),
        notes=(_MEANS, *notes),
    )


_SAKE_SOURCE = (
    "github.com/qliu24/SAKE src/test_cse_resnet_tuberlin_zeroshot.py and "
    "src/test_cse_resnet_sketchy_zeroshot.py (eval_AP_inner, VOCap, eval_precision); mAP@200 "
    "= eval_AP_inner(top=200) as called by github.com/szq0816/DRCPL utils/metric.py "
    "(sake_metric) and github.com/buptLinfy/ZSE-SBIR utils/ap.py (voc_eval(top=200))"
)

_SPECS: list[MetricSpec] = [
    MetricSpec(
        name="default",
        description=(
            "zsbench default: exact, tie-aware, non-interpolated. mAP@all equals sklearn's "
            "average_precision_score per query; mAP@200 is AP over the top 200 / min(200, R); "
            "P@K = hits in top K / K with expected-value tie handling at rank K. Queries "
            "without any relevant gallery item are excluded from every mean and counted in "
            "n_queries_without_positive."
        ),
        source="zsbench (sklearn.metrics.average_precision_score semantics for AP)",
        metrics=(_AP_ALL, _AP_200, _p_at(100), _p_at(200)),
        notes=(_MEANS,),
    ),
    _sake_like(
        "sake",
        "SAKE (Liu et al., ICCV 2019) evaluator: VOC-interpolated AP over the whole ranking "
        "and over the top 200 (/min(200, R)); P@K = hits in top K / min(K, G).",
        _SAKE_SOURCE,
        (
            "SAKE's test script reports mAP@all and P@100; mAP@200 / P@200 use the same "
            "functions with top=200, as the later SAKE-based codebases (DRCPL, ZSE-SBIR) do.",
        ),
    ),
    _sake_like(
        "voc",
        "VOC-style interpolated AP evaluator shared by SAKE, DRCPL (and, for AP, ZSE-SBIR); "
        "same definitions as 'sake'.",
        _SAKE_SOURCE,
        ("Same metrics as 'sake'; ZSE-SBIR's P@K differs, use 'zse-sbir' for it.",),
    ),
    _sake_like(
        "drcpl",
        "DRCPL (szq0816/DRCPL) evaluator: SAKE's eval_ap/voc_ap with cosine scores, "
        "mAP@all, mAP@200 (/min(200, R)), P@100, P@200 (/min(K, G)).",
        "github.com/szq0816/DRCPL utils/metric.py (compute_metric, sake_metric, eval_ap, voc_ap, "
        "eval_precision)",
        (
            "DRCPL averages APs with sum/len, so one query without a relevant item would make "
            "its mAP NaN; zsbench excludes such queries (nanmean, as SAKE and ZSE-SBIR do). "
            "DRCPL scores with cosine similarity: pass similarity='cosine'.",
        ),
    ),
    MetricSpec(
        name="zse-sbir",
        description=(
            "ZSE-SBIR (Lin et al., CVPR 2023) evaluator: VOC-interpolated AP over the whole "
            "ranking and the top 200 (/min(200, R)); P@K = hits within the first min(K, R) "
            "ranks / min(K, R)."
        ),
        source="github.com/buptLinfy/ZSE-SBIR utils/ap.py (calculate, voc_eval, precision_eval, "
        "voc_ap) called from utils/valid.py",
        metrics=(
            _voc(None),
            _voc(200),
            *(
                MetricDef(
                    f"P@{k}",
                    "window_precision",
                    k,
                    f"(relevant items among the first m = min({k}, R) ranks) / m, nanmean over "
                    "queries (precision_eval truncates at min(K, R), not at K). Queries with "
                    "R = 0 give the mean of an empty slice (NaN) and are excluded. " + _PESSIMISTIC,
                )
                for k in (100, 200)
            ),
        ),
        notes=(_MEANS,),
    ),
    MetricSpec(
        name="sem-pcyc",
        description=(
            "SEM-PCYC (Dutta & Akata, CVPR 2019) evaluator: mAP@all = sklearn AP per query; "
            "mAP@200 = sklearn AP of the top-200 list alone (recall over the relevant items "
            "found in the top 200); P@K = hits in top K / min(K, G); queries without relevant "
            "items score 0 and are included."
        ),
        source="github.com/AnjanDutta/sem-pcyc src/utils.py (apsak, aps, precak, prec) called "
        "from src/test.py (validate)",
        metrics=(
            MetricDef(
                "mAP@all",
                "ap",
                None,
                "sklearn.metrics.average_precision_score(relevant, scores) per query over the "
                "whole gallery (apsak with k=None), tie-aware as sklearn; mean over all "
                "queries, a query with R = 0 scores 0 and is included.",
                no_positive="zero",
            ),
            MetricDef(
                "mAP@200",
                "sempcyc_ap_at_k",
                200,
                "apsak(k=200): the first 200 ranks are cut out and sklearn's "
                "average_precision_score is applied to that list alone, i.e. (1/H) * sum over "
                "relevant items in the list of TP(>=s)/(TP(>=s)+NEG(>=s)) counted inside the "
                "list, H = relevant items in the top 200 (not R); 0 when H = 0; mean over all "
                "queries. Which members of a tie group straddling rank 200 are in the list: the "
                "spec's ties rule (expected: hypergeometric number of relevant ones). "
                + _PESSIMISTIC,
                no_positive="zero",
            ),
            _p_ranked(
                100, "min_k_g", "zero", "SEM-PCYC prec(): |relevant & top-K| / min(K, len(top-K)). "
            ),
            _p_ranked(
                200, "min_k_g", "zero", "SEM-PCYC prec(): |relevant & top-K| / min(K, len(top-K)). "
            ),
        ),
        notes=(
            _MEANS,
            "SEM-PCYC scores with exp(-euclidean distance); that transform is monotone, so "
            "similarity='euclidean' ranks identically (up to exp underflow ties in their code).",
        ),
    ),
    MetricSpec(
        name="yelamarthi",
        description=(
            "Yelamarthi et al. (ECCV 2018) evaluator: over the 200 nearest neighbours, "
            "mAP@200 = (1/200) * sum of P@i at relevant ranks i and P@200 = hits / 200; "
            "queries without relevant items score 0 and are included."
        ),
        source="github.com/ShivaKrishnaM/ZS-SBIR trainCVAE_pre.py (find_precision, mapChange; "
        "NearestNeighbors(n_neighbors=200, metric='cosine'))",
        metrics=(
            MetricDef(
                "mAP@200",
                "yelamarthi_ap_at_k",
                200,
                "(1/200) * sum over relevant items at ranks i <= 200 of (hits in the first i) "
                "/ i; divided by 200, not by R or min(200, R), so a perfect ranking of a class "
                "with R < 200 scores R/200. Non-interpolated. Mean over all queries "
                "(R = 0 gives 0). " + _PESSIMISTIC,
                no_positive="zero",
            ),
            _p_ranked(200, "k", "zero"),
        ),
        notes=(
            _MEANS,
            "The official code computes only mAP@200 and P@200 (no mAP@all) and ranks by "
            "cosine distance: pass similarity='cosine'. It needs G >= 200.",
        ),
    ),
    MetricSpec(
        name="precision-min-k-r",
        description=(
            "The default spec, except P@K = expected hits in top K / min(K, R), so that a "
            "perfect ranking scores 1 even for classes with fewer than K relevant items."
        ),
        source="zsbench (P@K normalised by min(K, R), as e.g. CIRCO normalises AP@k by "
        "min(k, #gt))",
        metrics=(_AP_ALL, _AP_200, _p_at(100, "min_k_r"), _p_at(200, "min_k_r")),
        notes=(_MEANS,),
    ),
]

METRIC_SPECS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}


def get_spec(name: str | MetricSpec, ties: str | None = None) -> MetricSpec:
    """The spec registered under ``name`` (a MetricSpec passes through unchanged), with its tie
    rule replaced by ``ties`` when given (expected | pessimistic | optimistic)."""
    if ties is not None and ties not in ranking.TIES:
        raise unknown_name("tie rule", ties, ranking.TIES)
    if isinstance(name, MetricSpec):
        return name.with_ties(ties)
    try:
        return METRIC_SPECS[name].with_ties(ties)
    except (KeyError, TypeError):
        raise unknown_name("metric spec", name, METRIC_SPECS) from None
