"""ISMM's networks (spec ``ismm.md``, "Networks", after DIF-Net): an implicit signed-distance template ``T`` and a
per-shape deformation field ``D`` whose weights a hypernetwork makes from the shape's hyper code.

All points are in the canonical frame (PICCT: anchor-aligned, then scaled into the unit sphere), shapes (B, N, 3).
Shape ``i``'s signed distance (inside negative, canonical units) is ``SDF_i(x) = T(x + Δ_i(x)) + c_i(x)`` with
``(Δ_i, c_i) = D(x, a_i; weights = H(z_i))``: ``z_i`` the hyper code, ``a_i`` the instance code.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def siren_uniform_bound(in_features: int, first: bool, omega0: float) -> float:
    """SIREN's initialisation (Sitzmann et al. 2020): weights ~ U(-b, b) with b = 1/in for the first layer and
    √(6/in)/ω0 for the others, so pre-activations stay unit-spread through the sines."""
    return 1.0 / in_features if first else math.sqrt(6.0 / in_features) / omega0


class SineLayer(nn.Module):
    """``sin(ω0 (W x + b))`` with SIREN initialisation."""

    def __init__(self, in_features: int, out_features: int, *, first: bool, omega0: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.omega0 = float(omega0)
        bound = siren_uniform_bound(in_features, first, omega0)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * self.linear(values))


class TemplateField(nn.Module):
    """The template SDF ``T``: 3 → ``hidden`` × ``n_layers`` sine layers → 1, the last layer zero-initialised."""

    def __init__(self, hidden: int = 256, n_layers: int = 4, omega0: float = 30.0) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"the template needs at least one hidden layer, got {n_layers}")
        self.layers = nn.Sequential(*[SineLayer(3 if index == 0 else hidden, hidden, first=index == 0, omega0=omega0)
                                      for index in range(n_layers)])
        self.output = nn.Linear(hidden, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (..., 3) canonical → template SDF (...)."""
        return self.output(self.layers(points)).squeeze(-1)


class TensorHypernetwork(nn.Module):
    """One tensor of the deformation field (a weight (out, in) and its bias (out,)) made from a code: Linear → ReLU
    → Linear. The last layer's bias holds a SIREN initialisation of the tensor and its weights are small, so a code
    near zero gives a SIREN-initialised layer and codes move it from there."""

    def __init__(self, code_dim: int, hidden: int, in_features: int, out_features: int, *, first: bool,
                 last: bool, omega0: float) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        numel = out_features * in_features + out_features
        self.net = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, numel))
        output = self.net[-1]
        bound = siren_uniform_bound(in_features, first, omega0)
        with torch.no_grad():
            nn.init.kaiming_normal_(output.weight, nonlinearity="linear")
            output.weight.mul_(1e-2)
            initial = torch.empty(numel)
            initial[: out_features * in_features].uniform_(-bound, bound)
            initial[out_features * in_features:].uniform_(-1.0 / in_features, 1.0 / in_features)
            if last:  # the field starts as no deformation and no correction
                initial.mul_(1e-2)
            output.bias.copy_(initial)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``code`` (B, code_dim) → weight (B, out, in), bias (B, out)."""
        flat = self.net(code)
        split = self.out_features * self.in_features
        return flat[:, :split].view(-1, self.out_features, self.in_features), flat[:, split:]


class DeformationField(nn.Module):
    """``D``: a SIREN on ``[x, a]`` (3 + instance_code_dim) → ``hidden`` × ``n_layers`` → 4 = (Δ (3), c), each of
    its tensors made per shape by a :class:`TensorHypernetwork` of the hyper code."""

    def __init__(self, *, hyper_code_dim: int, instance_code_dim: int, hidden: int = 128, n_layers: int = 3,
                 hyper_hidden: int = 256, omega0: float = 30.0) -> None:
        super().__init__()
        widths = [3 + instance_code_dim] + [hidden] * n_layers + [4]
        self.omega0 = float(omega0)
        self.tensors = nn.ModuleList(
            TensorHypernetwork(hyper_code_dim, hyper_hidden, widths[index], widths[index + 1], first=index == 0,
                               last=index == len(widths) - 2, omega0=omega0)
            for index in range(len(widths) - 1))

    def weights(self, hyper_code: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's (weight (B, out, in), bias (B, out)) for hyper codes (B, hyper_code_dim)."""
        return [tensor(hyper_code) for tensor in self.tensors]

    def forward(self, points: torch.Tensor, instance_code: torch.Tensor,
                weights: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``points`` (B, N, 3), ``instance_code`` (B, instance_code_dim), ``weights`` of :meth:`weights` →
        displacement Δ (B, N, 3) and correction c (B, N), canonical units."""
        values = torch.cat([points, instance_code[:, None, :].expand(-1, points.shape[1], -1)], dim=-1)
        for index, (weight, bias) in enumerate(weights):
            values = torch.baddbmm(bias[:, None, :], values, weight.transpose(1, 2))
            if index < len(weights) - 1:
                values = torch.sin(self.omega0 * values)
        return values[..., :3], values[..., 3]


class IsmmModel(nn.Module):
    """What an ISMM run trains and saves: the template, the deformation field with its hypernetworks, and the
    hyper and instance code tables of the training shapes (initialised N(0, 0.01²))."""

    def __init__(self, n_shapes: int, *, template_hidden: int = 256, template_layers: int = 4,
                 deform_hidden: int = 128, deform_layers: int = 3, hyper_hidden: int = 256,
                 hyper_code_dim: int = 128, instance_code_dim: int = 128, omega0: float = 30.0) -> None:
        super().__init__()
        if n_shapes < 1:
            raise ValueError(f"an ISMM template needs at least one training shape, got {n_shapes}")
        self.template = TemplateField(template_hidden, template_layers, omega0)
        self.deformation = DeformationField(hyper_code_dim=hyper_code_dim, instance_code_dim=instance_code_dim,
                                            hidden=deform_hidden, n_layers=deform_layers, hyper_hidden=hyper_hidden,
                                            omega0=omega0)
        self.hyper_codes = nn.Embedding(int(n_shapes), hyper_code_dim)
        self.instance_codes = nn.Embedding(int(n_shapes), instance_code_dim)
        nn.init.normal_(self.hyper_codes.weight, std=0.01)
        nn.init.normal_(self.instance_codes.weight, std=0.01)

    def instance_sdf(self, points: torch.Tensor, hyper_code: torch.Tensor, instance_code: torch.Tensor,
                     weights: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Shape SDFs at ``points`` (B, N, 3) for codes (B, ·): ``sdf`` (B, N), ``displacement`` (B, N, 3),
        ``correction`` (B, N), ``template_points`` = x + Δ (B, N, 3) and ``template_sdf`` = T(x + Δ) (B, N).
        ``weights``: the deformation's per-shape weights when already made (:meth:`DeformationField.weights`)."""
        if weights is None:
            weights = self.deformation.weights(hyper_code)
        displacement, correction = self.deformation(points, instance_code, weights)
        template_points = points + displacement
        template_sdf = self.template(template_points)
        return {"sdf": template_sdf + correction, "displacement": displacement, "correction": correction,
                "template_points": template_points, "template_sdf": template_sdf}


def build_ismm_model(config) -> IsmmModel:
    """The network of an :class:`~implicitseg.config.IsmmConfig` (``shapes.n_shapes`` code rows)."""
    model = config.model
    return IsmmModel(config.shapes.n_shapes, template_hidden=model.template_hidden,
                     template_layers=model.template_layers, deform_hidden=model.deform_hidden,
                     deform_layers=model.deform_layers, hyper_hidden=model.hyper_hidden,
                     hyper_code_dim=model.hyper_code_dim, instance_code_dim=model.instance_code_dim,
                     omega0=model.omega0)
