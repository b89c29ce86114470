"""Named zero-shot class splits, kept as data files in datamodules/splits/<name>.json.

Each manifest keeps the class names in the dataset's own spelling as the official repositories
ship them (`car_(sedan)`, `hot-air_balloon`, TU-Berlin names with spaces); `class_key` maps any
spelling onto one key so that a split matches the folder names of whatever copy a user has.
A user split is a class list given on the command line or in a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from zsbench.errors import ZsbenchError, unknown_name
from zsbench.splits import Split, class_key

SPLITS_DIR = Path(__file__).with_name("splits")


def manifest_names(dataset: str | None = None) -> list[str]:
    names = sorted(p.stem for p in SPLITS_DIR.glob("*.json"))
    if dataset is None:
        return names
    return [n for n in names if read_manifest(n)["dataset"] == dataset]


def read_manifest(name: str) -> dict:
    path = SPLITS_DIR / f"{name}.json"
    if not path.exists():
        raise unknown_name("split", name, [p.stem for p in SPLITS_DIR.glob("*.json")])
    return json.loads(path.read_text())


def match_classes(names: Sequence[str], available: Sequence[str], what: str) -> list[str]:
    """The folder names among `available` that `names` denote (any spelling), or an error."""
    by_key: dict[str, str] = {}
    for a in available:
        k = class_key(a)
        if k in by_key and by_key[k] != a:
            raise ZsbenchError(f"Class folders {by_key[k]!r} and {a!r} collide after normalising.")
        by_key[k] = a
    missing = [n for n in names if class_key(n) not in by_key]
    if missing:
        raise ZsbenchError(
            f"{what}: {len(missing)} class(es) not found in the data: {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}. Is the data root complete and the split "
            f"meant for this dataset?"
        )
    return [by_key[class_key(n)] for n in names]


def load_split(name: str, available: Sequence[str]) -> Split:
    """Manifest `name` resolved to the class folder names in `available`."""
    m = read_manifest(name)
    seen = match_classes(m["seen"], available, f"split {name!r} (seen)")
    unseen = match_classes(m["unseen"], available, f"split {name!r} (unseen)")
    return Split(name, tuple(seen), tuple(unseen))


def parse_class_list(value: str | Sequence[str] | None) -> list[str] | None:
    """A user class list: a list, 'a,b,c', or a path to a file with one class per line
    (a trailing integer id, as in cname_cid.txt, is ignored)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        path = Path(value).expanduser()
        if path.is_file():
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            return [re.sub(r"\s+\d+$", "", ln) for ln in lines]
        return [c.strip() for c in value.split(",") if c.strip()]
    return [str(c) for c in value]


def user_split(unseen: str | Sequence[str], available: Sequence[str]) -> Split:
    """A 'custom' split: the given unseen classes; seen = every other available class."""
    names = parse_class_list(unseen) or []
    unseen_folders = match_classes(names, available, "dataset.unseen")
    seen = [c for c in available if c not in set(unseen_folders)]
    return Split("custom", tuple(sorted(seen)), tuple(sorted(unseen_folders)))
