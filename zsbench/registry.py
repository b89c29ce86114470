"""Name -> class registries for methods and datasets.

A method or dataset registers under the same name as its config file (`configs/methods/<name>.yaml`)
and its Makefile variable (`METHOD=<name>`). Duplicate names are an error, not a silent overwrite;
unknown names get "did you mean".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from zsbench.errors import ZsbenchError, unknown_name


class Registry:
    """A mapping from names to classes, filled by the `register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._entries:
                raise ZsbenchError(
                    f"{self.kind} {name!r} is registered twice "
                    f"({self._entries[name].__module__} and {obj.__module__}); rename one."
                )
            obj.registry_name = name
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        _load_builtin()
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        _load_builtin()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _load_builtin()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


METHODS = Registry("method")
DATASETS = Registry("dataset")


def _load_builtin() -> None:
    """Import the built-in method and dataset packages, whose modules register themselves."""
    import datamodules  # noqa: F401
    import methods  # noqa: F401


def describe(obj: Any) -> str:
    """First line of a class docstring: the one-line description `zsbench methods` prints."""
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
