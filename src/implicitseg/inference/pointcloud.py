"""Dense point cloud from an unsigned distance field by projection along its gradient (NDF / NUDF spec).

Each step moves a point by ``p ← p − f(p) · ∇f(p) / ‖∇f(p)‖``; ``∇f`` comes from autograd with respect to the
query points. The encoder runs once per image; every batch of points reuses its feature grids.
All coordinates here are in the ROI's unit frame; distances in unit lengths.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from implicitseg.config import PointCloudConfig


class DistanceFieldModel(Protocol):
    """What projection needs of a model: features once per image, distances at points."""

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]: ...

    def decode(self, features: list[torch.Tensor], points_unit: torch.Tensor) -> torch.Tensor: ...


def _distance_and_step(model: DistanceFieldModel, features: list[torch.Tensor], points_unit: torch.Tensor,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (N,) at ``points_unit`` (N, 3) and the projected points (N, 3), both detached."""
    points = points_unit.detach().requires_grad_(True)
    with torch.enable_grad():
        distances = model.decode(features, points[None])[0]
        (gradient,) = torch.autograd.grad(distances.sum(), points)
    direction = gradient / gradient.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return distances.detach(), (points - distances[:, None] * direction).detach()


def _project(model: DistanceFieldModel, features: list[torch.Tensor], points_unit: torch.Tensor, steps: int,
             batch_points: int, filter_unit: float | None) -> torch.Tensor:
    """Run ``steps`` projection steps over ``points_unit`` in batches; with ``filter_unit``, points whose distance is
    ``>= filter_unit`` are dropped before each step."""
    kept_batches = []
    for start in range(0, len(points_unit), batch_points):
        points = points_unit[start : start + batch_points]
        for _ in range(steps):
            distances, projected = _distance_and_step(model, features, points)
            if filter_unit is not None:
                keep = distances < filter_unit
                projected = projected[keep]
            points = projected
        kept_batches.append(points)
    return torch.cat(kept_batches) if kept_batches else points_unit[:0]


def _distances(model: DistanceFieldModel, features: list[torch.Tensor], points_unit: torch.Tensor,
               batch_points: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.decode(features, points_unit[s : s + batch_points][None])[0]
                          for s in range(0, len(points_unit), batch_points)])


def dense_point_cloud(model: DistanceFieldModel, image: torch.Tensor, config: PointCloudConfig, *,
                      seed: int = 0) -> tuple[np.ndarray, dict]:
    """Project seeds onto the surface of the model's distance field for one image.

    ``image``: (1, 1, D, H, W) on the model's device, ``(Z, Y, X)`` order. Returns ``points_unit`` (M, 3) float32,
    unit frame, M ≤ ``config.n_dense``, and timings/counts. An empty result (the field never comes near zero)
    returns zero points: the caller decides whether that is an error.
    """
    device = image.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with torch.no_grad():
        features = model.encode(image)
    features = [grid.detach() for grid in features]
    timings["encoder_s"] = time.perf_counter() - start

    start = time.perf_counter()
    seeds = (torch.rand(config.n_seeds, 3, generator=generator) * 2 - 1).to(device)
    survivors = _project(model, features, seeds, config.steps, config.batch_points, config.filter_unit)
    n_survivors = len(survivors)
    if n_survivors == 0:
        timings["point_cloud_s"] = time.perf_counter() - start
        return np.zeros((0, 3), np.float32), {**timings, "n_seeds": config.n_seeds, "n_survivors": 0, "n_points": 0}

    picks = torch.randint(0, n_survivors, (config.n_dense,), generator=generator).to(device)
    noise = (torch.randn(config.n_dense, 3, generator=generator) * config.noise_unit).to(device)
    dense = _project(model, features, survivors[picks] + noise, config.steps, config.batch_points, None)
    final_distances = _distances(model, features, dense, config.batch_points)
    keep = (final_distances < config.keep_unit) & (dense.abs() <= 1.0).all(dim=1)
    points_unit = dense[keep].cpu().numpy().astype(np.float32)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings["point_cloud_s"] = time.perf_counter() - start
    return points_unit, {**timings, "n_seeds": config.n_seeds, "n_survivors": n_survivors, "n_points": len(points_unit)}
