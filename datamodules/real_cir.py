"""What the real CIR datasets share: the data root (`root` or $ZSBENCH_DATA), the annotation
folder found under it, and one evaluation group read by the dataset's reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from zsbench.config import find_root
from zsbench.datamodules.cir_base import CIRDataModule, EvalGroup
from zsbench.errors import ZsbenchError


class RealCIRDataModule(CIRDataModule):
    """A real CIR dataset under `root` (or $ZSBENCH_DATA: DIR, DIR/<name> or DIR/cir/<name>)."""

    def __init__(self, root: str | None = None, image_root: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)  # split, image_size, the training files, skip_bad
        self.root = root
        self.image_root = image_root

    # a folder holding one of these is the dataset's annotation folder
    markers: ClassVar[tuple[str, ...]] = ()
    # zsbench.cir_readers function reading one split: (folder, split, image_root) -> CIRSplit
    reader: ClassVar[Callable | None] = None

    def read_groups(self) -> list[EvalGroup]:
        """One evaluation group: the whole split, read by `reader`."""
        reader = type(self).reader
        return [EvalGroup("", reader(self.dataset_dir(), self.split_name, self.image_root))]

    def dataset_dir(self) -> Path:
        """`root` itself, root/<name>, root/cir/<name> or root/<NAME>: the first holding the
        dataset's annotation folders."""
        name = self.protocol  # the dataset's folder name: cirr, circo or fashioniq
        found = find_root(self.root)
        if found is None:
            raise ZsbenchError(
                f"no data root for {name}: pass --set dataset.root=<the {name} folder> or set "
                f"ZSBENCH_DATA (a folder holding {name}/ or cir/{name}/). Layouts: docs/cir.md."
            )
        for cand in (found, found / name, found / "cir" / name, found / name.upper()):
            if any((cand / m).is_dir() for m in self.markers):
                return cand
        raise ZsbenchError(
            f"no {name} annotations under {found} (looked in it, {name}/ and cir/{name}/ for "
            f"{' or '.join(m + '/' for m in self.markers)}). Pass --set dataset.root=<the {name} "
            "folder>; layouts and downloads: docs/cir.md."
        )
