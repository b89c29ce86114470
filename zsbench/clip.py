"""CLIP through transformers: one loader, and CLIP's encoders with deep prompts.

`load_clip(name)` takes what a user types for `model.clip`:
  a hub id  ("openai/clip-vit-base-patch16"), looked up in the local Hugging Face cache only;
  a folder  written by `CLIPModel.save_pretrained` + `CLIPTokenizer.save_pretrained`;
  "tiny"    a tiny randomly initialised CLIP for CPU tests, written once (atomically) under
            `$ZSBENCH_CACHE/clip/` and then loaded like a user's folder, so tests exercise the
            same path real weights take.
Nothing is downloaded (`zsbench.hf.resolve_hf_model`). The model comes back frozen, in eval
mode, with a `BackboneInfo` recording the folder, the weights' sha256 and the processor's
normalisation.

`encode_image` / `encode_text` run CLIP's own layers with MaPLe-style deep prompts (as DRCPL's
official code does): first-layer prompts are appended to the vision tokens / placed after the
text start token, and for layers 1..len(deep) the prompt positions are replaced by that layer's
prompts. With no prompts they equal `CLIPModel.get_image_features` / `get_text_features`.

`encode_with_pseudo_tokens` is the ZS-CIR text side (Pic2Word, SEARLE, LinCIR): the token
embedding of a placeholder word ("$") in each prompt is replaced by a vector per prompt (the
output of a mapping network phi), before the position embeddings, as the official code does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from zsbench.backbones import BackboneInfo, sha256_file
from zsbench.errors import ZsbenchError

__all__ = [
    "DEFAULT_CIR_CLIP",
    "DEFAULT_CLIP",
    "PLACEHOLDER",
    "LoadedClip",
    "encode_image",
    "encode_prompts",
    "encode_text",
    "encode_with_pseudo_tokens",
    "fit_image_size",
    "load_clip",
    "placeholder_token_id",
    "save_tiny_clip",
    "tiny_clip_folder",
    "tokenize",
]

DEFAULT_CLIP = "openai/clip-vit-base-patch16"  # ViT-B/16, the model of DRCPL's paper
# ViT-L/14: the backbone of the ZS-CIR papers' main tables (Pic2Word, SEARLE-XL, LinCIR)
DEFAULT_CIR_CLIP = "openai/clip-vit-large-patch14"
PLACEHOLDER = "$"  # the pseudo word of ZS-CIR prompts ("a photo of $ that ...")
TINY = "tiny"
# the leaderboard note of every CLIP-based SBIR method: its numbers mean nothing on the tiny CLIP
TINY_CLIP_NOTE = (
    "Needs real CLIP weights (model.clip=<folder>); with model.clip=tiny, a random tiny "
    "CLIP used where none are available offline (docs/results.md), it scores near "
    "chance by construction: a pipeline check, not a result"
)
# transformers' CLIPImageProcessor defaults (OpenAI's preprocessing); used when a folder has no
# preprocessor_config.json
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TINY_MARKER = "zsbench_tiny_clip.json"  # marks random weights: recorded as pretrained_on=random
_TINY_VERSION = 1
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclasses.dataclass
class LoadedClip:
    """A frozen CLIPModel, its tokenizer, and what a result records about it."""

    model: torch.nn.Module  # transformers.CLIPModel, eval mode, requires_grad False
    tokenizer: object  # transformers.CLIPTokenizer
    info: BackboneInfo
    folder: Path

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)


# ----------------------------------------------------------------------------- loading
def load_clip(name_or_path: str = DEFAULT_CLIP) -> LoadedClip:
    """CLIP from a local folder, the local HF cache, or "tiny" (see the module docstring)."""
    from zsbench.hf import resolve_hf_model

    name = str(name_or_path)
    folder = tiny_clip_folder() if name == TINY else resolve_hf_model(name)
    try:
        from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    except ImportError as err:  # pragma: no cover - transformers is a dependency
        raise ZsbenchError("CLIP needs transformers: pip install transformers") from err
    fix = (
        "Give the folder that CLIPModel.save_pretrained and CLIPTokenizer.save_pretrained wrote "
        "(config.json, model.safetensors, vocab.json, merges.txt), e.g. "
        "--set model.clip=/path/to/clip-vit-base-patch16, or model.clip=tiny for a random test "
        "model."
    )
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load; CLIP loads in well under a second
        config = CLIPConfig.from_pretrained(folder, local_files_only=True)
        model = CLIPModel.from_pretrained(folder, config=config, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ZsbenchError(
            f"Could not load a CLIP model from {str(folder)!r}: {err}. {fix}"
        ) from err
    model.eval().requires_grad_(False)
    weights = _weights_file(folder)
    mean, std = _normalisation(folder)
    info = BackboneInfo(
        name=name,
        weights=str(weights),
        weights_sha256=_weights_sha256(folder, weights),
        pretrained_on="random" if (folder / _TINY_MARKER).is_file() else "openai-clip",
        mean=mean,
        std=std,
        feature_dim=int(config.projection_dim),
    )
    return LoadedClip(model=model, tokenizer=tokenizer, info=info, folder=folder)


def _weights_file(folder: Path) -> Path:
    for fname in (*_WEIGHT_FILES, "model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / fname).is_file():
            return folder / fname
    raise ZsbenchError(  # from_pretrained would have failed first; kept for a clear message
        f"No CLIP weights in {str(folder)!r} (looked for {', '.join(_WEIGHT_FILES)})."
    )


def _weights_sha256(folder: Path, weights: Path) -> str:
    """sha256 of the weights file; for sharded weights, of the index + each shard's sha256."""
    if not weights.name.endswith(".index.json"):
        return sha256_file(weights)
    import hashlib

    shards = sorted(set(json.loads(weights.read_text()).get("weight_map", {}).values()))
    h = hashlib.sha256(sha256_file(weights).encode())
    for shard in shards:
        h.update(sha256_file(folder / shard).encode())
    return h.hexdigest()


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean / image_std of the folder's processor config, else OpenAI's CLIP values."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    cfg = json.loads(path.read_text())
    mean, std = cfg.get("image_mean", OPENAI_CLIP_MEAN), cfg.get("image_std", OPENAI_CLIP_STD)
    if len(mean) != 3 or len(std) != 3:
        raise ZsbenchError(f"{path}: image_mean/image_std must have 3 values, got {mean}, {std}.")
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


# ----------------------------------------------------------------------------- tiny model
def _byte_alphabet() -> list[str]:
    """CLIP's byte-level alphabet: 256 printable characters standing for the 256 bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def save_tiny_clip(
    folder: str | os.PathLike, image_size: int = 64, patch_size: int = 16, layers: int = 12
) -> Path:
    """Write a tiny random CLIP (width 64, `layers` deep: ViT-B/16's 12 by default, so prompt
    depths are the paper's) + tokenizer + processor to `folder`.

    The tokenizer is byte-level BPE without merges (every character is a token), which is
    enough to tokenize any class name offline. Weights are drawn from a fixed seed, without
    touching the global RNG, so every build has the same sha256.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_alphabet()
    vocab: dict[str, int] = {}
    # the special tokens last, as in OpenAI's vocabulary (end of text has the largest id)
    for tok in [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(tok, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(str(folder))
    (folder / _TINY_MARKER).write_text(json.dumps({"version": _TINY_VERSION, "random": True}))
    return folder


def tiny_clip_folder() -> Path:
    """The tiny CLIP's folder under the zsbench cache, built once: written to a temporary
    folder and renamed into place, so concurrent runs never see a half-written model."""
    from zsbench.features import cache_dir

    final = cache_dir() / "clip" / f"tiny-v{_TINY_VERSION}"
    if (final / _TINY_MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        save_tiny_clip(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race (or a stale partial folder is there)
            if not (final / _TINY_MARKER).is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- encoders
def fit_image_size(images: Tensor, size: int) -> Tensor:
    """`images` resized (bilinear, antialiased) to size x size when they are not already:
    CLIP's position embeddings fix its input size, datasets may be rendered at another."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def _layer(layer, h: Tensor, mask, **kwargs) -> Tensor:
    out = layer(h, mask, **kwargs)
    return out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple


def encode_image(
    model,
    pixels: Tensor,
    first: Tensor | None = None,
    deep: Sequence[Tensor] = (),
    hidden: list[Tensor] | None = None,
) -> Tensor:
    """Projected (unnormalised) CLIP image embedding [B, D] of `pixels` [B, 3, S, S].

    `first` [n, width]: prompt tokens appended after the patch tokens (after the position
    embeddings, before the pre-LayerNorm); `deep[i]` [n, width] replaces the last n tokens at
    the input of layer i + 1. `hidden`, if given, receives each layer's output.
    """
    vis = model.vision_model
    h = vis.embeddings(pixels)
    b = h.shape[0]
    n = 0
    if first is not None:
        n = first.shape[0]
        h = torch.cat([h, first.to(h.dtype).expand(b, -1, -1)], dim=1)
    elif deep:
        raise ZsbenchError("Deep vision prompts need first-layer prompts (their positions).")
    h = vis.pre_layrnorm(h)
    _check_depth(len(deep), len(vis.encoder.layers), "vision")
    for i, layer in enumerate(vis.encoder.layers):
        if 1 <= i <= len(deep):
            h = torch.cat([h[:, :-n], deep[i - 1].to(h.dtype).expand(b, -1, -1)], dim=1)
        h = _layer(layer, h, None)
        if hidden is not None:
            hidden.append(h)
    return model.visual_projection(vis.post_layernorm(h[:, 0]))


def encode_text(
    model,
    embeds: Tensor,
    eos_index: Tensor,
    deep: Sequence[Tensor] = (),
    start: int = 1,
    hidden: list[Tensor] | None = None,
) -> Tensor:
    """Projected (unnormalised) CLIP text embedding [C, D] of token embeddings `embeds`
    [C, L, width] (position embeddings are added here), pooled at `eos_index` [C].

    `deep[i]` [n, width] replaces tokens start..start+n at the input of layer i + 1 (the
    first-layer prompts are already in `embeds`). Causal attention, so padding after the end
    token does not change the result.
    """
    from transformers.masking_utils import create_causal_mask

    text = model.text_model
    length = embeds.shape[1]
    h = embeds + text.embeddings.position_embedding(text.embeddings.position_ids[:, :length])
    mask = create_causal_mask(**_causal_mask_arguments(create_causal_mask, text.config, h))
    _check_depth(len(deep), len(text.encoder.layers), "text")
    for i, layer in enumerate(text.encoder.layers):
        if 1 <= i <= len(deep):
            p = deep[i - 1].to(h.dtype)
            p = p.expand(h.shape[0], -1, -1)
            h = torch.cat([h[:, :start], p, h[:, start + p.shape[1] :]], dim=1)
        h = _layer(layer, h, mask, is_causal=True)
        if hidden is not None:
            hidden.append(h)
    h = text.final_layer_norm(h)
    pooled = h[torch.arange(h.shape[0], device=h.device), eos_index.to(h.device)]
    return model.text_projection(pooled)


def _causal_mask_arguments(create_causal_mask, config, h: Tensor) -> dict:
    """Keyword arguments of transformers' `create_causal_mask` for a cache-free forward, by
    the names the installed release uses (5.0: `input_embeds`, `cache_position`,
    `past_key_values`; later 5.x: `inputs_embeds`, `cache`)."""
    import inspect

    params = inspect.signature(create_causal_mask).parameters
    kwargs = {"config": config, "attention_mask": None}
    kwargs["inputs_embeds" if "inputs_embeds" in params else "input_embeds"] = h
    if "cache_position" in params:
        kwargs["cache_position"] = torch.arange(h.shape[1], device=h.device)
    kwargs["cache" if "cache" in params else "past_key_values"] = None
    return kwargs


def _check_depth(n_deep: int, n_layers: int, side: str) -> None:
    if n_deep >= n_layers:
        raise ZsbenchError(
            f"{n_deep} deep {side} prompts need more than {n_deep} layers; this CLIP has "
            f"{n_layers}. Lower the prompt depth (model.prompt_depth <= {n_layers})."
        )


# ----------------------------------------------------------------------------- pseudo tokens
def tokenize(tokenizer, texts: Sequence[str], max_length: int = 77) -> tuple[Tensor, Tensor]:
    """Token ids [B, L] (start token, text, end token, padding) and each row's end-token
    position [B], where CLIP pools. Texts longer than `max_length` tokens are truncated."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length)
    ids = torch.tensor(enc["input_ids"], dtype=torch.int64)
    is_eos = ids == tokenizer.eos_token_id
    if not bool(is_eos.any(1).all()):  # pragma: no cover - the tokenizer always appends it
        raise ZsbenchError("the tokenizer dropped the end token of a text.")
    return ids, is_eos.int().argmax(1)  # the first end token (padding may repeat its id)


def placeholder_token_id(tokenizer, placeholder: str = PLACEHOLDER) -> int:
    """The single token id of `placeholder` as a word of its own ("$" -> "$</w>")."""
    ids = tokenizer(placeholder)["input_ids"][1:-1]
    if len(ids) != 1:
        raise ZsbenchError(
            f"the placeholder {placeholder!r} is {len(ids)} tokens for this tokenizer; pick a "
            "word that is one token (CLIP's vocabulary has '$' and '*')."
        )
    return int(ids[0])


def encode_prompts(model, tokenizer, texts: Sequence[str]) -> Tensor:
    """Projected (unnormalised) text features [B, D] of plain `texts` (get_text_features)."""
    ids, eos = tokenize(tokenizer, texts)
    device = model.text_projection.weight.device
    embeds = model.text_model.embeddings.token_embedding(ids.to(device))
    return encode_text(model, embeds, eos)


def encode_with_pseudo_tokens(
    model, tokenizer, prompts: Sequence[str], tokens: Tensor, placeholder: str = PLACEHOLDER
) -> Tensor:
    """Projected (unnormalised) text features [B, D] of `prompts` with each prompt's
    `placeholder` token embedding replaced by `tokens[i]` [B, width].

    Every prompt holds the placeholder exactly once, as a word of its own ("a photo of $ that
    is red"). Gradients reach `tokens` (and the text encoder's weights if they train).
    """
    prompts = list(prompts)
    if tokens.ndim != 2 or tokens.shape[0] != len(prompts):
        raise ZsbenchError(
            f"tokens must be [prompts={len(prompts)}, width], got {tuple(tokens.shape)}."
        )
    width = model.text_model.config.hidden_size
    if tokens.shape[1] != width:
        raise ZsbenchError(
            f"pseudo tokens have width {tokens.shape[1]}; this CLIP's token embeddings have "
            f"{width} (text hidden size)."
        )
    ids, eos = tokenize(tokenizer, prompts)
    at = ids == placeholder_token_id(tokenizer, placeholder)
    counts = at.sum(1)
    if not bool((counts == 1).all()):
        i = int((counts != 1).nonzero()[0])
        raise ZsbenchError(
            f"prompt {prompts[i]!r} holds the placeholder {placeholder!r} {int(counts[i])} "
            "times after tokenization (truncated to 77 tokens); it must hold it exactly once, "
            f"as a word of its own (e.g. 'a photo of {placeholder} that ...')."
        )
    ids, eos, at = ids.to(tokens.device), eos.to(tokens.device), at.to(tokens.device)
    embeds = model.text_model.embeddings.token_embedding(ids)
    embeds = torch.where(at[..., None], tokens.to(embeds.dtype)[:, None, :], embeds)
    return encode_text(model, embeds, eos)
