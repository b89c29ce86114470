"""Name -> plug-in registries for methods and datasets, filled from package entry points.

A method is declared once, as an entry point of the group ``zsbench.methods`` (datasets:
``zsbench.datasets``) in its package's pyproject::

    [project.entry-points."zsbench.methods"]
    "rpkd" = "zsbench.methods.rpkd:Rpkd"

The name equals its config file (`configs/methods/<name>.yaml`) and its Makefile variable
(`METHOD=<name>`). The core never imports a plug-in to know it exists: `names()` and `info()`
(task and one-line description, read from the module's source without running it) cost no
import, so `zsbench methods` answers at once; `get(name)` imports the module on first use, so a
broken method breaks only itself. A third-party package adds a method by declaring the same
entry point group, with no change here. Duplicate names are an error, unknown names get
"did you mean".
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from zsbench.errors import ZsbenchError, unknown_name


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """What `zsbench methods` / `zsbench datasets` print, known without importing the plug-in."""

    name: str
    target: str  # "module:Class"
    task: str | None
    description: str


class Registry:
    """Plug-in classes of one entry point group, imported on first use."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._added: dict[str, Any] = {}  # registered in-process (tests, notebooks)
        self._loaded: dict[str, Any] = {}

    # ------------------------------------------------------------------ discovery
    def _targets(self) -> dict[str, str]:
        targets = dict(_entry_points(self.group))
        for name, obj in self._added.items():
            if name in targets:
                raise ZsbenchError(
                    f"{self.kind} {name!r} is registered twice ({targets[name]} and "
                    f"{obj.__module__}:{obj.__qualname__}); rename one."
                )
            targets[name] = f"{obj.__module__}:{obj.__qualname__}"
        return targets

    def names(self) -> list[str]:
        return sorted(self._targets())

    def __contains__(self, name: str) -> bool:
        return name in self._targets()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def target(self, name: str) -> str:
        targets = self._targets()
        if name not in targets:
            raise unknown_name(self.kind, name, targets)
        return targets[name]

    # ------------------------------------------------------------------ use
    def get(self, name: str) -> Any:
        """The plug-in class, imported now if it was not yet."""
        if name in self._added:
            return self._added[name]
        if name not in self._loaded:
            target = self.target(name)
            module, _, qualname = target.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as err:
                raise ZsbenchError(
                    f"{self.kind} {name!r} ({target}) could not be loaded: "
                    f"{type(err).__name__}: {err}"
                ) from err
            obj.registry_name = name
            self._loaded[name] = obj
        return self._loaded[name]

    def info(self, name: str) -> PluginInfo:
        """Task and description read from the plug-in's source; imports it only when the
        source does not say them literally (e.g. a class built by a factory function)."""
        target = self.target(name)
        task, description = static_info(target)
        if task is None or description is None:
            obj = self.get(name)
            meta = getattr(obj, "metadata", None)
            task = getattr(meta, "task", None) or getattr(obj, "task", None)
            description = describe(obj)
        return PluginInfo(name, target, task, description)

    def register(self, name: str) -> Callable[[Any], Any]:
        """Add a class in-process (tests, notebooks); packages declare entry points instead."""

        def decorator(obj: Any) -> Any:
            if name in self._targets():
                raise ZsbenchError(
                    f"{self.kind} {name!r} is registered twice ({self.target(name)} and "
                    f"{obj.__module__}:{obj.__qualname__}); rename one."
                )
            obj.registry_name = name
            self._added[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        self._added.pop(name, None)


@cache
def _entry_points_cached(group: str) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in found and found[ep.name] != ep.value:
            raise ZsbenchError(
                f"entry point {ep.name!r} of group {group} is declared twice ({found[ep.name]} "
                f"and {ep.value}); uninstall or rename one."
            )
        found[ep.name] = ep.value
    return tuple(sorted(found.items()))


def _entry_points(group: str) -> tuple[tuple[str, str], ...]:
    found = _entry_points_cached(group)
    if not found:
        raise ZsbenchError(
            f"no {group} entry points found: zsbench is not installed. Run `make install` (or "
            "`pip install -e .`) in the repository."
        )
    return found


def refresh() -> None:
    """Forget the cached entry points (after installing a plug-in package in-process)."""
    _entry_points_cached.cache_clear()


METHODS = Registry("method", "zsbench.methods")
DATASETS = Registry("dataset", "zsbench.datasets")


def check_pair(method: str, dataset: str) -> str:
    """The task of one method x dataset cell. Unknown names, or a method and a dataset of
    different tasks, fail with the fix; read from the plug-ins' source, so `zsbench bench`
    answers a typo at once instead of after importing the training stack (~15 s)."""
    m, d = METHODS.info(method), DATASETS.info(dataset)
    if m.task != d.task:
        raise ZsbenchError(
            f"Method {method!r} is a {m.task} method but dataset {dataset!r} is a {d.task} "
            f"dataset. `zsbench methods` and `zsbench datasets` list each one's task."
        )
    return m.task


def describe(obj: Any) -> str:
    """First line of a class docstring: the one-line description `zsbench methods` prints."""
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------- reading a plug-in's source


@cache
def _module_tree(module: str) -> ast.Module | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=spec.origin)


def _find_class(module: str, name: str) -> tuple[ast.ClassDef, ast.Module, str] | None:
    """The class `name` of `module` (following `from X import name`), with its module."""
    tree = _module_tree(module)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, tree, module
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _find_class(node.module, alias.name)
    return None


def _literal_task(call: ast.AST) -> str | None:
    if isinstance(call, ast.Call):
        for kw in call.keywords:
            if kw.arg == "task" and isinstance(kw.value, ast.Constant):
                return kw.value.value
    return None


def _task_of(cls: ast.ClassDef, tree: ast.Module, module: str, depth: int = 0) -> str | None:
    """`task = "..."`, or the `task=` of `metadata = MethodMetadata(...)` (directly or inside
    a module-level factory function), in the class or, failing that, its bases."""
    for node in cls.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        value = getattr(node, "value", None)
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        if "task" in names and isinstance(value, ast.Constant):
            return value.value
        if "metadata" in names and isinstance(value, ast.Call):
            task = _literal_task(value)
            if task is None and isinstance(value.func, ast.Name):  # a factory function
                for fn in tree.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name == value.func.id:
                        task = next(
                            (t for n in ast.walk(fn) if (t := _literal_task(n)) is not None), None
                        )
            if task is not None:
                return task
    if depth > 8:
        return None
    for base in cls.bases:
        if isinstance(base, ast.Name):
            found = _find_class(module, base.id)
            if found is not None and (task := _task_of(*found, depth + 1)) is not None:
                return task
    return None


def static_info(target: str) -> tuple[str | None, str | None]:
    """(task, first docstring line) of "module:Class" from its source, None where unknown."""
    module, _, qualname = target.partition(":")
    found = _find_class(module, qualname.split(".")[-1])
    if found is None:
        return None, None
    cls, tree, module = found
    doc = ast.get_docstring(cls)
    description = doc.strip().splitlines()[0] if doc else None
    return _task_of(cls, tree, module), description
