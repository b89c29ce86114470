"""SEARLE: zero-shot composed image retrieval with textual inversion.

Paper: Baldrati, Agnolucci, Bertini, Del Bimbo, "Zero-Shot Composed Image Retrieval with Textual
Inversion", ICCV 2023. Official code: miccunifi/SEARLE (`src/phi.py`, `src/oti_inversion.py`,
`src/train_phi.py`, `src/utils.py`); the defaults below are its argparse defaults at commit
a9c314b (train_phi.py:340,346 and README: GPT loss weight 0.75 over the top 150 concepts;
oti_inversion.py:277: top 15 concepts for OTI).

CLIP stays frozen. SEARLE learns phi, an MLP from a CLIP image embedding to one token embedding
of the text encoder (the pseudo-word $), in two stages:
1. OTI (optimisation-based textual inversion), once per training image: a token v, initialised
   N(0, 0.02^2), is optimised (AdamW lr 2e-2, wd 0.01, 350 steps, EMA 0.99) so that a random
   PALAVRA template "... $ ..." encodes close to the image (cosine embedding loss), regularised
   by a phrase about one of the image's top-k concepts in which the concept is replaced by $
   (GPT phrase loss, weight 0.5; the two losses are averaged with weights 1 and 0.5);
2. phi distillation: phi(image) is pulled towards the image's OTI token by a contrastive loss
   (PALAVRA's NT-Xent, temperature 0.25, weight 1) plus the same GPT-phrase regulariser on
   phi's token (weight 0.75, a concept drawn from the image's top 150); AdamW lr 1e-4, wd
   0.01, batch 256, 100 epochs, phi dropout 0.5.
Query: "a photo of $ that {modification}" with $ = phi(reference image embedding), through the
frozen text encoder; gallery: CLIP image embeddings; cosine similarity.

`Phi`, `nt_xent_loss` and the query side (`PseudoWordMethod`) are shared with LinCIR and RTD
(their official code copies them): methods/pseudo_word.py.

Deviations from the paper: `Searle.metadata.deviations` (rendered on docs/methods/searle.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.clip import DEFAULT_CIR_CLIP, encode_prompts, encode_with_pseudo_tokens
from zsbench.errors import ZsbenchError
from zsbench.methods.base import CIR_PROMPT, MethodMetadata
from zsbench.methods.pseudo_word import PseudoWordMethod, nt_xent_loss

__all__ = ["PALAVRA_TEMPLATES", "Searle", "cosine_embedding_loss", "load_concepts", "load_phrases"]

# The 24 templates of PALAVRA used by OTI's cosine loss (official utils.get_templates)
PALAVRA_TEMPLATES = (
    "This is a photo of a {}",
    "This photo contains a {}",
    "A photo of a {}",
    "This is an illustration of a {}",
    "This illustration contains a {}",
    "An illustrations of a {}",
    "This is a sketch of a {}",
    "This sketch contains a {}",
    "A sketch of a {}",
    "This is a diagram of a {}",
    "This diagram contains a {}",
    "A diagram of a {}",
    "A {}",
    "We see a {}",
    "{}",
    "We see a {} in this photo",
    "We see a {} in this image",
    "We see a {} in this illustration",
    "We see a {} photo",
    "We see a {} image",
    "We see a {} illustration",
    "{} photo",
    "{} image",
    "{} illustration",
)

# Offline stand-in for the GPT-Neo-2.7B phrases (official gpt_phrases_generation.py): phrases
# that mention the concept once, used when no model.phrases file is given.
PHRASE_TEMPLATES = (
    "a photo of a {}",
    "a close-up photo of the {}",
    "a {} in the scene",
    "there is a {} here",
    "an image showing a {}",
)


# ---------------------------------------------------------------------------------------------
# SEARLE
# ---------------------------------------------------------------------------------------------


def cosine_embedding_loss(x: Tensor, y: Tensor) -> Tensor:
    """mean(1 - cos(x_i, y_i)): torch's CosineEmbeddingLoss with target 1, as the official."""
    return (1 - F.cosine_similarity(x.float(), y.float(), dim=-1)).mean()


def load_concepts(concepts: list[str] | str) -> list[str]:
    """A concept vocabulary: a list, or a text file with one concept per line. Stripped, case
    kept (official: `str(w).strip()`), so the concepts match the keys of a phrases file."""
    if isinstance(concepts, str):
        path = Path(concepts)
        if not path.is_file():
            raise ZsbenchError(
                f"searle: concepts file {concepts!r} not found; give one concept per line "
                "(official: the Open Images V7 class names) or a YAML list."
            )
        concepts = path.read_text(encoding="utf-8").splitlines()
    words = list(dict.fromkeys(c.strip() for c in concepts if c and c.strip()))
    if not words:
        raise ZsbenchError("searle: the concept vocabulary is empty.")
    return words


def load_phrases(concepts: list[str], phrases: str | None) -> dict[str, list[str]]:
    """concept -> phrases that contain it (official: GPT phrases; concepts whose phrases do not
    contain the concept are filtered out). Without a file: PHRASE_TEMPLATES."""
    if phrases is None:
        return {c: [t.format(c) for t in PHRASE_TEMPLATES] for c in concepts}
    path = Path(phrases)
    if not path.is_file():
        raise ZsbenchError(f"searle: phrases file {phrases!r} not found (JSON concept -> list).")
    table = json.loads(path.read_text(encoding="utf-8"))
    kept = {c: [p for p in table.get(c, []) if c in p] for c in concepts}
    kept = {c: ps for c, ps in kept.items() if ps}
    if not kept:
        raise ZsbenchError(f"searle: no phrase in {phrases!r} contains its concept.")
    return kept


class Searle(PseudoWordMethod):
    """Frozen CLIP + phi distilled from per-image OTI tokens, with a concept-phrase regulariser."""

    metadata = MethodMetadata(
        title="SEARLE",
        task="cir",
        inputs="images",
        trains=True,
        paper=(
            "Baldrati, Agnolucci, Bertini, Del Bimbo: Zero-Shot Composed Image Retrieval with "
            "Textual Inversion, ICCV 2023"
        ),
        year=2023,
        code="miccunifi/SEARLE",
        backbone="CLIP ViT-L/14 (OpenAI weights; SEARLE-XL), frozen; only phi trains",
        side_information="a concept vocabulary and phrases about each concept",
        deviations=(
            "**Phrases**: templates around the concept (`PHRASE_TEMPLATES`) unless "
            "`model.phrases=FILE` (JSON concept -> phrases) gives them (official: GPT-Neo-2.7B "
            "generations, `gpt_phrases_generation.py`; GPT-Neo is not available offline).",
            "**Concept vocabulary**: no default; `model.concepts=FILE` (one per line) or a YAML "
            "list (official: the Open Images V7 class names); synthetic-cir uses its attribute "
            "words (searle.yaml). Each image's concepts are its top-k (official k 15 for OTI, "
            "150 for phi) by cosine to the template-ensembled text embeddings of the vocabulary, "
            "as officially.",
            "**OTI in the loop**: each training image is inverted once, at its first batch, and "
            "cached by its index (official: a separate pre-pass over the training images, "
            "ImageNet test images, saved to disk); the OTI batch is the phi training batch "
            "(official: 32), which changes only speed. Same tokens, same losses. The training "
            "images are the dataset's (synthetic-cir: its training partition; real data: "
            "`dataset.train_images=DIR`).",
            "**CPU defaults** on synthetic-cir: tiny CLIP at 64 px, 20 OTI steps, top-3 concepts "
            "(`model.top_k` 3 for OTI, `model.phi_top_k` 3 for phi), lr 1e-3, 3 epochs, batch "
            "32, fp32. `--set preset=paper` restores ViT-L/14 at 224 px, 350 OTI steps, top-15 "
            "(OTI) and top-150 (phi) concepts, lr 1e-4, batch 256, 100 epochs, fp16 "
            "(`16-mixed`).",
            "**Image preprocessing**: CLIP resize + centre crop (official `--preprocess-type "
            "targetpad`: an image whose aspect ratio exceeds 1.25 is first zero-padded to "
            "1.25); target padding is not implemented, so elongated images lose more of their "
            "borders to the crop.",
            "**Model selection**: the official code validates on CIRR val every epoch and saves "
            "phi every 5 epochs and at the last (`--save-frequency 5`, `phi_last`); zsbench "
            "evaluates the last epoch (no model selection on a benchmark).",
            "**Concept names** are stripped and keep their case (as the official "
            "`str(w).strip()`; duplicates and empty lines are dropped), so an official OIDv7 "
            "vocabulary matches the keys of its GPT phrase file.",
        ),
    )
    similarity = "cosine"
    train_on = "images"

    def __init__(
        self,
        clip: str = DEFAULT_CIR_CLIP,
        prompt: str = CIR_PROMPT,
        concepts: list[str] | str | None = None,
        phrases: str | None = None,
        top_k: int = 15,
        phi_top_k: int = 150,
        oti_steps: int = 350,
        oti_lr: float = 2e-2,
        oti_weight_decay: float = 0.01,
        oti_lambda_cos: float = 1.0,
        oti_lambda_gpt: float = 0.5,
        ema_decay: float = 0.99,
        phi_dropout: float = 0.5,
        lambda_distil: float = 1.0,
        lambda_gpt: float = 0.75,
        temperature: float = 0.25,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if concepts is None:
            raise ZsbenchError(
                "searle needs a concept vocabulary: --set model.concepts=FILE (one concept per "
                "line; official: Open Images V7 class names) or a list in the method YAML."
            )
        if top_k < 1 or phi_top_k < 1 or oti_steps < 0:
            raise ZsbenchError(
                f"searle: top_k ({top_k}) and phi_top_k ({phi_top_k}) >= 1, oti_steps "
                f"({oti_steps}) >= 0."
            )
        self.setup_clip(clip)
        self.phi = self.make_phi(phi_dropout)
        self.load_released_phi(checkpoint, ("Phi",))  # official save_phi: {"Phi": state}
        self.concepts = load_concepts(concepts)
        self.phrases = load_phrases(self.concepts, phrases)
        self.concepts = [c for c in self.concepts if c in self.phrases]
        self.oti_tokens: dict[int, Tensor] = {}  # image index -> EMA OTI token (CPU)
        self._concept_text: Tensor | None = None
        self._rng = random.Random(torch.initial_seed())

    # ------------------------------------------------------------------ concepts and phrases
    @torch.no_grad()
    def top_concepts(self, features: Tensor, k: int) -> list[list[str]]:
        """Each image's top-k concepts by cosine to the concepts' template-ensembled texts."""
        if self._concept_text is None or self._concept_text.device != features.device:
            rows = []
            for c in self.concepts:
                t = encode_prompts(
                    self.clip, self.tokenizer, [p.format(c) for p in PALAVRA_TEMPLATES]
                )
                rows.append(F.normalize(F.normalize(t.float(), dim=-1).mean(0), dim=0))
            self._concept_text = torch.stack(rows).to(features.device)
        k = min(k, len(self.concepts))
        sims = F.normalize(features.float(), dim=-1) @ self._concept_text.T
        return [[self.concepts[j] for j in row] for row in sims.topk(k, dim=1).indices.tolist()]

    def phrase_pairs(self, concepts: list[list[str]]) -> tuple[list[str], list[str]]:
        """Per image a random phrase of a random top concept, and the same with the concept
        replaced by $ (official: `phrase.replace(concept, " $ ", 1)`)."""
        plain, masked = [], []
        for options in concepts:
            c = self._rng.choice(options)
            p = self._rng.choice(self.phrases[c])
            plain.append(p)
            masked.append(p.replace(c, " $ ", 1))
        return plain, masked

    def gpt_loss(self, tokens: Tensor, concepts: list[list[str]]) -> Tensor:
        plain, masked = self.phrase_pairs(concepts)
        with torch.no_grad():
            target = encode_prompts(self.clip, self.tokenizer, plain)
        pred = encode_with_pseudo_tokens(self.clip, self.tokenizer, masked, tokens)
        return cosine_embedding_loss(pred, target)

    # ------------------------------------------------------------------ OTI
    def oti(self, features: Tensor, concepts: list[list[str]]) -> Tensor:
        """Optimisation-based textual inversion of a batch: EMA tokens [B, width]."""
        h = self.hparams
        width = int(self.clip.text_model.config.hidden_size)
        tokens = nn.Parameter(torch.randn(len(features), width, device=features.device) * 0.02)
        ema = tokens.detach().clone()
        opt = torch.optim.AdamW([tokens], lr=h.oti_lr, weight_decay=h.oti_weight_decay)
        with torch.enable_grad():
            for _ in range(h.oti_steps):
                templates = [self._rng.choice(PALAVRA_TEMPLATES).format(" $ ") for _ in features]
                text = encode_with_pseudo_tokens(self.clip, self.tokenizer, templates, tokens)
                cos = cosine_embedding_loss(text, features)
                gpt = self.gpt_loss(tokens, concepts)
                loss = (h.oti_lambda_cos * cos + h.oti_lambda_gpt * gpt) / (
                    h.oti_lambda_cos + h.oti_lambda_gpt
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                ema = h.ema_decay * ema + (1 - h.ema_decay) * tokens.detach()
        return ema

    def oti_targets(self, features: Tensor, index: Tensor, concepts: list[list[str]]) -> Tensor:
        """The cached OTI token of each image, inverting the ones not seen yet."""
        keys = [int(i) for i in index]
        todo = [j for j, k in enumerate(keys) if k not in self.oti_tokens]
        if todo:
            new = self.oti(features[todo], [concepts[j] for j in todo])
            for j, tok in zip(todo, new):
                self.oti_tokens[keys[j]] = tok.cpu()
        return torch.stack([self.oti_tokens[k] for k in keys]).to(features.device)

    # ------------------------------------------------------------------ phi training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        h = self.hparams
        with torch.no_grad():
            features = self.image_features(batch["image"]).float()
        # one ranking serves both: OTI regularises with the top `top_k` concepts (official 15),
        # phi with the top `phi_top_k` (official 150)
        ranked = self.top_concepts(features, max(h.top_k, h.phi_top_k))
        targets = self.oti_targets(features, batch["index"], [c[: h.top_k] for c in ranked])
        estimated = self.pseudo_tokens(features)
        distil = nt_xent_loss(targets, estimated, h.temperature)
        gpt = self.gpt_loss(estimated, [c[: h.phi_top_k] for c in ranked])
        loss = h.lambda_distil * distil + h.lambda_gpt * gpt
        n = len(features)
        self.log("train/loss", loss, batch_size=n)
        self.log("train/distil", distil, batch_size=n)
        self.log("train/gpt", gpt, batch_size=n)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.phi.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
