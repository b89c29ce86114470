"""Run identity: a result is the config it was run with.

A cell (task, dataset, split, method, seed) may hold several results, one per *variant*: the
resolved config compared with the one no override produces (signature defaults + YAML files).

    default        nothing differs (the spec and the tie rule are defaults too)
    <8 hex>        a hash of what differs, e.g. {"eval.spec": "sake"} -> "3f2a9c1e"
    <tag>          a name the user chose with --tag (the differing keys are still recorded)

Keys that say where or how fast a run computes, not what, are not part of the identity (the
data root, loader workers, evaluation batch and chunk sizes, logging interval, devices, whether
the weights are kept), nor the
dataset keys a datamodule declares as choosing the split (`split_keys`): the split name in the
result path already says which split it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from zsbench.errors import ZsbenchError

DEFAULT = "default"
NOT_IDENTITY = frozenset(
    {
        "dataset.root",
        "dataset.cache",
        "trainer.num_workers",
        "trainer.eval_batch_size",
        "trainer.log_every_n_steps",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.strategy",
        "trainer.enable_checkpointing",  # whether weights are kept, not what was trained
        "eval.chunk_size",
        "eval.also_specs",  # each extra spec's result is its own variant (runner.sbir)
    }
)
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def flatten(cfg: dict) -> dict[str, Any]:
    """{'model': {'lr': 0.1}} -> {'model.lr': 0.1} (one level of sections, values kept whole)."""
    return {f"{section}.{key}": v for section, part in cfg.items() for key, v in part.items()}


def config_diff(cfg: dict, base: dict, ignore: tuple[str, ...] | frozenset = ()) -> dict:
    """The keys of `cfg` whose value differs from `base` (dotted names, `cfg`'s values), leaving
    out the keys that are not part of a run's identity and `ignore`."""
    flat, ref = flatten(cfg), flatten(base)
    skip = NOT_IDENTITY | set(ignore)
    return {
        k: v
        for k, v in sorted(flat.items())
        if k not in skip and (k not in ref or _canonical(v) != _canonical(ref[k]))
    }


def variant_name(diff: dict, tag: str | None = None) -> str:
    """`tag` when given, 'default' for an empty diff, else a short stable hash of the diff."""
    if tag:
        return check_tag(tag)
    if not diff:
        return DEFAULT
    return hashlib.sha256(_canonical(diff).encode()).hexdigest()[:8]


def check_tag(tag: str) -> str:
    if tag == DEFAULT or not _TAG.match(tag):
        raise ZsbenchError(
            f"--tag {tag!r}: a tag names a variant in result paths and the leaderboard; use "
            f"letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit), "
            f"and not 'default' (the name of the run without overrides)."
        )
    return tag


def same_config(a: dict, b: dict, ignore: tuple[str, ...] | frozenset = ()) -> bool:
    """Whether two resolved configs are one experiment (identity keys compared as JSON, so a
    config read back from a result file compares equal to the one it was written from)."""
    a, b = json.loads(_canonical(a)), json.loads(_canonical(b))
    return not config_diff(a, b, ignore) and not config_diff(b, a, ignore)


@dataclasses.dataclass(frozen=True)
class Identity:
    """A run's resolved config, what differs from the defaults, and the variant it names."""

    cfg: dict
    diff: dict
    variant: str
    ignore: tuple[str, ...]  # the dataset keys that choose the split (named by the split)
    base: dict


def resolve_identity(
    method: str, dataset: str, overrides: list[str] | tuple[str, ...] = (), tag: str | None = None
) -> Identity:
    """The config of a run and its variant (zsbench.identity), without touching any data."""
    from zsbench.config import DATA_PROVIDED, resolve_config
    from zsbench.registry import DATASETS, METHODS, check_pair

    check_pair(method, dataset)
    method_cls, dataset_cls = METHODS.get(method), DATASETS.get(dataset)
    cfg = resolve_config(method_cls, dataset_cls, method, dataset, overrides, DATA_PROVIDED)
    base = resolve_config(method_cls, dataset_cls, method, dataset, (), DATA_PROVIDED)
    ignore = tuple(f"dataset.{k}" for k in getattr(dataset_cls, "split_keys", ()))
    ignore += ("eval.protocol",)  # named by the split label (`<split>-generalized`)
    diff = config_diff(cfg, base, ignore)
    return Identity(cfg, diff, variant_name(diff, tag), ignore, base)


def respecified(ident: Identity, spec: str) -> Identity:
    """The identity of the same run scored under metric spec `spec` (eval.also_specs)."""
    cfg = json.loads(_canonical(ident.cfg))
    cfg["eval"]["spec"], cfg["eval"]["also_specs"] = spec, []
    diff = config_diff(cfg, ident.base, ident.ignore)
    return Identity(cfg, diff, variant_name(diff), ident.ignore, ident.base)
