"""CIRCO (Baldrati et al., ICCV 2023), read by zsbench.cir_readers.read_circo over the COCO
2017 unlabeled images; layout and download: docs/cir.md."""

from __future__ import annotations

from zsbench.cir_readers import read_circo
from zsbench.datamodules.cir_base import EvalGroup
from zsbench.datamodules.real_cir import RealCIRDataModule


class CIRCO(RealCIRDataModule):
    """CIRCO (Baldrati et al., ICCV 2023): mAP@5/10/25/50 over COCO 2017 unlabeled images."""

    protocol = "circo"
    markers = ("annotations",)

    def __init__(self, annotation_gallery: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        # True: rank only the annotations' own images when image_info_unlabeled2017.json is
        # missing (not the official gallery; split_manifest.gallery_source records it)
        self.annotation_gallery = bool(annotation_gallery)

    def read_groups(self) -> list[EvalGroup]:
        split = read_circo(
            self.dataset_dir(),
            self.split_name,
            self.image_root,
            annotation_gallery=self.annotation_gallery,
        )
        return [EvalGroup("", split)]
