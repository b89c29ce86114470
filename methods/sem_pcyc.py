"""SEM-PCYC: semantically tied paired cycle-consistent generative model for ZS-SBIR.

Paper: A. Dutta and Z. Akata, "Semantically Tied Paired Cycle Consistency for Zero-Shot
Sketch-based Image Retrieval", CVPR 2019. Official code: github.com/AnjanDutta/sem-pcyc
(src/models.py, src/options.py, src/train.py, src/itq.py, src/losses.py).

Two generators map sketch and photo features into a common semantic space; two more map the
semantic space back to each modality (paired cycle consistency). Three LSGAN discriminators
judge the semantic side (real: the class's side information, encoded), the sketch side and the
photo side. The side information (word vectors + WordNet hierarchy, concatenated) is compressed
to the semantic space by a one-layer autoencoder with a group-sparsity penalty on its encoder
(feature selection). Fixed, randomly initialised linear classifiers (frozen, as in the official
code) give a classification loss on each generator's output. Training runs on seen-class
(sketch, photo of the same class) pairs, with three optimisers stepped in the official order:
autoencoder, generators, discriminators.

Retrieval: `sem-pcyc` ranks by Euclidean distance between the sketch and photo generators'
outputs (the official code ranks by exp(-euclidean)); `sem-pcyc-binary` hashes those outputs with
ITQ (Gong & Lazebnik, CVPR 2011), learnt on seen-class training embeddings, and ranks by Hamming
distance (dot product of +-1 codes).

Deviations from the paper: `SemPcyc.metadata.deviations` and, for the binary variant,
`SemPcycBinary.metadata.deviations` (the same plus its ITQ's; both rendered on
docs/methods/sem-pcyc.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.errors import ZsbenchError
from zsbench.methods.base import FeatureSpaceMethod, MethodMetadata

# ----------------------------------------------------------------------------- building blocks


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode (the official discriminators' input noise)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


def generator(in_dim: int, out_dim: int, dropout: float = 0.5) -> nn.Sequential:
    """Official `Generator(noise=False, use_dropout=True)`: two hidden layers of (in+out)/2 units,
    BatchNorm, LeakyReLU(0.2), dropout 0.5; linear output."""
    hid = (in_dim + out_dim) // 2
    return nn.Sequential(
        nn.Linear(in_dim, hid),
        nn.BatchNorm1d(hid),
        nn.LeakyReLU(0.2),
        nn.Dropout(dropout),
        nn.Linear(hid, hid),
        nn.BatchNorm1d(hid),
        nn.LeakyReLU(0.2),
        nn.Dropout(dropout),
        nn.Linear(hid, out_dim),
    )


def discriminator(in_dim: int, noise_std: float = 0.3) -> nn.Sequential:
    """Official `Discriminator(noise=True, use_batchnorm=True)`: input noise (std 0.3), two
    hidden layers of in/2 units with BatchNorm and LeakyReLU(0.2), one linear output (LSGAN)."""
    hid = in_dim // 2
    return nn.Sequential(
        GaussianNoise(noise_std),
        nn.Linear(in_dim, hid),
        nn.BatchNorm1d(hid),
        nn.LeakyReLU(0.2),
        nn.Linear(hid, hid),
        nn.BatchNorm1d(hid),
        nn.LeakyReLU(0.2),
        nn.Linear(hid, 1),
    )


@torch.no_grad()
def refit_batchnorm(module: nn.Module, batches: list[Tensor]) -> None:
    """Replace the running statistics of every BatchNorm in `module` by their average over
    `batches` (inputs of `module`; each batch's statistics weigh the same, as in
    torch.optim.swa_utils.update_bn), the rest of the module in eval mode (no dropout)."""
    was_training = module.training
    module.eval()
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for x in batches:
        module(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    module.train(was_training)


class SemanticAutoEncoder(nn.Module):
    """Official `AutoEncoder(nlayer=1)`: Linear+ReLU to the semantic space, Linear+ReLU back."""

    def __init__(self, dim: int, hid_dim: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, hid_dim), nn.ReLU())
        self.dec = nn.Sequential(nn.Linear(hid_dim, dim), nn.ReLU())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.enc(x)
        return z, self.dec(z)

    def group_sparsity(self) -> Tensor:
        """Sum over input dimensions of the L2 norm of their encoder weights (feature selection)."""
        return self.enc[0].weight.norm(p=2, dim=0).sum()


def lsgan_loss(pred: Tensor, real: bool, soft: bool = True) -> Tensor:
    """Least-squares GAN loss with the official soft, noisy targets: real ~ U(0.7, 1.0), fake ~
    U(0, 0.3) per sample (`soft=False`: exactly 1 and 0)."""
    pred = pred.reshape(-1)
    if soft:
        u = torch.rand_like(pred)
        target = 0.7 + 0.3 * u if real else 0.3 * u
    else:
        target = torch.full_like(pred, 1.0 if real else 0.0)
    return F.mse_loss(pred, target)


# ----------------------------------------------------------------------------- ITQ


def itq_quantization_error(v: Tensor, r: Tensor) -> Tensor:
    """||sign(V R) - V R||_F^2 / N, the objective ITQ minimises (sign(0) counts as +1)."""
    z = v @ r
    return (torch.where(z >= 0, 1.0, -1.0).to(z) - z).pow(2).sum() / len(v)


def fit_itq(x: Tensor, n_bits: int, n_iter: int = 50, seed: int = 0) -> tuple[Tensor, list[float]]:
    """Iterative quantisation (Gong & Lazebnik 2011) of centred data `x` [N, D].

    PCA to the top `n_bits` components, then `n_iter` alternations of B = sign(V R) and the
    orthogonal Procrustes step R = W U^T for svd(B^T V) = U S W^T, from a random orthogonal
    start (seeded). Returns the projection P = PCA @ R [D, n_bits] (codes: sign(x @ P)) and the
    quantisation error after each iteration (non-increasing).
    """
    if not 0 < n_bits <= x.shape[1]:
        raise ZsbenchError(f"ITQ needs 0 < n_bits <= dim ({x.shape[1]}), got {n_bits}.")
    x = x.double()
    cov = x.T @ x / max(len(x) - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    pc = evecs[:, torch.argsort(evals, descending=True)[:n_bits]]
    v = x @ pc
    gen = torch.Generator().manual_seed(seed)
    r, _, _ = torch.linalg.svd(torch.randn(n_bits, n_bits, generator=gen, dtype=torch.float64))
    errors = []
    for _ in range(n_iter):
        b = torch.where(v @ r >= 0, 1.0, -1.0).to(v)
        u, _, wh = torch.linalg.svd(b.T @ v)
        r = wh.T @ u.T
        errors.append(float(itq_quantization_error(v, r)))
    return (pc @ r).float(), errors


# ----------------------------------------------------------------------------- the method

# Where both variants differ from the paper; the binary variant adds `_ITQ_DEVIATIONS`.
_DEVIATIONS = (
    "**Backbone**: frozen EfficientNet-Lite0 ImageNet features (1280-d), shared by sketches and "
    "photos, instead of two VGG16s fine-tuned on the seen classes with a 512-d head (VGG16 "
    "weights are not offline, and zsbench's feature-space methods share one cached backbone). "
    "Generator and discriminator widths follow the official rule ((in+out)/2 and in/2) and "
    "therefore grow with the 1280-d input (8.7 M parameters instead of about 1.7 M).",
    "**Side information**: all-MiniLM-L6-v2 sentence embeddings of the class names (384-d) "
    "replace the GoogleNews word2vec vectors (300-d, not offline); the WordNet hierarchy "
    "embedding (path similarity of each class to the nodes of the seen classes' hypernym "
    "closure, `zsbench.semantics`) is kept. Setting "
    "`model.semantics=word2vec:/path/GoogleNews-vectors-negative300.bin,wordnet` restores "
    "the paper's sources when the file is available.",
    "**Schedule**: a fixed 30 epochs (configs/methods/sem-pcyc.yaml, CPU budget) over all "
    "seen training sketches with uniform shuffling (~330 steps on sketchy21-mini, 570 on "
    "sketchy-mini), instead of up to 100 epochs of 100 class-balanced batches (up to 10,000 "
    "steps) with early stopping (patience 20) on the mAP of held-out validation classes. "
    "zsbench does no model selection: its seen-class validation split only logs "
    "`val/acc` and `val/mAP` (the real-valued embedding's, for both variants).",
    "**Training pairs**: each seen training sketch with a random photo of its class "
    '(`pairing="class"`), redrawn every epoch, instead of sampling from the official '
    "per-class sketch x photo product.",
)

# Where `sem-pcyc-binary`'s ITQ hashing differs from the official src/itq.py and test.py.
_ITQ_DEVIATIONS = (
    "**ITQ training data**: ITQ is learnt once, after training (`on_train_end`), on the "
    "generators' embeddings of the seen-class training sketches and photos, each domain "
    "centred by its own training mean; the official test.py learns it on the test sketches "
    "and centres each test set by its own mean (transductive use of unseen test data, which "
    "the zsbench protocol forbids).",
    "**Code length**: `n_bits=64` (the paper's binary setting) from the top-64 PCA components "
    "of the `dim_out=128` embeddings; the official itq.py keeps every component, so its code "
    "length equals `dim_out` (`--set model.dim_out=64` reproduces that).",
    "**ITQ rotation update**: R = W U^T for svd(B^T V) = U S W^T, the orthogonal Procrustes "
    "optimum (Gong & Lazebnik); the official itq.py computes W^T U^T (a transposition slip "
    "in the port from MATLAB), still a rotation but not the optimum, so its quantisation "
    "error does not decrease (see the ITQ section above).",
)


class SemPcyc(FeatureSpaceMethod):
    """SEM-PCYC: paired cycle-consistent GANs into a side-information space (Dutta & Akata 2019)."""

    metadata = MethodMetadata(
        title="SEM-PCYC",
        task="sbir",
        inputs="features",
        trains=True,
        paper=(
            "A. Dutta, Z. Akata. Semantically Tied Paired Cycle Consistency for Zero-Shot "
            "Sketch-based Image Retrieval. CVPR 2019"
        ),
        year=2019,
        code="AnjanDutta/sem-pcyc",
        backbone="efficientnet_lite0 (ImageNet-1k), frozen (paper: VGG16 fine-tuned, 512-d)",
        side_information="MiniLM class-name embedding + WordNet hierarchy (paper: word2vec + "
        "WordNet), fused by a feature-selection autoencoder",
        deviations=_DEVIATIONS,
    )
    similarity = "euclidean"  # official: exp(-euclidean distance), the same ranking
    side_buffer = "side_info"

    def __init__(
        self,
        semantics: str = "minilm,wordnet",  # the paper's word vectors + WordNet hierarchy
        dim_out: int = 128,
        lambda_se: float = 10.0,
        lambda_im: float = 10.0,
        lambda_sk: float = 10.0,
        lambda_gen_cyc: float = 1.0,
        lambda_gen_adv: float = 1.0,
        lambda_gen_cls: float = 1.0,
        lambda_gen_reg: float = 0.1,
        lambda_disc_se: float = 0.25,
        lambda_disc_sk: float = 0.5,
        lambda_disc_im: float = 0.5,
        lambda_regular: float = 0.001,
        lr: float = 1e-4,
        momentum: float = 0.9,
        lr_ae_factor: float = 100.0,
        bn_from_real: bool = False,
        **kwargs,
    ) -> None:
        """`bn_from_real`: after training, re-estimate the BatchNorm statistics of the two
        encoding generators on the real seen-class training features only (off: the official
        code keeps the running statistics of training, which also saw generated inputs;
        docs/methods/sem-pcyc.md, "On the real sketchy21 protocol")."""
        super().__init__(semantics=semantics, **kwargs)  # feature_dim, class_embeddings, ...
        feature_dim, num_classes = self.hparams.feature_dim, self.hparams.num_classes
        self.automatic_optimization = False
        sem_dim = self.side_info.shape[1]

        self.gen_sk2se = generator(feature_dim, dim_out)
        self.gen_im2se = generator(feature_dim, dim_out)
        self.gen_se2sk = generator(dim_out, feature_dim)
        self.gen_se2im = generator(dim_out, feature_dim)
        self.disc_se = discriminator(dim_out)
        self.disc_sk = discriminator(feature_dim)
        self.disc_im = discriminator(feature_dim)
        self.autoencoder = SemanticAutoEncoder(sem_dim, dim_out)
        # Official code: bias-free linear classifiers, randomly initialised and frozen.
        self.classifier_se = nn.Linear(dim_out, num_classes, bias=False)
        self.classifier_sk = nn.Linear(feature_dim, num_classes, bias=False)
        self.classifier_im = nn.Linear(feature_dim, num_classes, bias=False)
        for clf in (self.classifier_se, self.classifier_sk, self.classifier_im):
            clf.weight.requires_grad_(False)

    def side_information(self, class_embeddings: dict, num_classes: int) -> Tensor:
        """The sources as they are (not normalised), concatenated in sorted order, as the
        official code does."""
        if not class_embeddings:
            raise ZsbenchError("SEM-PCYC needs side information: set model.semantics.")
        sources = [
            torch.as_tensor(class_embeddings[k], dtype=torch.float32)
            for k in sorted(class_embeddings)
        ]
        if any(s.shape[0] != num_classes for s in sources):
            raise ZsbenchError(
                f"class_embeddings must have {num_classes} rows (seen classes), got "
                f"{[tuple(s.shape) for s in sources]}."
            )
        return torch.cat(sources, dim=1)

    # ------------------------------------------------------------------ losses
    def losses(self, batch: dict) -> dict[str, Tensor]:
        """Every loss term of one step, weighted as in the official `SEM_PCYC.backward`.

        `ae` trains the autoencoder, `gen` the four generators, `disc` the three discriminators;
        their graphs are disjoint (the semantic targets and the fakes are detached where the
        other optimiser steps), so the three can be back-propagated in any order.
        """
        h = self.hparams
        sk, im, y = batch["sketch"].float(), batch["photo"].float(), batch["label"]
        se = self.side_info[y]

        enc, rec = self.autoencoder(se)
        sparsity = self.autoencoder.group_sparsity() / len(y)
        loss_ae = F.mse_loss(rec, se) + h.lambda_regular * sparsity
        se_em = enc.detach()

        im2se, sk2se = self.gen_im2se(im), self.gen_sk2se(sk)
        se2im, se2sk = self.gen_se2im(se_em), self.gen_se2sk(se_em)
        im_hat, sk_hat = self.gen_se2im(im2se), self.gen_se2sk(sk2se)
        se_hat_sk, se_hat_im = self.gen_sk2se(se2sk), self.gen_im2se(se2im)

        adv = h.lambda_gen_adv * (
            lsgan_loss(self.disc_se(im2se), True)
            + lsgan_loss(self.disc_se(sk2se), True)
            + lsgan_loss(self.disc_im(se2im), True)
            + lsgan_loss(self.disc_sk(se2sk), True)
        )
        cyc = h.lambda_gen_cyc * (
            h.lambda_im * F.l1_loss(im_hat, im)
            + h.lambda_sk * F.l1_loss(sk_hat, sk)
            + h.lambda_se * (F.l1_loss(se_hat_sk, se_em) + F.l1_loss(se_hat_im, se_em))
        )
        cls = h.lambda_gen_cls * (
            h.lambda_se
            * (
                F.cross_entropy(self.classifier_se(im2se), y)
                + F.cross_entropy(self.classifier_se(sk2se), y)
            )
            + h.lambda_sk * F.cross_entropy(self.classifier_sk(se2sk), y)
            + h.lambda_im * F.cross_entropy(self.classifier_im(se2im), y)
        )
        # the official code adds both directions of the sketch/photo regression (same value)
        reg = h.lambda_gen_reg * (
            h.lambda_se * 2 * F.mse_loss(im2se, sk2se)
            + h.lambda_im * F.mse_loss(se2im, im)
            + h.lambda_sk * F.mse_loss(se2sk, sk)
        )

        fake = {k: v.detach() for k, v in (("im2se", im2se), ("sk2se", sk2se))}
        disc_se = h.lambda_disc_se * (
            2 * lsgan_loss(self.disc_se(se_em), True)
            + lsgan_loss(self.disc_se(fake["im2se"]), False)
            + lsgan_loss(self.disc_se(fake["sk2se"]), False)
        )
        disc_sk = h.lambda_disc_sk * (
            lsgan_loss(self.disc_sk(sk), True) + lsgan_loss(self.disc_sk(se2sk.detach()), False)
        )
        disc_im = h.lambda_disc_im * (
            lsgan_loss(self.disc_im(im), True) + lsgan_loss(self.disc_im(se2im.detach()), False)
        )
        return {
            "ae": loss_ae,
            "gen_adv": adv,
            "gen_cyc": cyc,
            "gen_cls": cls,
            "gen_reg": reg,
            "gen": adv + cyc + cls + reg,
            "disc_se": disc_se,
            "disc_sk": disc_sk,
            "disc_im": disc_im,
            "disc": disc_se + disc_sk + disc_im,
        }

    # ------------------------------------------------------------------ training
    def configure_optimizers(self):
        h = self.hparams
        gens = [self.gen_sk2se, self.gen_im2se, self.gen_se2sk, self.gen_se2im]
        discs = [self.disc_se, self.disc_sk, self.disc_im]
        opt_gen = torch.optim.Adam([p for m in gens for p in m.parameters()], lr=h.lr)
        opt_disc = torch.optim.SGD(
            [p for m in discs for p in m.parameters()], lr=h.lr, momentum=h.momentum
        )
        opt_ae = torch.optim.SGD(
            self.autoencoder.parameters(), lr=h.lr_ae_factor * h.lr, momentum=h.momentum
        )
        return [opt_gen, opt_disc, opt_ae]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        opt_gen, opt_disc, opt_ae = self.optimizers()
        loss = self.losses(batch)
        # official order: autoencoder, generators, discriminators (on the same forward pass)
        for opt, key in ((opt_ae, "ae"), (opt_gen, "gen"), (opt_disc, "disc")):
            opt.zero_grad()
            self.manual_backward(loss[key])
            opt.step()
        n = len(batch["label"])
        for key, value in loss.items():
            self.log(f"train/{key}", value.detach(), prog_bar=key in ("gen", "disc"), batch_size=n)
        return loss["gen"].detach()

    def on_train_end(self) -> None:
        if self.hparams.bn_from_real:
            self.refit_batchnorm(self.trainer.train_dataloader)

    @torch.no_grad()
    def refit_batchnorm(self, loader) -> None:
        """Re-estimate gen_sk2se's and gen_im2se's BatchNorm statistics on the real training
        sketches and photos of `loader` (pair batches or item batches): in training both also
        encode generated features (the cycle gen_sk2se(gen_se2sk(...)), as the official
        models.py does), so their running statistics mix real and generated inputs, and eval
        mode normalises real features with them. Dropout stays off; only seen-class training data
        is read."""
        sketches, photos = [], []
        for batch in loader:
            if "sketch" in batch:
                sketches.append(batch["sketch"].float())
                photos.append(batch["photo"].float())
            else:
                dom = batch["domain"]
                sketches.append(batch["feature"][dom == 0].float())
                photos.append(batch["feature"][dom != 0].float())
        for gen, feats in ((self.gen_sk2se, sketches), (self.gen_im2se, photos)):
            refit_batchnorm(gen, [f.to(self.device) for f in feats if len(f)])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Seen-class validation items: accuracy of the (frozen) semantic classifier."""
        z = self.embed_features(batch["feature"], batch["domain"])
        acc = (self.classifier_se(z).argmax(-1) == batch["label"]).float().mean()
        self.log("val/acc", acc, prog_bar=True, batch_size=len(z))
        # val/mAP of the real-valued embedding, for both variants (the binary one's hash is
        # learnt when training ends)
        real = (lambda b: SemPcyc.encode_query(self, b), lambda b: SemPcyc.encode_gallery(self, b))
        self.collect_validation(batch, real, similarity="euclidean")

    # ------------------------------------------------------------------ retrieval
    def embed_features(self, features: Tensor, domain: Tensor) -> Tensor:
        """Semantic-space embedding of items: sketches (domain 0) by gen_sk2se, photos by
        gen_im2se."""
        features = features.float()
        out = features.new_empty(len(features), self.hparams.dim_out)
        sketch = domain == 0
        if sketch.any():
            out[sketch] = self.gen_sk2se(features[sketch])
        if (~sketch).any():
            out[~sketch] = self.gen_im2se(features[~sketch])
        return out

    def encode_query(self, batch: dict) -> Tensor:
        return self.gen_sk2se(batch["feature"].float())

    def encode_gallery(self, batch: dict) -> Tensor:
        return self.gen_im2se(batch["feature"].float())


class SemPcycBinary(SemPcyc):
    """SEM-PCYC with ITQ hashing of its semantic-space embeddings, ranked by Hamming distance."""

    metadata = MethodMetadata(
        title="SEM-PCYC (binary, ITQ)",
        task="sbir",
        inputs="features",
        trains=True,
        paper=SemPcyc.metadata.paper,
        year=2019,
        code="AnjanDutta/sem-pcyc",
        backbone=SemPcyc.metadata.backbone,
        side_information=SemPcyc.metadata.side_information,
        deviations=_DEVIATIONS + _ITQ_DEVIATIONS,
    )
    similarity = "dot"  # on +-1 codes: n_bits - 2 * Hamming distance

    def __init__(self, n_bits: int = 64, itq_iters: int = 50, **kwargs) -> None:
        """`n_bits`, `itq_iters`: the ITQ code; everything else is SemPcyc's (same defaults)."""
        super().__init__(**kwargs)
        dim_out = self.hparams.dim_out
        if not 0 < n_bits <= dim_out:
            raise ZsbenchError(f"n_bits must be in 1..dim_out={dim_out}, got {n_bits}.")
        self.register_buffer("itq_mean", torch.zeros(2, dim_out))  # rows: sketch, photo
        self.register_buffer("itq_projection", torch.zeros(dim_out, n_bits))
        self.register_buffer("itq_fitted", torch.tensor(False))

    def on_train_end(self) -> None:
        super().on_train_end()  # the BatchNorm refit first, when asked: ITQ hashes its output
        self.fit_itq(self.trainer.train_dataloader)

    @torch.no_grad()
    def fit_itq(self, loader) -> list[float]:
        """Learn the hash from seen-class training data: pair batches (sketch, photo) or item
        batches (feature, domain). Returns ITQ's quantisation error per iteration."""
        was_training = self.training
        self.eval()
        sketches, photos = [], []
        for batch in loader:
            if "sketch" in batch:
                sketches.append(self.gen_sk2se(batch["sketch"].to(self.device).float()))
                photos.append(self.gen_im2se(batch["photo"].to(self.device).float()))
            else:
                dom = batch["domain"].to(self.device)
                z = self.embed_features(batch["feature"].to(self.device), dom)
                sketches.append(z[dom == 0])
                photos.append(z[dom != 0])
        self.train(was_training)
        sk, ph = torch.cat(sketches), torch.cat(photos)
        if not len(sk) or not len(ph):
            raise ZsbenchError("ITQ needs training embeddings of both sketches and photos.")
        mean = torch.stack([sk.mean(0), ph.mean(0)])
        centred = torch.cat([sk - mean[0], ph - mean[1]]).cpu()
        proj, errors = fit_itq(centred, self.hparams.n_bits, self.hparams.itq_iters)
        self.itq_mean.copy_(mean)
        self.itq_projection.copy_(proj.to(self.itq_projection))
        self.itq_fitted.fill_(True)
        return errors

    def hash(self, z: Tensor, domain: int) -> Tensor:
        """+-1 codes of semantic-space embeddings `z` of one domain (0 sketch, 1 photo)."""
        if not bool(self.itq_fitted):
            raise ZsbenchError(
                "sem-pcyc-binary has no ITQ hash yet: it is learnt at the end of training "
                "(on_train_end) or by calling fit_itq(train_loader)."
            )
        proj = (z - self.itq_mean[domain]) @ self.itq_projection
        return torch.where(proj >= 0, 1.0, -1.0).to(z)

    def encode_query(self, batch: dict) -> Tensor:
        return self.hash(super().encode_query(batch), 0)

    def encode_gallery(self, batch: dict) -> Tensor:
        return self.hash(super().encode_gallery(batch), 1)
