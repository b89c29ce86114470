"""`sketchy` (Sketchy / Sketchy-Ext) and `sketchy21-mini` (the real 21-class slice).

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

import random
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
        root = self.data_root()
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

    @staticmethod
    def _is_extended(item: Item, sketchy_dir: Path) -> bool:
        parts = Path(item.path).relative_to(sketchy_dir).parts
        return item.domain == PHOTO and parts[0] in EXTENDED_DIRS


class Sketchy21Mini(RealSBIRDataModule):
    """The real 21-class Sketchy slice of ../shared/data (100 photos + 100 sketches per class).

    Under $ZSBENCH_DATA/sketchy21. All 21 are unseen classes of `sketchy21`, so this preset
    splits them itself:
    `n_unseen` classes drawn with random.Random(split_seed) from the sorted class list.
    `max_per_class` keeps the first N sketches and N photos of each class (by file name)."""

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
