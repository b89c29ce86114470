"""Helpers shared by the semantic sources: class-name normalisation, file identities for the
cache key, atomic cache writes, and batched text encoding (MiniLM and CLIP text)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def cache_root(cache: Path | str | None = None) -> Path:
    """The zsbench cache root: `cache`, else $ZSBENCH_CACHE, else ~/.cache/zsbench."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("ZSBENCH_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/zsbench").expanduser()


def normalize_class_name(name: str) -> str:
    """'car_(sedan)' -> 'car sedan', 'Teddy-Bear' -> 'teddy bear': separators to spaces, no
    parentheses, lowercase, single spaces."""
    text = re.sub(r"[()\[\]]", " ", str(name))
    text = re.sub(r"[_\-\s]+", " ", text)
    return text.strip().lower()


def class_words(name: str) -> list[str]:
    return normalize_class_name(name).split()


def file_stat(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def folder_identity(folder: Path) -> list:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    return [str(folder.resolve())] + [
        file_stat(p)[1:] + [str(p.relative_to(folder))] for p in files
    ]


def atomic_save(file: Path, array: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def embed_texts(
    tokenizer, encode: Callable, texts: Sequence[str], batch_size: int, max_length: int
) -> np.ndarray:
    """L2-normalised float32 embeddings [N, D] of `texts`: tokenised in batches (padded,
    truncated to `max_length`), `encode(batch) -> Tensor [B, D]`, inference mode."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(torch.nn.functional.normalize(encode(batch), dim=-1).float().numpy())
    return np.concatenate(out, axis=0)
