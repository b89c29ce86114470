"""LinCIR: language-only training of zero-shot composed image retrieval.

Paper: Gu, Chun, Kim, Kang, Yun, "Language-only Training of Zero-shot Composed Image Retrieval",
CVPR 2024. Official code: navervision/lincir (`train_phi.py`, `loader.py`, `models.py`,
`encode_with_pseudo_tokens.py`); defaults from its argparse and the README's training command.

Self-masking projection, trained on captions only, CLIP frozen:
- a caption c is cleaned (lower case, "$" removed) and its keywords (spaCy runs of
  NOUN/PROPN/ADJ/DET tokens) are replaced by the pseudo-word $, giving c$;
- the frozen text encoder embeds c -> t (projected, not normalised); phi reads t plus noise,
  t + 1.0 * u * n with u ~ U[0, 1) per caption and n ~ N(0, I), and its output is injected
  at every $ of c$;
- the loss is the MSE between the embedding of c$ and t.
At test time phi reads the reference IMAGE embedding (CLIP's two towers share one space) and
the query is "a photo of $ that {modification}". Phi is SEARLE's MLP (dropout 0.5); AdamW lr
1e-4, wd 0.01, constant lr, 20000 steps of 512 captions (8 GPUs x 64), fp16, ViT-L/14.

Deviations from the paper: `Lincir.metadata.deviations` (rendered on docs/methods/lincir.md).
"""

from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F
from torch import Tensor

from zsbench.clip import (
    DEFAULT_CIR_CLIP,
    encode_prompts,
    encode_text,
    placeholder_token_id,
    tokenize,
)
from zsbench.errors import ZsbenchError
from zsbench.methods.base import CIR_PROMPT, MethodMetadata
from zsbench.methods.pseudo_word import PLACEHOLDER, PseudoWordMethod, clean_caption, noisy_features

__all__ = [
    "FUNCTION_WORDS",
    "Lincir",
    "encode_masked",
    "mask_keywords",
]

# Words that end a keyword run (zsbench does not use spaCy): the closed classes spaCy tags as
# something other than NOUN/PROPN/ADJ/DET (prepositions, conjunctions, pronouns, auxiliaries,
# particles, adverbs of degree) plus frequent caption verbs.
FUNCTION_WORDS = frozenset(
    """
    about above across after against along among around as at before behind below beneath beside
    between beyond by down during for from in inside into near next of off on onto out outside
    over past since through throughout to toward towards under underneath until up upon with
    within without and but or nor so yet because while although if than that which who whom
    whose where when i you he she it we they me him her us them my your his its our their mine
    is are was were be been being am has have had having do does did will would can could shall
    should may might must not no very too also just only then there here while
    sitting standing holding wearing walking looking lying riding playing eating making taking
    showing using running flying hanging parked covered filled made
    """.split()
)


def _keyword_runs(caption: str) -> list[str]:
    """Maximal runs of words that are not function words (spaCy-free keyword extraction)."""
    runs, current = [], []
    for word in caption.split():
        bare = word.strip(".,;:!?\"'()")
        if bare and bare not in FUNCTION_WORDS:
            current.append(word)
        else:
            if current:
                runs.append(" ".join(current))
            current = []
    if current:
        runs.append(" ".join(current))
    return runs


def mask_keywords(caption: str, rng: random.Random, keywords: list[str] | None = None) -> str:
    """`caption` with its keywords replaced by the placeholder $ (official `CaptionDataset`).

    Every keyword found in the caption becomes one $ (all $ get the same token later); with
    no keyword, one random word becomes $; an empty caption gives "a photo of $". Keywords
    default to `_keyword_runs`. Replacement is by whole words (the official `str.replace` also
    hits substrings, e.g. the determiner "a" inside "cat").
    """
    caption = clean_caption(caption)
    if keywords is None:
        keywords = _keyword_runs(caption)
    masked = caption
    for kw in sorted({k for k in keywords if k}, key=len, reverse=True):
        masked = re.sub(rf"(?<!\S){re.escape(kw)}(?!\S)", PLACEHOLDER, masked)
    if PLACEHOLDER not in masked:
        words = caption.split()
        if not words:
            return f"a photo of {PLACEHOLDER}"
        pick = rng.choice(words)
        masked = re.sub(rf"(?<!\S){re.escape(pick)}(?!\S)", PLACEHOLDER, caption, count=1)
    return masked


def encode_masked(model, tokenizer, texts: list[str], tokens: Tensor) -> Tensor:
    """Text features [B, D] of `texts` with EVERY placeholder token replaced by tokens[i].

    A masked caption may hold several $ (one per keyword), all the same token, as in the
    official `encode_with_pseudo_tokens_HF` (zsbench.clip.encode_with_pseudo_tokens wants
    exactly one). A caption whose $ was truncated away falls back to "a photo of $" (official).
    """
    pid = placeholder_token_id(tokenizer)
    ids, _ = tokenize(tokenizer, texts)
    texts = [
        t if bool((row == pid).any()) else f"a photo of {PLACEHOLDER}" for t, row in zip(texts, ids)
    ]
    ids, eos = tokenize(tokenizer, texts)
    device = tokens.device
    ids, eos = ids.to(device), eos.to(device)
    embeds = model.text_model.embeddings.token_embedding(ids)
    at = (ids == pid)[..., None]
    embeds = torch.where(at, tokens.to(embeds.dtype)[:, None, :], embeds)
    return encode_text(model, embeds, eos)


class Lincir(PseudoWordMethod):
    """Frozen CLIP + phi trained on captions alone by self-masking projection (MSE)."""

    metadata = MethodMetadata(
        title="LinCIR",
        task="cir",
        inputs="images",
        trains=True,
        paper=(
            "Gu, Chun, Kim, Kang, Yun: Language-only Training of Zero-shot Composed Image "
            "Retrieval, CVPR 2024"
        ),
        year=2024,
        code="navervision/lincir",
        backbone="CLIP ViT-L/14 (OpenAI weights), frozen; only phi trains",
        side_information="captions only (no images) for training",
        deviations=(
            "**Keywords without spaCy** (not installed, no download; official: spaCy "
            "`en_core_web_sm` runs of NOUN/PROPN/ADJ/DET tokens): runs of words outside a fixed "
            "function-word list (`FUNCTION_WORDS`: prepositions, conjunctions, pronouns, "
            "auxiliaries, frequent caption verbs); determiners stay inside runs as with spaCy's "
            "DET. Replacement is by whole words (the official `str.replace` also replaces "
            "substrings, e.g. the keyword `a` inside `cat`).",
            "**Captions**: the dataset's caption corpus (synthetic-cir: one caption per training "
            "image; real data: `--set dataset.train_captions=FILE`), not the official union of "
            "CC3M captions, SD prompts and Midjourney prompts fetched from the HF hub.",
            "**CPU defaults** on synthetic-cir: tiny random CLIP (`model.clip=tiny`) at 64 px, "
            "lr 1e-3, 10 epochs, batch 64, fp32 (zsbench's default precision). `--set "
            "preset=paper` restores ViT-L/14 at 224 px, lr 1e-4, batch 512 (official: 8 GPUs x "
            "64), 20000 steps (`trainer.max_steps=20000` with `trainer.max_epochs=null`: the "
            "loader cycles the corpus, as the official loop does), fp16 mixed precision "
            "(`trainer.precision=16-mixed`, as officially).",
            "**Model selection**: the official code keeps the checkpoint with the best CIRR val "
            "R@1; zsbench evaluates the last one (no model selection on a benchmark).",
        ),
    )
    similarity = "cosine"
    train_on = "captions"

    def __init__(
        self,
        clip: str = DEFAULT_CIR_CLIP,
        prompt: str = CIR_PROMPT,
        phi_dropout: float = 0.5,
        noise_scale: float = 1.0,
        l2_normalize: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if noise_scale < 0:
            raise ZsbenchError(f"lincir: noise_scale must be >= 0 (paper: 1.0), got {noise_scale}.")
        self.setup_clip(clip)
        self.phi = self.make_phi(phi_dropout)
        self.load_released_phi(checkpoint, ("Phi",))  # official save_phi: {"Phi": state}
        self.normalize_phi_input = l2_normalize
        self._rng = random.Random(torch.initial_seed())

    def phi_loss(self, captions: list[str]) -> Tensor:
        """Self-masking projection: MSE between the masked caption (with $ = phi(noisy
        embedding of the caption)) and the caption, both through the frozen text encoder."""
        clean = [clean_caption(c) for c in captions]
        masked = [mask_keywords(c, self._rng) for c in clean]
        with torch.no_grad():
            target = encode_prompts(self.clip, self.tokenizer, clean).float()
        inputs = noisy_features(target, self.hparams.noise_scale)
        tokens = self.pseudo_tokens(inputs)
        pred = encode_masked(self.clip, self.tokenizer, masked, tokens)
        return F.mse_loss(pred.float(), target)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.phi_loss(list(batch["text"]))
        self.log("train/loss", loss, batch_size=len(batch["text"]))
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.phi.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
