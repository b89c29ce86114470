"""methods/blocks.py: the layers and losses several methods share, checked once against their
closed forms (CVAE, CAAE, LCALE, CFSA and SketchGCN use these exact functions)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zsbench.methods.blocks import feature_mse, gaussian_mmd, keras_init, kl_standard_normal, mlp


def test_kl_closed_forms_per_row():
    zeros = torch.zeros(3, 5)
    assert torch.equal(kl_standard_normal(zeros, zeros), torch.zeros(3))  # KL(N(0,I) || N(0,I))
    # N(1, I): 0.5 * mu^2 per dimension, summed over the 4 dimensions of each row
    kl = kl_standard_normal(torch.ones(2, 4), torch.zeros(2, 4))
    assert torch.allclose(kl, torch.full((2,), 2.0))
    # N(0, e I): 0.5 * (e - 1 - 1) per dimension; N(1, e I): 0.5 * (e + 1 - 1 - 1)
    assert kl_standard_normal(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx(
        0.5 * (math.e - 2.0)
    )
    assert kl_standard_normal(torch.ones(1, 2), torch.ones(1, 2)).item() == pytest.approx(
        2 * 0.5 * (math.e - 1)
    )


def test_feature_mse_is_a_mean_over_dimensions_then_batch():
    pred, target = torch.zeros(2, 4), torch.tensor([[1.0, 1, 1, 1], [2, 0, 0, 0]])
    assert feature_mse(pred, target).item() == pytest.approx(1.0)  # row means 1 and 1
    assert feature_mse(pred, torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, 0]])).item() == 0.5


def test_mmd_is_zero_for_identical_samples_and_grows_with_a_shift():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    assert gaussian_mmd(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    near, far = gaussian_mmd(x, x + 0.5).item(), gaussian_mmd(x, x + 3.0).item()
    assert 0 < near < far and far > 0.5


def test_mlp_layers_and_keras_init():
    net = mlp([6, 5, 3], nn.LeakyReLU, nn.ReLU())
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.ReLU]
    assert net(torch.randn(4, 6)).shape == (4, 3) and bool((net(torch.randn(4, 6)) >= 0).all())
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.bias, 1.0)
    keras_init(net)
    bound = math.sqrt(6 / (6 + 5))  # Glorot-uniform of the first layer
    assert all(float(m.bias.abs().sum()) == 0 for m in net if isinstance(m, nn.Linear))
    assert float(net[0].weight.abs().max()) <= bound
