"""The training files a user gives a real CIR dataset (the papers train on CC3M / ImageNet
images or caption corpora that are not part of the benchmarks): a folder of unlabelled images
(`dataset.train_images`), captions (`train_captions`) and text triplets (`train_triplets`),
read as the released files ship."""

from __future__ import annotations

import json
from pathlib import Path

from zsbench.errors import ZsbenchError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
TRIPLET_KEYS = ("reference_caption", "modification", "target_caption")
# other names the released triplet files use for a key: RTD's official LLM_triplets.json
# (CompoDiff's, read by RTD's loader.py) calls the modification "conditioning_caption"
TRIPLET_ALIASES = {"conditioning_caption": "modification"}


def read_image_folder(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursive), sorted."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ZsbenchError(
            f"dataset.train_images={str(folder)!r} is not a folder. Give a folder of unlabelled "
            f"images ({', '.join(IMAGE_SUFFIXES)}; sub-folders are read too)."
        )
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ZsbenchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}.")
    return paths


def _read_file(path: str | Path, option: str) -> tuple[Path, str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ZsbenchError(f"dataset.{option}={str(path)!r}: no such file.")
    return p, p.read_text(encoding="utf-8")


def read_captions(path: str | Path) -> list[str]:
    """Captions from a .txt file (one per line, blank lines skipped) or a .json list."""
    p, text = _read_file(path, "train_captions")
    if p.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ZsbenchError(f"{p} must hold a JSON list of caption strings.")
        captions = [x.strip() for x in data]
    else:
        captions = [line.strip() for line in text.splitlines()]
    captions = [c for c in captions if c]
    if not captions:
        raise ZsbenchError(f"{p} holds no captions.")
    return captions


def read_triplets(path: str | Path) -> list[dict]:
    """Text triplets from a .json list or a .jsonl file of records with TRIPLET_KEYS (or
    their TRIPLET_ALIASES, as the official files ship)."""
    p, text = _read_file(path, "train_triplets")
    try:
        if p.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except ValueError as e:
        raise ZsbenchError(f"{p} is not valid JSON ({e}).") from e
    if not isinstance(data, list) or not data:
        raise ZsbenchError(f"{p} must hold a non-empty list of triplet records.")
    out = []
    for i, r in enumerate(data):
        if isinstance(r, dict):
            r = {**{TRIPLET_ALIASES.get(k, k): v for k, v in r.items()}, **r}
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) for k in TRIPLET_KEYS):
            raise ZsbenchError(
                f"{p}: record {i} needs string fields {', '.join(TRIPLET_KEYS)} (or "
                f"{', '.join(f'{a} for {k}' for a, k in TRIPLET_ALIASES.items())})."
            )
        out.append({k: r[k] for k in TRIPLET_KEYS})
    return out
