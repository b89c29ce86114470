"""RTD: reducing the task discrepancy of text encoders for zero-shot composed image retrieval.

Paper: Byun, Jang, Kim, Kim, Moon, Lim, Kim, "RTD: An Efficient Post-hoc Framework for
Reducing Task Discrepancy of Text Encoders for Composed Image Retrieval", ICCV 2025
(arXiv 2406.09188). Official code: jaeseokbyun/RTD (`train_text_encoder.py`, `loader.py`,
`run.sh`), built on LinCIR's.

A plug-in after any projection method (phi: CLIP embedding -> pseudo-word token): phi, the image
encoder and a copy of the text encoder stay frozen; a second text encoder (query side, all of
its weights) is trained on text triplets (reference caption r, modification m, target caption
t) with frozen-target text contrastive learning:
- refined concatenation: the pseudo-token comes from phi applied to the FROZEN text embedding of
  r plus LinCIR's noise (scale 0.5), and the composed query is "a photo of $ that {m}";
- refined batch sampling: each triplet adds a second pair, "a photo of $" (same token) against
  the frozen embedding of r, so every batch holds, for each token, a hard negative that shares
  it;
- loss: PALAVRA's NT-Xent (temperature 0.07) between the frozen encoder's target embeddings
  [t; r] and the trained encoder's query embeddings.
AdamW lr 1e-5, wd 0.01, constant lr, 2000 steps of 512 triplets (4 GPUs x 128), fp16. At test
time queries are encoded by the trained text encoder with the base method's phi(image).

Deviations from the paper: each variant's `metadata.deviations` (`LincirRtd`, `SearleRtd`,
`Pic2wordRtd`; rendered on docs/methods/rtd.md).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from zsbench.clip import DEFAULT_CIR_CLIP, encode_prompts, encode_with_pseudo_tokens
from zsbench.errors import ZsbenchError
from zsbench.methods.base import CIR_PROMPT, MethodMetadata
from zsbench.methods.pseudo_word import (
    PseudoWordMethod,
    clean_caption,
    noisy_features,
    nt_xent_loss,
)
from zsbench.registry import METHODS

__all__ = ["REFERENCE_PROMPT", "RtdMethod", "load_phi_checkpoint", "refined_batch"]

REFERENCE_PROMPT = "a photo of $"  # the refined batch's second query (official special caption)


def refined_batch(
    reference_captions: Sequence[str],
    modifications: Sequence[str],
    target_captions: Sequence[str],
    prompt: str = "a photo of $ that {}",
) -> tuple[list[str], list[str], list[int]]:
    """Queries, frozen-side texts and, per query, the triplet whose token it carries.

    Rows 0..B-1 are the composed queries prompt(m_i) against t_i; rows B..2B-1 are
    "a photo of $" against r_i, with the same token as row i (official refined batch sampling).
    """
    b = len(reference_captions)
    if not (len(modifications) == len(target_captions) == b):
        raise ValueError(
            f"refined_batch: {b} reference captions, {len(modifications)} modifications, "
            f"{len(target_captions)} target captions; they must be equal."
        )
    queries = [prompt.format(m) for m in modifications] + [REFERENCE_PROMPT] * b
    frozen = list(target_captions) + list(reference_captions)
    token_rows = list(range(b)) * 2
    return queries, frozen, token_rows


def load_phi_checkpoint(phi: nn.Module, path: str | Path) -> None:
    """Load and freeze phi from an official checkpoint ({"Phi": state_dict}, as SEARLE, LinCIR
    and RTD save; Pic2Word's {"state_dict_img2text"}), a zsbench weights file or Lightning
    checkpoint of the base's run ("phi." keys), or a bare state dict; "module." stripped."""
    from zsbench.checkpoints import load_official

    load_official(phi, path, ("Phi", "state_dict_img2text"), "phi")


class TextTower(nn.Module):
    """A trainable copy of CLIP's text encoder and projection (what zsbench.clip encodes with)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.text_model = copy.deepcopy(clip.text_model)
        self.text_projection = copy.deepcopy(clip.text_projection)
        self.requires_grad_(True)


class RtdMethod(PseudoWordMethod):
    """RTD on top of a registered phi method (`base_method`): trains (or loads) the base's phi,
    then tunes a copy of the text encoder on text triplets; queries use the tuned copy."""

    base_method: ClassVar[str]
    train_on = "text_triplets"

    def __init__(
        self,
        clip: str = DEFAULT_CIR_CLIP,
        prompt: str = CIR_PROMPT,
        phi_checkpoint: str | None = None,
        base_args: dict | None = None,
        base_epochs: int | None = 1,
        noise_scale: float = 0.5,
        temperature: float = 0.07,
        lr: float = 1e-5,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        base_cls = METHODS.get(self.base_method)
        args = dict(base_args or {})
        params = inspect.signature(base_cls.__init__).parameters
        args["clip"] = clip
        if "prompt" in params:
            args["prompt"] = prompt
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise ZsbenchError(
                f"{self.base_method}+rtd: base_args {unknown} are not arguments of "
                f"{self.base_method} ({', '.join(p for p in params if p != 'self')})."
            )
        self.base = base_cls(**args)
        self.clip = self.base.clip  # shared, frozen: image features and the frozen text side
        self.tokenizer = self.base.tokenizer
        self.backbone_info = self.base.backbone_info
        self.image_size = self.base.image_size
        self.query_text = TextTower(self.clip)
        self.phi_ready = bool(self.base.loaded_checkpoint)  # base_args: {checkpoint: PATH}
        if phi_checkpoint:
            load_phi_checkpoint(self.base.phi, phi_checkpoint)
            self.phi_ready = True
        name = f"{self.base_method}+rtd"
        if base_epochs is None and not self.phi_ready:
            # the paper's stage 1 is a complete run of the base (LinCIR: 20,000 steps, SEARLE:
            # 100 epochs, Pic2Word: 30): a few epochs here would not be the paper's phi
            raise ZsbenchError(
                f"{name}: model.base_epochs=null (preset paper) starts from a trained phi, as "
                f"the paper does: give --set model.phi_checkpoint=PATH (the authors' released "
                f"{self.base_method} checkpoint, or the weights of a zsbench {self.base_method} "
                f"run with --set preset=paper), or --set model.base_epochs=N to train the base "
                "here for N epochs (not the paper's recipe)."
            )
        if base_epochs is not None and base_epochs < 1:
            raise ZsbenchError(
                f"{name}: model.base_epochs must be >= 1 or null, got {base_epochs}."
            )

    # ---------------------------------------------------------------- the base's phi
    @property
    def phi(self) -> nn.Module:
        return self.base.phi

    def pseudo_tokens(self, features: Tensor) -> Tensor:
        """phi of CLIP embeddings as the base applies it (Pic2Word: phi on raw features)."""
        if isinstance(self.base, PseudoWordMethod):
            return self.base.pseudo_tokens(features)
        return self.base.phi(features)

    def query_text_model(self) -> nn.Module:
        return self.query_text

    def frozen_modules(self) -> list[nn.Module]:
        """The base (frozen CLIP and, in stage 2, phi) stays in eval mode: no phi dropout."""
        base = getattr(self, "base", None)
        return [*super().frozen_modules(), *([base] if base is not None else [])]

    def prepare_from_datamodule(self, dm) -> None:
        """Stage 1: train the base's phi on the base's own training data (unless loaded)."""
        if self.phi_ready:
            return
        kinds = {"images": "image", "captions": "caption", "text_triplets": "triplet"}
        loader = getattr(dm, f"{kinds[self.base.train_on]}_train_dataloader")()
        self.train_base(loader)

    def train_base(self, loader) -> None:
        """Fit the base on its own batches for `base_epochs` epochs with a plain Lightning
        Trainer (its own optimizer, schedule and logging), then freeze it."""
        import lightning as L

        L.Trainer(
            max_epochs=self.hparams.base_epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(self.base, train_dataloaders=loader)
        self.base.eval()
        self.base.phi.requires_grad_(False)
        self.phi_ready = True

    def on_fit_start(self) -> None:
        if self.phi_ready:
            return
        dm = getattr(self.trainer, "datamodule", None) or getattr(self, "datamodule", None)
        if dm is None:
            raise ZsbenchError(
                f"{getattr(self, 'registry_name', type(self).__name__)} needs a trained phi: give "
                f"--set model.phi_checkpoint=PATH (phi of a '{self.base_method}' run, or the "
                "official checkpoint), or run it through zsbench bench, which trains the base "
                "first."
            )
        self.prepare_from_datamodule(dm)

    # ---------------------------------------------------------------- stage 2: RTD
    def rtd_loss(self, reference: list[str], modification: list[str], target: list[str]) -> Tensor:
        """Frozen-target text contrastive loss on the refined batch (see the module doc)."""
        reference = [clean_caption(c) for c in reference]
        target = [clean_caption(c) for c in target]
        modification = [m.replace("$", "") for m in modification]
        queries, frozen_texts, rows = refined_batch(
            reference, modification, target, self.hparams.prompt
        )
        b = len(reference)
        with torch.no_grad():
            anchors = encode_prompts(self.clip, self.tokenizer, frozen_texts).float()
            tokens = self.pseudo_tokens(noisy_features(anchors[b:], self.hparams.noise_scale))
        composed = encode_with_pseudo_tokens(
            self.query_text, self.tokenizer, queries, tokens[torch.tensor(rows)]
        )
        return nt_xent_loss(anchors, composed.float(), self.hparams.temperature)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.rtd_loss(
            list(batch["reference_caption"]),
            list(batch["modification"]),
            list(batch["target_caption"]),
        )
        self.log("train/loss", loss, batch_size=len(batch["modification"]))
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.query_text.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
        )


def _rtd_metadata(
    base: str, base_title: str, base_code: str, cpu_stage1: str, stage1: str = ""
) -> MethodMetadata:
    """An RTD variant's metadata: `cpu_stage1` says what the CPU defaults train in stage 1,
    `stage1` (if any) ends the stage-1 deviation with how phi is wired in where the official
    code has no such path."""
    stage1 = f" {stage1}" if stage1 else ""
    return MethodMetadata(
        title=f"{base_title} + RTD",
        task="cir",
        inputs="images",
        trains=True,
        paper=(
            "Byun, Jang, Kim, Kim, Moon, Lim, Kim: RTD: An Efficient Post-hoc Framework for "
            "Reducing Task Discrepancy of Text Encoders for Composed Image Retrieval, ICCV 2025"
        ),
        year=2025,
        code="jaeseokbyun/RTD",
        backbone=(
            f"CLIP ViT-L/14 (OpenAI weights): image tower and {base_title}'s phi frozen, a copy "
            "of the text encoder trained"
        ),
        side_information=f"text triplets (reference caption, modification, target caption); "
        f"phi from {base} ({base_code})",
        deviations=(
            f"**Stage 1** ({base_title}'s phi) runs inside the same `bench` run, with the "
            "base's own training data and loop (a plain Lightning Trainer) for "
            "`model.base_epochs` epochs, unless `model.phi_checkpoint=PATH` gives a trained phi "
            "(official: a separate base run; under `preset=paper` `model.base_epochs` is null, "
            'so a trained phi must be given, see "What it is").' + stage1,
            "**Triplets**: the dataset's (synthetic-cir: `text_triplets.json`; real data: "
            "`dataset.train_triplets=FILE`), not the official `LLM_triplets.json` (CompoDiff's "
            "reference, conditioning and target captions), which is not shipped; nothing is "
            "downloaded.",
            "**Text cleaning**: the modification has any `$` removed (it would collide with the "
            "placeholder); reference and target captions are cleaned as LinCIR's loader does "
            "(`clean_caption`).",
            "**Model selection**: the last step is evaluated; the official code keeps the step "
            "with the best CIRR val R@1, checked every 100 steps (`text_encoder_best.pt`), "
            "which is model selection on a test benchmark.",
            "**CPU defaults** on synthetic-cir: tiny CLIP (`model.clip=tiny`) at 64 px, lr 1e-4, "
            "5 epochs, batch 64, fp32; " + cpu_stage1 + " `--set preset=paper` restores lr "
            "1e-5, 512 triplets a step as 4 accumulated batches of 128 "
            "(`trainer.batch_size=128 trainer.accumulate_grad_batches=4`: the official 4 "
            "processes of 128, each its own contrastive batch, on one device), 2000 steps "
            "(`trainer.max_steps=2000`, `trainer.max_epochs=null`), fp16 "
            "(`trainer.precision=16-mixed`), ViT-L/14 at 224 px.",
        ),
    )


class LincirRtd(RtdMethod):
    """RTD text-encoder tuning on top of LinCIR's phi (the official RTD code's setting)."""

    base_method = "lincir"
    metadata = _rtd_metadata(
        "lincir",
        "LinCIR",
        "navervision/lincir",
        "stage 1: 10 LinCIR epochs at lr 1e-3 (LinCIR's CPU lr).",
    )


class SearleRtd(RtdMethod):
    """RTD text-encoder tuning on top of SEARLE's phi."""

    base_method = "searle"
    metadata = _rtd_metadata(
        "searle",
        "SEARLE",
        "miccunifi/SEARLE",
        "stage 1: 3 SEARLE epochs with SEARLE's CPU settings (`model.base_args`: lr 1e-3, 20 "
        "OTI steps, top-3 concepts for OTI and for phi's GPT loss).",
        "Stage 2 feeds SEARLE's phi a text embedding, as RTD's paper does for every base "
        "(CLIP's shared space); the official code only ships the LinCIR path.",
    )


class Pic2wordRtd(RtdMethod):
    """RTD text-encoder tuning on top of Pic2Word's phi."""

    base_method = "pic2word"
    metadata = _rtd_metadata(
        "pic2word",
        "Pic2Word",
        "google-research/composed_image_retrieval",
        "stage 1: 3 Pic2Word epochs with Pic2Word's CPU settings (`model.base_args`: lr "
        "1e-3, 20 warm-up steps, as pic2word.yaml).",
        "Stage 2 feeds Pic2Word's phi a text embedding, as RTD's paper does for every base "
        "(CLIP's shared space); the official code only ships the LinCIR path. Pic2Word's phi "
        "is applied to the raw (unnormalised) embedding, as in its own code.",
    )
