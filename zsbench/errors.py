"""Errors that tell the user what went wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZsbenchError(Exception):
    """An error caused by user input (a name, a path, a config value); the message says the fix."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean: a, b?' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(str(name), sorted(choices), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ZsbenchError:
    """The error for a name that is not registered, listing close matches and all choices."""
    choices = sorted(choices)
    return ZsbenchError(
        f"Unknown {kind} {name!r}.{did_you_mean(name, choices)} Known: {', '.join(choices)}."
    )
