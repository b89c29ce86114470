"""The zero-shot split as data: a named seen/unseen class list whose hash every result records.

Part of the protocol, so it lives in the core: datasets build splits (datamodules/), results and
the leakage check (zsbench.leakage) read them, and `class_key` makes one class the same key
whatever the spelling of a user's copy of the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence

from zsbench.errors import ZsbenchError


def class_key(name: str) -> str:
    """'Hot-air balloon', 'hot_air_balloon', 'car (sedan)' -> 'hot_air_balloon', 'car_sedan'."""
    key = re.sub(r"[()\[\]]", "", name.strip().lower())
    return re.sub(r"[\s_\-]+", "_", key).strip("_")


@dataclasses.dataclass(frozen=True)
class Split:
    """A named seen/unseen class split. Its hash is recorded in every result."""

    name: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]

    @property
    def hash(self) -> str:
        """Hash of the normalised class names: the same split hashes the same whatever the
        folder spelling of a user's copy of the data."""
        payload = json.dumps(
            {
                "seen": sorted(map(class_key, self.seen)),
                "unseen": sorted(map(class_key, self.unseen)),
            }
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check(self, available: set[str], where: str) -> None:
        overlap = set(self.seen) & set(self.unseen)
        if overlap:
            raise ZsbenchError(f"Split {self.name!r}: classes both seen and unseen: {overlap}.")
        missing = (set(self.seen) | set(self.unseen)) - available
        if missing:
            raise ZsbenchError(
                f"Split {self.name!r} names classes that {where} does not have: "
                f"{sorted(missing)[:10]}. Check the data root or the class list."
            )
        if not self.seen or not self.unseen:
            raise ZsbenchError(f"Split {self.name!r} needs at least one seen and one unseen class.")


def split_from_unseen(name: str, classes: Sequence[str], unseen: Sequence[str]) -> Split:
    """The split whose unseen classes are `unseen` and whose seen classes are all the others."""
    unseen_set = set(unseen)
    unknown = unseen_set - set(classes)
    if unknown:
        raise ZsbenchError(f"Unseen classes {sorted(unknown)} are not in the dataset's classes.")
    seen = tuple(sorted(c for c in classes if c not in unseen_set))
    return Split(name, seen, tuple(sorted(unseen_set)))
