"""Losses: what training minimises, and what ISMM's refinement minimises again over a new case's codes."""

from __future__ import annotations

import torch


def clamped_l1_loss(predicted_unit: torch.Tensor, target_unit: torch.Tensor, clamp_unit: float, *,
                    keep_gradient_above_clamp: bool = True) -> torch.Tensor:
    """NUDF loss: L1 between prediction and target, both clamped to at most ``clamp_unit``, summed over points and
    averaged over the batch.

    ``keep_gradient_above_clamp`` (fix): where the target is below the clamp but the prediction above it, the
    reference loss is flat (clamped prediction), so a network that once predicts above the clamp everywhere gets
    no gradient and never recovers (seen here: training "dies" at a constant loss). With the fix, such points
    cost ``prediction - target`` and pull the prediction down; everywhere else the loss is the reference's.

    ``predicted_unit``, ``target_unit``: (B, N) distances in unit lengths. Returns a scalar.
    """
    if predicted_unit.shape != target_unit.shape or predicted_unit.dim() != 2:
        raise ValueError(f"prediction and target must both be (B, N), got {tuple(predicted_unit.shape)} and "
                         f"{tuple(target_unit.shape)}")
    if not clamp_unit > 0:
        raise ValueError(f"clamp_unit must be > 0 (unit lengths), got {clamp_unit!r}")
    target_clamped = torch.clamp(target_unit, max=clamp_unit)
    difference = torch.clamp(predicted_unit, max=clamp_unit) - target_clamped
    if keep_gradient_above_clamp:
        difference = torch.where(target_unit < clamp_unit, predicted_unit - target_clamped, difference)
    return difference.abs().sum(dim=1).mean()


def _gradient(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """∂ Σ values / ∂ points, kept in the graph (for losses on derivatives)."""
    return torch.autograd.grad(values.sum(), points, create_graph=True)[0]


def _cosine_distance(gradients: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.nn.functional.cosine_similarity(gradients, normals, dim=-1, eps=1e-8)


def deformation_laplacian(model, points: torch.Tensor, hyper_code: torch.Tensor, instance_code: torch.Tensor,
                          weights: list) -> torch.Tensor:
    """Laplacian of the displacement Δ (B, N, 3) at ``points`` (B, N, 3), by second-order autograd."""
    points = points.detach().requires_grad_(True)
    displacement, _ = model.deformation(points, instance_code, weights)
    components = []
    for k in range(3):
        gradient = _gradient(displacement[..., k], points)
        components.append(sum(_gradient(gradient[..., j], points)[..., j] for j in range(3)))
    return torch.stack(components, dim=-1)


def shape_losses(model, hyper_code: torch.Tensor, instance_code: torch.Tensor, *, surface_points: torch.Tensor,
                 surface_normals: torch.Tensor, free_points: torch.Tensor, free_sdf: torch.Tensor,
                 uniform_points: torch.Tensor, weights_config) -> dict[str, torch.Tensor]:
    """ISMM's losses (spec "Losses") for B shapes (an :class:`~implicitseg.models.ismm.IsmmModel`, codes (B, ·)),
    canonical frame: ``surface_points`` / ``surface_normals`` (B, S, 3) (SDF 0), ``free_points`` (B, F, 3) with exact
    ``free_sdf`` (B, F) (F may be 0), ``uniform_points`` (B, U, 3) of unknown SDF. ``weights_config``: an
    :class:`~implicitseg.config.IsmmLossConfig`. Returns every weighted term and their sum under ``"total"``."""
    w = weights_config
    n_surface, n_free = surface_points.shape[1], free_points.shape[1]
    points = torch.cat([surface_points, free_points, uniform_points], dim=1).detach().requires_grad_(True)
    deformation_weights = model.deformation.weights(hyper_code)
    out = model.instance_sdf(points, hyper_code, instance_code, deformation_weights)
    sdf = out["sdf"]
    gradient = _gradient(sdf, points)
    template_gradient = torch.autograd.grad(out["template_sdf"].sum(), out["template_points"], create_graph=True)[0]

    known = sdf[:, : n_surface + n_free]
    target = torch.cat([torch.zeros_like(sdf[:, :n_surface]), free_sdf], dim=1)
    clamp = float(w.sdf_clamp)
    terms = {
        "sdf": w.sdf * (known.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean(),
        "off_surface": w.off_surface * torch.exp(-w.off_surface_sharpness * sdf[:, n_surface + n_free:].abs()).mean()
        if uniform_points.shape[1] else sdf.new_zeros(()),
        "normal": w.normal * _cosine_distance(gradient[:, :n_surface], surface_normals).mean(),
        "eikonal": w.eikonal * (gradient.norm(dim=-1) - 1.0).abs().mean(),
        "hyper_code": w.hyper_code * hyper_code.pow(2).mean(),
        "instance_code": w.instance_code * instance_code.pow(2).mean(),
        "template_normal": w.template_normal * _cosine_distance(template_gradient[:, :n_surface], surface_normals).mean(),
        "correction": w.correction * out["correction"].abs().mean(),
    }
    if w.smoothness > 0 and w.smoothness_points > 0:
        subset = points[:, : min(int(w.smoothness_points), points.shape[1])]
        laplacian = deformation_laplacian(model, subset, hyper_code, instance_code, deformation_weights)
        terms["smoothness"] = w.smoothness * laplacian.norm(dim=-1).mean()
    terms["total"] = sum(terms.values())
    return terms
