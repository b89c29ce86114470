"""Backbone features, extracted once per (dataset, items, backbone, weights sha256, transform).

Frozen-backbone methods train on these. Features live as .npy files under
`<cache>/features/<key>/` and are opened memory-mapped; the key hashes every part that changes
them, so a change of any part extracts anew. Two runs extracting the same key at once are
serialised by a file lock, and a file only appears under its final name once complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from zsbench.backbones import BackboneInfo, create_backbone

CACHE_FORMAT = 1


def cache_dir() -> Path:
    """ZSBENCH_CACHE, or ~/.cache/zsbench."""
    env = os.environ.get("ZSBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zsbench"


def feature_key(dm, info: BackboneInfo) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "dataset": getattr(dm, "registry_name", type(dm).__name__),
        "items": dm.fingerprint(),
        "backbone": info.name,
        "weights_sha256": info.weights_sha256 or "random",
        "transform": dm.transform_id(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def _extract(model, dm, device: torch.device, progress: bool) -> np.ndarray:
    model = model.to(device).eval()
    rows = []
    loader = dm.all_items_dataloader()
    for batch in tqdm(loader, desc="extracting features", disable=not progress, unit="batch"):
        rows.append(model(batch["image"].to(device)).float().cpu().numpy())
    return np.concatenate(rows)


def cached_features(
    dm,
    backbone: str = "efficientnet_lite0",
    weights: str = "default",
    device: str | torch.device | None = None,
    root: Path | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, BackboneInfo, dict]:
    """Features of every item of `dm` (rows aligned with `dm.items`), from cache or extracted.

    Returns (memory-mapped array, backbone info, stats with `cache_hit`, `seconds`, `key`).
    """
    model, info = create_backbone(backbone, weights)
    dm.set_normalization(info.mean, info.std)
    key = feature_key(dm, info)
    folder = (root or cache_dir()) / "features" / key
    target = folder / "features.npy"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with FileLock(str(folder / ".lock")):
        hit = target.exists()
        if not hit:
            dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            feats = _extract(model, dm, dev, progress)
            tmp = folder / f"features.{os.getpid()}.tmp.npy"
            np.save(tmp, feats)
            meta = {
                "key": key,
                "backbone": info.to_dict(),
                "n_items": len(dm.items),
                "transform": dm.transform_id(),
                "shape": list(feats.shape),
            }
            (folder / "meta.json").write_text(json.dumps(meta, indent=2))
            os.replace(tmp, target)
    feats = np.load(target, mmap_mode="r")
    if len(feats) != len(dm.items):  # a corrupted or foreign file: never use it silently
        raise RuntimeError(
            f"Cached features {target} have {len(feats)} rows, expected "
            f"{len(dm.items)}; delete {folder} and rerun."
        )
    stats = {
        "cache_hit": hit,
        "seconds": time.perf_counter() - start,
        "key": key,
        "path": str(target),
    }
    return feats, info, stats
