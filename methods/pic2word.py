"""Pic2Word: mapping pictures to words for zero-shot composed image retrieval.

Paper: Saito, Sohn, Zhang, Li, Lee, Saenko, Pfister, "Pic2Word: Mapping Pictures to Words for
Zero-shot Composed Image Retrieval", CVPR 2023. Official code:
google-research/composed_image_retrieval (`model/model.py` IM2TEXT and `encode_text_img*`,
`src/trainer.py` get_loss_img2text, `src/params.py` and the README's training command).

CLIP stays frozen; only the mapping network phi trains. phi (IM2TEXT) maps CLIP's projected
image feature to one token embedding of CLIP's text encoder: `n_layers` (2) blocks of
Linear -> Dropout(0.1) -> ReLU with `hidden_dim` (512) units, then a Linear to the token width.
Training uses unlabelled images only: the text "a photo of $" with phi(image feature) as the
token of "$" is encoded by CLIP's text encoder, and a symmetric contrastive loss (image->text
and text->image cross-entropy, averaged) with CLIP's own frozen logit scale pulls each image
towards its own pseudo-word sentence and away from the batch's others (under DDP the whole
global batch's, gathered from every process as the official trainer does).
Query: phi(reference image feature) injected into "a photo of $ that {modification}" (the
prompt shared by zsbench's projection methods; the official prompt is "a photo of * , {}",
`--set preset=official-prompt`); gallery: CLIP image features; cosine similarity.

Deviations from the paper: `Pic2Word.metadata.deviations` (rendered on docs/methods/pic2word.md).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.clip import DEFAULT_CIR_CLIP, encode_with_pseudo_tokens
from zsbench.methods.base import CIR_PROMPT, CIRMethod, MethodMetadata


class Phi(nn.Module):
    """IM2TEXT: image feature [B, D] -> pseudo-token embedding [B, width]."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 512, n_layers: int = 2, dropout=0.1
    ) -> None:
        super().__init__()
        blocks, dim = [], in_dim
        for _ in range(n_layers):
            blocks.append(nn.Sequential(nn.Linear(dim, hidden_dim), nn.Dropout(dropout), nn.ReLU()))
            dim = hidden_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.layers(x))


def symmetric_contrastive_loss(image: Tensor, text: Tensor, scale: Tensor | float) -> Tensor:
    """(CE(scale * I T^T, diag) + CE(scale * T I^T, diag)) / 2 over L2-normalised rows: the
    i-th image's positive is the i-th text and vice versa (official get_loss_img2text)."""
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    logits = scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def with_global_negatives(image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
    """Under DDP, every process's image and text features, this process's own rows keeping
    their gradient (the others are constants): the contrastive loss then ranks each image
    against the whole global batch, as the official trainer does with `args.aggregate` (on
    by default, `--skip-aggregate` turns it off). DDP averages the processes' gradients, so
    the step is the full-batch loss's gradient divided by the world size, as officially.
    Every process must hold a batch of the same size (DistributedSampler pads its shards to
    equal lengths). One process: the inputs, unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return image, text
    world, rank = dist.get_world_size(), dist.get_rank()
    out = []
    for x in (image, text):
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.detach().contiguous())
        parts[rank] = x
        out.append(torch.cat(parts))
    return out[0], out[1]


class Pic2Word(CIRMethod):
    """Pic2Word: an image -> pseudo-word MLP trained contrastively on unlabelled images."""

    metadata = MethodMetadata(
        title="Pic2Word",
        task="cir",
        inputs="images",
        trains=True,
        paper=(
            "Saito et al.: Pic2Word: Mapping Pictures to Words for Zero-shot Composed Image "
            "Retrieval, CVPR 2023"
        ),
        year=2023,
        code="google-research/composed_image_retrieval",
        backbone="CLIP ViT-L/14 (OpenAI weights), frozen",
        side_information=None,
        deviations=(
            "**Query prompt**: `a photo of $ that {caption}` with the placeholder `$` instead "
            "of the official `a photo of * , {caption}` with `*`: one prompt for all projection "
            "methods (SEARLE / LinCIR use it), so rows compare the mapping, not the prompt. "
            "`--set preset=official-prompt` restores the official prompt, placeholder and "
            "training prompt (`a photo of *`).",
            "**FashionIQ captions**: both orders, stripped of `.?, `, averaged "
            "(`combine_caption_orders`): the benchmark's FashionIQ protocol (SEARLE / LinCIR's "
            "evaluation), the same for every method; the official code uses one order, the "
            "second caption first, unstripped: `'a photo of * , {} and {}'.format(cap2, cap1)` "
            "(src/data.py). `--set preset=official-prompt` "
            "(`model.fashioniq_captions=pic2word-official`) restores the official text.",
            "**Training crop**: resize + centre crop by default (CPU default); the official "
            "`RandomResizedCrop(224, scale=(0.9, 1.0))` (model/clip.py) is "
            "`model.train_crop_scale=[0.9, 1.0]`, set by `--set preset=paper`. Evaluation: "
            "CLIP preprocessing (bicubic resize, centre crop); the official FashionIQ / CIRR "
            "evaluation can pad to square (`--target-pad`, off by default).",
            "**Training data**: the dataset's training images (synthetic-cir: its "
            "training-partition images; real data: `--set dataset.train_images=DIR`), not the "
            "official CC3M images (about 3M): nothing is downloaded, the user points at CC3M "
            "or ImageNet.",
            "**Batch size under DDP**: `trainer.batch_size` is the global batch, split over the "
            "processes (zsbench's convention for every method), where the official "
            "`--batch-size 128` is per GPU; on N GPUs give `trainer.batch_size=128N` for the "
            "official global batch (the negatives are then the same 128 N).",
            "**CPU defaults** on synthetic-cir: tiny random CLIP (`model.clip=tiny`) at 64 px, "
            "lr 1e-3, 20 warm-up steps, batch 32, 5 epochs, fp32. `--set preset=paper` restores "
            "ViT-L/14 at 224 px, lr 1e-4, 10,000 warm-up steps, batch 128, 30 epochs, fp16 "
            "mixed precision (the official amp).",
        ),
    )
    train_on = "images"

    def __init__(
        self,
        clip: str = DEFAULT_CIR_CLIP,
        hidden_dim: int = 512,
        n_layers: int = 2,
        dropout: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 0.1,
        beta2: float = 0.98,
        eps: float = 1e-6,
        warmup_steps: int = 10000,
        prompt: str = CIR_PROMPT,
        train_prompt: str = "a photo of $",
        placeholder: str = "$",
        checkpoint: str | None = None,
        fashioniq_captions: str = "both-orders",
        train_crop_scale: list[float] | None = None,
        gather_negatives: bool = True,
    ) -> None:
        """`gather_negatives`: under DDP the loss contrasts against every process's features
        (the official default, `with_global_negatives`); false keeps each process's own batch
        (the official `--skip-aggregate`). No effect on one device."""
        super().__init__()
        self.save_hyperparameters()
        self.setup_clip(clip)
        self.phi = Phi(
            self.backbone_info.feature_dim,
            self.clip.text_model.config.hidden_size,
            hidden_dim,
            n_layers,
            dropout,
        )
        # the released IM2TEXT (official main.py saves {"state_dict_img2text": ...} of the
        # DDP-wrapped module, so keys start with "module."; same layer names as Phi here)
        self.load_released_phi(checkpoint, ("state_dict_img2text",))

    def pseudo_tokens(self, images: Tensor) -> Tensor:
        """phi of the (unnormalised, as in the official code) CLIP image features."""
        with torch.no_grad():
            feats = self.image_features(images).float()
        return self.phi(feats)

    def text_with_tokens(self, prompts: list[str], tokens: Tensor) -> Tensor:
        return encode_with_pseudo_tokens(
            self.clip, self.tokenizer, prompts, tokens, self.hparams.placeholder
        )

    def encode_query(self, batch: dict) -> Tensor:
        tokens = self.pseudo_tokens(batch["reference"])
        z = self.text_with_tokens(self.compose(list(batch["text"])), tokens)
        return F.normalize(z.float(), dim=-1)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images = batch["image"]
        with torch.no_grad():
            feats = self.image_features(images).float()
        text = self.text_with_tokens([self.hparams.train_prompt] * len(images), self.phi(feats))
        if self.hparams.gather_negatives:
            feats, text = with_global_negatives(feats, text)
        loss = symmetric_contrastive_loss(feats, text, self.clip.logit_scale.exp())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def configure_optimizers(self):
        """AdamW over phi (no decay on biases, as open_clip), linear warm-up then cosine decay
        per step to 0 (open_clip's cosine_lr, used by the official main.py)."""
        hp = self.hparams
        decay = [p for p in self.phi.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.phi.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [
                {"params": no_decay, "weight_decay": 0.0},
                {"params": decay, "weight_decay": hp.weight_decay},
            ],
            lr=hp.lr,
            betas=(0.9, hp.beta2),
            eps=hp.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
