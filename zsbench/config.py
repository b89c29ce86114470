"""Configuration: defaults from signatures, YAML overrides, `--set key=value` overrides.

Defaults live in one place, the `__init__` signature of a method or datamodule (and the
dataclasses below for the runner). YAML files only override them:

    configs/datasets/<dataset>.yaml   {dataset: {...}}
    configs/methods/<method>.yaml     {model: {...}, trainer: {...}, eval: {...},
                                       datasets: {<dataset>: {model: ..., trainer: ...}},
                                       presets: {<preset>: {model: ..., dataset: ..., ...}}}

then the preset chosen with `--set preset=<name>` (e.g. `paper`: the paper's sizes where the
defaults are CPU-sized), then `--set section.key=value`. Layers apply in that order. Every key
is checked against the signature it overrides; an unknown key fails with "did you mean".
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from pathlib import Path
from typing import Any

import yaml

from zsbench.config_types import annotations, check_value, init_chain
from zsbench.errors import ZsbenchError, did_you_mean

SECTIONS = ("model", "dataset", "trainer", "eval")

# method __init__ arguments the runner provides from the datamodule (never set in YAML or --set).
# `class_embeddings`: {source: float array [num_classes, dim]} for the seen classes, computed by
# zsbench.semantics from the sources named in the method's `semantics` argument.
DATA_PROVIDED = ("num_classes", "seen_class_names", "feature_dim", "class_embeddings")


# `lightning.Trainer` arguments the runner sets itself (logging, progress, callbacks, weights on
# disk, Python objects); every other Trainer argument is a `trainer.*` key passed through
MANAGED_TRAINER_ARGS = (
    "logger",
    "callbacks",
    "enable_progress_bar",
    "enable_model_summary",
    "enable_checkpointing",
    "default_root_dir",
    "plugins",
    "model_registry",
)
RUNNER_OWNERS = {"trainer": "the trainer", "eval": "the evaluator"}  # for error messages
# `trainer.*` keys that are the runner's, not Lightning's: the dataloaders and augmentation
# (and `enable_checkpointing`: the runner's checkpoints and weights files, zsbench.checkpoints)
RUNNER_ONLY_TRAINER_KEYS = (
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "augment",
    "enable_checkpointing",
)


@dataclasses.dataclass
class TrainerConfig:
    """How the runner trains: zsbench's defaults for the dataloaders and for some
    `lightning.Trainer` arguments. The `trainer` section also holds every other Trainer
    argument (`max_steps`, `accumulate_grad_batches`, `val_check_interval`, ...) with
    Lightning's own default (`trainer_section`), and all of them reach the Trainer."""

    max_epochs: int | None = 10  # null: until trainer.max_steps (a step-count recipe)
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"  # "ddp" for several processes/GPUs (gloo on CPU), see README
    num_nodes: int = 1
    precision: str | int = "32-true"  # "bf16-mixed", "16-mixed", 32, ...
    gradient_clip_val: float | None = None
    limit_train_batches: float | int = 1.0
    log_every_n_steps: int = 10
    fast_dev_run: bool = False
    augment: bool = True  # training-image augmentation (methods that train on images)
    # keep the trained weights beside the result and a checkpoint every epoch that a rerun of
    # an interrupted run resumes from (zsbench.checkpoints; `bench --save-weights`)
    enable_checkpointing: bool = False


@dataclasses.dataclass
class EvalConfig:
    """How the runner evaluates: metric spec (see `zsbench.metrics`) and chunking."""

    spec: str = "default"
    chunk_size: int | None = None
    ties: str = "expected"  # order inside tie groups: expected | pessimistic | optimistic
    # more specs to score the same embeddings with, each written as the result of its own
    # `eval.spec=<name>` variant (SBIR): a paper's evaluator beside the default, one training
    also_specs: list = dataclasses.field(default_factory=list)
    # zero-shot | generalized (GZS-SBIR: seen-class sketches and photos held out of training
    # join the queries and gallery, generalized_fraction x the unseen counts; datamodules/base.py)
    protocol: str = "zero-shot"
    generalized_fraction: float = 0.2
    # score a method that trains at its initial weights, without training, on purpose: the
    # result says status "untrained" and the leaderboard shows it as `<method> [untrained]`
    untrained: bool = False


@functools.cache
def lightning_trainer_parameters() -> dict[str, Any]:
    """name -> inspect.Parameter of `lightning.Trainer.__init__`, less the managed ones."""
    import lightning as L

    params = inspect.signature(L.Trainer.__init__).parameters
    return {
        n: p
        for n, p in params.items()
        if n != "self"
        and n not in MANAGED_TRAINER_ARGS
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def trainer_section() -> tuple[dict[str, Any], dict[str, Any]]:
    """The `trainer` section's defaults and annotations: Lightning's Trainer arguments with
    Lightning's defaults and annotations, then zsbench's TrainerConfig on top (its defaults and
    its stricter annotations win, e.g. `max_epochs: int` where Lightning allows None; for
    `precision` and `devices` Lightning's list of accepted values is the precise one)."""
    lightning = lightning_trainer_parameters()
    defaults = {n: p.default for n, p in lightning.items()}
    defaults.update(dataclasses.asdict(TrainerConfig()))
    types = {n: p.annotation for n, p in lightning.items()}
    types.update(
        {k: v for k, v in annotations(TrainerConfig).items() if k not in ("precision", "devices")}
    )
    return defaults, types


def configs_dir() -> Path:
    """The configs/ folder: ZSBENCH_CONFIGS, else the repository's configs/ (a source checkout,
    editable install), else the copy installed inside the package (`zsbench/configs`)."""
    env = os.environ.get("ZSBENCH_CONFIGS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    repo = here.parent / "configs"
    return repo if (repo / "methods").is_dir() else here / "configs"


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ZsbenchError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ZsbenchError(f"{path} must hold a mapping of sections, got {type(data).__name__}.")
    return data


def parse_override(text: str) -> tuple[str, str, Any]:
    """'model.lr=0.1' -> ('model', 'lr', 0.1). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ZsbenchError(f"Override {text!r} is not of the form section.key=value.")
    key, raw = text.split("=", 1)
    if "." not in key:
        raise ZsbenchError(
            f"Override key {key!r} needs a section: one of {', '.join(SECTIONS)} "
            f"(for example model.{key}={raw})."
        )
    section, name = key.split(".", 1)
    if section not in SECTIONS:
        raise ZsbenchError(
            f"Unknown config section {section!r} in {text!r}.{did_you_mean(section, SECTIONS)} "
            f"Sections: {', '.join(SECTIONS)}."
        )
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return section, name, value


def init_parameters(cls: Any) -> dict[str, inspect.Parameter]:
    """`cls.__init__`'s parameters; a `**kwargs` passed on to the parent adds the parent's own,
    so a variant declares only what it adds and its defaults stay in one place."""
    chain = [sig for _, sig in init_chain(cls)]
    params: dict[str, inspect.Parameter] = {}
    for sig in chain:  # a subclass's own default wins
        for name, p in sig.items():
            params.setdefault(name, p)
    # in the order a reader expects: the base's arguments first, then what each subclass adds
    order = dict.fromkeys(name for sig in reversed(chain) for name in sig)
    return {name: params[name] for name in order}


def signature_defaults(cls: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword parameters of `cls.__init__` with their defaults (required ones map to None)."""
    params = init_parameters(cls)
    out = {}
    for name, p in params.items():
        if name == "self" or name in exclude or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def apply_section(
    base: dict[str, Any],
    updates: dict[str, Any],
    where: str,
    section: str,
    owner: str,
    types: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Update `base` with `updates`, refusing keys that `base` (the signature) does not have
    and values that do not fit the annotation or range of their key (`types`: key ->
    annotation, zsbench.config_types)."""
    if not isinstance(updates, dict):
        raise ZsbenchError(f"{where}: section {section!r} must be a mapping.")
    for key, value in updates.items():
        if key not in base:
            raise ZsbenchError(
                f"{where}: unknown key {section}.{key} for {owner}.{did_you_mean(key, base)} "
                f"Valid keys: {', '.join(sorted(base))}."
            )
        if types is not None:
            check_value(f"{section}.{key}", value, types.get(key), where)
        base[key] = value
    return base


def resolve_config(
    method_cls: Any,
    dataset_cls: Any,
    method: str,
    dataset: str,
    overrides: list[str] | tuple[str, ...] = (),
    data_provided: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """Merge signature defaults, dataset YAML, method YAML (+ per-dataset part) and overrides."""
    trainer_defaults, trainer_types = trainer_section()
    cfg = {
        "model": signature_defaults(method_cls, exclude=data_provided),
        "dataset": signature_defaults(dataset_cls),
        "trainer": trainer_defaults,
        "eval": dataclasses.asdict(EvalConfig()),
    }
    owners = {"model": f"method {method!r}", "dataset": f"dataset {dataset!r}", **RUNNER_OWNERS}
    types = {
        "model": annotations(method_cls),
        "dataset": annotations(dataset_cls),
        "trainer": trainer_types,
        "eval": annotations(EvalConfig),
    }
    root = configs_dir()
    layers: list[tuple[str, dict[str, Any]]] = []
    ds_path = root / "datasets" / f"{dataset}.yaml"
    layers.append((str(ds_path), load_yaml(ds_path)))
    m_path = root / "methods" / f"{method}.yaml"
    m_yaml = load_yaml(m_path)
    per_dataset = m_yaml.pop("datasets", {}) or {}
    presets = m_yaml.pop("presets", {}) or {}
    layers.append((str(m_path), m_yaml))
    layers.append((f"{m_path} (datasets.{dataset})", per_dataset.get(dataset, {}) or {}))
    chosen = [t.split("=", 1)[1] for t in overrides if t.split("=", 1)[0] == "preset"]
    overrides = [t for t in overrides if t.split("=", 1)[0] != "preset"]
    for name in chosen:
        if name not in presets:
            raise ZsbenchError(
                f"--set preset={name}: {m_path.name} has no preset {name!r}."
                f"{did_you_mean(name, presets)} Presets: {', '.join(sorted(presets)) or 'none'}."
            )
        layers.append((f"{m_path} (presets.{name})", presets[name] or {}))
    for where, layer in layers:
        for section, updates in layer.items():
            if section not in cfg:
                raise ZsbenchError(
                    f"{where}: unknown section {section!r}.{did_you_mean(section, cfg)} "
                    f"Sections: {', '.join(SECTIONS)}, datasets."
                )
            apply_section(cfg[section], updates, where, section, owners[section], types[section])
    for text in overrides:
        section, key, value = parse_override(text)
        if section == "model" and key in data_provided:
            raise ZsbenchError(
                f"--set {text}: model.{key} comes from the dataset and cannot be overridden."
            )
        apply_section(
            cfg[section], {key: value}, f"--set {text}", section, owners[section], types[section]
        )
    _check_training_length(cfg["trainer"])
    return cfg


def _check_training_length(tcfg: dict) -> None:
    """A run ends by epochs, by steps, or both (whichever comes first); a step-count recipe
    (LinCIR's 20,000, RTD's 2,000) sets max_steps with max_epochs null."""
    steps = tcfg.get("max_steps")
    if tcfg.get("max_epochs") is None and (steps is None or steps < 1):
        raise ZsbenchError(
            "trainer.max_epochs is null (train by steps) but trainer.max_steps is not set: give "
            "trainer.max_steps=N, or trainer.max_epochs=N."
        )
    if tcfg.get("limit_train_batches") in (0, 0.0):
        raise ZsbenchError(
            "trainer.limit_train_batches=0 trains nothing: the result would be an untrained "
            "model's. Use a positive value (1.0 = every batch), the `frozen` method for an "
            "untrained baseline, or --set eval.untrained=true to score this method untrained "
            "on purpose (recorded as status untrained)."
        )
    if steps is not None and steps != -1 and steps < 1:
        raise ZsbenchError(f"trainer.max_steps must be >= 1 (or -1: no step limit), got {steps}.")


def check_runner_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """Check the `trainer.*` and `eval.*` overrides of the runner's own dataclasses (types,
    ranges) without importing a method, dataset or Lightning, so `--set trainer.max_epochs=abc`
    fails before torch loads. Everything else is checked by resolve_config."""
    types = {"trainer": annotations(TrainerConfig), "eval": annotations(EvalConfig)}
    base = {
        "trainer": dataclasses.asdict(TrainerConfig()),
        "eval": dataclasses.asdict(EvalConfig()),
    }
    for text in overrides:
        if text.split("=", 1)[0] == "preset":
            continue
        section, key, value = parse_override(text)
        if section in types and key in base[section]:  # other trainer keys: Lightning's
            apply_section(
                dict(base[section]), {key: value}, f"--set {text}", section, RUNNER_OWNERS[section],
                types[section],
            )  # fmt: skip


def find_root(root: str | Path | None, env_var: str = "ZSBENCH_DATA") -> Path | None:
    """The data root: `root` when given, else $ZSBENCH_DATA (None when neither is set)."""
    value = root if root not in (None, "") else os.environ.get(env_var)
    return Path(value).expanduser() if value else None
