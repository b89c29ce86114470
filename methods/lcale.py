"""LCALE: Learning Cross-Aligned Latent Embeddings for zero-shot cross-modal retrieval.

Paper: Kaiyi Lin, Xing Xu, Lianli Gao, Zheng Wang, Heng Tao Shen, "Learning Cross-Aligned Latent
Embeddings for Zero-Shot Cross-Modal Retrieval", AAAI 2020 (doi 10.1609/aaai.v34i07.6817).
Official code: none public (searched GitHub for "LCALE" / "Cross-Aligned Latent Embeddings").

One VAE per modality (sketch features, photo features) and one for the class embedding (the
semantic side information). All three encode into one low-dimensional latent space; the
losses are (per item, summed over dimensions, averaged over the batch):
- reconstruction: each decoder rebuilds its own input from its own latent sample (L1);
- cross-reconstruction: each decoder rebuilds its input from the *other* modalities' latent
  samples (sketch <- photo, sketch <- class, photo <- sketch, ... ; L1);
- KL of each latent Gaussian to N(0, I);
- cross-alignment: 2-Wasserstein distance between the diagonal Gaussians of every pair of
  modalities (closed form sqrt(||mu1 - mu2||^2 + ||sigma1 - sigma2||^2)) and MMD (Gaussian
  kernel) between the modalities' latent samples.
At test time sketches and photos are embedded by their encoders' means.

The architecture, optimiser and warm-up schedules follow CADA-VAE (Schonfeld et al., CVPR 2019,
edgarschnfld/CADA-VAE-PyTorch), which LCALE extends from (image, attribute) to (image, sketch or
text, class embedding); the schedules are expressed as fractions of training so that they keep
their shape when a run is shorter than CADA-VAE's 100 epochs.

Deviations from the paper: `Lcale.metadata.deviations` (rendered on docs/methods/lcale.md).

`mlp`, `gaussian_mmd` and `kl_standard_normal` come from methods/blocks.py (CFSA uses the first
two as well).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.methods.base import FeatureSpaceMethod, MethodMetadata
from zsbench.methods.blocks import gaussian_mmd, kl_standard_normal, mlp

# ---------------------------------------------------------------------------------------------
# Building blocks of LCALE (those shared with other methods: methods/blocks.py)
# ---------------------------------------------------------------------------------------------


def xavier_init(module: nn.Module, gain: float = 0.5) -> None:
    """CADA-VAE's initialisation: Xavier-uniform weights (gain 0.5), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)


def wasserstein_diag_gaussians(
    mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor, squared: bool = False
) -> Tensor:
    """2-Wasserstein distance between diagonal Gaussians, per row: [B].

    W2^2 = ||mu1 - mu2||^2 + ||sigma1 - sigma2||^2 (the covariances commute). `squared=False`
    returns W2 (its square root, as CADA-VAE does), with a small epsilon so that the gradient at
    zero distance stays finite.
    """
    s1, s2 = (0.5 * logvar1).exp(), (0.5 * logvar2).exp()
    w2sq = (mu1 - mu2).pow(2).sum(-1) + (s1 - s2).pow(2).sum(-1)
    return w2sq if squared else torch.sqrt(w2sq + 1e-12)


def ramp(progress: float, factor: float, start: float, end: float) -> float:
    """CADA-VAE's linear warm-up: 0 before `start`, `factor` after `end` (fractions of training)."""
    if end <= start:
        return factor if progress >= start else 0.0
    return float(min(max((progress - start) / (end - start), 0.0), 1.0) * factor)


class GaussianEncoder(nn.Module):
    """x -> (mu, logvar) through one hidden ReLU layer (CADA-VAE's encoder)."""

    def __init__(self, in_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.body = mlp([in_dim, hidden_dim], out_activation=nn.ReLU())
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------

MODALITIES = ("sketch", "photo", "class")


class Lcale(FeatureSpaceMethod):
    """Cross-aligned VAEs for sketch, photo and class embedding (Wasserstein + MMD alignment)."""

    metadata = MethodMetadata(
        title="LCALE",
        task="sbir",
        inputs="features",
        trains=True,
        paper=(
            "Lin, Xu, Gao, Wang, Shen: Learning Cross-Aligned Latent Embeddings for Zero-Shot "
            "Cross-Modal Retrieval, AAAI 2020"
        ),
        year=2020,
        code=None,
        backbone="efficientnet_lite0 (ImageNet-1k), frozen; paper: VGG-16 fc7, frozen",
        side_information="class-name embedding (default minilm; paper: word2vec)",
        deviations=(
            "**Side information**: MiniLM sentence embeddings of the class names "
            "(`semantics=minilm`, the default) instead of word2vec, whose GoogleNews vectors are "
            "not available offline (`--set model.semantics=word2vec:/path/GoogleNews-vectors-"
            "negative300.bin` restores it; several sources are L2-normalised each and "
            "concatenated).",
            "**Backbone**: EfficientNet-Lite0 ImageNet features (1280-d) instead of VGG-16 fc7 "
            "(4096-d), whose weights are not available offline.",
            "**Unpublished details from CADA-VAE** (no official LCALE code; LCALE extends "
            "CADA-VAE): layer sizes (encoders 1560 for features / 1450 for the class embedding, "
            "decoders 1660 / 665), latent size 64, L1 reconstruction, Xavier-uniform init (gain "
            "0.5), Adam (amsgrad) lr 1.5e-4, and the warm-up factors and windows of the KL "
            "(0.25), cross-reconstruction (2.37) and distance (8.13) weights.",
            "**Schedule**: 30 epochs of batch 64 by default (CADA-VAE: 100 epochs of batch 50), "
            "with CADA-VAE's warm-ups (epochs of 100) rescaled to fractions of the training "
            "steps so that the shorter CPU schedule keeps their shape.",
            "**MMD**: kernel and weight are not in the paper; chosen a priori (not tuned on any "
            "test data): a multi-bandwidth Gaussian kernel with a data-dependent bandwidth "
            "(0.25 to 4 times the mean pairwise squared distance of the batch's pooled latent "
            "samples), weighted like the Wasserstein term (`mmd_weight` 8.13) and on its warm-up.",
            "**Which pairs**: alignment over all three modality pairs (sketch-photo, "
            "sketch-class, photo-class), cross-reconstruction of every modality from each other "
            "one (all six directions).",
            "**Reductions**: losses are summed over dimensions and averaged (not summed, as "
            "CADA-VAE does) over the batch; with Adam this only changes the effective epsilon.",
            "**Reparameterisation**: the textbook z = mu + exp(logvar / 2) * eps with independent "
            "noise per dimension; CADA-VAE's code multiplies by exp(logvar) and shares one eps "
            "per row.",
            "**Similarity**: cosine on the encoder means (the authors' group ranks with cosine "
            "distance in its released ZS-CMR code, JFSE).",
            "**Pairs**: on Sketchy a training sketch is paired with the photo it was drawn from "
            "(`pairing=instance`, the default; +0.017 mAP@all over class pairing on "
            "sketchy21-mini, seed 0, measured in issue 29's audit). The paper's datasets "
            "(TU-Berlin Extended, and Sketchy Extended's 60,502 extra photos) have no drawn-from "
            "photo, so LCALE / CADA-VAE pair by class: `--set model.pairing=class` is the "
            "paper's pairing. Datasets without drawn-from photos (TU-Berlin, QuickDraw) get "
            "class pairs either way.",
        ),
    )
    similarity = "cosine"

    def __init__(
        self,
        pairing: str = "instance",  # where the dataset knows the drawn-from photo (deviation 10)
        latent_dim: int = 64,
        feature_hidden: tuple[int, int] = (1560, 1660),
        class_hidden: tuple[int, int] = (1450, 665),
        lr: float = 1.5e-4,
        kl_weight: float = 0.25,
        kl_warmup: tuple[float, float] = (0.0, 0.93),
        cross_weight: float = 2.37,
        cross_warmup: tuple[float, float] = (0.21, 0.75),
        distance_weight: float = 8.13,
        distance_warmup: tuple[float, float] = (0.06, 0.22),
        mmd_weight: float = 8.13,
        squared_wasserstein: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(pairing=pairing, **kwargs)  # feature_dim, class_embeddings, ...
        feature_dim = self.hparams.feature_dim
        sem_dim = self.class_emb.shape[1]
        dims = {"sketch": feature_dim, "photo": feature_dim, "class": sem_dim}
        hidden = {"sketch": feature_hidden, "photo": feature_hidden, "class": class_hidden}
        self.encoders = nn.ModuleDict(
            {m: GaussianEncoder(dims[m], hidden[m][0], latent_dim) for m in MODALITIES}
        )
        self.decoders = nn.ModuleDict(
            {m: mlp([latent_dim, hidden[m][1], dims[m]]) for m in MODALITIES}
        )
        xavier_init(self)

    # -- losses --------------------------------------------------------------------------------

    def weights_at(self, progress: float) -> dict[str, float]:
        """Loss weights at `progress` in [0, 1] of training (CADA-VAE warm-ups)."""
        hp = self.hparams
        dist = ramp(progress, hp.distance_weight, *hp.distance_warmup)
        return {
            "kl": ramp(progress, hp.kl_weight, *hp.kl_warmup),
            "cross": ramp(progress, hp.cross_weight, *hp.cross_warmup),
            "wasserstein": dist,
            "mmd": dist * hp.mmd_weight / max(hp.distance_weight, 1e-12),
        }

    def losses(self, batch: dict, progress: float = 1.0) -> dict[str, Tensor]:
        """Every loss term of a pair batch and their weighted sum under key 'loss'."""
        x = {
            "sketch": batch["sketch"],
            "photo": batch["photo"],
            "class": self.class_emb[batch["label"]],
        }
        stats = {m: self.encoders[m](x[m]) for m in MODALITIES}
        z = {m: mu + (0.5 * lv).exp() * torch.randn_like(mu) for m, (mu, lv) in stats.items()}

        def l1(a: Tensor, b: Tensor) -> Tensor:
            return (a - b).abs().sum(-1).mean()

        recon = sum(l1(self.decoders[m](z[m]), x[m]) for m in MODALITIES)
        cross = sum(
            l1(self.decoders[m](z[n]), x[m]) for m in MODALITIES for n in MODALITIES if n != m
        )
        kl = sum(kl_standard_normal(*stats[m]).mean() for m in MODALITIES)
        pairs = [(a, b) for i, a in enumerate(MODALITIES) for b in MODALITIES[i + 1 :]]
        sq = self.hparams.squared_wasserstein
        wass = sum(
            wasserstein_diag_gaussians(*stats[a], *stats[b], squared=sq).mean() for a, b in pairs
        )
        mmd = sum(gaussian_mmd(z[a], z[b]) for a, b in pairs)
        w = self.weights_at(progress)
        loss = recon + w["kl"] * kl + w["cross"] * cross + w["wasserstein"] * wass + w["mmd"] * mmd
        return {
            "loss": loss,
            "recon": recon,
            "cross": cross,
            "kl": kl,
            "wasserstein": wass,
            "mmd": mmd,
        }

    # -- Lightning -------------------------------------------------------------------------------

    def progress(self) -> float:
        """Fraction of the training steps done (1.0 outside a Trainer)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return 1.0
        total = max(int(trainer.estimated_stepping_batches), 1)
        return min(trainer.global_step / total, 1.0)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.losses(batch, self.progress())
        n = len(batch["label"])
        for k, v in out.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", batch_size=n)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Seen-class accuracy of the nearest class-embedding latent mean (a sanity signal)."""
        z = self.embed_items(batch)
        centres = self.encoders["class"](self.class_emb)[0]
        pred = (F.normalize(z, dim=-1) @ F.normalize(centres, dim=-1).T).argmax(-1)
        acc = (pred == batch["label"]).float().mean()
        self.log("val/acc", acc, prog_bar=True, batch_size=len(z))
        self.collect_validation(batch)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, amsgrad=True)

    # -- retrieval -----------------------------------------------------------------------------

    def embed_items(self, batch: dict) -> Tensor:
        """Encoder means: sketches (domain 0) by the sketch VAE, photos by the photo VAE."""
        feats, is_photo = batch["feature"], batch["domain"].bool()
        mu_s = self.encoders["sketch"](feats)[0]
        mu_p = self.encoders["photo"](feats)[0]
        return torch.where(is_photo[:, None], mu_p, mu_s)

    def encode_query(self, batch: dict) -> Tensor:
        return self.encoders["sketch"](batch["feature"])[0]

    def encode_gallery(self, batch: dict) -> Tensor:
        return self.encoders["photo"](batch["feature"])[0]
