"""`tuberlin`: TU-Berlin-Ext (Eitz et al. 2012 sketches + Zhang et al. 2016 photos), 250 classes.

As SAKE ships it (and ZSE-SBIR / DRCPL read it):

    <root>/TUBerlin/png_ready/<class>/<n>.png                 20,000 sketches
    <root>/TUBerlin/ImageResized_ready/<class>/<file>.JPEG    204,489 photos
    <root>/TUBerlin/zeroshot/{png_ready,ImageResized_ready}_filelist_{train,zero}.txt

Class folders keep TU-Berlin's names with spaces ('alarm clock', 'car (sedan)'); they match the
manifests through `class_key`. Doodle2Search's renamed copy (`TU-Berlin/{sketches,images}`) works
too. Splits: `tuberlin30` (SAKE, default) and `sempcyc-tuberlin`.
"""

from __future__ import annotations

from zsbench.datamodules.base import PHOTO, SKETCH
from zsbench.datamodules.real_sbir import RealSBIRDataModule


class TUBerlin(RealSBIRDataModule):
    """TU-Berlin-Ext (250 classes), split `tuberlin30` by default."""

    manifest_dataset = "tuberlin"
    FOLDERS = ("TUBerlin", "TU-Berlin", "tuberlin")
    DOMAIN_DIRS = (("png_ready", "ImageResized_ready"), ("sketches", "images"))
    LIST_PATTERNS = {
        SKETCH: ("png_ready_filelist_*.txt",),
        PHOTO: ("ImageResized_ready_filelist_*.txt",),
    }
    LAYOUT = (
        "TUBerlin/png_ready/<class>/<n>.png and TUBerlin/ImageResized_ready/<class>/<file> (SAKE); "
        "with file_lists=zeroshot also TUBerlin/zeroshot/*_filelist_*.txt"
    )
    SOURCE = (
        "sketches: TU-Berlin, cybertron.cg.tu-berlin.de/eitz/projects/classifysketch "
        "(sketches_png.zip); photos: the 'ImageResized' set of Zhang et al. 2016. Both, "
        "resized with SAKE's zero-shot file lists, are in SAKE's dataset.zip (README of "
        "github.com/qliu24/SAKE, cs.jhu.edu/~qliu24/ZSSBIR/dataset.zip); Doodle2Search's "
        "download_datasets.sh (github.com/sounakdey/doodle2search) fetches and renames both."
    )

    def __init__(self, split: str = "tuberlin30", **kwargs) -> None:
        """Only the default split is this dataset's own; the rest (root, unseen, file_lists,
        image_size, val_fraction, skip_bad) and their defaults are RealSBIRDataModule's."""
        super().__init__(split=split, **kwargs)
