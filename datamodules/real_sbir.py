"""What the real ZS-SBIR readers (Sketchy, TU-Berlin, QuickDraw) share.

Each dataset sits in one folder under the data root (`root`, else $ZSBENCH_DATA) with one class
folder per class in each domain, as the official repositories lay it out, or is described by
SAKE-style file lists: text files of `relative/path/<class>/<file> <label id>` lines, paths relative
to the dataset folder (SAKE's `Sketchy/zeroshot1/*_filelist_*.txt`). An item's class is its
parent folder name; the numeric ids of the lists are not used. The split is a named manifest
(datamodules/splits) or a user list of unseen classes ("custom").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zsbench.config import find_root
from zsbench.datamodules.base import PHOTO, SKETCH, Item, SBIRDataModule
from zsbench.datamodules.split_manifests import (
    load_split,
    manifest_names,
    parse_class_list,
    user_split,
)
from zsbench.errors import ZsbenchError, unknown_name
from zsbench.splits import Split, class_key

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
DOMAIN_NAMES = {SKETCH: "sketch", PHOTO: "photo"}


def data_error(problem: str, layout: str, source: str) -> ZsbenchError:
    """The error for missing or malformed data: what is wrong, the layout, where to get it."""
    return ZsbenchError(
        f"{problem}\nExpected layout under the data root:\n  {layout}\nGet the data: {source}\n"
        f"Then set ZSBENCH_DATA=<data root> or pass --set dataset.root=<data root> "
        f"(zsbench never downloads data)."
    )


def scan_class_folders(folder: Path, domain: int) -> list[Item]:
    """Every image in `folder/<class>/` (hidden files skipped)."""
    items = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                items.append(Item(str(f), class_dir.name, domain))
    return items


def first_dir(base: Path, candidates: Sequence[str]) -> Path | None:
    """The first of `base/<candidate>` that is a folder."""
    return next((base / c for c in candidates if (base / c).is_dir()), None)


def resolve_list_folder(file_lists: str, dataset_dir: Path) -> Path:
    """`file_lists` as given, or relative to the dataset folder (e.g. `zeroshot1`)."""
    for cand in (Path(file_lists).expanduser(), dataset_dir / file_lists):
        if cand.is_dir():
            return cand
    raise ZsbenchError(
        f"dataset.file_lists={file_lists!r}: no such folder (tried it as given and under "
        f"{dataset_dir})."
    )


def read_file_lists(
    folder: Path, patterns: dict[int, Sequence[str]], base: Path, check_exists: bool = True
) -> list[Item]:
    """Items of the `path label` list files in `folder` matching `patterns[domain]` (globs);
    paths are relative to `base`. Duplicate paths are read once."""
    items: dict[str, Item] = {}
    for domain, globs in patterns.items():
        files = sorted({f for g in globs for f in folder.glob(g)})
        if not files:
            found = sorted(p.name for p in folder.glob("*.txt"))
            raise ZsbenchError(
                f"No {DOMAIN_NAMES[domain]} file list in {folder} (looked for {list(globs)}; "
                f"found {found[:8]})."
            )
        for f in files:
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.strip().rsplit(None, 1)  # paths may contain spaces
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise ZsbenchError(f"{f}:{n}: expected 'path label', got {line!r}.")
                rel = Path(parts[0])
                if len(rel.parts) < 2:
                    raise ZsbenchError(f"{f}:{n}: expected '<folder>/<class>/<file>', got {rel}.")
                path = str(base / rel)
                items.setdefault(path, Item(path, rel.parent.name, domain))
    if check_exists:
        missing = [p for p in items if not Path(p).is_file()]
        if missing:
            raise ZsbenchError(
                f"{len(missing)} of {len(items)} files named in the lists in {folder} do not exist "
                f"under {base}, e.g. {missing[:3]}. The list paths are relative to the dataset "
                f"folder; check dataset.root (or pass --set dataset.skip_bad=true to skip them)."
            )
    return list(items.values())


def unify_labels(items: list[Item], where: str) -> list[Item]:
    """Give both domains one spelling per class (the sketch folder's) and refuse classes that
    only one domain has: 'hot_air_balloon' photos join 'hot-air_balloon' sketches."""
    spelling: dict[int, dict[str, str]] = {SKETCH: {}, PHOTO: {}}
    for it in items:
        spelling[it.domain].setdefault(class_key(it.label), it.label)
    only = {d: sorted(set(spelling[d]) - set(spelling[1 - d])) for d in (SKETCH, PHOTO)}
    if only[SKETCH] or only[PHOTO]:
        names = {d: [spelling[d][k] for k in only[d]][:8] for d in only}
        raise ZsbenchError(
            f"{where}: class folders that match no folder of the other domain: sketches only "
            f"{names[SKETCH]}, photos only {names[PHOTO]}. Rename them to match (folder names "
            f"are compared ignoring case, spaces, '_', '-' and brackets)."
        )
    canon = spelling[SKETCH]
    return [
        it
        if canon[class_key(it.label)] == it.label
        else Item(it.path, canon[class_key(it.label)], it.domain)
        for it in items
    ]


class RealSBIRDataModule(SBIRDataModule):
    """A real dataset under a data root, with a named split or a user list of unseen classes.

    Subclasses set `manifest_dataset` (the `dataset` field of their split manifests), `LAYOUT`
    and `SOURCE` (for error messages) and either the folder conventions below, or `scan()`."""

    manifest_dataset = ""
    split_keys = ("split",)  # named by the split in the result path (zsbench.identity)
    LAYOUT = ""
    SOURCE = ""
    FOLDERS: tuple[str, ...] = ()  # dataset folder names under the root (else the root itself)
    DOMAIN_DIRS: tuple[tuple[str, str], ...] = ()  # (sketch folder, photo folder) conventions
    LIST_PATTERNS: dict[int, tuple[str, ...]] = {}  # file-list globs per domain

    def __init__(
        self,
        root: str | None = None,
        split: str = "",
        unseen: list[str] | str | None = None,
        file_lists: str | None = None,
        image_size: int = 224,
        val_fraction: float = 0.1,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(image_size=image_size, val_fraction=val_fraction, skip_bad=skip_bad)
        self.root = root
        self.unseen = parse_class_list(unseen)
        self.split_name = split
        self.file_lists = file_lists or None
        if self.unseen is None and self.manifest_dataset:
            choices = manifest_names(self.manifest_dataset)
            if split not in choices:
                raise unknown_name(f"{self.manifest_dataset} split", split, choices)

    def data_root(self) -> Path:
        root = find_root(self.root)
        if root is None:
            raise self.data_error(f"{type(self).__name__}: no data root given.")
        if not root.is_dir():
            raise self.data_error(f"Data root {root} does not exist.")
        return root

    def data_error(self, problem: str) -> ZsbenchError:
        return data_error(problem, self.LAYOUT, self.SOURCE)

    def scan(self) -> list[Item]:
        root = self.data_root()
        candidates = [root / f for f in self.FOLDERS] + [root]
        if self.file_lists:
            dataset_dir = next(d for d in candidates if d.is_dir())
            folder = resolve_list_folder(self.file_lists, dataset_dir)
            items = read_file_lists(folder, self.LIST_PATTERNS, dataset_dir, not self.skip_bad)
            return unify_labels(items, str(dataset_dir))
        for d in candidates:
            for sketch_dir, photo_dir in self.DOMAIN_DIRS:
                if (d / sketch_dir).is_dir() and (d / photo_dir).is_dir():
                    items = scan_class_folders(d / sketch_dir, SKETCH)
                    items += scan_class_folders(d / photo_dir, PHOTO)
                    if not items:
                        raise self.data_error(f"No images under {d / sketch_dir}, {d / photo_dir}.")
                    return unify_labels(items, str(d))
        found = sorted(p.name for p in root.iterdir())[:10]
        raise self.data_error(f"No {type(self).__name__} data under {root} (it holds {found}).")

    def manifest(self) -> dict:
        """The split record, plus the dataset family whose published splits it uses (so a
        subset such as `sketchy-mini` is shown beside published `sketchy` numbers)."""
        out = super().manifest()
        if self.manifest_dataset:
            out["family"] = self.manifest_dataset
        return out

    def make_split(self, classes: list[str]) -> Split:
        if self.unseen:
            return user_split(self.unseen, classes)
        return load_split(self.split_name, classes)
