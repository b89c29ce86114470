"""The sketch-conditioned photo-feature generator of Yelamarthi et al. (ECCV 2018), shared by
CVAE (methods/cvae.py) and CAAE (methods/caae.py).

`FeatureGenerator`: the encoder trunk of [photo, sketch], the decoder of [z, sketch] to a photo
feature and the sketch regressor, as in the official `trainCVAE_pre.py`.
`SketchConditionedGenerator`: the method base with the official arguments, the feature scale and
retrieval by the mean generated photo feature over draws of z (queries) against real photo
features (gallery). The subclasses add their latent heads and losses.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from zsbench.methods.base import FeatureMethod, rms_scale

__all__ = ["YELAMARTHI_RECORD", "FeatureGenerator", "SketchConditionedGenerator"]

# The paper and code fields of CVAE's and CAAE's MethodMetadata (one paper, one repository)
YELAMARTHI_RECORD = {
    "paper": (
        "S. K. Yelamarthi, S. K. Reddy, A. Mishra, A. Mittal: A Zero-Shot Framework for "
        "Sketch Based Image Retrieval, ECCV 2018"
    ),
    "year": 2018,
    "code": "ShivaKrishnaM/ZS-SBIR",
    "backbone": "efficientnet_lite0 (ImageNet-1k), frozen",
    "side_information": None,
}

# Keras BatchNormalization defaults (momentum 0.99 of the running mean = 0.01 in torch).
_BN = {"momentum": 0.01, "eps": 1e-3}


class FeatureGenerator(nn.Module):
    """Encoder trunk, sketch-conditioned decoder and sketch regressor of CVAE / CAAE."""

    def __init__(
        self, feature_dim: int, hidden_dim: int, latent_dim: int, dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Linear(2 * feature_dim, 2 * hidden_dim),
            nn.ReLU(),
            nn.BatchNorm1d(2 * hidden_dim, **_BN),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.BatchNorm1d(hidden_dim, **_BN),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + feature_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, feature_dim),
            nn.ReLU(),  # backbone features are post-ReLU, non-negative
        )
        self.sketch_regressor = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, feature_dim),
            nn.ReLU(),
        )

    def encode_trunk(self, photo: Tensor, sketch: Tensor) -> Tensor:
        # the official code concatenates [image, sketch] in that order
        return self.encoder(torch.cat([photo, sketch], dim=1))

    def decode(self, z: Tensor, sketch: Tensor) -> Tensor:
        return self.decoder(torch.cat([z, sketch], dim=1))

    @torch.no_grad()
    def generate_mean(self, sketch: Tensor, n_samples: int, chunk: int = 8192) -> Tensor:
        """Mean of the decoded features over `n_samples` draws of z ~ N(0, I): [B, D]."""
        out = torch.zeros(sketch.shape[0], self.decoder[-2].out_features, device=sketch.device)
        rows = max(1, chunk // max(1, n_samples))  # sketches per forward pass
        for i in range(0, sketch.shape[0], rows):
            s = sketch[i : i + rows]
            s_rep = s.repeat_interleave(n_samples, dim=0)
            z = torch.randn(s_rep.shape[0], self.latent_dim, device=s.device, dtype=s.dtype)
            out[i : i + rows] = self.decode(z, s_rep).view(len(s), n_samples, -1).mean(dim=1)
        return out


class SketchConditionedGenerator(FeatureMethod):
    """What CVAE and CAAE share (Yelamarthi et al.): the arguments of the official
    trainCVAE_pre.py, the sketch-conditioned photo-feature generator, and retrieval by the
    mean of generated photo features (queries) against real photo features (gallery).
    Subclasses add their latent heads, then call `keras_init(self)`."""

    similarity = "cosine"
    train_on = "pairs"

    def __init__(
        self,
        feature_dim: int,
        pairing: str = "instance",
        hidden_dim: int = 2048,
        latent_dim: int = 1024,
        dropout: float = 0.3,
        recon_weight: float = 1.0,
        sketch_recon_weight: float = 10.0,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        n_samples: int = 100,
        feature_rms: float | None = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)  # backbone, weights
        self.generator = FeatureGenerator(feature_dim, hidden_dim, latent_dim, dropout)
        # one scalar for every input feature, set from the seen-class training features when
        # training starts (`feature_rms`); 1 until then and with feature_rms=None
        self.register_buffer("feature_scale", torch.ones(()))

    def scaled(self, features: Tensor) -> Tensor:
        return features * self.feature_scale

    def on_train_start(self) -> None:
        """Scale the features so that their root mean square over the training pairs is
        `feature_rms`. Why: the loss is not scale-invariant. Its reconstruction terms grow
        with the square of the feature scale while the KL (CVAE) or adversarial term (CAAE)
        does not, and the decoder's input is [z ~ N(0, I), sketch], so small features are
        drowned by z: VGG16 fc7 features (the paper's) are large, EfficientNet-Lite0's have an
        RMS of about 0.38, where the decoder's output stayed worse than the constant mean photo
        for hundreds of steps (docs/methods/cvae.md). Cosine retrieval is unchanged by it."""
        if self.hparams.feature_rms is not None:
            scale = rms_scale(self.trainer.train_dataloader, self.hparams.feature_rms)
            self.feature_scale.fill_(scale)

    def encode_query(self, batch: dict) -> Tensor:
        return self.generator.generate_mean(self.scaled(batch["feature"]), self.hparams.n_samples)

    def encode_gallery(self, batch: dict) -> Tensor:
        return self.scaled(batch["feature"])

    @contextlib.contextmanager
    def fixed_latents(self, seed: int):
        """A forked RNG seeded with `seed` for the draws of z outside training: what they
        give depends on the weights only, and they never advance the RNG training draws from."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    # test-time z from a fixed seed for each Trainer.predict call (one embedding pass): a
    # saved model scored again (--eval-only) gives the same number as the run that trained it,
    # whatever randomness training used, and the draws never advance the global RNG
    def on_predict_start(self) -> None:
        self._predict_rng = contextlib.ExitStack()
        self._predict_rng.enter_context(self.fixed_latents(0))

    def on_predict_end(self) -> None:
        self._predict_rng.close()

    # seen-class validation: val/mAP of generated (val sketch) vs real (val photo) features
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # a fixed seed per batch: the learning curve is not noisy in z, and its 100 draws per
        # sketch do not advance the RNG the training draws from
        with self.fixed_latents(batch_idx):
            self.collect_validation(batch)
