"""The CIR metric specs: what a CIR result's numbers are, recorded like an SBIR MetricSpec.

A CIR benchmark fixes its metrics (the official evaluation of FashionIQ, CIRR and CIRCO), so a
CIR spec is named by its protocol and carries only a tie rule. :func:`get_cir_spec` gives the
:class:`CIRSpec` whose ``to_dict()`` every CIR result records in ``spec``, in the same shape as
:meth:`zsbench.metrics.specs.MetricSpec.to_dict` (name, description, source, version, ties,
metrics), so the leaderboard, the report and a reader treat both tasks alike. The functions
that compute the numbers are in :mod:`zsbench.metrics.cir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zsbench.errors import unknown_name
from zsbench.metrics import ranking
from zsbench.metrics.cir import CIRCO_KS, CIRR_KS, CIRR_SUBSET_KS, FASHIONIQ_KS
from zsbench.metrics.specs import spec_header, with_ties
from zsbench.metrics_version import METRICS_VERSION

_RANK = (
    "rank = 1-based position in the gallery sorted by descending score, ties by the spec's rule; "
)


@dataclass(frozen=True)
class CIRSpec:
    """The metrics of one CIR protocol: {key: definition}, their source and the tie rule."""

    name: str  # the protocol: fashioniq | cirr | circo
    description: str
    source: str
    metrics: tuple[tuple[str, str], ...]  # (key, definition)
    notes: tuple[str, ...] = field(default_factory=tuple)
    version: str = METRICS_VERSION
    ties: str = "expected"

    def __post_init__(self) -> None:
        ranking.check_ties(self.ties)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.metrics]

    def with_ties(self, ties: str | None) -> CIRSpec:
        return with_ties(self, ties)

    def to_dict(self) -> dict:
        return {
            **spec_header(self),
            "metrics": {key: {"definition": text} for key, text in self.metrics},
            "definition": "zsbench.metrics.cir (docs/cir.md)",
        }


def _recall(k: int, gallery: str) -> tuple[str, str]:
    return f"R@{k}", f"{_RANK}fraction of queries whose target has rank <= {k} in {gallery}."


CIR_SPECS: dict[str, CIRSpec] = {
    "fashioniq": CIRSpec(
        name="fashioniq",
        description="FashionIQ validation: R@10 and R@50 per category and their mean.",
        source="FashionIQ (Wu et al., CVPR 2021); SEARLE's and LinCIR's validate.py",
        metrics=tuple(_recall(k, "the category's gallery, reference kept") for k in FASHIONIQ_KS),
        notes=(
            "Reported per category as '<category>/R@k' and as 'mean/R@k', the unweighted mean "
            "over the categories (SEARLE's average_fiq_recall_at10), not over queries.",
        ),
    ),
    "cirr": CIRSpec(
        name="cirr",
        description="CIRR: R@1/5/10/50 without the reference, R_subset@1/2/3 and Avg.",
        source="CIRR (Liu et al., ICCV 2021) and its test server; SEARLE's validate.py",
        metrics=tuple(_recall(k, "the gallery without the query's reference") for k in CIRR_KS)
        + tuple(
            (
                f"R_subset@{k}",
                f"{_RANK}fraction of queries whose target has rank <= {k} among the query's "
                "img_set members, reference removed.",
            )
            for k in CIRR_SUBSET_KS
        )
        + (("Avg", "(R@5 + R_subset@1) / 2, the number most CIRR tables print."),),
    ),
    "circo": CIRSpec(
        name="circo",
        description="CIRCO: mAP@5/10/25/50 over every ground truth, R@k on the main target.",
        source="CIRCO (Baldrati et al., ICCV 2023), src/evaluation.py and its test server",
        metrics=tuple(
            (
                f"mAP@{k}",
                f"{_RANK}mean over queries of AP@{k} = sum of j / r_j over the ground "
                f"truths with rank r_j <= {k} (the j-th in descending score), divided by "
                f"min(#gt, {k}); reference kept.",
            )
            for k in CIRCO_KS
        )
        + tuple(_recall(k, "the gallery (the main target only)") for k in CIRCO_KS),
    ),
}


def get_cir_spec(protocol: str, ties: str | None = None) -> CIRSpec:
    """The spec of a CIR protocol (``zsbench.metrics.cir.PROTOCOLS``), with ``ties`` if given."""
    if protocol not in CIR_SPECS:
        raise unknown_name("CIR protocol", protocol, CIR_SPECS)
    return CIR_SPECS[protocol].with_ties(ties)
