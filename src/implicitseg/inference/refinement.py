"""ISMM's template interaction module (spec ``ismm.md``, "Template interaction module"): refine an initial
segmentation's surface with the learned shape prior.

1. PICCT of the new shape: Coherent Point Drift of the initial surface (world LPS mm) onto the template surface
   (canonical / global scale: the anchor's mm frame), then × the global scale → canonical.
2. The same registration's posterior: per registered initial surface point, the total mass the template's points
   assign to it; the top ``trusted_fraction`` are trusted (where the initial result agrees with the shape prior),
   and so are the denser fitting points (``tim.fitting_points`` on the initial surface) nearest to them. When a
   part is missing, this rule trusts the points of the cut face as often as the true surface's (the template's
   points of that part have no partner but them), and the refined shape keeps the cut
   (``benchmarks/ismm_cut_face.py`` measures it). ``tim.trust_rule`` ``template`` (not the paper's) trusts instead
   the fitting points nearest the aligned template's surface and facing its way.
3. Fresh codes, template frozen: the codes and the hypernetwork are fitted to the trusted points (surface, with
   the initial surface's normals) and a quarter as many uniform points, with the training losses. Then
   (``tim.trim_rounds``, 2; not in the paper, 0 turns it off) the fit continues on every fitting point it explains.
4. Marching cubes of the fitted SDF over the canonical box, the component the trusted points lie on → world
   (inverse PICCT); the labelmap on the output grid is the fitted SDF's sign at each voxel centre, the connected
   component that holds that mesh (a field fitted to a few points can have spurious pockets far from them).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from implicitseg.config import IsmmConfig
from implicitseg.config.ismm import REMOVALS, SURFACE_PARTS
from implicitseg.errors import InputError
from implicitseg.fitting.losses import shape_losses
from implicitseg.geometry.alignment import coherent_point_drift, symmetric_trimmed_distance
from implicitseg.geometry.frames import (CANONICAL_BOX, CanonicalMesh, Picct, SimilarityTransform,
                                        canonical_to_anchor_mm, index_to_world, world_to_index)
from implicitseg.geometry.sampling import surface_samples
from implicitseg.io.images import Volume, resample_volume
from implicitseg.io.meshes import Mesh
from implicitseg.meshing.components import largest_component, supported_component
from implicitseg.models.batching import point_batches
from implicitseg.models.ismm import IsmmModel


@torch.no_grad()
def sdf_of(model: IsmmModel, points_canonical: np.ndarray, hyper_code: torch.Tensor | None,
           instance_code: torch.Tensor | None, *, batch_points: int = 65_536) -> np.ndarray:
    """(N,) SDF at canonical points (N, 3): the shape of the codes (1, ·), or the template's when both are None."""
    device = next(model.parameters()).device
    weights = None if hyper_code is None else model.deformation.weights(hyper_code)
    values = np.zeros(len(points_canonical), np.float32)
    for rows, chunk in point_batches(points_canonical, batch_points, device):
        if hyper_code is None:
            values[rows] = model.template(chunk[None])[0].cpu().numpy()
        else:
            values[rows] = model.instance_sdf(chunk[None], hyper_code, instance_code, weights)["sdf"][0].cpu().numpy()
    return values


def zero_level_mesh(model: IsmmModel, resolution: int, hyper_code: torch.Tensor | None = None,
                    instance_code: torch.Tensor | None = None, *,
                    support_points_canonical: np.ndarray | None = None) -> CanonicalMesh:
    """The zero level set (canonical frame, outward normals) of the template (no codes) or of a shape, by marching
    cubes on a ``resolution``³ grid over the canonical box: the component most of ``support_points_canonical``
    (K, 3) lie nearest to (a field fitted to a few points can have spurious pockets far from them), else the
    largest."""
    axis = np.linspace(-CANONICAL_BOX, CANONICAL_BOX, int(resolution))
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    values = sdf_of(model, grid, hyper_code, instance_code).reshape((int(resolution),) * 3)
    if not (values.min() < 0 < values.max()):
        raise InputError("the implicit shape has no zero level set in the canonical box (is the run trained?)")
    vertices_index, faces, _, _ = marching_cubes(values, level=0.0, allow_degenerate=False)
    step = 2.0 * CANONICAL_BOX / (int(resolution) - 1)
    # skimage winds faces towards higher values (outside, for an SDF): the right-hand normals already point out
    vertices, faces = supported_component(vertices_index * step - CANONICAL_BOX, faces.astype(np.int64),
                                          support_points_canonical)
    return CanonicalMesh(vertices, faces)


@dataclass
class Refinement:
    """A refined shape: ``mesh`` (world LPS mm), ``labelmap`` on the output grid, the case's ``picct``, the
    ``trusted_points_world_mm`` (K, 3) the prior was fitted to, timings (s) and counts."""

    mesh: Mesh
    labelmap: Volume
    picct: Picct
    trusted_points_world_mm: np.ndarray
    timings: dict[str, float]
    counts: dict[str, object]


def _fit_codes(model: IsmmModel, config: IsmmConfig, points: torch.Tensor, normals: torch.Tensor,
               generator: torch.Generator, steps: int, start: "FittedShape | None" = None,
               ) -> tuple[IsmmModel, torch.Tensor, torch.Tensor, list[float]]:
    """The deformation field and codes fitted to the surface ``points`` / ``normals`` (1, K, 3) for ``steps`` Adam
    steps, the template frozen: from fresh codes N(0, 0.01²) and a copy of the trained deformation field, or from
    ``start`` (a fit to continue; its model is copied). Returns the fitted model, the codes and the loss every 50
    steps."""
    fitted = copy.deepcopy(model if start is None else start.model)
    fitted.template.requires_grad_(False)
    fitted.hyper_codes.requires_grad_(False)
    fitted.instance_codes.requires_grad_(False)
    fitted.deformation.requires_grad_(True)
    device = points.device
    if start is None:
        hyper_code = (torch.randn((1, model.hyper_codes.embedding_dim), generator=generator) * 0.01).to(device)
        instance_code = (torch.randn((1, model.instance_codes.embedding_dim), generator=generator) * 0.01).to(device)
    else:
        hyper_code, instance_code = start.hyper_code.clone(), start.instance_code.clone()
    hyper_code.requires_grad_(True)
    instance_code.requires_grad_(True)
    optimiser = torch.optim.Adam([hyper_code, instance_code, *fitted.deformation.parameters()],
                                 lr=config.tim.learning_rate)
    n_uniform = max(1, points.shape[1] // 4)
    empty = points.new_zeros((1, 0, 3))
    curve = []
    for step in range(int(steps)):
        uniform = (torch.rand((1, n_uniform, 3), generator=generator) * 2.0 - 1.0).to(device)
        terms = shape_losses(fitted, hyper_code, instance_code, surface_points=points, surface_normals=normals,
                             free_points=empty, free_sdf=empty[..., 0], uniform_points=uniform,
                             weights_config=config.loss)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        if step % 50 == 0 or step == steps - 1:
            curve.append(float(terms["total"].detach()))
    fitted.eval()
    return fitted, hyper_code.detach(), instance_code.detach(), curve


def fitted_labelmap(fitted: "FittedShape", picct: Picct, mesh_world_mm: Mesh,
                    output_grid: tuple[tuple[int, int, int], np.ndarray], label_value: int) -> Volume:
    """``label_value`` where the fitted SDF < 0 at the output grid's voxel centres (only those in the refined mesh's
    bounding box, plus a voxel, are evaluated): the connected component that holds the refined mesh (the most of its
    vertices have their nearest voxel in it or next to it)."""
    shape, affine = output_grid
    corners_index = world_to_index(mesh_world_mm.vertices_world_mm, affine)
    low = np.clip(np.floor(corners_index.min(axis=0)).astype(int) - 1, 0, np.array(shape) - 1)
    high = np.clip(np.ceil(corners_index.max(axis=0)).astype(int) + 2, 1, np.array(shape))
    labels = np.zeros(shape, dtype=np.uint8)
    if np.any(high <= low):
        return Volume(labels, affine)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    index = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), axis=-1)
    canonical = picct.world_to_canonical(index_to_world(index.reshape(-1, 3).astype(np.float64), affine))
    inside = (sdf_of(fitted.model, canonical, fitted.hyper_code, fitted.instance_code) < 0).reshape(index.shape[:3])
    components, n_components = ndimage.label(inside)
    if n_components > 1:
        near = ndimage.grey_dilation(components, size=3)  # a surface vertex's nearest voxel may be just outside
        vertex_voxels = np.clip(np.rint(corners_index).astype(int) - low, 0, np.array(inside.shape) - 1)
        votes = np.bincount(near[tuple(vertex_voxels.T)], minlength=n_components + 1)
        votes[0] = 0
        if votes.max() == 0:  # the mesh is finer than the grid: fall back on size
            votes = np.bincount(components.ravel())
            votes[0] = 0
        inside = components == int(np.argmax(votes))
    labels[box] = np.where(inside, label_value, 0).astype(np.uint8)
    return Volume(labels, affine)


@dataclass
class Alignment:
    """Stage 1–2 of a refinement: the case's ``picct`` (world LPS mm → canonical), the ``initial_points_world_mm``
    (N, 3) drawn on the initial surface, the indices ``used`` (K,) of those the registration used and the
    ``posterior_mass`` (K,) the template's points assign to each (higher = more trusted)."""

    picct: Picct
    initial_points_world_mm: np.ndarray
    used: np.ndarray
    posterior_mass: np.ndarray


def template_points_mm(model: IsmmModel, config: IsmmConfig, rng: np.random.Generator) -> np.ndarray:
    """(M, 3) points area-uniform on the template's surface, in the anchor's mm frame (canonical / global scale)."""
    template = zero_level_mesh(model, max(32, int(config.tim.mesh_resolution) // 2))
    points = surface_samples(template.vertices_canonical, template.faces, config.tim.template_points, rng)[0]
    return canonical_to_anchor_mm(points, config.shapes.global_scale)


def align_initial(initial_points_world_mm: np.ndarray, template_mm: np.ndarray, config: IsmmConfig,
                  seed: int) -> Alignment:
    """CPD of the initial surface's points (N, 3, world LPS mm) onto the template's (M, 3, anchor mm) and the trust
    score of each initial point it used (:func:`~implicitseg.geometry.alignment.coherent_point_drift`)."""
    tim, shapes = config.tim, config.shapes
    registration = coherent_point_drift(initial_points_world_mm, template_mm,
                                        max_points=max(tim.initial_points, tim.template_points),
                                        iterations=shapes.cpd_iterations, tolerance=shapes.cpd_tolerance,
                                        outlier_weight=tim.outlier_weight, start=tim.alignment_start, seed=seed)
    return Alignment(Picct(registration.transform, shapes.global_scale), initial_points_world_mm,
                     registration.moving_indices, registration.moving_posterior_mass)


def trimmed_alignment(model: IsmmModel, alignment: Alignment, template_mm: np.ndarray,
                      config: IsmmConfig) -> Alignment:
    """The alignment refined on the template (not the paper's; ``tim.align_trim_fraction`` > 0): a similarity
    correction about the registered points' centroid, ``tim.align_steps`` Adam steps minimising the mean distance
    (anchor mm, |template SDF| / global scale) to the template's surface of the nearest ``tim.align_trim_fraction``
    of the initial's registered points (a trimmed registration: a cut face, a hole's wall or a blob, mm from the
    template, stops pulling the pose once it is not among the nearest; CPD matches every point). The kept share
    falls from every point to that fraction over the first half of the steps (a fixed share from the start can
    lock onto a wrong subset). The correction is kept only if it brings the two clouds closer both ways (the
    symmetric trimmed distance to the template's points ``template_mm`` (M, 3) at the same fraction: a shape
    shrunk into one part of the template is near it one way only); else CPD's pose stays."""
    tim, global_scale = config.tim, float(config.shapes.global_scale)
    device = next(model.parameters()).device
    used_world_mm = alignment.initial_points_world_mm[alignment.used]
    registered_mm = alignment.picct.similarity.apply(used_world_mm)
    centre_mm = registered_mm.mean(axis=0)
    centred = torch.as_tensor(registered_mm - centre_mm, dtype=torch.float32, device=device)
    rotation_vector = torch.zeros(3, device=device, requires_grad=True)
    log_scale = torch.zeros((), device=device, requires_grad=True)
    shift_mm = torch.zeros(3, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([{"params": [rotation_vector, log_scale], "lr": 0.005},
                                  {"params": [shift_mm], "lr": 0.05}])
    steps = int(tim.align_steps)
    kept_share = np.interp(np.arange(steps), [0, max(steps // 2, 1)], [1.0, float(tim.align_trim_fraction)])

    def rotation_of(vector: torch.Tensor) -> torch.Tensor:
        skew = torch.zeros((3, 3), device=device)
        skew[0, 1], skew[0, 2], skew[1, 2] = -vector[2], vector[1], -vector[0]
        return torch.matrix_exp(skew - skew.T)

    def trimmed_mean(distances: torch.Tensor, share: float) -> torch.Tensor:
        return torch.topk(distances, max(4, int(round(share * len(distances)))), largest=False).values.mean()

    trainable = [parameter.requires_grad for parameter in model.template.parameters()]
    model.template.requires_grad_(False)
    try:
        for step in range(steps):
            moved_mm = torch.exp(log_scale) * centred @ rotation_of(rotation_vector).T + shift_mm
            to_template_mm = model.template((moved_mm * global_scale)[None])[0].abs() / global_scale
            loss = trimmed_mean(to_template_mm, kept_share[step])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    finally:
        for parameter, flag in zip(model.template.parameters(), trainable):
            parameter.requires_grad_(flag)
    with torch.no_grad():
        scale, rotation = float(torch.exp(log_scale)), rotation_of(rotation_vector).cpu().numpy().astype(np.float64)
        shift = shift_mm.cpu().numpy().astype(np.float64)
    # y' = s R (y − c) + c + t with y = s0 R0 x + t0 (anchor mm)
    before = alignment.picct.similarity
    corrected = SimilarityTransform(scale * before.scale, rotation @ before.rotation,
                                    scale * rotation @ (before.translation - centre_mm) + centre_mm + shift)
    fraction = float(tim.align_trim_fraction)
    if (symmetric_trimmed_distance(corrected.apply(used_world_mm), template_mm, fraction)
            >= symmetric_trimmed_distance(registered_mm, template_mm, fraction)):
        return alignment
    return Alignment(Picct(corrected, alignment.picct.global_scale), alignment.initial_points_world_mm,
                     alignment.used, alignment.posterior_mass)


@dataclass
class TrustedPoints:
    """Stage 2 of a refinement: the initial surface's points the prior is fitted to, ``points_world_mm`` (T, 3) and
    their outward unit ``normals_world`` (T, 3), and how many points the first fit's rule trusted
    (``tim.trust_rule`` ``posterior``: registered points; ``template``: fitting points)."""

    points_world_mm: np.ndarray
    normals_world: np.ndarray
    n_trusted_registered: int


def trusted_points(dense_world_mm: tuple[np.ndarray, np.ndarray], alignment: Alignment,
                   config: IsmmConfig) -> TrustedPoints:
    """The top ``tim.trusted_fraction`` registered points by posterior mass, and about one fitting point per trusted
    point: of the ``dense_world_mm`` points (T, 3) and outward normals (T, 3) on the initial surface (``tim.
    fitting_points`` of them), those whose nearest registered point is trusted."""
    used = alignment.used
    n_trusted = max(4, int(round(config.tim.trusted_fraction * len(used))))
    trusted_sample = used[np.argsort(-alignment.posterior_mass, kind="stable")[:n_trusted]]
    dense_points, dense_normals = dense_world_mm
    registered = np.zeros(len(alignment.initial_points_world_mm), dtype=bool)
    registered[trusted_sample] = True
    nearest = cKDTree(alignment.initial_points_world_mm[used]).query(dense_points)[1]
    keep = registered[used[nearest]]
    return TrustedPoints(dense_points[keep], dense_normals[keep], n_trusted)


def level_distance_mm(sdf_canonical: Callable[[torch.Tensor], torch.Tensor], picct: Picct,
                      dense_world_mm: tuple[np.ndarray, np.ndarray], device: torch.device, *,
                      batch_points: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """For the initial surface's ``dense_world_mm`` points (T, 3) and outward normals (T, 3): (T,) their distance
    (world mm) to the zero level of ``sdf_canonical`` (canonical points (N, 3) → SDF (N,)), |SDF| in canonical units
    / (global scale × the case's PICCT scale), and (T,) bool whether each faces the same way (its normal at less than
    90° from the SDF's gradient; a hole's wall faces inwards)."""
    points, normals = dense_world_mm
    canonical = torch.as_tensor(picct.world_to_canonical(points), dtype=torch.float32, device=device)
    normals_canonical = torch.as_tensor(normals @ picct.similarity.rotation.T, dtype=torch.float32, device=device)
    mm_per_unit = 1.0 / (picct.global_scale * picct.similarity.scale)
    distance_mm = np.zeros(len(points), dtype=np.float64)
    facing = np.zeros(len(points), dtype=bool)
    with torch.enable_grad():
        for start in range(0, len(points), batch_points):
            rows = slice(start, start + batch_points)
            chunk = canonical[rows].clone().requires_grad_(True)
            sdf = sdf_canonical(chunk)
            gradient = torch.autograd.grad(sdf.sum(), chunk)[0]
            facing[rows] = ((gradient * normals_canonical[rows]).sum(dim=-1) > 0).cpu().numpy()
            distance_mm[rows] = sdf.detach().abs().cpu().numpy() * mm_per_unit
    return distance_mm, facing


def consistent_points(fitted: "FittedShape", picct: Picct, dense_world_mm: tuple[np.ndarray, np.ndarray],
                      config: IsmmConfig) -> np.ndarray:
    """(T,) bool: which of the initial surface's ``dense_world_mm`` points (T, 3) and outward normals (T, 3) the
    fitted shape explains: within ``tim.trim_within_mm`` of its zero level and facing its way
    (:func:`level_distance_mm`)."""
    with torch.no_grad():
        weights = fitted.model.deformation.weights(fitted.hyper_code)

    def sdf(chunk: torch.Tensor) -> torch.Tensor:
        return fitted.model.instance_sdf(chunk[None], fitted.hyper_code, fitted.instance_code, weights)["sdf"][0]

    distance_mm, facing = level_distance_mm(sdf, picct, dense_world_mm, next(fitted.model.parameters()).device)
    return facing & (distance_mm <= config.tim.trim_within_mm)


def template_trusted_points(model: IsmmModel, dense_world_mm: tuple[np.ndarray, np.ndarray], alignment: Alignment,
                            config: IsmmConfig) -> TrustedPoints:
    """``tim.trust_rule`` ``template``: the ``tim.trusted_fraction`` of the initial surface's ``dense_world_mm``
    points (T, 3) nearest the aligned template's zero level (world mm), those facing its way first
    (:func:`level_distance_mm`). A cut face, a hole's wall and a blob lie inside, inside and outside the template,
    mm from its surface, where the posterior rule trusts them as often as the true surface."""
    def sdf(chunk: torch.Tensor) -> torch.Tensor:
        return model.template(chunk[None])[0]

    distance_mm, facing = level_distance_mm(sdf, alignment.picct, dense_world_mm, next(model.parameters()).device)
    n_trusted = max(4, int(round(config.tim.trusted_fraction * len(distance_mm))))
    order = np.lexsort((distance_mm, ~facing))[:n_trusted]  # facing first, then nearest
    keep = np.zeros(len(distance_mm), dtype=bool)
    keep[order] = True
    return TrustedPoints(dense_world_mm[0][keep], dense_world_mm[1][keep], n_trusted)


@dataclass
class FittedShape:
    """Stage 3 of a refinement: the ``model`` with its deformation fitted, the fitted codes (1, ·) and the loss
    every 50 steps."""

    model: IsmmModel
    hyper_code: torch.Tensor
    instance_code: torch.Tensor
    loss_curve: list[float]


def fit_shape(model: IsmmModel, config: IsmmConfig, picct: Picct, trusted: TrustedPoints, seed: int, *,
              steps: int | None = None, start: FittedShape | None = None) -> FittedShape:
    """The prior fitted to the trusted points (mapped to the canonical frame by ``picct``) for ``steps`` (default
    ``tim.fit_steps``), from fresh codes or continuing ``start``."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(int(config.tim.seed) + int(seed) + (0 if start is None else 1))
    points = torch.as_tensor(picct.world_to_canonical(trusted.points_world_mm), dtype=torch.float32, device=device)
    normals = torch.as_tensor(trusted.normals_world @ picct.similarity.rotation.T, dtype=torch.float32,
                              device=device)
    steps = int(config.tim.fit_steps if steps is None else steps)
    fitted = FittedShape(*_fit_codes(model, config, points[None], normals[None], generator, steps, start))
    if start is not None:
        fitted.loss_curve = [*start.loss_curve, *fitted.loss_curve]
    return fitted


def fitted_mesh_world_mm(fitted: FittedShape, config: IsmmConfig, picct: Picct, trusted: TrustedPoints) -> Mesh:
    """Stage 4: the fitted shape's zero level set (the component the trusted points lie on) in world LPS mm."""
    mesh_canonical = zero_level_mesh(fitted.model, config.tim.mesh_resolution, fitted.hyper_code,
                                     fitted.instance_code,
                                     support_points_canonical=picct.world_to_canonical(trusted.points_world_mm))
    return Mesh(picct.canonical_to_world(mesh_canonical.vertices_canonical), mesh_canonical.faces)


def refine_surface(model: IsmmModel, config: IsmmConfig, initial_world_mm: Mesh,
                   output_grid: tuple[tuple[int, int, int], np.ndarray], *, label_value: int = 1,
                   seed: int = 0) -> Refinement:
    """Refine the initial surface (world LPS mm, closed) with the run's prior; the labelmap on ``output_grid``
    (shape, index → world affine) carries ``label_value``. With ``tim.trim_rounds`` > 0, after the first fit the
    trusted points become, round by round, every fitting point the fit explains (:func:`consistent_points`) and the
    fit continues ``tim.trim_steps`` steps on them (a trimmed fit: the rest of the initial surface is no longer left
    unconstrained, its wrong parts still are)."""
    tim = config.tim
    if not 0.0 < tim.trusted_fraction <= 1.0:
        raise InputError(f"tim.trusted_fraction must be in (0, 1], got {tim.trusted_fraction}")
    if tim.trim_rounds < 0 or (tim.trim_rounds > 0 and not (tim.trim_within_mm > 0 and tim.trim_steps > 0)):
        raise InputError(f"tim.trim_rounds must be >= 0, and with rounds tim.trim_within_mm and tim.trim_steps > 0; "
                         f"got {tim.trim_rounds}, {tim.trim_within_mm}, {tim.trim_steps}")
    if not (0.0 <= tim.align_trim_fraction <= 1.0 and tim.align_steps > 0):
        raise InputError(f"tim.align_trim_fraction must be in [0, 1] and tim.align_steps > 0, got "
                         f"{tim.align_trim_fraction}, {tim.align_steps}")
    if len(initial_world_mm.faces) == 0 or not initial_world_mm.face_areas_mm2.sum() > 0:
        raise InputError("the initial segmentation's surface has no faces")
    if tim.surface_parts not in SURFACE_PARTS:
        raise InputError(f"tim.surface_parts must be one of {', '.join(SURFACE_PARTS)}, got {tim.surface_parts!r}")
    timings: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    template_mm = template_points_mm(model, config, rng)
    surface = (Mesh(*largest_component(initial_world_mm.vertices_world_mm, initial_world_mm.faces))
               if tim.surface_parts == "largest" else initial_world_mm)
    initial_points = surface_samples(surface.vertices_world_mm, surface.faces, tim.initial_points, rng)[0]
    timings["template_s"] = time.perf_counter() - start

    start = time.perf_counter()
    cpd_alignment = alignment = align_initial(initial_points, template_mm, config, seed)
    if tim.align_trim_fraction > 0:
        alignment = trimmed_alignment(model, cpd_alignment, template_mm, config)
    dense = surface_samples(surface.vertices_world_mm, surface.faces, int(tim.fitting_points), rng)
    trusted = (template_trusted_points(model, dense, alignment, config) if tim.trust_rule == "template"
               else trusted_points(dense, alignment, config))
    timings["alignment_s"] = time.perf_counter() - start

    start = time.perf_counter()
    fitted = fit_shape(model, config, alignment.picct, trusted, seed)
    fitting_points_per_round = [int(len(trusted.points_world_mm))]
    for _ in range(int(tim.trim_rounds)):
        explained = consistent_points(fitted, alignment.picct, dense, config)
        if explained.sum() < 4:  # the fit explains (almost) nothing: keep what it was fitted to
            break
        trusted = TrustedPoints(dense[0][explained], dense[1][explained], trusted.n_trusted_registered)
        fitted = fit_shape(model, config, alignment.picct, trusted, seed, steps=tim.trim_steps, start=fitted)
        fitting_points_per_round.append(int(explained.sum()))
    timings["fitting_s"] = time.perf_counter() - start

    start = time.perf_counter()
    mesh = fitted_mesh_world_mm(fitted, config, alignment.picct, trusted)
    timings["meshing_s"] = time.perf_counter() - start
    start = time.perf_counter()
    labelmap = fitted_labelmap(fitted, alignment.picct, mesh, output_grid, label_value)
    timings["voxelise_s"] = time.perf_counter() - start
    counts = {"n_registered_points": int(len(alignment.used)), "n_trusted_registered": trusted.n_trusted_registered,
              "n_fitting_points": int(len(trusted.points_world_mm)),
              "n_fitting_points_per_round": fitting_points_per_round, "n_dense_points": int(len(dense[0])),
              "surface_area_left_out_mm2": float(initial_world_mm.face_areas_mm2.sum() - surface.face_areas_mm2.sum()),
              "fit_steps": int(tim.fit_steps) + int(tim.trim_steps) * (len(fitting_points_per_round) - 1),
              "fit_loss_curve": fitted.loss_curve,
              "alignment_scale": alignment.picct.similarity.scale,
              "alignment_corrected": alignment is not cpd_alignment,
              "n_vertices": int(len(mesh.vertices_world_mm)), "n_faces": int(len(mesh.faces))}
    return Refinement(mesh, labelmap, alignment.picct, trusted.points_world_mm, timings, counts)


@dataclass
class Safeguard:
    """What a refinement may change (:func:`safeguard`): ``decision`` ``refined`` (the fitted shape everywhere),
    ``guarded`` (the fitted shape where it is far from the initial's boundary) or ``initial`` (the fit is not
    trusted), the ``labelmap`` that decision gives, the consistency scores ``fit_residual_mm`` (mean distance of the
    trusted points to the fitted surface), ``overruled_fraction`` (share of the initial's boundary voxels farther
    than ``tim.keep_within_mm`` from the fitted surface: what the refinement would overrule) and ``trusted_share``
    (share of the initial surface's fitting points the fit was last fitted to: with ``tim.trim_rounds``, those the
    fit explains), how many voxels kept the initial's label against the fit, and the ``reason`` in words."""

    decision: str
    labelmap: Volume
    fit_residual_mm: float
    overruled_fraction: float
    trusted_share: float
    n_voxels_kept: int
    reason: str

    def to_json(self) -> dict:
        return {"decision": self.decision, "fit_residual_mm": self.fit_residual_mm,
                "overruled_fraction": self.overruled_fraction, "trusted_share": self.trusted_share,
                "n_voxels_kept_from_initial": self.n_voxels_kept, "reason": self.reason}


def safeguard(refinement: Refinement, initial_labelmap: Volume, config: IsmmConfig) -> Safeguard:
    """The refined labelmap, kept from harm without ground truth. If the fitted surface lies on average more than
    ``tim.max_fit_residual_mm`` from the trusted points, the prior did not explain the initial's trustworthy part and
    the case keeps ``initial_labelmap`` (on the refined labelmap's grid, nearest); so does a case where more than
    ``tim.max_overruled_fraction`` of the initial's boundary lies farther than ``tim.keep_within_mm`` from the fitted
    surface (the fit would replace most of the initial, not repair it), and one whose fit was last fitted to less
    than ``tim.min_trusted_share`` of the initial surface (with ``tim.trim_rounds``: the prior explains too little of
    it). Otherwise a voxel where the two
    disagree within ``tim.keep_within_mm`` of the fitted surface keeps the initial's label: the prior overrules the
    initial on gross errors (holes, blobs, a missing part, all far from its surface), not on where within its own
    accuracy the boundary lies."""
    tim = config.tim
    refined = refinement.labelmap
    initial = initial_labelmap
    if initial.shape != refined.shape or not np.allclose(initial.affine_lps, refined.affine_lps, atol=1e-4):
        initial = resample_volume(initial, refined.shape, refined.affine_lps, interpolation="nearest")
    initial_array = np.asarray(initial.array > 0)
    label_value = int(refined.array.max()) if refined.array.any() else 1
    trusted = refinement.trusted_points_world_mm
    surface = cKDTree(refinement.mesh.vertices_world_mm)
    residual = float(surface.query(trusted)[0].mean()) if len(trusted) else np.inf
    boundary = np.argwhere(initial_array & ~ndimage.binary_erosion(initial_array))
    overruled = (float(np.mean(surface.query(index_to_world(boundary.astype(np.float64), refined.affine_lps),
                                             distance_upper_bound=tim.keep_within_mm)[0] > tim.keep_within_mm))
                 if len(boundary) else 1.0)
    counts = refinement.counts
    share = counts["n_fitting_points"] / counts["n_dense_points"] if counts.get("n_dense_points") else float("nan")
    as_initial = Volume(np.where(initial_array, label_value, 0).astype(np.uint8), refined.affine_lps)
    scores = (residual, overruled, share)
    if tim.max_fit_residual_mm > 0 and not residual <= tim.max_fit_residual_mm:
        return Safeguard("initial", as_initial, *scores, int(initial_array.sum()),
                         f"the fitted surface lies {residual:.2f} mm from the trusted points on average (more than "
                         f"tim.max_fit_residual_mm {tim.max_fit_residual_mm:g}): the initial segmentation is kept")
    if overruled > tim.max_overruled_fraction:
        return Safeguard("initial", as_initial, *scores, int(initial_array.sum()),
                         f"{overruled:.0%} of the initial's boundary lies farther than {tim.keep_within_mm:g} mm from "
                         f"the fitted surface (more than tim.max_overruled_fraction {tim.max_overruled_fraction:g}): "
                         f"the initial segmentation is kept")
    if tim.min_trusted_share > 0 and not share >= tim.min_trusted_share:
        return Safeguard("initial", as_initial, *scores, int(initial_array.sum()),
                         f"the fit was last fitted to {share:.0%} of the initial surface (less than "
                         f"tim.min_trusted_share {tim.min_trusted_share:g}): the initial segmentation is kept")
    refined_array = np.asarray(refined.array > 0)
    if tim.keep_within_mm <= 0:
        result, n_restored = restrict_removal(initial_array, refined_array, tim.removal)
        return Safeguard("refined", Volume(np.where(result, label_value, 0).astype(np.uint8), refined.affine_lps),
                         *scores, n_restored, "tim.keep_within_mm is 0: the fitted shape everywhere"
                         + _restored_reason(n_restored))
    differ = np.argwhere(initial_array != refined_array)
    near = np.zeros(len(differ), dtype=bool)
    if len(differ):
        centres = index_to_world(differ.astype(np.float64), refined.affine_lps)
        near = surface.query(centres, distance_upper_bound=tim.keep_within_mm)[0] <= tim.keep_within_mm
    guarded = refined_array.copy()
    kept = differ[near]
    guarded[tuple(kept.T)] = initial_array[tuple(kept.T)]
    guarded, n_restored = restrict_removal(initial_array, guarded, tim.removal)
    return Safeguard("guarded", Volume(np.where(guarded, label_value, 0).astype(np.uint8), refined.affine_lps),
                     *scores, int(len(kept)) + n_restored,
                     f"fitted surface {residual:.2f} mm from the trusted points on average; {len(kept)} voxels within "
                     f"{tim.keep_within_mm:g} mm of it keep the initial's label" + _restored_reason(n_restored))


def restrict_removal(initial: np.ndarray, result: np.ndarray, removal: str) -> tuple[np.ndarray, int]:
    """``result`` (bool, the initial's grid) with what ``tim.removal`` forbids it to remove of ``initial`` (bool)
    restored, and how many voxels that restored. ``anywhere``: nothing; ``islands``: every voxel of a
    26-connected component of ``initial`` that ``result`` overlaps (only whole spurious islands are removed)."""
    if removal not in REMOVALS:
        raise InputError(f"tim.removal must be one of {', '.join(REMOVALS)}, got {removal!r}")
    if removal == "anywhere":
        return result, 0
    components, _ = ndimage.label(initial, structure=np.ones((3, 3, 3), dtype=bool))
    overlapped = np.unique(components[initial & result])
    restored = initial & ~result & np.isin(components, overlapped[overlapped > 0])
    return result | restored, int(restored.sum())


def _restored_reason(n_restored: int) -> str:
    return (f"; {n_restored} voxels of the initial's components the fit overlaps stay (tim.removal islands)"
            if n_restored else "")
