"""`quickdraw`: QuickDraw-Ext (Doodle2Search, Dey et al. CVPR 2019), 110 classes.

Doodle2Search ships two zips that unpack to (under <root>/QuickDraw/ or <root> itself)

    QuickDraw_sketches_final/<class>/<id>.png     330,000 sketches
    QuickDraw_images_final/<class>/<file>         204,000 photos

and ZSE-SBIR reads the same data as `QuickDraw/{sketches,images}/<class>/<file>` with its file
lists `QuickDraw/zeroshot/{sketch,all_photo}_{train,zero}.txt`. Both layouts are read; class
folder names may contain spaces ('palm tree'). Split: `quickdraw30` (80 seen / 30 unseen).
"""

from __future__ import annotations

from zsbench.datamodules.base import PHOTO, SKETCH
from zsbench.datamodules.real_sbir import RealSBIRDataModule


class QuickDraw(RealSBIRDataModule):
    """QuickDraw-Ext (110 classes), split `quickdraw30`."""

    manifest_dataset = "quickdraw"
    FOLDERS = ("QuickDraw", "quickdraw")
    DOMAIN_DIRS = (
        ("sketches", "images"),
        ("QuickDraw_sketches_final", "QuickDraw_images_final"),
    )
    LIST_PATTERNS = {SKETCH: ("sketch_*.txt",), PHOTO: ("all_photo_*.txt",)}
    LAYOUT = (
        "QuickDraw/sketches/<class>/<file> and QuickDraw/images/<class>/<file> (ZSE-SBIR), or "
        "QuickDraw/QuickDraw_{sketches,images}_final/<class>/<file> (Doodle2Search's zips); "
        "with file_lists=zeroshot also QuickDraw/zeroshot/{sketch,all_photo}_*.txt"
    )
    SOURCE = (
        "the QuickDraw-Extended zips linked from the README of github.com/sounakdey/doodle2search: "
        "datasets.cvc.uab.es/QuickDraw/QuickDraw_sketches_final.zip and "
        "QuickDraw_images_final.zip; ZSE-SBIR's file lists: github.com/buptLinfy/ZSE-SBIR "
        "datasets/QuickDraw/zeroshot."
    )

    def __init__(self, split: str = "quickdraw30", **kwargs) -> None:
        """Only the default split is this dataset's own; the rest (root, unseen, file_lists,
        image_size, val_fraction, skip_bad) and their defaults are RealSBIRDataModule's."""
        super().__init__(split=split, **kwargs)
