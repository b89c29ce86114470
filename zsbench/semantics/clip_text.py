"""``clip``: CLIP text embeddings of "a photo of a {class}".

`path` is a local folder written by save_pretrained or a hub id already in the local Hugging
Face cache (`zsbench.hf.resolve_hf_model`); nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError
from zsbench.semantics.common import embed_texts, folder_identity, normalize_class_name

CLIP_PROMPT = "a photo of a {}"


@functools.lru_cache(maxsize=2)
def _clip_model(folder: str):
    try:
        from transformers import CLIPModel, CLIPTokenizer
    except ImportError as e:
        raise ZsbenchError("The 'clip' source needs transformers: pip install transformers") from e
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise ZsbenchError(
            f"Could not load a CLIP model and tokenizer from {folder!r} (expected the folder that "
            f"CLIPModel/CLIPTokenizer.save_pretrained write): {e}"
        ) from e
    return tokenizer, model


def _clip_folder(path: str | None) -> Path:
    if path is None:
        raise ZsbenchError(
            "The 'clip' semantic source needs path=<CLIP model>: a local folder saved with "
            "save_pretrained, or a hub id (e.g. openai/clip-vit-base-patch32) already in the "
            "local Hugging Face cache."
        )
    from zsbench.hf import resolve_hf_model

    return resolve_hf_model(path)


def clip_text(class_names: Sequence[str], path: str | None) -> np.ndarray:
    """L2-normalised CLIP text embeddings of "a photo of a {name}"."""
    tokenizer, model = _clip_model(str(_clip_folder(path)))

    def encode(batch):
        pooled = model.text_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).pooler_output
        return model.text_projection(pooled)

    prompts = [CLIP_PROMPT.format(normalize_class_name(n)) for n in class_names]
    max_len = int(model.config.text_config.max_position_embeddings)
    return embed_texts(tokenizer, encode, prompts, batch_size=256, max_length=max_len)


def clip_identity(path: str | None):
    return folder_identity(_clip_folder(path))
