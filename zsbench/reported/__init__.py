"""Published numbers as data: what the papers report, to show beside what zsbench measures.

The data files next to this module (``sbir.yaml``, ``cir.yaml``; the schema is documented at
the top of each) hold one entry per row of a paper's results table: one setting (method,
dataset, split, metric spec, backbone, training data) and the numbers the paper prints for it.
:func:`load_reported` reads and validates them and returns one :class:`Reported` record per
published number. It imports neither torch nor a plug-in (the leaderboard and the report use
it); :func:`check_known` checks the names against the registries and metric specs, which the
tests do (:func:`known_names` builds those name sets; it imports the metric code).

Reported rows are shown next to measured rows of the same (dataset family, split, spec) only,
never averaged with them and never used for `vs frozen` or chance (zsbench.leaderboard).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zsbench.errors import ZsbenchError, did_you_mean

HERE = Path(__file__).resolve().parent
FILES = ("sbir.yaml", "cir.yaml")
SCHEMA_VERSION = 1
TASKS = ("sbir", "cir")
OWN_SPLIT = "own"  # a split of the paper's own, described by `split_note`
MARK = " [paper]"  # appended to the method name of a reported row

# entry keys: required ones, then optional ones (anything else is an error)
REQUIRED = ("method", "dataset", "split", "spec", "metrics", "backbone", "training_data", "source")
OPTIONAL = ("split_note", "backbone_id", "image_size", "photos", "notes", "read_from")
SOURCE_REQUIRED = ("authors", "title", "venue", "year")
SOURCE_OPTIONAL = ("table", "url")


class ReportedError(ZsbenchError):
    """A reported-numbers file or entry that does not follow the schema (names file and entry)."""


@dataclass(frozen=True)
class Reported:
    """One published number with its setting and where it comes from."""

    task: str
    method: str
    dataset: str
    split: str
    spec: str
    metric: str
    value: float
    backbone: str
    training_data: str
    source: Mapping[str, Any]
    split_note: str = ""
    backbone_id: str = ""  # zsbench's name of the same backbone (timm name, CLIP hub id)
    image_size: int | None = None
    photos: str = ""
    notes: str = ""
    read_from: str = "paper"
    where: str = field(default="", compare=False)  # "<file> entry <i> (<method>)", for errors

    @property
    def label(self) -> str:
        """The leaderboard's method cell: the method name, marked as a paper's number."""
        return self.method + MARK

    def source_label(self) -> str:
        """`reported: Gu et al., CVPR 2024, Tab. 2` (plus how it was read when not the paper)."""
        s = self.source
        text = f"reported: {s['authors']}, {s['venue']} {s['year']}"
        if s.get("table"):
            text += f", {s['table']}"
        if self.read_from != "paper":
            text += f" (read from {self.read_from})"
        return text

    def setting(self) -> str:
        """The paper's setting in one line (backbone, image size, training data, split, photos)."""
        parts = [f"backbone {self.backbone}"]
        if self.image_size:
            parts.append(f"{self.image_size} px")
        parts.append(f"trained on {self.training_data}")
        if self.split == OWN_SPLIT:
            parts.append(f"split: {self.split_note}")
        if self.photos:
            parts.append(f"photos: {self.photos}")
        if self.notes:
            parts.append(self.notes)
        return "paper: " + "; ".join(parts)


# ---------------------------------------------------------------------------- loading


def data_files() -> list[Path]:
    """The packaged data files (sbir.yaml, cir.yaml)."""
    return [HERE / name for name in FILES]


def load_reported(paths: Iterable[str | Path] | None = None) -> list[Reported]:
    """Every published number in `paths` (default: the packaged files), validated."""
    out: list[Reported] = []
    for path in data_files() if paths is None else [Path(p) for p in paths]:
        out += parse_file(path)
    return out


def parse_file(path: Path) -> list[Reported]:
    """The records of one data file; a schema error names the file, the entry and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ReportedError(f"Reported-numbers file {path} is unreadable ({err}).") from err
    except yaml.YAMLError as err:
        raise ReportedError(f"Reported-numbers file {path} is not valid YAML: {err}") from err
    return parse_document(data, str(path.name))


def parse_document(data: Any, name: str = "<data>") -> list[Reported]:
    """The records of one parsed document ``{schema: 1, task: ..., entries: [...]}``."""
    if not isinstance(data, dict):
        raise ReportedError(f"{name}: expected a mapping with schema, task and entries.")
    _check_keys(data, ("schema", "task", "entries"), (), name)
    if data["schema"] != SCHEMA_VERSION:
        raise ReportedError(
            f"{name}: schema {data['schema']!r} is not supported (this zsbench reads "
            f"schema {SCHEMA_VERSION})."
        )
    task = data["task"]
    if task not in TASKS:
        raise ReportedError(f"{name}: task must be one of {list(TASKS)}, got {task!r}.")
    entries = data["entries"]
    if not isinstance(entries, list):
        raise ReportedError(f"{name}: entries must be a list.")
    out: list[Reported] = []
    for i, entry in enumerate(entries):
        out += parse_entry(entry, task, f"{name} entry {i}")
    return out


def parse_entry(entry: Any, task: str, where: str) -> list[Reported]:
    """One entry (one table row) -> one record per metric; raises ReportedError."""
    if not isinstance(entry, dict):
        raise ReportedError(f"{where}: an entry must be a mapping, got {type(entry).__name__}.")
    if isinstance(entry.get("method"), str):
        where = f"{where} ({entry['method']})"
    _check_keys(entry, REQUIRED, OPTIONAL, where)
    for key in ("method", "dataset", "split", "spec", "backbone", "training_data"):
        _text(entry[key], where, key)
    for key in ("split_note", "backbone_id", "photos", "notes", "read_from"):
        if key in entry:
            _text(entry[key], where, key)
    if entry["split"] == OWN_SPLIT and not entry.get("split_note"):
        raise ReportedError(
            f"{where}: split 'own' needs a split_note that describes the paper's split."
        )
    size = entry.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ReportedError(
            f"{where}: field 'image_size' must be a positive integer, got {size!r}."
        )
    source = entry["source"]
    if not isinstance(source, dict):
        raise ReportedError(
            f"{where}: field 'source' must be a mapping ({', '.join(SOURCE_REQUIRED)})."
        )
    _check_keys(source, SOURCE_REQUIRED, SOURCE_OPTIONAL, f"{where} source")
    for key in ("authors", "title", "venue"):
        _text(source[key], f"{where} source", key)
    if isinstance(source["year"], bool) or not isinstance(source["year"], int):
        raise ReportedError(
            f"{where}: field 'source.year' must be an integer, got {source['year']!r}."
        )
    metrics = entry["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise ReportedError(f"{where}: field 'metrics' must be a non-empty mapping metric: value.")
    out = []
    for metric, value in metrics.items():
        _text(metric, where, "metrics key")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReportedError(f"{where}: metric {metric!r} must be a number, got {value!r}.")
        if not 0.0 <= float(value) <= 1.0:
            raise ReportedError(
                f"{where}: metric {metric!r} = {value} is outside [0, 1]; write fractions, as "
                "zsbench's results do (a paper's 34.9 % is 0.349)."
            )
        out.append(
            Reported(
                task=task,
                method=entry["method"],
                dataset=entry["dataset"],
                split=entry["split"],
                spec=entry["spec"],
                metric=metric,
                value=float(value),
                backbone=entry["backbone"],
                training_data=entry["training_data"],
                source=dict(source),
                split_note=entry.get("split_note", ""),
                backbone_id=entry.get("backbone_id", ""),
                image_size=size,
                photos=entry.get("photos", ""),
                notes=entry.get("notes", ""),
                read_from=entry.get("read_from", "paper"),
                where=where,
            )
        )
    return out


def _check_keys(d: dict, required: Iterable[str], optional: Iterable[str], where: str) -> None:
    required, allowed = tuple(required), (*required, *optional)
    missing = [k for k in required if k not in d]
    if missing:
        raise ReportedError(f"{where}: missing field(s) {missing}.")
    for key in d:
        if key not in allowed:
            raise ReportedError(
                f"{where}: unknown field {key!r}.{did_you_mean(str(key), allowed)} "
                f"Fields: {', '.join(allowed)}."
            )


def _text(value: Any, where: str, key: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ReportedError(f"{where}: field {key!r} must be a non-empty string, got {value!r}.")


# ---------------------------------------------------------------------------- names


@dataclass(frozen=True)
class KnownNames:
    """What the entries may name: methods (name -> task), splits per task, and per task the
    metric spec names with the metric keys each spec defines."""

    methods: Mapping[str, str | None]
    splits: Mapping[str, set[str]]
    spec_metrics: Mapping[str, Mapping[str, set[str]]]


def check_known(records: Iterable[Reported], known: KnownNames) -> None:
    """Raise ReportedError listing every record that names an unregistered method (or one of
    another task), an unknown split (other than `own`), an unknown spec, or a metric its spec
    does not define."""
    problems: list[str] = []
    for r in records:
        if r.method not in known.methods:
            problems.append(
                f"{r.where}: method {r.method!r} is not registered."
                + did_you_mean(r.method, known.methods)
            )
        elif known.methods[r.method] != r.task:
            problems.append(
                f"{r.where}: method {r.method!r} is a {known.methods[r.method]} method, but the "
                f"file holds {r.task} numbers."
            )
        splits = known.splits.get(r.task, set())
        if r.split != OWN_SPLIT and r.split not in splits:
            problems.append(
                f"{r.where}: split {r.split!r} is not a known {r.task} split "
                f"({', '.join(sorted(splits))}) nor '{OWN_SPLIT}'." + did_you_mean(r.split, splits)
            )
        specs = known.spec_metrics.get(r.task, {})
        if r.spec not in specs:
            problems.append(
                f"{r.where}: spec {r.spec!r} is not a {r.task} metric spec."
                + did_you_mean(r.spec, specs)
            )
        elif r.metric not in specs[r.spec]:
            problems.append(
                f"{r.where}: spec {r.spec!r} has no metric {r.metric!r} (it has "
                f"{', '.join(sorted(specs[r.spec]))})." + did_you_mean(r.metric, specs[r.spec])
            )
    if problems:
        raise ReportedError("Reported numbers with unknown names:\n  " + "\n  ".join(problems))


def known_names(sbir_splits: Iterable[str]) -> KnownNames:
    """The registered methods and their tasks (zsbench.registry), the SBIR metric specs
    (zsbench.metrics.specs) and the CIR protocols' metrics and evaluation splits; the SBIR
    split names (the manifests shipped with the datasets) are passed in, since the core does
    not read plug-in files. Imports the metric code (torch)."""
    from zsbench.cir_readers import CIRCO_SPLITS, CIRR_SPLITS, FASHIONIQ_CATEGORIES
    from zsbench.metrics import cir
    from zsbench.metrics.specs import METRIC_SPECS
    from zsbench.registry import METHODS

    methods = {name: METHODS.info(name).task for name in METHODS.names()}
    fiq = {f"{c}/R@{k}" for c in (*FASHIONIQ_CATEGORIES, "mean") for k in cir.FASHIONIQ_KS}
    cirr = {f"R@{k}" for k in cir.CIRR_KS} | {f"R_subset@{k}" for k in cir.CIRR_SUBSET_KS}
    circo = {f"mAP@{k}" for k in cir.CIRCO_KS} | {f"R@{k}" for k in cir.CIRCO_KS}
    cir_splits = {"val", "test", *CIRR_SPLITS, *CIRCO_SPLITS} - {"train"}
    return KnownNames(
        methods=methods,
        splits={"sbir": set(sbir_splits), "cir": cir_splits},
        spec_metrics={
            "sbir": {name: set(spec.keys) for name, spec in METRIC_SPECS.items()},
            "cir": {"fashioniq": fiq, "cirr": cirr, "circo": circo},
        },
    )
