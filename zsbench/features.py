"""Backbone features, extracted once per (dataset, items, backbone, weights sha256, transform,
compute settings).

Frozen-backbone methods train on these. Features live as .npy files under
`<cache>/features/<key>/` and are opened memory-mapped; the key hashes every part that changes
them (the compute settings too: memory layout, autocast and device type change the last bits;
the items by path, size and mtime, see `fingerprint`), so a change of any part extracts anew
and features computed differently never mix. Each entry's meta.json holds the sha256 of its
array, checked on every load: a truncated, overwritten or unreadable entry is extracted again
with one line naming the file, never used. Two runs extracting the same key at once are
serialised by a file lock, and a file only appears under its final name once complete.

Extraction runs at the backbone's speed: `channels_last` and inference mode, bf16 autocast on
CUDA, decoding in DataLoader workers overlapped with the forward passes (pinned memory on
CUDA). benchmarks/features.py compares it with the forward pass alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from zsbench.backbones import BackboneInfo, create_backbone
from zsbench.progress import progress as progress_bar

# 2: compute settings in the key (format-1 features were contiguous fp32); 3: file sizes and
# mtimes in the key, the array's sha256 in meta.json
CACHE_FORMAT = 3


def cache_dir() -> Path:
    """ZSBENCH_CACHE, or ~/.cache/zsbench."""
    env = os.environ.get("ZSBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zsbench"


def compute_settings(device: torch.device) -> dict:
    """How features are computed on `device`; part of the cache key."""
    cuda = device.type == "cuda"
    return {
        "device": device.type,
        "memory_format": "channels_last",
        "autocast": "bfloat16" if cuda else None,
    }


def feature_key(dm, info: BackboneInfo, device: torch.device | None = None) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "dataset": getattr(dm, "registry_name", type(dm).__name__),
        "items": dm.fingerprint(),
        "backbone": info.name,
        "weights_sha256": info.weights_sha256 or "random",
        "transform": dm.transform_id(),
        "compute": compute_settings(device or torch.device("cpu")),
    }
    if info.variant is not None:  # only then, so that the keys of unpatched backbones stay put
        parts["variant"] = info.variant
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def extraction_workers(configured: int = 0, cores: int | None = None) -> int:
    """DataLoader workers that decode while the backbone computes: the configured number, else
    one per four cores (at least one), so that decoding keeps up without starving the forward
    pass of threads (2 cores: 1 worker). None (0) off the main thread: forking a worker from a
    thread while other threads run can leave the child waiting on a lock no thread will
    release (seen: two threads extracting at once hung in the child's futex wait)."""
    if threading.current_thread() is not threading.main_thread():
        return 0
    if configured and configured > 0:
        return int(configured)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    return max(1, min(8, cores // 4))


def extraction_loader(dm, device: torch.device):
    """Every item once, in `items` order, decoded in worker processes (pinned on CUDA)."""
    from torch.utils.data import DataLoader

    workers = extraction_workers(dm.num_workers)
    return DataLoader(
        dm.all_items_dataset(),
        batch_size=dm.eval_batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def prepare_backbone(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return model.to(device).eval().to(memory_format=torch.channels_last)


def forward(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One batch through the backbone as extraction computes it (see compute_settings)."""
    x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model(x).float()


@torch.inference_mode()
def _extract(model, dm, device: torch.device, progress: bool) -> np.ndarray:
    model = prepare_backbone(model, device)
    rows = []
    loader = extraction_loader(dm, device)
    for batch in progress_bar(loader, desc="extracting features", unit="batch", enabled=progress):
        rows.append(forward(model, batch["image"], device).cpu().numpy())
    return np.concatenate(rows)


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def entry_problem(folder: Path, n_items: int) -> str | None:
    """Why the cache entry in `folder` cannot be used (None: it can): missing, no or
    unreadable meta.json, a checksum that does not match the array (overwritten, truncated),
    an array numpy cannot open, or a row count that is not the dataset's."""
    target, meta_path = folder / "features.npy", folder / "meta.json"
    if not target.exists():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
        want = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable checksum in {meta_path}"
    try:
        if file_sha256(target) != want:
            return f"its sha256 does not match {meta_path} (overwritten or truncated)"
        rows = len(np.load(target, mmap_mode="r"))
    except (OSError, ValueError) as err:
        return f"unreadable ({err})"
    if rows != n_items:
        return f"{rows} rows for {n_items} items"
    return None


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
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = feature_key(dm, info, dev)
    folder = (root or cache_dir()) / "features" / key
    target = folder / "features.npy"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with FileLock(str(folder / ".lock")):
        problem = entry_problem(folder, len(dm.items))
        hit = problem is None
        if problem is not None and target.exists():
            print(f"zsbench: feature cache {target}: {problem}; extracting again", file=sys.stderr)
        if not hit:
            feats = _extract(model, dm, dev, progress)
            tmp = folder / f"features.{os.getpid()}.tmp.npy"
            np.save(tmp, feats)
            meta = {
                "key": key,
                "backbone": info.to_dict(),
                "n_items": len(dm.items),
                "transform": dm.transform_id(),
                "compute": compute_settings(dev),
                "shape": list(feats.shape),
                "sha256": file_sha256(tmp),
            }
            os.replace(tmp, target)  # then the meta: a crash in between fails the checksum
            meta_tmp = folder / f"meta.{os.getpid()}.tmp.json"
            meta_tmp.write_text(json.dumps(meta, indent=2))
            os.replace(meta_tmp, folder / "meta.json")
        feats = np.load(target, mmap_mode="r")
    stats = {
        "cache_hit": hit,
        "seconds": time.perf_counter() - start,
        "key": key,
        "path": str(target),
    }
    return feats, info, stats
