"""`sketchy` (Sketchy / Sketchy-Ext), `sketchy-mini` (Sketchy's 125 classes from the shared
test data: the real `sketchy21` protocol at small size) and `sketchy21-mini` (the real 21-class
slice, split by us).

Sketchy (Sangkloy et al., SIGGRAPH 2016) in its original layout, as SAKE ships it:

    <root>/Sketchy/256x256/sketch/tx_000000000000_ready/<class>/<photo-id>-<n>.png
    <root>/Sketchy/256x256/photo/tx_000000000000_ready/<class>/<photo-id>.jpg      12,500 photos
    <root>/Sketchy/EXTEND_image_sketchy_ready/<class>/ext_<n>.jpg                 73,002 photos
    <root>/Sketchy/zeroshot1/sketch_tx_000000000000_ready_filelist_{train,test,zero}.txt
    <root>/Sketchy/zeroshot1/all_photo_filelist_{train,zero}.txt

"Sketchy-Ext" (SAKE, ZSE-SBIR, DRCPL) = the original photos plus the extended ones of Liu et al.
(CVPR 2017): `extended_photos=true`. The extended folder is also accepted under its unzipped name
`EXTEND_image_sketchy` or Doodle2Search's `extended_photo`. SAKE's file lists (paths relative to
`Sketchy/`) can replace the folder scan: `file_lists=zeroshot1` (or any folder path).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from pathlib import Path

from zsbench.datamodules.base import PHOTO, SKETCH, Item
from zsbench.datamodules.real_sbir import (
    RealSBIRDataModule,
    first_dir,
    read_file_lists,
    resolve_list_folder,
    scan_class_folders,
    unify_labels,
)
from zsbench.datamodules.sketchy_layout import locate_sketchy, scan_sketchy_folder
from zsbench.datamodules.split_manifests import user_split
from zsbench.errors import ZsbenchError
from zsbench.features import cache_dir
from zsbench.splits import Split, split_from_unseen

EXTENDED_DIRS = ("EXTEND_image_sketchy_ready", "EXTEND_image_sketchy", "extended_photo")
SKETCHY_LAYOUT = (
    "Sketchy/256x256/{sketch,photo}/tx_000000000000_ready/<class>/<file>; with "
    "extended_photos=true also Sketchy/EXTEND_image_sketchy_ready/<class>/<file>; with "
    "file_lists=zeroshot1 also Sketchy/zeroshot1/*_filelist_*.txt"
)
SKETCHY_SOURCE = (
    "the Sketchy database, sketchy.eye.gatech.edu (Sangkloy et al. 2016: 'rendered_256x256'). "
    "SAKE's dataset.zip (README of github.com/qliu24/SAKE, cs.jhu.edu/~qliu24/ZSSBIR/dataset.zip) "
    "has Sketchy with the 73,002 extended photos and its zero-shot file lists; Doodle2Search's "
    "download_datasets.sh (github.com/sounakdey/doodle2search) fetches Sketchy and the extended "
    "photos."
)


class Sketchy(RealSBIRDataModule):
    """Sketchy (125 classes) or Sketchy-Ext (`extended_photos`), split `sketchy25` by default."""

    manifest_dataset = "sketchy"
    LAYOUT = SKETCHY_LAYOUT
    SOURCE = SKETCHY_SOURCE
    LIST_PATTERNS = {
        SKETCH: ("sketch*_filelist_*.txt",),
        PHOTO: ("all_photo_filelist_*.txt", "photo*_filelist_*.txt"),
    }

    def __init__(
        self,
        root: str | None = None,
        split: str = "sketchy25",
        unseen: list[str] | str | None = None,
        extended_photos: bool = False,
        file_lists: str | None = None,
        image_size: int = 224,
        val_fraction: float = 0.1,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(root, split, unseen, file_lists, image_size, val_fraction, skip_bad)
        self.extended_photos = extended_photos

    def scan(self) -> list[Item]:
        return self.scan_root(self.data_root())

    def scan_root(self, root: Path) -> list[Item]:
        """Every item of the Sketchy folder under `root`, one spelling per class."""
        try:
            base = locate_sketchy(root)  # the 256x256 folder
        except ZsbenchError:
            raise self.data_error(f"No Sketchy data under {root}.") from None
        sketchy_dir = base.parent
        if self.file_lists:
            folder = resolve_list_folder(self.file_lists, sketchy_dir)
            items = read_file_lists(folder, self.LIST_PATTERNS, sketchy_dir, not self.skip_bad)
            if not self.extended_photos:
                items = [it for it in items if not self._is_extended(it, sketchy_dir)]
        else:
            try:
                items = scan_sketchy_folder(base)
            except ZsbenchError as err:
                raise self.data_error(str(err)) from None
            if self.extended_photos:
                ext = first_dir(sketchy_dir, EXTENDED_DIRS) or first_dir(root, EXTENDED_DIRS)
                if ext is None:
                    raise self.data_error(
                        f"extended_photos=true but no folder {' / '.join(EXTENDED_DIRS)} in "
                        f"{sketchy_dir}."
                    )
                items += scan_class_folders(ext, PHOTO)
        return unify_labels(items, f"Sketchy in {sketchy_dir}")

    def holdout_key(self, item: Item) -> str:
        """Hold out whole instances: a photo together with the sketches drawn from it, so that
        every training sketch keeps its photo for the methods that pair instances and no
        validation photo has its own sketches in training."""
        return f"{item.label}/{photo_id(item)}"

    @staticmethod
    def _is_extended(item: Item, sketchy_dir: Path) -> bool:
        parts = Path(item.path).relative_to(sketchy_dir).parts
        return item.domain == PHOTO and parts[0] in EXTENDED_DIRS


def photo_id(item: Item) -> str:
    """The Sketchy photo an item shows: a photo's file stem, or the `<photo-id>` of a sketch
    named `<photo-id>-<n>.png` (a sketch named otherwise is its own instance)."""
    stem = Path(item.path).stem
    if item.domain == SKETCH:
        head, sep, tail = stem.rpartition("-")
        if sep and head and tail.isdigit():
            return head
    return stem


SHARED_PARTS = ("sketchy21", "sketchy-seen104")


def join_class_folders(parts: list[Path], view: Path) -> Path:
    """One Sketchy folder at `view` whose class folders are symlinks into the `parts` (each a
    Sketchy folder): the layout a user's single copy of Sketchy has. Built once, atomically;
    rebuilt when a link no longer points where the parts say."""
    links: dict[Path, Path] = {}
    for part in parts:
        base = locate_sketchy(part)
        for domain in ("sketch", "photo"):
            tx = base / domain / "tx_000000000000_ready"
            if not tx.is_dir():
                raise ZsbenchError(f"{base / domain} has no tx_000000000000_ready folder.")
            for class_dir in sorted(p for p in tx.iterdir() if p.is_dir()):
                rel = Path("Sketchy", "256x256", domain, tx.name, class_dir.name)
                if rel in links:
                    raise ZsbenchError(
                        f"Class folder {class_dir.name!r} ({domain}) is in more than one of "
                        f"{[str(p) for p in parts]}."
                    )
                links[rel] = class_dir.resolve()
    if view.is_dir() and all(
        (view / rel).is_symlink() and (view / rel).resolve() == target
        for rel, target in links.items()
    ):
        return view
    tmp = Path(tempfile.mkdtemp(prefix=f".{view.name}.", dir=view.parent))
    for rel, target in links.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).symlink_to(target, target_is_directory=True)
    if view.exists():  # stale: move it aside first (the rename below must not merge)
        shutil.rmtree(view, ignore_errors=True)
    try:
        tmp.rename(view)
    except OSError:  # another process built it meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return view


class SketchyMini(Sketchy):
    """Sketchy's 125 classes at test size, from the project's shared data: `sketchy21` for real.

    The 21 unseen classes of Yelamarthi et al.'s split with 100 photos + 100 sketches each
    (`$ZSBENCH_DATA/sketchy21`) and its 104 seen classes with 25 + 25 each
    (`$ZSBENCH_DATA/sketchy-seen104`), joined into one Sketchy folder of class-folder symlinks
    in the cache (the layout of a user's Sketchy) and read by the `sketchy` reader. Results are
    comparable with published `sketchy` numbers of the same split in protocol (classes, split,
    metric) but not in size: the full Sketchy trains on ~100 photos and ~600 sketches per class
    and tests on ~600 sketches per unseen class."""

    LAYOUT = "{sketchy21,sketchy-seen104}/" + SKETCHY_LAYOUT.split(";")[0]
    SOURCE = (
        "the project's shared data folder (../shared/data/sketchy21 and sketchy-seen104, see its "
        "README); both are subsets of " + SKETCHY_SOURCE
    )

    def __init__(
        self,
        root: str | None = None,
        split: str = "sketchy21",
        unseen: list[str] | str | None = None,
        image_size: int = 224,
        val_fraction: float = 0.1,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(root, split, unseen, False, None, image_size, val_fraction, skip_bad)

    def scan(self) -> list[Item]:
        root = self.data_root()
        parts = [root / name for name in SHARED_PARTS]
        missing = [p.name for p in parts if not p.is_dir()]
        if missing:
            raise self.data_error(f"No {' / '.join(missing)} folder under {root}.")
        digest = hashlib.sha256("|".join(str(p.resolve()) for p in parts).encode()).hexdigest()
        views = cache_dir() / "views"
        views.mkdir(parents=True, exist_ok=True)
        try:
            view = join_class_folders(parts, views / f"sketchy-mini-{digest[:12]}")
        except ZsbenchError as err:
            raise self.data_error(str(err)) from None
        return self.scan_root(view)


class Sketchy21Mini(RealSBIRDataModule):
    """The real 21-class Sketchy slice of ../shared/data (100 photos + 100 sketches per class).

    Under $ZSBENCH_DATA/sketchy21. All 21 are unseen classes of `sketchy21`, so this preset
    splits them itself:
    `n_unseen` classes drawn with random.Random(split_seed) from the sorted class list.
    `max_per_class` keeps the first N sketches and N photos of each class (by file name)."""

    split_keys = ("split_seed", "n_unseen")  # the split name says both

    LAYOUT = "sketchy21/" + SKETCHY_LAYOUT.split(";")[0]
    SOURCE = (
        "the 21-class Sketchy slice in the project's shared data folder (../shared/data/sketchy21, "
        "see its README); it is a subset of " + SKETCHY_SOURCE
    )

    def __init__(
        self,
        root: str | None = None,
        unseen: list[str] | str | None = None,
        n_unseen: int = 6,
        split_seed: int = 0,
        max_per_class: int | None = None,
        image_size: int = 224,
        val_fraction: float = 0.1,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(root, "mini", unseen, None, image_size, val_fraction, skip_bad)
        self.n_unseen = n_unseen
        self.split_seed = split_seed
        if max_per_class is not None and int(max_per_class) < 1:
            raise ZsbenchError(f"max_per_class must be >= 1 (or null), got {max_per_class}.")
        self.max_per_class = max_per_class

    def scan(self) -> list[Item]:
        root = self.data_root()
        folder = root / "sketchy21" if (root / "sketchy21").is_dir() else root
        try:
            locate_sketchy(folder)
        except ZsbenchError:
            raise self.data_error(f"No 21-class Sketchy slice under {root}.") from None
        items = scan_sketchy_folder(folder)
        if self.max_per_class:  # a small fixed subset (regression checks): first N by name
            kept: dict[tuple[str, int], int] = {}
            subset = []
            for it in sorted(items, key=lambda it: (it.label, it.domain, it.path)):
                key = (it.label, it.domain)
                if kept.get(key, 0) < self.max_per_class:
                    kept[key] = kept.get(key, 0) + 1
                    subset.append(it)
            items = subset
        return items

    def make_split(self, classes: list[str]) -> Split:
        if self.unseen:
            return user_split(self.unseen, classes)
        if not 0 < self.n_unseen < len(classes):
            raise ZsbenchError(
                f"n_unseen must be between 1 and {len(classes) - 1} (the data has "
                f"{len(classes)} classes), got {self.n_unseen}."
            )
        unseen = random.Random(self.split_seed).sample(sorted(classes), self.n_unseen)
        size = "" if self.n_unseen == 6 else f"-u{self.n_unseen}"
        return split_from_unseen(f"mini{size}-seed{self.split_seed}", classes, unseen)
