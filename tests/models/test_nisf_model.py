"""The NISF network: real Gabor wavelet activations, residual layers conditioned on a latent code, two heads."""

import math

import pytest
import torch

from implicitseg.models.nisf import GaborLayer, NisfNetwork


def test_gabor_layer_is_a_cosine_under_a_gaussian_envelope():
    layer = GaborLayer(2, 3, omega0=10.0, s0=5.0)
    x = torch.tensor([[0.3, -0.2]])
    frequency, scale = layer.frequency(x), layer.scale(x)
    expected = torch.cos(10.0 * frequency) * torch.exp(-(5.0 * scale) ** 2)
    assert torch.allclose(layer(x), expected)
    assert float(layer(x).detach().abs().max()) <= 1.0


def test_network_gives_class_and_intensity_logits_and_depends_on_the_latent():
    torch.manual_seed(0)
    network = NisfNetwork(4, 4, latent_dim=16, hidden=16, n_layers=3)
    coordinates = torch.rand(2, 50, 4) * 2 - 1
    latent = torch.randn(2, 16) * 0.1
    classes, intensity = network(coordinates, latent)
    assert classes.shape == (2, 50, 4) and intensity.shape == (2, 50)
    other, _ = network(coordinates, latent + 0.5)
    assert not torch.allclose(classes, other)
    classes.sum().backward()
    assert network.input_layer.frequency.weight.grad is not None
    assert math.isfinite(float(intensity.detach().sum()))


def test_hidden_width_must_match_the_latent_it_adds():
    with pytest.raises(ValueError, match="hidden .* must equal latent_dim"):
        NisfNetwork(3, 2, latent_dim=32, hidden=64)
    with pytest.raises(ValueError, match="3 or 4 coordinates"):
        NisfNetwork(2, 2)
