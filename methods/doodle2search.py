"""Doodle2Search (D2S): triplet + gradient-reversal domain loss + semantic reconstruction.

Paper: S. Dey, P. Riba, A. Dutta, J. Lladós, Y.-Z. Song, "Doodle to Search: Practical Zero-Shot
Sketch-based Image Retrieval", CVPR 2019 (arXiv 1904.03451). Official code:
github.com/sounakdey/doodle2search (src/models/encoder.py, src/loss/loss.py,
src/loss/layers.py, src/options.py, src/train.py, src/data/sketchy_extended.py).

Two encoders with separate weights (official `sk_net` and `im_net`, two `EncoderCNN`s) embed
sketches and photos. An encoder is: backbone conv feature map -> spatial attention (1x1 conv
C -> 380 -> 1, softmax over the H*W positions, x + x * mask) -> pooling -> embedding MLP
(the official VGG-16 classifier fc6/fc7 with its last layer replaced by a 256-d linear layer).
Training batches are triplets (sketch anchor, photo of its class, photo of another class); with
e the embeddings and w the class embedding of the sketch's class:

  L = w_triplet * L_triplet + w_domain * L_domain + w_semantic * L_semantic

- L_triplet: max(0, ||e_sk - e_pos|| - ||e_sk - e_neg|| + margin), margin 1 (Euclidean,
  unnormalised embeddings; `nn.TripletMarginLoss(margin=1.0, p=2)` in the code);
- L_domain: a domain classifier (256 -> 64 -> 64 -> 1, ReLU, dropout after the first layer,
  sigmoid + binary cross-entropy; sketch 0, photo 1) on e_sk, e_pos, e_neg, each through a
  gradient reversal layer (GRL) with weight lambda_d; the mean of the three BCEs. lambda_d is
  0 up to step 5, rises linearly to 1 at step 25 and stays 1: the code feeds it the batch index
  within the epoch (`criterion(..., i)` in train.py), so the ramp restarts every epoch;
  `domain_schedule="epoch"` uses the epoch instead, which is what the variable name says;
- L_semantic: a decoder (256 -> 300 -> ReLU -> dropout -> dim(w)) reconstructs w from e_sk, from
  e_pos and, through a GRL with lambda 0.5 (`--grl_lambda`), from e_neg; the loss of each is the
  cosine distance (1 - cos) / 2, and L_semantic is the batch mean of their sum.
Everything (both encoders, decoder, domain classifier) is trained by one SGD optimiser (Nesterov,
momentum 0.9, weight decay 5e-4, lr 1e-4), batch 20, up to 1000 epochs with early stopping
(patience 20) on validation mAP, the best epoch restored. At test time sketches go through the
sketch encoder, photos through the photo encoder, ranked by Euclidean distance.

Deviations from the paper: `Doodle2Search.metadata.deviations` (rendered on
docs/methods/doodle2search.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.backbones import create_backbone
from zsbench.errors import ZsbenchError
from zsbench.methods.base import ImageMethod, MethodMetadata, stack_class_embeddings

SKETCH, PHOTO = 0, 1

# ---------------------------------------------------------------------------------------------
# Gradient reversal and the losses (losses are computed in float32 whatever the autocast dtype)
# ---------------------------------------------------------------------------------------------


class GradReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -lambd."""

    @staticmethod
    def forward(ctx, x: Tensor, lambd: float) -> Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return grad_output.neg() * ctx.lambd, None


def grad_reverse(x: Tensor, lambd: float) -> Tensor:
    return GradReverse.apply(x, lambd)


def domain_lambda(step: int, start: int = 5, end: int = 25) -> float:
    """Official GRL weight of the domain loss: 0 before `start`, linear to 1 at `end`, then 1."""
    if step > end:
        return 1.0
    if step < start:
        return 0.0
    return (step - start) / max(end - start, 1)


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """mean_i max(0, ||a_i - p_i||_2 - ||a_i - n_i||_2 + margin) (as nn.TripletMarginLoss, p=2)."""
    return F.triplet_margin_loss(
        anchor.float(), positive.float(), negative.float(), margin=margin, p=2
    )


def cosine_distance(x: Tensor, target: Tensor) -> Tensor:
    """Per-row (1 - cos(x, target)) / 2, in [0, 1] (the official `cosine_loss`)."""
    return (1.0 - F.cosine_similarity(x.float(), target.float(), dim=-1, eps=1e-8)) / 2.0


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class SpatialAttention(nn.Module):
    """Official `AttentionModel`: 1x1 conv C -> hidden -> 1 (no nonlinearity between them), a
    softmax over the H*W positions (the mask sums to 1 per image), output x + x * mask."""

    def __init__(self, channels: int, hidden: int = 380) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = x.shape
        mask = torch.softmax(self.net(x).reshape(b, -1).float(), dim=1)
        mask = mask.reshape(b, 1, h, w).to(x.dtype)
        return x + x * mask, mask


def embedding_mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """The role of VGG-16's classifier in the official encoder: fc-ReLU-dropout twice, then the
    new linear embedding layer. `hidden_dim=0` gives a single linear layer."""
    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_dim),
    )


class Encoder(nn.Module):
    """Backbone feature map -> attention -> average pooling -> embedding MLP (-> unit length
    when `normalize`)."""

    def __init__(
        self,
        backbone: str,
        weights: str,
        trainable_stages: int | None,
        embedding_dim: int,
        hidden_dim: int,
        dropout: float,
        attention: bool,
        attention_hidden: int,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone, self.info = create_backbone(backbone, weights, trainable_stages)
        with torch.no_grad():  # channels of forward_features (timm's num_features may differ)
            channels = self.backbone.forward_features(torch.zeros(1, 3, 64, 64)).shape[1]
        self.attention = SpatialAttention(channels, attention_hidden) if attention else None
        self.head = embedding_mlp(channels, hidden_dim, embedding_dim, dropout)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(embedding [B, E], attention mask [B, 1, H, W] or None)."""
        x = self.backbone.forward_features(images)
        mask = None
        if self.attention is not None:
            x, mask = self.attention(x)
        e = self.head(x.mean(dim=(2, 3)))
        return (F.normalize(e.float(), dim=-1).to(e.dtype) if self.normalize else e), mask


def semantic_decoder(embedding_dim: int, semantic_dim: int, hidden: int, dropout: float):
    """Official `SemanticLoss.map`: Linear(256, 300) - ReLU - Dropout - Linear(300, 300)."""
    return nn.Sequential(
        nn.Linear(embedding_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, semantic_dim),
    )


def domain_classifier(embedding_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """Official `DomainLoss.map`: 256 -> 64 -> ReLU -> Dropout -> 64 -> ReLU -> 1 (a logit)."""
    return nn.Sequential(
        nn.Linear(embedding_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, 1),
    )


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------


class Doodle2Search(ImageMethod):
    """Separate sketch/photo encoders with attention; triplet + GRL domain + semantic losses."""

    metadata = MethodMetadata(
        title="Doodle2Search",
        task="sbir",
        inputs="images",
        trains=True,
        paper=(
            "Dey, Riba, Dutta, Lladós, Song: Doodle to Search: Practical Zero-Shot Sketch-based "
            "Image Retrieval, CVPR 2019"
        ),
        year=2019,
        code="sounakdey/doodle2search",
        backbone="efficientnet_lite0 (ImageNet-1k), one per domain (separate weights)",
        side_information="minilm class-name embedding (paper/code: word2vec)",
        deviations=(
            "**Backbone**: EfficientNet-Lite0 (ImageNet, the embedded weights) instead of "
            "VGG-16-BN, whose weights are not available offline; any timm model works "
            "(`model.backbone=vgg16_bn` with a local weights file). The attention, when on, "
            "acts on the backbone's last feature map (1280 channels for EfficientNet-Lite0, "
            "not 512).",
            "**Encoder head**: the attended feature map is average-pooled and fed to a new, "
            "randomly initialised fc-ReLU-dropout x2 + linear MLP, instead of flattening the "
            "7x7x512 map into VGG's ImageNet-pretrained fc6/fc7 (which exist only for VGG), so "
            "the paper preset's 4096-wide layers start from random weights. Average pooling of "
            "`x + x*mask` keeps the attention's effect (each position weighted by "
            "(1 + mask) / HW).",
            "**Semantics**: minilm (384-d sentence embedding of the class name) replaces the "
            "300-d GoogleNews word2vec of the released code (not available offline); any "
            "zsbench source works "
            "(`model.semantics=word2vec:/path/GoogleNews-vectors-negative300.bin` gives the "
            "official input). One source is used raw, as the official word vectors; several "
            "are L2-normalised and concatenated. The decoder's output size follows the "
            "embedding (384 instead of 300).",
            "**Negatives**: uniform over the other seen classes (zsbench triplets); the "
            "official loader draws the negative class with probability proportional to "
            "exp(-||w_a - w_n||^2 / 0.1) of the word vectors (semantically close, harder "
            "negatives).",
            "**Validation / early stopping**: mAP of held-out *items* of every seen class "
            "(sketches vs photos, 10% by `dataset.val_fraction`), not of held-out seen "
            "*classes* (the official 10% validation classes), so early stopping watches "
            "seen-class retrieval rather than retrieval of classes the model did not train "
            "on.",
            "**CPU defaults** (see the presets table): only the last 2 backbone stages train "
            "(`trainable_stages: 2`; paper: everything), the new layers get a 10x lr "
            "(`head_lr_mult: 10`) and the base lr is 1e-3 (paper: 1e-4 everywhere; with only a "
            "few epochs lr 1e-4 barely moves the randomly initialised head), one linear "
            "embedding layer (`hidden_dim: 0`; paper: VGG's pretrained fc6/fc7, 4096, see "
            '"Why these CPU defaults"), unit-length embeddings (deviation 9), 3 epochs '
            "(paper: up to 1000 with early stopping), 96 px images on synthetic and 128 px on "
            "sketchy21-mini / sketchy-mini (paper: 224), training augmentation (official: "
            "none) and the spatial attention on (`attention: true`, the paper's module; the "
            "released code's default, and the paper preset's, is off). `--set preset=paper` "
            "restores the official recipe.",
            "**Input normalisation**: images are normalised with the backbone's mean/std, as "
            "its pretrained weights expect (the official code feeds [0, 1] pixels, "
            "`ToTensor` only, to an ImageNet VGG).",
            "**Frozen stages keep their BatchNorm statistics**: with partial fine-tuning (the "
            "CPU default) the BatchNorms of the frozen backbone stages stay in eval mode with "
            "their ImageNet statistics (as in RPKD and SketchGCN here). The official code "
            "fine-tunes everything, so the question does not arise there.",
            "**CPU default `normalize: true`**: embeddings are L2-normalised before the losses "
            "and retrieval (official and `preset=paper`: unnormalised). With a new, randomly "
            "initialised head the photo norms dominate Euclidean ranking (every sketch gets "
            "the same photo order) and ~100 steps of the unnormalised triplet loss only grow "
            "the sketch norms; VGG's pretrained fc6/fc7 avoid that in the official code.",
            "**Encoder initialisation**: both encoders start from the same weights "
            "(`tie_init: true`, new layers included) and are then trained separately, so an "
            "untrained model starts aligned. Official: both VGGs load the same ImageNet "
            "weights (fc6/fc7 included) but each branch draws its own random 4096->256 layer "
            "(`model.tie_init=false` draws the new layers separately).",
            "**Domain classifier**: sigmoid + BCE computed as BCE-with-logits (same value, "
            "stable under mixed precision).",
            "**Training sketch rendering**: zsbench reads the dataset's single rendering of "
            "each Sketchy sketch (tx_000000000000); the official loader draws one of Sketchy's "
            "six tx_ renderings at every access, which acts as extra sketch augmentation.",
            "**Photo batches through BatchNorm**: the positive and negative photos go through "
            "the photo encoder in one forward pass of 40 (official: two passes of 20), so "
            "training-mode BatchNorm statistics are over 40 photos; the losses are otherwise "
            "the same.",
            "**Evaluated weights**: zsbench always restores the best-validation epoch at the "
            "end of training, as the official code does when it saves checkpoints (`--save`, "
            "`--log` or `--exp_idf`); the bare README command tests the weights of the epoch "
            "that stopped.",
        ),
    )
    similarity = "euclidean"  # the official test ranks by Euclidean distance
    train_on = "triplets"

    def __init__(
        self,
        num_classes: int,
        class_embeddings: dict[str, np.ndarray],
        semantics: str = "minilm",
        backbone: str = "efficientnet_lite0",
        weights: str = "default",
        pairing: str = "class",
        trainable_stages: int | None = None,
        embedding_dim: int = 256,
        hidden_dim: int = 4096,
        dropout: float = 0.5,
        attention: bool = True,
        attention_hidden: int = 380,
        semantic_hidden: int = 300,
        domain_hidden: int = 64,
        margin: float = 1.0,
        w_triplet: float = 1.0,
        w_domain: float = 1.0,
        w_semantic: float = 1.0,
        grl_lambda: float = 0.5,
        domain_ramp: tuple[int, int] | list[int] = (5, 25),
        domain_schedule: str = "batch",
        lr: float = 1e-4,
        head_lr_mult: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        early_stop_patience: int | None = 20,
        tie_init: bool = True,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["class_embeddings"])
        if domain_schedule not in ("batch", "epoch"):
            raise ZsbenchError(
                f"doodle2search: domain_schedule must be 'batch' (official code) or 'epoch', "
                f"got {domain_schedule!r}."
            )
        # one source as the official word vectors (raw); several L2-normalised, concatenated
        emb = stack_class_embeddings(class_embeddings, num_classes, normalize_single=False)
        self.register_buffer("class_emb", emb)

        enc = dict(
            backbone=backbone,
            weights=weights,
            trainable_stages=trainable_stages,
            embedding_dim=embedding_dim,
            hidden_dim=hidden_dim,
            dropout=dropout,
            attention=attention,
            attention_hidden=attention_hidden,
            normalize=normalize,
        )
        self.sketch_net = Encoder(**enc)
        self.photo_net = Encoder(**enc)
        if tie_init:  # same starting point, then trained apart (separate weights)
            self.sketch_net.load_state_dict(self.photo_net.state_dict())
        self.backbone_info = self.photo_net.info
        self.decoder = semantic_decoder(
            embedding_dim, self.class_emb.shape[1], semantic_hidden, dropout
        )
        self.domain_clf = domain_classifier(embedding_dim, domain_hidden, dropout)
        self._best_map = -1.0
        self._best_state: dict[str, Tensor] | None = None
        self._bad_epochs = 0

    def fine_tuned_backbones(self) -> list[nn.Module]:
        return [self.sketch_net.backbone, self.photo_net.backbone]

    # -- embeddings ----------------------------------------------------------------------
    def encode_query(self, batch: dict) -> Tensor:
        return self.sketch_net(batch["image"])[0].float()

    def encode_gallery(self, batch: dict) -> Tensor:
        return self.photo_net(batch["image"])[0].float()

    # -- losses --------------------------------------------------------------------------
    def domain_loss(self, e_sk: Tensor, e_pos: Tensor, e_neg: Tensor, lambd: float) -> Tensor:
        """Mean BCE of the domain classifier on the three embeddings, each behind a GRL."""
        total = e_sk.new_zeros((), dtype=torch.float32)
        for e, domain in ((e_sk, 0.0), (e_pos, 1.0), (e_neg, 1.0)):
            logit = self.domain_clf(grad_reverse(e, lambd)).float().squeeze(-1)
            target = torch.full_like(logit, domain)
            total = total + F.binary_cross_entropy_with_logits(logit, target)
        return total / 3.0

    def semantic_loss(self, e_sk: Tensor, e_pos: Tensor, e_neg: Tensor, w: Tensor) -> Tensor:
        """Batch mean of the decoder's cosine distances to w for sketch, positive and the
        gradient-reversed negative."""
        loss = cosine_distance(self.decoder(e_sk), w) + cosine_distance(self.decoder(e_pos), w)
        loss = loss + cosine_distance(self.decoder(grad_reverse(e_neg, self.hparams.grl_lambda)), w)
        return loss.mean()

    def losses(
        self, sketch: Tensor, photo: Tensor, negative: Tensor, labels: Tensor, step: int
    ) -> dict[str, Tensor]:
        """Every term on one triplet batch, and the weighted sum under 'loss'."""
        hp = self.hparams
        e_sk, _ = self.sketch_net(sketch)
        e_im, _ = self.photo_net(torch.cat([photo, negative]))
        e_pos, e_neg = e_im.split(len(photo))
        lambd = domain_lambda(step, *hp.domain_ramp)
        out = {
            "triplet": triplet_loss(e_sk, e_pos, e_neg, hp.margin),
            "domain": self.domain_loss(e_sk, e_pos, e_neg, lambd),
            "semantic": self.semantic_loss(e_sk, e_pos, e_neg, self.class_emb[labels]),
        }
        out["loss"] = (
            hp.w_triplet * out["triplet"]
            + hp.w_domain * out["domain"]
            + hp.w_semantic * out["semantic"]
        )
        out["domain_lambda"] = torch.tensor(lambd)
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        step = batch_idx if self.hparams.domain_schedule == "batch" else self.current_epoch
        out = self.losses(batch["sketch"], batch["photo"], batch["negative"], batch["label"], step)
        n = len(batch["label"])
        for key, value in out.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=n)
        return out["loss"]

    # -- validation: seen-class retrieval mAP, early stopping, best epoch restored ----------
    def on_validation_epoch_end(self) -> None:
        m_ap = self.log_validation_map()  # logs val/mAP (Euclidean, as the official test)
        if m_ap is None or self.trainer.sanity_checking:
            return
        if m_ap > self._best_map:  # official: save on improvement, stop after `patience` more
            self._best_map, self._bad_epochs = m_ap, 0
            self._best_state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        elif self.hparams.early_stop_patience is not None:
            if self._bad_epochs >= self.hparams.early_stop_patience:
                self.trainer.should_stop = True
            self._bad_epochs += 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The early-stopping state travels with a checkpoint, so a resumed run restores the
        same best epoch and stops when the uninterrupted one would (zsbench.checkpoints)."""
        checkpoint["doodle2search"] = {
            "best_map": self._best_map,
            "bad_epochs": self._bad_epochs,
            "best_state": self._best_state,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("doodle2search")
        if state is not None:
            self._best_map, self._bad_epochs = state["best_map"], state["bad_epochs"]
            self._best_state = state["best_state"]

    def on_train_end(self) -> None:
        if self._best_state is not None:  # the official code reloads the best checkpoint
            self.load_state_dict(self._best_state)
            self._best_state = None

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.parameter_groups(head_lr=hp.lr * hp.head_lr_mult, backbone_lr=hp.lr)
        return torch.optim.SGD(
            groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=True
        )
