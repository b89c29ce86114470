"""Checks a config value against the annotation of the parameter it sets, and the range that
makes sense for it, before anything runs.

The annotations are the ones already written on the `__init__` signatures of the methods and
datamodules and on the runner's dataclasses (zsbench.config): one source of truth, checked by
pydantic (strict, so `"abc"` is not an int and `true` is not a number; an int is accepted where a
float is expected). A value whose annotation cannot be resolved, or is `Any`, is not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import typing
from typing import Any

from zsbench.errors import ZsbenchError

# ranges by key name, for every section: (lower bound, inclusive?, upper bound, inclusive?)
AT_LEAST_ONE = (1, True, None, False)
RANGES: dict[str, tuple] = {
    "max_epochs": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "eval_batch_size": AT_LEAST_ONE,
    "num_nodes": AT_LEAST_ONE,
    "log_every_n_steps": AT_LEAST_ONE,
    "chunk_size": AT_LEAST_ONE,
    "num_workers": (0, True, None, False),
    "val_fraction": (0, True, 1, False),
    "lr": (0, False, None, False),
    "learning_rate": (0, False, None, False),
    "weight_decay": (0, True, None, False),
    "momentum": (0, True, 1, True),
    "dropout": (0, True, 1, False),
    "image_size": AT_LEAST_ONE,
}


def _range_of(key: str) -> tuple | None:
    if key in RANGES:
        return RANGES[key]
    if key.endswith("_lr"):
        return RANGES["lr"]
    return None


def init_chain(cls: Any):
    """The classes whose `__init__` a `cls(**kwargs)` call reaches, with their signature
    parameters: `cls.__init__`, then each parent's while a `**kwargs` passes the rest on."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        yield klass, params
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break


def annotations(cls: Any) -> dict[str, Any]:
    """name -> resolved annotation of a dataclass's fields, or of the `__init__` parameters
    along `init_chain` (the parameters zsbench.config.init_parameters collects)."""
    return dict(_annotations(cls))


@functools.cache
def _annotations(cls: Any) -> tuple[tuple[str, Any], ...]:
    found: dict[str, Any] = {}
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            _resolve_into(found, f.name, f.type, cls)
        return tuple(found.items())
    for klass, params in init_chain(cls):
        for name, p in params.items():
            if name not in found and p.annotation is not p.empty:
                _resolve_into(found, name, p.annotation, klass)
    return tuple(found.items())


def _resolve_into(found: dict[str, Any], name: str, ann: Any, owner: Any) -> None:
    if isinstance(ann, str):
        namespace = {**vars(typing), **vars(sys.modules[owner.__module__])}
        try:
            ann = eval(ann, namespace)  # noqa: S307 - an annotation of our own code
        except Exception:  # a name only imported for type checking: not checked
            return
    found[name] = ann


def check_value(key: str, value: Any, annotation: Any, where: str) -> None:
    """Raise ZsbenchError naming the key, the value, what was expected and where it came from."""
    if annotation not in (None, Any, inspect.Parameter.empty):
        from pydantic import ValidationError

        try:
            adapter = _adapter(annotation)
        except Exception:  # an annotation pydantic cannot build a schema for: not checked
            adapter = None
        if adapter is not None:
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError:
                raise ZsbenchError(
                    f"{where}: {key} must be {_type_name(annotation)}, got {value!r} "
                    f"({type(value).__name__})."
                ) from None
    bounds = _range_of(key.rsplit(".", 1)[-1])
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, low_incl, high, high_incl = bounds
    bad = (low is not None and (value < low or (value == low and not low_incl))) or (
        high is not None and (value > high or (value == high and not high_incl))
    )
    if bad:
        lo = "" if low is None else f"{'>=' if low_incl else '>'} {low}"
        hi = "" if high is None else f"{'<=' if high_incl else '<'} {high}"
        expected = " and ".join(x for x in (lo, hi) if x)
        raise ZsbenchError(f"{where}: {key} must be {expected}, got {value!r}.")


@functools.lru_cache(maxsize=256)
def _adapter(annotation: Any):
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return TypeAdapter(annotation)


def _type_name(annotation: Any) -> str:
    """`int`, `float | None`, or `one of 'a', 'b', None` for unions of literals."""
    args = typing.get_args(annotation)
    if not args:
        return getattr(annotation, "__name__", None) or str(annotation)
    members = [a for a in args if typing.get_origin(a) is typing.Literal or a is type(None)]
    if typing.get_origin(annotation) is typing.Literal or len(members) == len(args):
        values = []
        for a in [annotation] if typing.get_origin(annotation) is typing.Literal else args:
            values += [None] if a is type(None) else list(typing.get_args(a))
        return "one of " + ", ".join(repr(v) for v in values)
    return str(annotation).replace("typing.", "")
