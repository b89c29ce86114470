"""Layers, initialisations and losses that several SBIR methods use.

One copy each, so that a method file holds only what makes it that method and no method imports
another method's file (tests/test_architecture.py): CVAE and CAAE share the Keras defaults and
the feature MSE, LCALE and CFSA the MLPs and the MMD, CVAE, LCALE and SketchGCN the Gaussian KL.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["feature_mse", "gaussian_mmd", "keras_init", "kl_standard_normal", "mlp"]


def mlp(
    sizes: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    out_activation: nn.Module | None = None,
) -> nn.Sequential:
    """Linear layers of `sizes` with `activation` between them, `out_activation` after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)


def keras_init(module: nn.Module) -> None:
    """Keras Dense defaults: Glorot-uniform weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row, summed over dimensions: [B] (average it
    over the batch where the paper's loss is a batch mean)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def feature_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error averaged over feature dimensions and batch (Keras mean_squared_error)."""
    return (pred - target).square().mean(dim=1).mean()


def gaussian_mmd(
    x: Tensor, y: Tensor, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> Tensor:
    """Squared MMD between samples x [N, D] and y [M, D] (biased V-statistic, >= 0).

    Kernel: sum over `scales` s of exp(-||a - b||^2 / (s * h)), with the bandwidth h the mean
    pairwise squared distance of the pooled samples (detached): a multi-bandwidth Gaussian kernel
    that needs no tuning to the latent scale. Identical samples give exactly 0.
    """
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    h = d2.detach().sum() / max(z.shape[0] * (z.shape[0] - 1), 1)
    h = h.clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (s * h)) for s in scales)
    n = x.shape[0]
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return (kxx.mean() + kyy.mean() - 2 * kxy.mean()).clamp_min(0.0)
