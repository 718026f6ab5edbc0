"""ISMM's template interaction module: a prior whose template is a known ellipsoid repairs a corrupted labelmap of
that ellipsoid (posed anywhere, on oblique, flipped and anisotropic grids), and the outputs land in world mm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import AFFINE_CASES, affine_from_geometry, rotation_matrix
from implicitseg.config import IsmmLossConfig, ShapesConfig, TimConfig
from implicitseg.data.corruption import corrupt_labelmap
from implicitseg.data.ismm import labelmap_surface
from implicitseg.errors import InputError
from implicitseg.evaluation.surface import point_to_mesh_distance_mm
from implicitseg.geometry.frames import Picct, SimilarityTransform, index_to_world
from implicitseg.inference.refinement import (FittedShape, Refinement, consistent_points, refine_surface, safeguard,
                                               zero_level_mesh)
from implicitseg.io.images import Volume
from implicitseg.io.meshes import Mesh
from implicitseg.methods import ismm
from implicitseg.methods.base import copy_preset
from implicitseg.models.ismm import IsmmModel

SEMI_AXES_CANONICAL = torch.tensor([0.8, 0.55, 0.4])
SEMI_AXES_MM = np.array([24.0, 16.5, 12.0])  # the template × 30 mm: global scale 1/30 per mm
SHAPE = (64, 60, 40)


class EllipsoidTemplate(torch.nn.Module):
    """A 'learned' template that is exactly the ellipsoid of :data:`SEMI_AXES_CANONICAL` (an approximate SDF with
    the right zero level set)."""

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.norm(points / SEMI_AXES_CANONICAL, dim=-1) - 1.0) * float(SEMI_AXES_CANONICAL.min())


def ellipsoid_prior() -> tuple[IsmmModel, object]:
    config = copy_preset(ismm.PRESETS, "ismm-demo")
    config.shapes = ShapesConfig(global_scale=1.0 / 30.0, n_shapes=2, cpd_points=500)
    config.tim = TimConfig(template_points=600, initial_points=800, fitting_points=3000, fit_steps=40,
                           learning_rate=5e-4, mesh_resolution=64)
    config.loss = IsmmLossConfig()
    model = IsmmModel(2, template_hidden=16, template_layers=1, deform_hidden=16, deform_layers=1, hyper_hidden=16,
                      hyper_code_dim=8, instance_code_dim=8)
    model.template = EllipsoidTemplate()
    return model.eval(), config


def posed_ellipsoid(affine_name: str, rotation_degrees: tuple[float, float, float]) -> tuple[Volume, np.ndarray,
                                                                                              np.ndarray]:
    """A labelmap of the prior's ellipsoid (in mm), rotated and placed at the grid's centre; its centre and
    rotation."""
    affine = AFFINE_CASES[affine_name]
    center = index_to_world(np.array(SHAPE)[None] / 2.0, affine)[0]
    rotation = rotation_matrix(rotation_degrees)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    local = (index_to_world(index, affine) - center) @ rotation
    inside = np.linalg.norm(local / SEMI_AXES_MM, axis=1) <= 1.0
    return Volume(inside.reshape(SHAPE).astype(np.uint8), affine), center, rotation


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_template_surface_is_the_zero_level_set_in_the_canonical_box():
    model, _ = ellipsoid_prior()
    mesh = zero_level_mesh(model, 48)
    radii = np.linalg.norm(mesh.vertices_canonical / SEMI_AXES_CANONICAL.numpy(), axis=1)
    assert np.allclose(radii, 1.0, atol=0.05)
    # outward normals: the faces' normals point away from the centre
    corners = mesh.vertices_canonical[mesh.faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert np.mean(np.sum(normals * corners.mean(axis=1), axis=1) > 0) > 0.99


class EllipsoidAndPocket(torch.nn.Module):
    """The ellipsoid of :data:`SEMI_AXES_CANONICAL` and, in the box's corner, a larger spurious region (the field
    negative where x > 0.9 or y > 0.9), as a field fitted to a few points can have far from them."""

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        pocket = 0.9 - torch.maximum(points[..., 0], points[..., 1])
        return torch.minimum(EllipsoidTemplate()(points), pocket)


def test_the_shape_is_the_component_the_trusted_points_lie_on_not_the_largest():
    model, _ = ellipsoid_prior()
    model.template = EllipsoidAndPocket()
    largest = zero_level_mesh(model, 48)
    assert np.linalg.norm(largest.vertices_canonical, axis=1).min() > 0.85  # the pocket has more faces
    on_ellipsoid = np.array([[0.8, 0.0, 0.0], [0.0, -0.55, 0.0], [0.0, 0.0, 0.4], [-0.8, 0.0, 0.0]])
    supported = zero_level_mesh(model, 48, support_points_canonical=on_ellipsoid)
    radii = np.linalg.norm(supported.vertices_canonical / SEMI_AXES_CANONICAL.numpy(), axis=1)
    assert np.allclose(radii, 1.0, atol=0.05)


@pytest.mark.parametrize("affine_name", ["oblique", "flipped_oblique", "anisotropic"])
def test_refinement_repairs_a_corrupted_labelmap_in_world_space(affine_name):
    torch.manual_seed(0)
    model, config = ellipsoid_prior()
    truth, center, rotation = posed_ellipsoid(affine_name, (25, -40, 70))
    corrupted = corrupt_labelmap(truth, np.random.default_rng(3), ("holes", "blobs", "staircase")).labelmap
    before = dice(corrupted.array > 0, truth.array > 0)
    refinement = refine_surface(model, config, labelmap_surface(corrupted, 0, "corrupted"),
                                (truth.shape, truth.affine_lps), label_value=1, seed=0)
    after = dice(refinement.labelmap.array > 0, truth.array > 0)
    assert refinement.labelmap.shape == truth.shape and np.allclose(refinement.labelmap.affine_lps, truth.affine_lps)
    assert after > before + 0.03 and after > 0.93, (before, after)
    # the mesh is in world mm on the true surface; so are the trusted points it was fitted to
    truth_mesh = labelmap_surface(truth, 0, "truth")
    assert np.median(point_to_mesh_distance_mm(refinement.mesh.vertices_world_mm, truth_mesh)) < 1.0
    assert np.median(point_to_mesh_distance_mm(refinement.trusted_points_world_mm, truth_mesh)) < 1.0
    # PICCT of the new case: world → canonical puts the ellipsoid on the template (scale 1/30 per mm)
    canonical = refinement.picct.world_to_canonical(refinement.mesh.vertices_world_mm)
    assert np.allclose(refinement.picct.canonical_to_world(canonical), refinement.mesh.vertices_world_mm, atol=1e-4)
    assert np.median(np.abs(np.linalg.norm(canonical / SEMI_AXES_CANONICAL.numpy(), axis=1) - 1.0)) < 0.05


def test_trusted_points_avoid_spurious_blobs():
    model, config = ellipsoid_prior()
    truth, center, _ = posed_ellipsoid("oblique", (0, 30, 0))
    corrupted = corrupt_labelmap(truth, np.random.default_rng(5), ("blobs",))
    blob_centers = np.array(corrupted.applied["blobs"]["centers_mm"])
    refinement = refine_surface(model, config, labelmap_surface(corrupted.labelmap, 0, "corrupted"),
                                (truth.shape, truth.affine_lps), seed=1)
    trusted = refinement.trusted_points_world_mm
    near_blob = np.linalg.norm(trusted[:, None] - blob_centers[None], axis=-1).min(axis=1) < \
        corrupted.applied["blobs"]["radius_mm"] + 1.0
    assert near_blob.mean() < 0.01



@pytest.mark.parametrize("kinds", [("missing_part",), ("holes",)])
def test_a_trimmed_alignment_and_the_template_rule_do_not_trust_a_cut_face_or_a_holes_wall(kinds):
    # CPD matches every point, the cut face's too, and misplaces the damaged shape; the paper's rule (posterior mass)
    # then trusts the cut face as often as the true surface. The trimmed registration on the template's field puts
    # the intact part on the template, and the template rule trusts the points nearest it.
    model, config = ellipsoid_prior()
    config.tim.trim_rounds = 0
    truth, _, _ = posed_ellipsoid("flipped_oblique", (20, -30, 50))
    corrupted = corrupt_labelmap(truth, np.random.default_rng(2), kinds).labelmap
    surface, grid = labelmap_surface(corrupted, 0, "corrupted"), (truth.shape, truth.affine_lps)
    truth_mesh = labelmap_surface(truth, 0, "truth")
    wrong_share, misplaced_mm = {}, {}
    for rule, align_trim_fraction in (("posterior", 0.0), ("template", 0.75)):
        config.tim.trust_rule, config.tim.align_trim_fraction = rule, align_trim_fraction
        refinement = refine_surface(model, config, surface, grid, seed=0)
        assert refinement.counts["alignment_corrected"] == (align_trim_fraction > 0)
        trusted = refinement.trusted_points_world_mm
        assert abs(len(trusted) / config.tim.fitting_points - config.tim.trusted_fraction) < 0.1
        wrong_share[rule] = float(np.mean(point_to_mesh_distance_mm(trusted, truth_mesh) > 1.5))
        # the true surface in the case's canonical frame: distance (mm) to the template's ellipsoid
        canonical = refinement.picct.world_to_canonical(truth_mesh.vertices_world_mm)
        misplaced_mm[rule] = float(np.median(np.abs(np.linalg.norm(canonical / SEMI_AXES_CANONICAL.numpy(), axis=1)
                                                    - 1.0)) * 12.0)  # about mm: the shortest semi-axis is 12 mm
    assert misplaced_mm["template"] < 0.5, misplaced_mm
    assert wrong_share["template"] < 0.02 and wrong_share["template"] < wrong_share["posterior"], wrong_share
    config.tim.align_trim_fraction = 1.5
    with pytest.raises(InputError, match="align_trim_fraction"):
        refine_surface(model, config, surface, grid)


class EllipsoidShape(torch.nn.Module):
    """A 'fitted shape' whose SDF is the template ellipsoid's (no deformation)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.deformation = type("NoDeformation", (), {"weights": staticmethod(lambda code: [])})()

    def instance_sdf(self, points, hyper_code, instance_code, weights):
        return {"sdf": EllipsoidTemplate()(points * self.scale)}


def test_consistent_points_are_the_initial_points_near_the_fitted_surface_in_mm_and_facing_its_way():
    # world → canonical: rotated, scaled 0.5 by the case's PICCT and 1/30 by the global scale: 1 canonical unit = 60 mm
    rotation = rotation_matrix((10, 20, 30))
    picct = Picct(SimilarityTransform(0.5, rotation, np.array([1.0, -2.0, 3.0])), 1.0 / 30.0)
    fitted = FittedShape(EllipsoidShape(), torch.zeros((1, 1)), torch.zeros((1, 1)), [])
    on_pole_canonical = np.array([[0.0, 0.0, 0.4], [0.0, 0.0, -0.4]])  # the SDF's gradient there is ±z, |∇| = 1
    normals_canonical = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    offsets_mm = np.array([0.0, 0.8, 1.2, -0.8, -1.2])  # along the outward normal
    points, normals = [], []
    for point, normal in zip(on_pole_canonical, normals_canonical):
        normal_world = normal @ rotation  # canonical direction → world (the inverse rotation)
        for offset in offsets_mm:
            points.append(picct.canonical_to_world(point[None])[0] + offset * normal_world)
            normals.append(normal_world)
    points, normals = np.array(points), np.array(normals)
    _, config = ellipsoid_prior()
    config.tim.trim_within_mm = 1.0
    explained = consistent_points(fitted, picct, (points, normals), config)
    expected = np.tile(np.abs(offsets_mm) <= 1.0, 2)
    assert np.array_equal(explained, expected), explained
    # a wall facing inwards (a hole's) is not explained, however near it lies
    assert not consistent_points(fitted, picct, (points, -normals), config).any()
    config.tim.trim_within_mm = 1.5
    assert consistent_points(fitted, picct, (points, normals), config).all()


def test_a_trimmed_fit_trusts_more_of_the_initial_surface_but_not_the_blobs():
    model, config = ellipsoid_prior()
    config.tim.trim_rounds, config.tim.trim_steps, config.tim.trim_within_mm = 1, 20, 1.0
    truth, _, _ = posed_ellipsoid("flipped_oblique", (0, 30, 0))
    corrupted = corrupt_labelmap(truth, np.random.default_rng(5), ("blobs",))
    blob_centers = np.array(corrupted.applied["blobs"]["centers_mm"])
    refinement = refine_surface(model, config, labelmap_surface(corrupted.labelmap, 0, "corrupted"),
                                (truth.shape, truth.affine_lps), seed=1)
    first, trimmed = refinement.counts["n_fitting_points_per_round"]
    assert trimmed > 2 * first and trimmed == refinement.counts["n_fitting_points"]
    assert refinement.counts["fit_steps"] == config.tim.fit_steps + config.tim.trim_steps
    trusted = refinement.trusted_points_world_mm
    near_blob = np.linalg.norm(trusted[:, None] - blob_centers[None], axis=-1).min(axis=1) < \
        corrupted.applied["blobs"]["radius_mm"] + 1.0
    assert near_blob.mean() < 0.01
    assert dice(refinement.labelmap.array > 0, truth.array > 0) > 0.93
    config.tim.trim_within_mm = 0.0
    with pytest.raises(InputError, match="trim_within_mm"):
        refine_surface(model, config, labelmap_surface(corrupted.labelmap, 0, "corrupted"),
                       (truth.shape, truth.affine_lps))

def test_refinement_refuses_a_surface_without_faces():
    model, config = ellipsoid_prior()
    with pytest.raises(InputError, match="no faces"):
        refine_surface(model, config, Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64)),
                       ((4, 4, 4), np.eye(4)))


def _ball(shape: tuple[int, int, int], affine: np.ndarray, center: np.ndarray, radius_mm: float) -> np.ndarray:
    index = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    return (np.linalg.norm(index_to_world(index, affine) - center, axis=1) <= radius_mm).reshape(shape)


def _sphere_refinement(affine: np.ndarray, center: np.ndarray, radius_mm: float,
                       trusted_offset_mm: float) -> Refinement:
    """A refinement whose fitted shape is a ball of ``radius_mm`` (its labelmap on a 40³ grid and its surface) and
    whose trusted points lie ``trusted_offset_mm`` outside that surface."""
    shape = (40, 40, 40)
    directions = np.random.default_rng(0).normal(size=(20_000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    mesh = Mesh(center + radius_mm * directions, np.zeros((0, 3), dtype=np.int64))
    labelmap = Volume(_ball(shape, affine, center, radius_mm).astype(np.uint8), affine)
    trusted = center + (radius_mm + trusted_offset_mm) * directions[:500]
    return Refinement(mesh, labelmap, None, trusted, {}, {})


@pytest.mark.parametrize("affine_name", ["oblique", "anisotropic"])
def test_the_safeguard_keeps_the_initial_boundary_and_removes_gross_errors(affine_name):
    affine = AFFINE_CASES[affine_name]
    center = index_to_world(np.array([[20.0, 20.0, 20.0]]), affine)[0]
    refinement = _sphere_refinement(affine, center, 10.0, 0.0)
    shape = refinement.labelmap.shape
    # the initial: a ball 0.6 mm larger than the fit (within the prior's accuracy: kept), a spurious blob 6 mm
    # beyond the surface and a hole at the centre (gross errors: the fit's label wins)
    blob_center = center + np.array([16.5, 0.0, 0.0])
    initial = _ball(shape, affine, center, 10.6) | _ball(shape, affine, blob_center, 2.5)
    initial &= ~_ball(shape, affine, center, 4.0)
    _, config = ellipsoid_prior()
    guard = safeguard(refinement, Volume(initial.astype(np.uint8), affine), config)
    result = guard.labelmap.array > 0
    assert guard.decision == "guarded" and guard.n_voxels_kept > 0
    assert np.array_equal(result, _ball(shape, affine, center, 10.6))
    assert 0.0 < guard.overruled_fraction < 0.4  # only the blob's and the hole's boundaries are far from the fit
    config.tim.keep_within_mm, config.tim.removal = 0.0, "anywhere"  # the paper's: the fitted shape everywhere
    assert np.array_equal(safeguard(refinement, Volume(initial.astype(np.uint8), affine), config).labelmap.array,
                          refinement.labelmap.array)


def test_the_safeguard_keeps_the_initial_when_the_fit_misses_the_trusted_points():
    affine = AFFINE_CASES["oblique"]
    center = index_to_world(np.array([[20.0, 20.0, 20.0]]), affine)[0]
    refinement = _sphere_refinement(affine, center, 10.0, 2.5)  # the fit lies 2.5 mm off what it was fitted to
    initial = Volume(_ball(refinement.labelmap.shape, affine, center, 12.5).astype(np.uint8), affine)
    _, config = ellipsoid_prior()
    guard = safeguard(refinement, initial, config)
    assert guard.decision == "initial" and abs(guard.fit_residual_mm - 2.5) < 0.05
    assert np.array_equal(guard.labelmap.array > 0, initial.array > 0) and "max_fit_residual_mm" in guard.reason
    config.tim.max_fit_residual_mm = 3.0
    assert safeguard(refinement, initial, config).decision == "guarded"


def test_the_safeguard_keeps_the_initial_when_the_fit_would_replace_most_of_it():
    affine = AFFINE_CASES["anisotropic"]
    center = index_to_world(np.array([[20.0, 20.0, 20.0]]), affine)[0]
    # the fit explains its trusted points (residual 0) but sits 3 mm beside the initial: it drifted, not repaired
    refinement = _sphere_refinement(affine, center + np.array([3.0, 0.0, 0.0]), 10.0, 0.0)
    initial = Volume(_ball(refinement.labelmap.shape, affine, center, 10.0).astype(np.uint8), affine)
    _, config = ellipsoid_prior()
    guard = safeguard(refinement, initial, config)
    assert guard.decision == "guarded" and guard.overruled_fraction > 0.6  # the default (1) never falls back
    config.tim.max_overruled_fraction = 0.5
    guard = safeguard(refinement, initial, config)
    assert guard.decision == "initial" and "max_overruled_fraction" in guard.reason
    assert np.array_equal(guard.labelmap.array > 0, initial.array > 0)
    assert guard.to_json()["overruled_fraction"] == guard.overruled_fraction


def test_the_safeguard_keeps_the_initial_when_the_fit_explains_too_little_of_it():
    affine = AFFINE_CASES["flipped_oblique"]
    center = index_to_world(np.array([[20.0, 20.0, 20.0]]), affine)[0]
    refinement = _sphere_refinement(affine, center, 10.0, 0.0)
    refinement.counts.update(n_fitting_points=300, n_dense_points=1000)  # the last fit used 30 % of the surface
    initial = Volume(_ball(refinement.labelmap.shape, affine, center, 10.3).astype(np.uint8), affine)
    _, config = ellipsoid_prior()
    guard = safeguard(refinement, initial, config)
    assert guard.decision == "guarded" and guard.trusted_share == pytest.approx(0.3)  # the default (0) never
    config.tim.min_trusted_share = 0.5
    guard = safeguard(refinement, initial, config)
    assert guard.decision == "initial" and "min_trusted_share" in guard.reason
    assert np.array_equal(guard.labelmap.array > 0, initial.array > 0)
    assert guard.to_json()["trusted_share"] == pytest.approx(0.3)
    config.tim.min_trusted_share = 0.25
    assert safeguard(refinement, initial, config).decision == "guarded"


@pytest.mark.parametrize("affine_name", ["flipped_oblique", "anisotropic"])
def test_the_islands_removal_keeps_a_part_attached_to_the_shape_and_removes_a_spurious_island(affine_name):
    affine = AFFINE_CASES[affine_name]
    center = index_to_world(np.array([[20.0, 20.0, 20.0]]), affine)[0]
    refinement = _sphere_refinement(affine, center, 10.0, 0.0)
    shape = refinement.labelmap.shape
    # the initial: the fit's ball, a lobe attached to it that the fit does not reach (up to 5 mm beyond its
    # surface), a spurious blob clear of it and a hole at the centre
    lobe = _ball(shape, affine, center + np.array([0.0, 11.0, 0.0]), 4.0)
    blob = _ball(shape, affine, center + np.array([16.5, 0.0, 0.0]), 2.5)
    initial = (_ball(shape, affine, center, 10.0) | lobe | blob) & ~_ball(shape, affine, center, 4.0)
    _, config = ellipsoid_prior()
    assert config.tim.removal == "islands"  # the default
    config.tim.removal = "anywhere"  # the paper's
    anywhere = safeguard(refinement, Volume(initial.astype(np.uint8), affine), config)
    config.tim.removal = "islands"
    islands = safeguard(refinement, Volume(initial.astype(np.uint8), affine), config)
    fitted = refinement.labelmap.array > 0
    lobe_beyond_band = lobe & ~_ball(shape, affine, center, 11.5)
    assert lobe_beyond_band.sum() > 20
    assert not (anywhere.labelmap.array > 0)[lobe_beyond_band].any()  # the paper's rule carves the lobe away
    result = islands.labelmap.array > 0
    assert result[lobe].all() and not result[blob].any() and result[fitted].all()  # lobe kept, blob gone, hole filled
    assert islands.n_voxels_kept > anywhere.n_voxels_kept and "tim.removal islands" in islands.reason
    config.tim.keep_within_mm = 0.0  # the fitted shape everywhere, but still only whole islands removed
    assert np.array_equal(safeguard(refinement, Volume(initial.astype(np.uint8), affine), config).labelmap.array > 0,
                          fitted | (initial & ~blob))


def test_fitted_to_the_largest_surface_part_a_far_spurious_component_neither_moves_the_alignment_nor_stays():
    # a CNN's far false component (here a 11 mm ball, 28 % of the shape's volume, 30 mm clear of it) drags CPD's
    # centring and scale when every part of the initial surface is aligned; aligned and fitted on the largest part,
    # the fit lands on the shape and the safeguard removes the component
    shape = (74, 43, 35)
    affine = affine_from_geometry([-20.0, 13.0, 7.5], [1.2, 1.2, 1.6], rotation_matrix((10, -20, 35)))
    world = index_to_world(np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3),
                           affine)
    center = index_to_world(np.array([[20.0, 21.5, 17.5]]), affine)[0]
    truth = (np.linalg.norm((world - center) @ rotation_matrix((0, 30, 0)) / SEMI_AXES_MM, axis=1) <= 1.0)
    blob = np.linalg.norm(world - index_to_world(np.array([[61.0, 21.5, 17.5]]), affine)[0], axis=1) <= 11.0
    truth, blob = truth.reshape(shape), blob.reshape(shape)
    initial = Volume((truth | blob).astype(np.uint8), affine)
    results = {}
    for parts in ("all", "largest"):
        torch.manual_seed(0)
        model, config = ellipsoid_prior()
        config.tim.surface_parts, config.tim.removal, config.tim.trim_steps = parts, "islands", 20
        config.tim.initial_points, config.tim.template_points = 400, 300  # CPD: 4× fewer pairs than the preset
        refinement = refine_surface(model, config, labelmap_surface(initial, 0, "initial"), (shape, affine), seed=0)
        results[parts] = (refinement, safeguard(refinement, initial, config))
    before = dice(truth | blob, truth)
    every_part, largest = results["all"][1].labelmap.array > 0, results["largest"][1].labelmap.array > 0
    assert dice(every_part, truth) < before + 0.01 and every_part[blob].all()  # nothing repaired
    assert results["largest"][1].decision == "guarded" and results["largest"][1].fit_residual_mm < 0.6
    assert dice(largest, truth) > 0.98 and not largest[blob].any()
    assert results["largest"][0].counts["surface_area_left_out_mm2"] > 4 * np.pi * 11.0**2 * 0.8
    assert results["all"][0].counts["surface_area_left_out_mm2"] == 0.0
