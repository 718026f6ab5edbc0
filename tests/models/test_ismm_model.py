"""ISMM's networks and losses: SIREN initialisation, per-shape deformation weights from the hypernetwork, an
untrained field that starts as the template, every loss term finite with gradients, the Laplacian by autograd."""

from __future__ import annotations

import torch

from implicitseg.config import IsmmLossConfig
from implicitseg.fitting.losses import deformation_laplacian, shape_losses
from implicitseg.models.ismm import IsmmModel


def small_model(n_shapes: int = 3) -> IsmmModel:
    torch.manual_seed(0)
    return IsmmModel(n_shapes, template_hidden=32, template_layers=2, deform_hidden=16, deform_layers=2,
                     hyper_hidden=16, hyper_code_dim=8, instance_code_dim=8)


def test_an_untrained_shape_is_the_template_and_codes_change_the_deformation():
    model = small_model()
    points = torch.rand(2, 50, 3) * 2 - 1
    rows = torch.tensor([0, 1])
    out = model.instance_sdf(points, model.hyper_codes(rows), model.instance_codes(rows))
    assert out["sdf"].shape == (2, 50) and out["displacement"].shape == (2, 50, 3)
    assert float(model.template(points).detach().abs().max()) == 0.0  # the template's last layer starts at zero
    assert float(out["displacement"].detach().abs().max()) < 0.05 and float(out["correction"].detach().abs().max()) < 0.05
    weights = model.deformation.weights(torch.stack([torch.zeros(8), torch.ones(8)]))
    assert weights[0][0].shape == (2, 16, 3 + 8)
    assert not torch.allclose(weights[0][0][0], weights[0][0][1])  # each shape its own deformation field


def test_every_loss_term_is_finite_and_reaches_networks_and_codes():
    model = small_model()
    rows = torch.tensor([0, 2])
    surface = torch.nn.functional.normalize(torch.randn(2, 40, 3), dim=-1) * 0.5
    terms = shape_losses(model, model.hyper_codes(rows), model.instance_codes(rows), surface_points=surface,
                         surface_normals=surface / 0.5, free_points=torch.rand(2, 20, 3) - 0.5,
                         free_sdf=torch.rand(2, 20) - 0.5, uniform_points=torch.rand(2, 20, 3) * 2 - 1,
                         weights_config=IsmmLossConfig(smoothness_points=16))
    expected = {"sdf", "off_surface", "normal", "eikonal", "hyper_code", "instance_code", "template_normal",
                "correction", "smoothness", "total"}
    assert set(terms) == expected and all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert model.template.output.weight.grad.abs().sum() > 0
    assert model.deformation.tensors[0].net[0].weight.grad.abs().sum() > 0
    assert model.hyper_codes.weight.grad[[0, 2]].abs().sum() > 0 and model.hyper_codes.weight.grad[1].abs().sum() == 0


class QuadraticDeformation(torch.nn.Module):
    """Δ(x) = (x², y², x·y·z): Laplacian (2, 2, 0)."""

    def forward(self, points, instance_code, weights):
        x, y, z = points.unbind(-1)
        return torch.stack([x * x, y * y, x * y * z], dim=-1), torch.zeros_like(x)


def test_deformation_laplacian_by_second_order_autograd():
    model = torch.nn.Module()
    model.deformation = QuadraticDeformation()
    laplacian = deformation_laplacian(model, torch.rand(1, 10, 3), None, None, None)
    assert torch.allclose(laplacian, torch.tensor([2.0, 2.0, 0.0]).expand(1, 10, 3), atol=1e-5)
