"""NUDF: presets and the parts the pipeline uses (NUDF spec, ``shared/specs/nudf.md``)."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from implicitseg.config import (
    AugmentConfig,
    DecoderConfig,
    EncoderConfig,
    MeshingConfig,
    NudfConfig,
    PointCloudConfig,
    RoiConfig,
    SurfaceSamplingConfig,
    TrainConfig,
)
from implicitseg.config.nudf import MESHERS
from implicitseg.data.datasets import SurfaceSampleDataset
from implicitseg.data.prepare import prepare_dataset
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.inference.narrow_band import FieldQuery, narrow_band
from implicitseg.inference.pointcloud import dense_point_cloud
from implicitseg.io.meshes import Mesh
from implicitseg.meshing.components import boundary_loop_lengths, boundary_loops, select_components
from implicitseg.meshing.poisson import close_small_holes, max_hole_edges, mesh_from_point_cloud
from implicitseg.meshing.udf_mc import extract_open_surface, snap_to_minimum
from implicitseg.methods.base import Method, RoiPrediction, copy_preset, preset_chooser
from implicitseg.training.module import NudfLightningModule
from implicitseg.training.run import TrainingRecipe


def _preset(name: str, res: int, train: TrainConfig | None = None, **encoder: object) -> NudfConfig:
    return NudfConfig(preset=name, roi=RoiConfig(size_mm=70.0, res=res), encoder=EncoderConfig(**encoder),
                      train=train or TrainConfig())


PRESETS: dict[str, NudfConfig] = {
    # The reference code's ShapeNet{64,128,256,512}Vox encoders; parameter counts in tests/models.
    # 20 % uniform samples instead of the paper's 10 %: on the 2-core CPU the field is clean (chamfer_symmetric
    # ≤ 0.5 mm) after 6 minutes instead of 9 (BENCHMARKS.md, the learning curves); measured at 64³ only
    "nudf64": _preset("nudf64", 64, train=TrainConfig(sample_fractions=(0.4, 0.4, 0.2)), stem_channels=32,
        level_channels=(64, 128, 128), first_pool=2, dropout=0.0, displacement_unit=0.0722),
    "nudf128": _preset("nudf128", 128, stem_channels=16, level_channels=(32, 64, 128, 128),
        first_pool=2, dropout=0.0, displacement_unit=0.0361),
    "nudf256": _preset("nudf256", 256, stem_channels=8, level_channels=(16, 32, 64, 128, 128),
        first_pool=2, dropout=0.2, displacement_unit=0.05),
    "nudf512": _preset("nudf512", 512, stem_channels=4, level_channels=(16, 32, 64, 128, 128),
        first_pool=4, dropout=0.2, displacement_unit=0.05),
    # A small CPU preset for the demo and tests: 32³ input, fewer samples and points. Not the paper's.
    "nudf-demo": NudfConfig(
        preset="nudf-demo",
        roi=RoiConfig(size_mm=70.0, res=32),
        sampling=SurfaceSamplingConfig(n_uniform=5_000, n_near_surface=40_000, sd_rays=16),
        encoder=EncoderConfig(stem_channels=16, level_channels=(32, 64, 64), first_pool=2, dropout=0.0,
                              displacement_unit=0.0722),
        decoder=DecoderConfig(hidden=(128, 128, 128)),
        # translations in voxels: 5 of 2.26 mm here is about the paper's share of the ROI; more uniform samples
        # teach a briefly trained net that walls outside the target (the atrium) are far from it
        train=TrainConfig(points_per_case=4_000, sample_fractions=(0.4, 0.4, 0.2), batch_size=4, learning_rate=5e-4,
                          val_points_per_case=4_000, early_stopping_patience=1000,
                          augment=AugmentConfig(translate_voxels=5.0),
                          # bf16-mixed is measured to learn the same at 64³ only; the demo's figures are float32's
                          precision="32-true"),
        point_cloud=PointCloudConfig(n_seeds=50_000, n_dense=100_000, batch_points=50_000),
        meshing=MeshingConfig(n_subsample=5_000, poisson_depth=7),
    ),
}


preset_config = partial(copy_preset, PRESETS)
"""``preset_config(name)``: a fresh copy of preset ``name``."""
preset_for_res = preset_chooser(PRESETS, "nudf", "NUDF")
"""``preset_for_res(res)``: the preset for an input resolution (64 when none is given)."""


def predict_roi(model: torch.nn.Module, config: NudfConfig, roi: Roi, roi_image_zyx: np.ndarray, *,
                device: torch.device, seed: int = 0) -> RoiPrediction:
    """Mesh and points for one ROI image (res³, (Z, Y, X)), world LPS mm; the encoder runs once.

    ``config.meshing.method``: ``udf-mc`` extracts the surface from the field's narrow band (points.ply: the band's
    corners within half a cell of the surface, moved onto it by one Newton step along the gradient, at most a cell);
    ``poisson`` is the paper's recipe (dense point cloud by gradient projection → screened Poisson → trimming). Both
    keep the surfaces ``config.meshing.components`` selects; what they dropped is in ``RoiPrediction.meshing``.
    """
    if config.meshing.method not in MESHERS:
        raise InputError(f"meshing.method must be one of {list(MESHERS)}, got {config.meshing.method!r}")
    image = torch.from_numpy(np.ascontiguousarray(roi_image_zyx, dtype=np.float32))[None, None].to(device)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        features = [grid.detach() for grid in model.encode(image)]
    encoder_s = time.perf_counter() - start
    mm_per_unit = roi.half_size_mm
    query = FieldQuery(model.decode, features, config.meshing.band.batch_points)

    def distance_mm_at(points_world_mm: np.ndarray) -> np.ndarray:
        return query.distances(roi.world_to_unit(points_world_mm)).astype(np.float64) * mm_per_unit

    centre = np.round(roi.center_world_mm, 1).tolist()
    if config.meshing.method == "poisson":
        points_unit, cloud_stats = dense_point_cloud(model, image, config.point_cloud, seed=seed, features=features,
                                                     band=config.meshing.band, roi_size_mm=roi.size_mm)
        if len(points_unit) < 100:
            raise InputError(f"the model found no surface in the ROI centred at {centre} mm ({len(points_unit)} "
                             f"points came near its zero level): check the ROI centre and the image")
        points_world_mm = roi.unit_to_world(points_unit)
        mesh, mesh_stats = mesh_from_point_cloud(points_world_mm, config.meshing, distance_mm_at=distance_mm_at)
        timings = {"encoder_s": encoder_s, "point_cloud_s": cloud_stats["point_cloud_s"],
                   "meshing_s": float(mesh_stats["total_s"])}
        counts = {key: int(value) for key, value in cloud_stats.items() if key.startswith("n_")}
        counts["n_forward_points"] += query.n_forward
        meshing = {"method": "poisson", "seeding": config.point_cloud.seeding,
                   "components": mesh_stats["components_final"],
                   "components_dropped_before": [mesh_stats["components_after_poisson"],
                                                 mesh_stats["components_after_trim"]]}
        return RoiPrediction(timings, counts, mesh=mesh, points_world_mm=points_world_mm, meshing=meshing)

    band, band_stats = narrow_band(query, config.meshing.band, roi.size_mm)
    vertices_unit, faces, vertex_distance_unit, surface_stats = extract_open_surface(
        band, query.distances, config.meshing.band.max_face_distance_mm / mm_per_unit)
    if config.meshing.band.snap_samples and len(faces):
        tic = time.perf_counter()
        vertices_unit, vertex_distance_unit = snap_to_minimum(vertices_unit, faces, query.distances,
                                                              band.cell_size / 2, config.meshing.band.snap_samples)
        surface_stats["snap_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    vertices_world_mm, faces, selection = select_components(
        roi.unit_to_world(vertices_unit), faces, config.meshing.components, vertex_distance_unit * mm_per_unit)
    if len(faces) == 0:
        raise InputError(f"the model found no surface in the ROI centred at {centre} mm (its distance field comes "
                         f"no closer than {config.meshing.band.max_face_distance_mm} mm to zero on a connected "
                         f"surface): check the ROI centre and the image")
    # holes where the field stays above the face distance for a few cells are not open boundaries: close those
    # smaller than close_holes_mm across, as the paper's recipe does after trimming (MeshLab splits non-manifold
    # vertices first, which can open a loop of its own: the record counts the loops before and after)
    loops_before = boundary_loops(faces)
    vertices_world_mm, faces = close_small_holes(
        vertices_world_mm, faces, max_hole_edges(vertices_world_mm, faces, config.meshing.close_holes_mm))
    loop_lengths_mm = boundary_loop_lengths(vertices_world_mm, faces)
    surface_s = time.perf_counter() - tic
    near = band.distances <= band.cell_size / 2
    slope = np.maximum(np.linalg.norm(band.gradients[near], axis=1, keepdims=True), 1e-12)
    step = np.minimum(band.distances[near, None] / slope, band.cell_size)  # Newton's step, at most a cell
    points_unit = band.corner_points()[near] - step * band.gradients[near] / slope
    timings = {"encoder_s": encoder_s, "band_s": band_stats["band_s"],
               "surface_s": sum(v for k, v in surface_stats.items() if k.endswith("_s")) + surface_s}
    timings["meshing_s"] = timings["band_s"] + timings["surface_s"]
    counts = {"n_forward_points": query.n_forward, "n_gradient_points": query.n_gradient,
              "n_band_cells": band_stats["n_band_cells"], "n_band_corners": band_stats["n_band_corners"],
              "n_points": int(near.sum()),
              **{key: int(value) for key, value in surface_stats.items() if key.startswith("n_")}}
    meshing = {"method": "udf-mc", "cell_mm": band_stats["cell_mm"], "finest_cells": band_stats["finest_cells"],
               "max_face_distance_mm": config.meshing.band.max_face_distance_mm,
               "snap_samples": config.meshing.band.snap_samples, "components": selection.to_json(),
               "close_holes_mm": config.meshing.close_holes_mm, "n_loops_before_closing": loops_before,
               "boundary_loops_mm": np.round(loop_lengths_mm, 1).tolist()}
    return RoiPrediction(timings, counts, mesh=Mesh(vertices_world_mm, faces),
                         points_world_mm=roi.unit_to_world(points_unit), meshing=meshing)


RECIPE = TrainingRecipe(method="nudf", module_class=NudfLightningModule, dataset=SurfaceSampleDataset.from_config)

METHOD = Method(
    name="nudf",
    description="neural unsigned distance field: conv encoder + point-wise decoder; open surfaces, finer than voxels",
    config_class=NudfConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=prepare_dataset,
    recipe=RECIPE,
    predict_roi=predict_roi,
)
