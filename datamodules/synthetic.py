"""`synthetic`: the embedded default ZS-SBIR dataset, needing nothing downloaded.

Classes are shape x pattern combinations ("striped star"); the unseen classes are new
combinations of attributes that all occur among the seen classes, so zero-shot transfer is
possible and class names carry meaning. Images are rendered once (synthetic_render.py) into a
cache folder in the real Sketchy layout and read back by the same reader as real Sketchy.
"""

from __future__ import annotations

from pathlib import Path

from zsbench.datamodules.base import Item, SBIRDataModule
from zsbench.datamodules.sketchy_layout import scan_sketchy_folder
from zsbench.datamodules.synthetic_render import default_unseen, write_synthetic_sketchy
from zsbench.features import cache_dir
from zsbench.splits import Split, split_from_unseen


class SyntheticSketchy(SBIRDataModule):
    """Synthetic sketches and photos of shape x pattern classes (embedded default, seconds)."""

    def __init__(
        self,
        n_shapes: int = 8,
        n_patterns: int = 5,
        photos_per_class: int = 30,
        sketches_per_class: int = 30,
        render_size: int = 96,
        data_seed: int = 0,
        unseen: list[str] | str | None = None,
        cache: str | None = None,
        image_size: int = 96,
        val_fraction: float = 0.1,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(image_size=image_size, val_fraction=val_fraction, skip_bad=skip_bad)
        self.params = dict(
            n_shapes=n_shapes,
            n_patterns=n_patterns,
            photos_per_class=photos_per_class,
            sketches_per_class=sketches_per_class,
            image_size=render_size,
            seed=data_seed,
        )
        self.unseen = unseen.split(",") if isinstance(unseen, str) else unseen
        self.cache = cache

    def data_root(self) -> Path:
        p = self.params
        name = (
            f"synthetic-s{p['n_shapes']}-p{p['n_patterns']}-ph{p['photos_per_class']}"
            f"-sk{p['sketches_per_class']}-r{p['image_size']}-seed{p['seed']}"
        )
        return (Path(self.cache) if self.cache else cache_dir() / "data") / name

    def scan(self) -> list[Item]:
        root = write_synthetic_sketchy(self.data_root(), **self.params, progress=True)
        return scan_sketchy_folder(Path(root))

    def make_split(self, classes: list[str]) -> Split:
        if self.unseen:
            return split_from_unseen("custom", classes, self.unseen)
        unseen = default_unseen(self.params["n_shapes"], self.params["n_patterns"])
        return split_from_unseen("default", classes, unseen)
