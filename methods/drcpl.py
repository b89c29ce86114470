"""DRCPL: Deep Residual Coupled Prompt Learning for zero-shot SBIR.

Paper: Zhuo, Shu, Yu, "Deep Residual Coupled Prompt Learning for Zero-Shot Sketch-Based Image
Retrieval", IEEE Transactions on Big Data, 2024. Official code: szq0816/DRCPL (built on MaPLe);
the defaults below are its `options.py` values, the design its `models/model.py`,
`clip/model.py` and `utils/loss.py`.

CLIP (ViT-B/16) stays frozen; only the prompt learner trains:
- text context: `n_ctx` (2) learnable token vectors initialised from the first words of
  "a photo of a" replace those words in "a photo of a {class}." for every seen class;
- deep prompts: one learnable [n_ctx, text width] prompt per layer 1..prompt_depth-1 (depth 9 of
  12), inserted at the text context positions, each layer's learned independently;
- residual design: every text prompt (first layer and each deep one) passes through its own
  residual MLP, p + LN(W2 relu(W1 p)) with dropout (bottleneck 128), before use;
- coupling: the vision prompts are functions of the text prompts, one linear map per layer and
  per domain (sketch / photo), so sketches and photos get separate vision prompts coupled
  through the shared text prompts. Vision prompts are appended after the patch tokens and
  replaced layer by layer as in MaPLe (see zsbench.clip.encode_image);
- class weights: the prompted text encoder's embeddings of the seen classes.

Loss, each weight 1 (official train.py), on triplets (sketch, photo of its class, photo of
another class): L = L_itc + L_tri + L_sdm, with
- L_itc: cross-entropy of exp(CLIP logit_scale) * cos(image, class text) over the seen classes,
  for the sketch, the positive and the negative photo (each with its own label);
- L_tri: triplet margin loss with distance 1 - cos, margin 0.3;
- L_sdm: similarity distribution matching (KL between the softmax of sketch-photo cosine
  similarities / 0.07 and the normalised label-match matrix, both directions), for
  (sketch, positive) and (sketch, negative) batches.
Test: sketches through the sketch prompts, photos through the photo prompts, L2-normalised.

Deviations from the paper: `Drcpl.metadata.deviations` (rendered on docs/methods/drcpl.md).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.backbones import IMAGENET_MEAN, IMAGENET_STD
from zsbench.clip import (
    DEFAULT_CLIP,
    TINY_CLIP_NOTE,
    encode_image,
    encode_text,
    fit_image_size,
    load_clip,
)
from zsbench.errors import ZsbenchError
from zsbench.methods.base import ImageMethod, MethodMetadata

SKETCH, PHOTO = 0, 1

# ---------------------------------------------------------------------------------------------
# Losses (pure functions, float32 whatever the autocast dtype)
# ---------------------------------------------------------------------------------------------


def itc_loss(features: Tensor, text: Tensor, labels: Tensor, scale: Tensor | float) -> Tensor:
    """Image-text contrastive loss: cross-entropy of scale * features @ text.T over the classes.
    `features` [N, D] and `text` [C, D] are L2-normalised."""
    logits = scale * features.float() @ text.float().T
    return F.cross_entropy(logits, labels)


def triplet_cosine_loss(
    anchor: Tensor, positive: Tensor, negative: Tensor, margin: float
) -> Tensor:
    """mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin) with d = 1 - cosine similarity
    (torch's TripletMarginWithDistanceLoss as the official code configures it)."""
    d_pos = 1.0 - F.cosine_similarity(anchor.float(), positive.float(), dim=-1)
    d_neg = 1.0 - F.cosine_similarity(anchor.float(), negative.float(), dim=-1)
    return F.relu(d_pos - d_neg + margin).mean()


def sdm_loss(
    sketch: Tensor,
    photo: Tensor,
    sketch_labels: Tensor,
    photo_labels: Tensor,
    scale: float,
    eps: float = 1e-8,
) -> Tensor:
    """Similarity distribution matching (official utils/loss.py): with S = scale * sketch @
    photo.T (L2-normalised rows) and the target q_ij = [y_i == y'_j] / sum_j [y_i == y'_j],
    KL(softmax(S_i) || q_i) averaged over sketches, and the same for photos over S.T; the mean
    of the two directions. `eps` keeps log q finite where q is 0, as in the official code."""
    logits = scale * sketch.float() @ photo.float().T
    match = (sketch_labels[:, None] == photo_labels[None, :]).float()

    def one_side(lg: Tensor, m: Tensor) -> Tensor:
        target = m / (m.sum(dim=1, keepdim=True) + 1e-10)
        log_p = F.log_softmax(lg, dim=1)
        return (log_p.exp() * (log_p - torch.log(target + eps))).sum(dim=1).mean()

    return (one_side(logits, match) + one_side(logits.T, match.T)) / 2


def cosine_lr_factor(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """lr(e) / lr with lr(e) = min_lr + (lr - min_lr)(1 + cos(pi e / (epochs - 1))) / 2, the
    official per-epoch schedule (lr at the first epoch, min_lr at the last)."""
    if epochs <= 1:
        return 1.0
    e = min(epoch, epochs - 1)
    return (min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * e / (epochs - 1)))) / lr


# ---------------------------------------------------------------------------------------------
# The prompt learner: text prompts, residual MLPs and the text -> vision coupling
# ---------------------------------------------------------------------------------------------


class ResMLP(nn.Module):
    """x + Dropout(LayerNorm(W2 relu(W1 x))): the residual refinement of a prompt."""

    def __init__(self, dim: int, bottleneck: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        layers = [nn.Linear(dim, bottleneck), nn.ReLU(), nn.Linear(bottleneck, dim)]
        layers += [nn.LayerNorm(dim), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


@dataclasses.dataclass
class Prompts:
    """Everything the encoders need for one forward: text token embeddings with the context in
    place [C, L, Dt], the text deep prompts, and per domain the first and deep vision prompts."""

    text_embeds: Tensor
    text_deep: list[Tensor]
    vision_first: dict[int, Tensor]  # domain -> [n_ctx, Dv]
    vision_deep: dict[int, list[Tensor]]  # domain -> depth-1 x [n_ctx, Dv]


class CoupledPromptLearner(nn.Module):
    """Text context + deep text prompts, each through its residual MLP, coupled to separate
    sketch and photo vision prompts by one linear map per layer and domain."""

    def __init__(
        self,
        ctx: Tensor,
        prefix: Tensor,
        suffix: Tensor,
        depth: int,
        vision_dim: int,
        res_mlp: bool = True,
        bottleneck: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        n_ctx, text_dim = ctx.shape
        self.ctx = nn.Parameter(ctx.clone())
        deep = [torch.empty(n_ctx, text_dim).normal_(std=0.02) for _ in range(depth - 1)]
        self.deep_text = nn.ParameterList([nn.Parameter(p) for p in deep])
        # class-prompt token embeddings around the context (start token | words, end, padding):
        # fixed buffers, recomputed from the class names, never trained
        self.register_buffer("prefix", prefix, persistent=False)
        self.register_buffer("suffix", suffix, persistent=False)
        # official: one module deep-copied for every deep layer (same initial weights)
        self.res_first = ResMLP(text_dim, bottleneck, dropout) if res_mlp else nn.Identity()
        res_deep = ResMLP(text_dim, bottleneck, dropout) if res_mlp else nn.Identity()
        self.res_deep = _clones(res_deep, depth - 1)
        self.couple_first = nn.ModuleDict(
            {str(d): nn.Linear(text_dim, vision_dim) for d in (SKETCH, PHOTO)}
        )
        self.couple_deep = nn.ModuleDict(
            {str(d): _clones(nn.Linear(text_dim, vision_dim), depth - 1) for d in (SKETCH, PHOTO)}
        )

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def forward(self) -> Prompts:
        ctx = self.res_first(self.ctx)
        text_deep = [mlp(p) for mlp, p in zip(self.res_deep, self.deep_text)]
        n_cls = self.prefix.shape[0]
        embeds = torch.cat(
            [self.prefix, ctx.to(self.prefix.dtype).expand(n_cls, -1, -1), self.suffix], dim=1
        )
        first = {d: self.couple_first[str(d)](ctx) for d in (SKETCH, PHOTO)}
        deep = {
            d: [lin(p) for lin, p in zip(self.couple_deep[str(d)], text_deep)]
            for d in (SKETCH, PHOTO)
        }
        return Prompts(embeds, text_deep, first, deep)


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------

NORMALIZATIONS = ("imagenet", "clip")


class Drcpl(ImageMethod):
    """Frozen CLIP with learned, residual, text-to-vision coupled deep prompts."""

    metadata = MethodMetadata(
        title="DRCPL",
        task="sbir",
        inputs="images",
        trains=True,
        paper=(
            "Zhuo, Shu, Yu: Deep Residual Coupled Prompt Learning for Zero-Shot Sketch-Based "
            "Image Retrieval, IEEE Transactions on Big Data 2024"
        ),
        year=2024,
        code="szq0816/DRCPL",
        backbone="CLIP ViT-B/16 (OpenAI weights), frozen; only prompts and coupling train",
        side_information="CLIP text encoder on 'a photo of a {class}.' with learned context",
        deviations=(
            "**Deep residual MLPs are trained.** The official forward does "
            "`self.compound_prompts_text[i].data = self.compound_res_mlp[i](params.data)`: "
            "through `.data`, so the deep MLPs get no gradient, and every forward call "
            "(training and test batches alike) overwrites each deep prompt with one more MLP "
            "application. zsbench applies the MLP in the forward pass "
            "(`prompt' = ResMLP(prompt)`) and trains it with the prompts, which is what "
            '"residual" prompts describe and keeps test embeddings independent of the number '
            "of batches seen.",
            "**Epoch length.** One triplet per training sketch (shuffled, a random photo of its "
            "class and one of another class) instead of 10000 triplets of 3 uniformly drawn "
            "classes, so the anchors follow the sketches' class frequencies; `preset=paper` "
            "caps an epoch at 625 batches of 16 (`trainer.limit_train_batches: 625`, the "
            "official 10000 triplets), and on a split with fewer than 10000 seen sketches an "
            "epoch is shorter than that.",
            "**No test-set model selection.** The official `train.py` keeps the epoch with the "
            "best mAP on the unseen test classes; the protocol forbids that, so the last epoch "
            "is evaluated. Validation here is seen-class text-classification accuracy on "
            "held-out items (`val/acc`).",
            "**Sketch preprocessing.** Sketches are resized like photos: the official stroke "
            "crop (white margins removed, 10 px padding), aspect-ratio-keeping resize and "
            "square padding are not implemented. No augmentation, as official.",
            "**Implementation details that do not change the function**: Hugging Face "
            "`CLIPModel` instead of OpenAI's `clip` package; class prompts padded to the "
            "longest prompt instead of 77 tokens (identical under the causal mask); vision "
            "prompt width read from the model (official: 768 hard-coded). The released code "
            "also reads `design_details['drcpl_length']` while `load_clip_to_cpu` sets "
            "`maple_length`; zsbench uses `n_ctx` for both.",
            "**Image size.** Images rendered at another size than CLIP's input are resized in "
            "the method (bilinear, antialiased).",
            '**CPU defaults** (see "Configuration"): lr 1e-3 and min lr 6e-4 (paper: 5e-6 / '
            "3e-6, the same ratio), 2 epochs of every batch (paper: 10 x 625), and on "
            "synthetic data the random tiny CLIP (`model.clip=tiny`) at 64 px (paper: "
            "`openai/clip-vit-base-patch16` at 224 px); batch 16 triplets and no augmentation "
            "as official. `--set preset=paper` restores the official recipe.",
            "**SDM negative term.** The released `utils/loss.py` divides entry (i, j) of the "
            "target by `labels.sum(dim=1)` without `keepdim`, i.e. by the match count of "
            "sketch j rather than sketch i, and uses the same matrix, untransposed, for the "
            "photo-to-sketch direction. zsbench's `sdm_loss` uses the stated target "
            "(row-normalised, transposed for photos). With the positive photos (equal labels, "
            "a symmetric matrix) both are identical; the negative term (sketch labels against "
            "the negatives' labels) differs when a sketch class occurs among the batch's "
            "negatives (checked numerically: 14.63 released vs 14.92 zsbench on one random "
            "batch).",
        ),
        notes=TINY_CLIP_NOTE,
    )
    similarity = "cosine"
    train_on = "triplets"

    def __init__(
        self,
        seen_class_names: list[str],
        clip: str = DEFAULT_CLIP,
        n_ctx: int = 2,
        prompt_depth: int = 9,
        ctx_init: str = "a photo of a",
        res_mlp: bool = True,
        res_mlp_bottleneck: int = 128,
        res_mlp_dropout: float = 0.1,
        margin: float = 0.3,
        sdm_temperature: float = 0.07,
        lambda_itc: float = 1.0,
        lambda_tri: float = 1.0,
        lambda_sdm: float = 1.0,
        lr: float = 5e-6,
        min_lr: float = 3e-6,
        weight_decay: float = 5e-4,
        normalization: str = "imagenet",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if normalization not in NORMALIZATIONS:
            raise ZsbenchError(
                f"drcpl: normalization={normalization!r}; use 'imagenet' (the official "
                f"preprocessing) or 'clip' (the CLIP processor's statistics)."
            )
        if n_ctx < 1 or prompt_depth < 1:
            raise ZsbenchError(f"drcpl: n_ctx ({n_ctx}) and prompt_depth ({prompt_depth}) >= 1.")
        if not seen_class_names:
            raise ZsbenchError("drcpl needs the seen class names (the runner provides them).")
        loaded = load_clip(clip)
        self.clip = loaded.model
        self.image_size = loaded.image_size
        layers = min(
            self.clip.config.text_config.num_hidden_layers,
            self.clip.config.vision_config.num_hidden_layers,
        )
        if prompt_depth > layers:
            raise ZsbenchError(
                f"drcpl: prompt_depth={prompt_depth} but this CLIP has {layers} layers; set "
                f"model.prompt_depth <= {layers}."
            )
        info = loaded.info
        if normalization == "imagenet":  # official data_utils/utils.py preprocess()
            info = dataclasses.replace(info, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.backbone_info = info
        ctx, prefix, suffix, eos = self._class_prompts(loaded.tokenizer, seen_class_names)
        self.register_buffer("eos_index", eos, persistent=False)
        self.prompt_learner = CoupledPromptLearner(
            ctx,
            prefix,
            suffix,
            prompt_depth,
            self.clip.config.vision_config.hidden_size,
            res_mlp,
            res_mlp_bottleneck,
            res_mlp_dropout,
        )
        self._val_prompts: Prompts | None = None
        self._val_text: Tensor | None = None

    @torch.no_grad()
    def _class_prompts(self, tokenizer, names: list[str]) -> tuple[Tensor, ...]:
        """Initial context [n_ctx, Dt], token embeddings before / after it for every class
        prompt, and each prompt's end-token position (official MultiModalPromptLearner)."""
        from zsbench.semantics import normalize_class_name

        hp = self.hparams
        embed = self.clip.text_model.embeddings.token_embedding
        init = hp.ctx_init.strip()
        init_ids = tokenizer(init)["input_ids"][1:-1] if init else []
        if init and hp.n_ctx <= len(init_ids):
            ctx = embed(torch.tensor(init_ids[: hp.n_ctx]))
            prefix_text = init
        else:  # official: random context, "X X ..." as its placeholder words
            ctx = torch.empty(hp.n_ctx, embed.embedding_dim).normal_(std=0.02)
            prefix_text = " ".join(["X"] * hp.n_ctx)
        prompts = [f"{prefix_text} {normalize_class_name(n)}." for n in names]
        max_len = int(self.clip.config.text_config.max_position_embeddings)
        ids = tokenizer(prompts, padding=True, truncation=True, max_length=max_len)["input_ids"]
        ids = torch.tensor(ids)
        eos_id = tokenizer.eos_token_id
        for prompt, row in zip(prompts, ids):
            if not bool((row == eos_id).any()) or len(row) < hp.n_ctx + 2:
                raise ZsbenchError(
                    f"drcpl: the class prompt {prompt!r} does not fit CLIP's {max_len} text "
                    "positions with its context; shorten the class name or model.ctx_init."
                )
        tokens = embed(ids)
        eos = (ids == eos_id).int().argmax(dim=1)
        return ctx, tokens[:, :1], tokens[:, 1 + hp.n_ctx :], eos

    # -- modes ----------------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        return [self.clip]  # frozen: only the prompts train

    # -- encoders -------------------------------------------------------------------------
    def text_features(self, prompts: Prompts) -> Tensor:
        """L2-normalised class weights [C, D] from the prompted text encoder."""
        z = encode_text(self.clip, prompts.text_embeds, self.eos_index, prompts.text_deep)
        return F.normalize(z.float(), dim=-1)

    def image_features(self, images: Tensor, domain: int, prompts: Prompts) -> Tensor:
        """L2-normalised image embeddings [B, D] through `domain`'s vision prompts."""
        images = fit_image_size(images, self.image_size)
        z = encode_image(
            self.clip, images, prompts.vision_first[domain], prompts.vision_deep[domain]
        )
        return F.normalize(z.float(), dim=-1)

    def encode_query(self, batch: dict) -> Tensor:
        return self.image_features(batch["image"], SKETCH, self.prompt_learner())

    def encode_gallery(self, batch: dict) -> Tensor:
        return self.image_features(batch["image"], PHOTO, self.prompt_learner())

    # -- training -------------------------------------------------------------------------
    def losses(self, batch: dict) -> dict[str, Tensor]:
        """Every loss term on one triplet batch, and their weighted sum under 'loss'."""
        hp = self.hparams
        prompts = self.prompt_learner()
        text = self.text_features(prompts)
        n = len(batch["sketch"])
        sketch = self.image_features(batch["sketch"], SKETCH, prompts)
        photos = self.image_features(torch.cat([batch["photo"], batch["negative"]]), PHOTO, prompts)
        pos, neg = photos[:n], photos[n:]
        y, y_neg = batch["label"], batch["negative_label"]
        scale = self.clip.logit_scale.exp().float()
        out = {
            "itc": itc_loss(torch.cat([sketch, pos, neg]), text, torch.cat([y, y, y_neg]), scale),
            "tri": triplet_cosine_loss(sketch, pos, neg, hp.margin),
            "sdm": sdm_loss(sketch, pos, y, y, 1.0 / hp.sdm_temperature)
            + sdm_loss(sketch, neg, y, y_neg, 1.0 / hp.sdm_temperature),
        }
        out["loss"] = hp.lambda_itc * out["itc"] + hp.lambda_tri * out["tri"]
        out["loss"] = out["loss"] + hp.lambda_sdm * out["sdm"]
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.losses(batch)
        for key, value in out.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=len(batch["label"]))
        return out["loss"]

    def on_validation_epoch_start(self) -> None:
        with torch.no_grad():
            self._val_prompts = self.prompt_learner()
            self._val_text = self.text_features(self._val_prompts)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Seen-class accuracy of the text classifier on held-out items, each domain through
        its own prompts."""
        images, labels, domains = batch["image"], batch["label"], batch["domain"]
        correct = torch.zeros((), device=images.device)
        for d in (SKETCH, PHOTO):
            keep = domains == d
            if keep.any():
                z = self.image_features(images[keep], d, self._val_prompts)
                correct += ((z @ self._val_text.T).argmax(-1) == labels[keep]).sum()
        self.log("val/acc", correct / len(labels), prog_bar=True, batch_size=len(labels))

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(
            self.prompt_learner.parameters(), lr=hp.lr, weight_decay=hp.weight_decay
        )
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: cosine_lr_factor(e, epochs, hp.lr, hp.min_lr)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
