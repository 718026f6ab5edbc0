"""Dense point cloud from an unsigned distance field by projection along its gradient (NDF / NUDF spec).

Each step moves a point by ``p ← p − f(p) · ∇f(p) / ‖∇f(p)‖``; ``∇f`` comes from autograd with respect to the
query points. The encoder runs once per image; every batch of points reuses its feature grids. Seeds are uniform
over the cube (the paper's), or drawn in the field's narrow band (:mod:`~implicitseg.inference.narrow_band`, forward
queries only), which starts them within a few mm of the surface so that fewer steps and no first round are needed.
All coordinates here are in the ROI's unit frame; distances in unit lengths.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import numpy as np
import torch

from implicitseg.config import BandConfig, PointCloudConfig
from implicitseg.config.nudf import SEEDINGS
from implicitseg.errors import InputError
from implicitseg.inference.narrow_band import FieldQuery, narrow_band



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
                      seed: int = 0, features: list[torch.Tensor] | None = None,
                      band: BandConfig | None = None, roi_size_mm: float | None = None) -> tuple[np.ndarray, dict]:
    """Project seeds onto the surface of the model's distance field for one image.

    ``image``: (1, 1, D, H, W) on the model's device, ``(Z, Y, X)`` order; ``features``: its encoding when the caller
    has it already (the encoder then does not run again). ``config.seeding``: ``uniform`` (the paper's, see
    :class:`~implicitseg.config.PointCloudConfig`) or ``band`` (seeds in the narrow band of ``band`` with its cells of
    ``config.band_cell_mm``, over a ROI of side ``roi_size_mm``). Returns ``points_unit`` (M, 3) float32, unit frame,
    M ≤ ``config.n_dense``, and timings/counts (``n_gradient_points`` / ``n_forward_points``: the decoder's queries
    with and without gradients). An empty result (the field never comes near zero) returns zero points: the caller
    decides whether that is an error.
    """
    if config.seeding not in SEEDINGS:
        raise InputError(f"point_cloud.seeding must be one of {list(SEEDINGS)}, got {config.seeding!r}")
    device = image.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if features is None:
        with torch.no_grad():
            features = model.encode(image)
    features = [grid.detach() for grid in features]
    timings["encoder_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if config.seeding == "band":
        if band is None or roi_size_mm is None:
            raise ValueError("band seeding needs the band's config and the ROI's size")
        query = FieldQuery(model.decode, features, config.batch_points)
        seed_band, _ = narrow_band(query, dataclasses.replace(band, cell_mm=config.band_cell_mm), roi_size_mm,
                                   with_gradients=False)
        counts = {"n_band_cells": len(seed_band.cells_ijk)}
        if len(seed_band.cells_ijk) == 0:
            timings["point_cloud_s"] = time.perf_counter() - start
            return np.zeros((0, 3), np.float32), {**timings, **counts, "n_points": 0,
                                                  "n_forward_points": query.n_forward, "n_gradient_points": 0}
        picks = torch.randint(0, len(seed_band.cells_ijk), (config.n_dense,), generator=generator).numpy()
        offsets = torch.rand(config.n_dense, 3, generator=generator).numpy()
        seeds = seed_band.lower + (seed_band.cells_ijk[picks] + offsets) * seed_band.cell_size
        dense = _project(model, features, torch.from_numpy(seeds.astype(np.float32)).to(device), config.band_steps,
                         config.batch_points, None)
        n_forward, n_gradient = query.n_forward + config.n_dense, config.n_dense * config.band_steps
    else:
        seeds = (torch.rand(config.n_seeds, 3, generator=generator) * 2 - 1).to(device)
        survivors = _project(model, features, seeds, config.steps, config.batch_points, config.filter_unit)
        counts = {"n_seeds": config.n_seeds, "n_survivors": len(survivors)}
        if len(survivors) == 0:
            timings["point_cloud_s"] = time.perf_counter() - start
            return np.zeros((0, 3), np.float32), {**timings, **counts, "n_points": 0, "n_forward_points": 0,
                                                  "n_gradient_points": config.n_seeds * config.steps}
        picks = torch.randint(0, len(survivors), (config.n_dense,), generator=generator).to(device)
        noise = (torch.randn(config.n_dense, 3, generator=generator) * config.noise_unit).to(device)
        dense = _project(model, features, survivors[picks] + noise, config.steps, config.batch_points, None)
        n_forward, n_gradient = config.n_dense, (config.n_seeds + config.n_dense) * config.steps
    final_distances = _distances(model, features, dense, config.batch_points)
    keep = (final_distances < config.keep_unit) & (dense.abs() <= 1.0).all(dim=1)
    points_unit = dense[keep].cpu().numpy().astype(np.float32)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings["point_cloud_s"] = time.perf_counter() - start
    return points_unit, {**timings, **counts, "n_points": len(points_unit), "n_forward_points": n_forward,
                         "n_gradient_points": n_gradient}
