"""Reader for the original Sketchy folder layout (also what the synthetic generator writes).

    <root>/Sketchy/256x256/sketch/tx_000000000000_ready/<class>/<photo-id>-<n>.png
    <root>/Sketchy/256x256/photo/tx_000000000000_ready/<class>/<photo-id>.jpg

`root` may also point directly at the `Sketchy` folder or at `256x256`.
"""

from __future__ import annotations

from pathlib import Path

from zsbench.datamodules.base import PHOTO, SKETCH, Item
from zsbench.errors import ZsbenchError

LAYOUT = "Sketchy/256x256/{sketch,photo}/tx_000000000000_ready/<class>/<file>"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def locate_sketchy(root: Path) -> Path:
    """The `256x256` folder under `root`, or an error naming the expected layout."""
    for cand in (root / "Sketchy" / "256x256", root / "256x256", root):
        if (cand / "sketch").is_dir() and (cand / "photo").is_dir():
            return cand
    raise ZsbenchError(
        f"No Sketchy data under {root}: expected {LAYOUT}. Point ZSBENCH_DATA or "
        f"--set dataset.root=... at the folder holding 'Sketchy/'."
    )


def scan_sketchy_folder(root: Path, classes: set[str] | None = None) -> list[Item]:
    """Every image of every class (or only `classes`) in both domains."""
    base = locate_sketchy(root)
    items: list[Item] = []
    for domain_name, domain in (("sketch", SKETCH), ("photo", PHOTO)):
        tx = base / domain_name / "tx_000000000000_ready"
        if not tx.is_dir():
            subdirs = sorted(p.name for p in (base / domain_name).iterdir() if p.is_dir())
            raise ZsbenchError(
                f"{base / domain_name} has no tx_000000000000_ready folder (found {subdirs[:5]}): "
                f"expected {LAYOUT}."
            )
        for class_dir in sorted(p for p in tx.iterdir() if p.is_dir()):
            if classes is not None and class_dir.name not in classes:
                continue
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append(Item(str(f), class_dir.name, domain))
    if not items:
        raise ZsbenchError(f"No images found under {base}: expected {LAYOUT}.")
    return items
