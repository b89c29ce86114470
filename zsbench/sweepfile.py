"""What a sweep runs: a sweep file (`zsbench sweep --config sweeps/<name>.yaml`) merged with
the command line.

A sweep file (only `methods` is required; datasets default to synthetic and seeds to 0, as on
the command line; see sweeps/reference.yaml):

    description: free text
    methods: [frozen, supervised, drcpl]        # or "all" (every method of the datasets' task)
    datasets: [synthetic, sketchy21-mini@s0, sketchy21-mini@s1]
    seeds: [0, 1, 2]
    set:                                        # overrides, in order; later ones win
      - trainer.max_epochs=1                    # every cell
      - drcpl:model.clip=tiny                   # drcpl's cells
      - sketchy21-mini@s1:dataset.split_seed=1  # one dataset variant's cells
    launcher:
      name: slurm                               # or local (the default)
      jobs: 2                                   # local worker processes
      threads: 1                                # torch threads per cell (default: the cores
                                                #   / jobs, or Slurm's cpus_per_task)
      retries: 1                                # reruns of a cell whose worker was killed
      slurm: {timeout_min: 120, partition: gpu} # submitit / Slurm parameters

`methods` and `datasets` may also be mappings from a name to its own overrides
(`drcpl: {set: [model.clip=tiny]}`), the same as the scoped form above. A dataset label
`name@variant` is the dataset `name` under another label, so one sweep can hold one dataset
twice with different settings (`sketchy21-mini@s0` and `@s1`: two class splits); the label
exists only in the sweep (cell names, logs, scopes); results are told apart by what the settings
change (here the split name, `mini-seed0` / `mini-seed1`).

Order of the overrides of a cell: the file's `set`, then its `datasets` mapping, then its
`methods` mapping, then `--set` on the command line. `--methods`, `--datasets`, `--seeds`,
`--launcher`, `--jobs`, `--threads`, `--retries` replace the file's values; `--slurm key=value`
updates its `launcher.slurm`. Every result of a sweep run from a file records the file's path
and sha256 (`provenance.sweep`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import yaml

from zsbench.errors import ZsbenchError, did_you_mean

LAUNCHERS = ("local", "slurm")
FILE_KEYS = ("description", "methods", "datasets", "seeds", "set", "launcher")
LAUNCHER_KEYS = ("name", "jobs", "threads", "retries", "slurm")


@dataclasses.dataclass
class SweepSpec:
    methods: list[str]
    datasets: list[str]  # names or variant labels (`name@variant`)
    seeds: list[int]
    overrides: list[str] = dataclasses.field(default_factory=list)  # possibly scoped
    launcher: str = "local"
    jobs: int = 1
    threads: int | None = None
    retries: int = 1
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    file: str | None = None
    sha256: str | None = None
    labels: list[str] = dataclasses.field(default_factory=list)  # every label the file names

    def record(self) -> dict:
        """What each result records of the sweep (`provenance.sweep`)."""
        return {"file": self.file, "sha256": self.sha256, "launcher": self.launcher}


def _words(values: Any, where: str) -> list[str]:
    """A name list from YAML or argv: a string, or a list of strings; commas and spaces split."""
    if values is None:
        return []
    if isinstance(values, (str, int)):
        values = [values]
    if not isinstance(values, list):
        raise ZsbenchError(f"{where} must be a list of names, got {type(values).__name__}.")
    return [n for v in values for n in str(v).replace(",", " ").split()]


def _override_list(values: Any, where: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise ZsbenchError(f"{where} must be a list of 'section.key=value' strings.")
    out = []
    for v in values:
        if not isinstance(v, str) or "=" not in v:
            hint = ""
            if isinstance(v, dict) and len(v) == 1:
                ((k, val),) = v.items()
                hint = f" (write `- {k}={val}`: YAML read `{k}: {val}` as a mapping)"
            raise ZsbenchError(f"{where}: {v!r} is not a 'section.key=value' string{hint}.")
        out.append(v)
    return out


def _names_and_scoped(value: Any, where: str) -> tuple[list[str], list[str]]:
    """`methods`/`datasets` of a file: a list, or a mapping name -> {set: [...]} (or a list)."""
    if not isinstance(value, dict):
        return _words(value, where), []
    names, scoped = [], []
    for name, body in value.items():
        name = str(name)
        names.append(name)
        if isinstance(body, dict):
            unknown = set(body) - {"set"}
            if unknown:
                key = sorted(unknown)[0]
                raise ZsbenchError(
                    f"{where}.{name}: unknown key {key!r}.{did_you_mean(key, ['set'])} "
                    "An entry holds only `set: [section.key=value, ...]`."
                )
            body = body.get("set")
        scoped += [f"{name}:{o}" for o in _override_list(body, f"{where}.{name}.set")]
    return names, scoped


def _check_keys(data: dict, known: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in known:
            raise ZsbenchError(
                f"{where}: unknown key {key!r}.{did_you_mean(str(key), known)} "
                f"Keys: {', '.join(known)}."
            )


def parse_slurm_options(items: list[str]) -> dict[str, Any]:
    """`--slurm key=value` items -> a dict (values parsed as YAML: 60, true, [a, b], {k: v})."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ZsbenchError(f"--slurm {item!r}: expected key=value (e.g. timeout_min=120).")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_sweep_file(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (names are checked when the grid is expanded)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        sweeps = Path("sweeps")
        if sweeps.is_dir():
            names = sorted(p.name for p in sweeps.glob("*.yaml"))
            hint = f"{did_you_mean(path.name, names)} In sweeps/: {', '.join(names) or 'none'}."
        raise ZsbenchError(f"Sweep file {path} not found.{hint}")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as err:
        raise ZsbenchError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ZsbenchError(f"{path} must hold a mapping (methods, datasets, seeds, ...).")
    _check_keys(data, FILE_KEYS, str(path))
    methods, m_scoped = _names_and_scoped(data.get("methods"), f"{path}: methods")
    datasets, d_scoped = _names_and_scoped(data.get("datasets", ["synthetic"]), f"{path}: datasets")
    seeds = data.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ZsbenchError(f"{path}: seeds must be a list of integers, got {seeds!r}.")
    launcher = data.get("launcher") or {}
    if isinstance(launcher, str):
        launcher = {"name": launcher}
    if not isinstance(launcher, dict):
        raise ZsbenchError(f"{path}: launcher must be a mapping ({', '.join(LAUNCHER_KEYS)}).")
    _check_keys(launcher, LAUNCHER_KEYS, f"{path}: launcher")
    slurm = launcher.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise ZsbenchError(f"{path}: launcher.slurm must be a mapping of submitit parameters.")
    spec = SweepSpec(
        methods=methods,
        datasets=datasets,
        seeds=seeds,
        overrides=[*_override_list(data.get("set"), f"{path}: set"), *d_scoped, *m_scoped],
        launcher=_launcher_name(launcher.get("name", "local"), str(path)),
        jobs=int(launcher.get("jobs", 1)),
        threads=None if launcher.get("threads") is None else int(launcher["threads"]),
        retries=int(launcher.get("retries", 1)),
        slurm=dict(slurm),
        file=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        labels=[d for d in datasets if "@" in d],
    )
    return spec


def _launcher_name(name: Any, where: str) -> str:
    if name not in LAUNCHERS:
        raise ZsbenchError(
            f"{where}: unknown launcher {name!r}.{did_you_mean(str(name), LAUNCHERS)} "
            f"Launchers: {', '.join(LAUNCHERS)}."
        )
    return name


def expand_all(methods: list[str], datasets: list[str]) -> list[str]:
    """`all` as the method list -> every registered method of the datasets' task (of every
    task when the datasets mix tasks; the grid then leaves out mismatched pairs)."""
    if methods != ["all"]:
        return methods
    from zsbench.registry import DATASETS, METHODS
    from zsbench.sweep import dataset_of

    tasks = {DATASETS.info(dataset_of(d)).task for d in datasets}
    names = METHODS.names()
    if len(tasks) == 1:
        names = [n for n in names if METHODS.info(n).task in tasks]
    return names


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep `zsbench sweep` runs: the file of `--config` (if any), then the flags."""
    spec = load_sweep_file(args.config) if args.config else SweepSpec([], ["synthetic"], [0])
    if args.methods:
        spec.methods = _words(args.methods, "--methods")
    if args.datasets:
        spec.datasets = _words(args.datasets, "--datasets")
    if args.seeds:
        spec.seeds = [int(s) for s in args.seeds]
    spec.overrides = [*spec.overrides, *args.set]
    if args.launcher:
        spec.launcher = _launcher_name(args.launcher, "--launcher")
    if args.jobs is not None:
        spec.jobs = args.jobs
    if args.threads is not None:
        spec.threads = args.threads
    if args.retries is not None:
        spec.retries = args.retries
    spec.slurm.update(parse_slurm_options(args.slurm))
    if not spec.methods:
        raise ZsbenchError("zsbench sweep needs --methods (names or 'all') or a --config file.")
    spec.methods = expand_all(spec.methods, spec.datasets)
    spec.labels = list(dict.fromkeys([*spec.labels, *spec.datasets]))
    return spec
