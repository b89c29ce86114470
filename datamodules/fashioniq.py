"""FashionIQ (Wu et al., CVPR 2021), one evaluation group per category, read by
zsbench.cir_readers.read_fashioniq; layout and download: docs/cir.md."""

from __future__ import annotations

from zsbench.cir_readers import FASHIONIQ_CATEGORIES, read_fashioniq
from zsbench.datamodules.cir_base import EvalGroup
from zsbench.datamodules.real_cir import RealCIRDataModule
from zsbench.errors import ZsbenchError


class FashionIQ(RealCIRDataModule):
    """FashionIQ (Wu et al., CVPR 2021): R@10/R@50 per category and their mean."""

    protocol = "fashioniq"
    markers = ("image_splits",)

    def __init__(self, categories: str = ",".join(FASHIONIQ_CATEGORIES), **kwargs) -> None:
        super().__init__(**kwargs)
        cats = [c.strip() for c in str(categories).split(",") if c.strip()]
        bad = [c for c in cats if c not in FASHIONIQ_CATEGORIES]
        if bad or not cats:
            raise ZsbenchError(
                f"dataset.categories={categories!r}: use a comma-separated subset of "
                f"{','.join(FASHIONIQ_CATEGORIES)}."
            )
        self.categories = cats

    def read_groups(self) -> list[EvalGroup]:
        root = self.dataset_dir()
        return [
            EvalGroup(c, read_fashioniq(root, self.split_name, c, self.image_root))
            for c in self.categories
        ]
