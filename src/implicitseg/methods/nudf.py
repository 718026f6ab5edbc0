"""NUDF: presets and the parts the pipeline uses (NUDF spec, ``shared/specs/nudf.md``)."""

from __future__ import annotations

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
from implicitseg.data.datasets import SurfaceSampleDataset
from implicitseg.data.prepare import prepare_dataset
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.inference.pointcloud import dense_point_cloud
from implicitseg.meshing.poisson import mesh_from_point_cloud
from implicitseg.methods import Method, copy_preset, preset_chooser
from implicitseg.methods.pipeline import RoiPrediction
from implicitseg.training.module import NudfLightningModule
from implicitseg.training.run import TrainingRecipe, load_model, train_run


def _preset(name: str, res: int, encoder: EncoderConfig) -> NudfConfig:
    return NudfConfig(preset=name, roi=RoiConfig(size_mm=70.0, res=res), encoder=encoder)


PRESETS: dict[str, NudfConfig] = {
    # The reference code's ShapeNet{64,128,256,512}Vox encoders; parameter counts in tests/models.
    "nudf64": _preset("nudf64", 64, EncoderConfig(32, (64, 128, 128), 2, 0.0, 0.0722)),
    "nudf128": _preset("nudf128", 128, EncoderConfig(16, (32, 64, 128, 128), 2, 0.0, 0.0361)),
    "nudf256": _preset("nudf256", 256, EncoderConfig(8, (16, 32, 64, 128, 128), 2, 0.2, 0.05)),
    "nudf512": _preset("nudf512", 512, EncoderConfig(4, (16, 32, 64, 128, 128), 4, 0.2, 0.05)),
    # A small CPU preset for the demo and tests: 32³ input, fewer samples and points. Not the paper's.
    "nudf-demo": NudfConfig(
        preset="nudf-demo",
        roi=RoiConfig(size_mm=70.0, res=32),
        sampling=SurfaceSamplingConfig(n_uniform=5_000, n_near_surface=40_000, sd_rays=16),
        encoder=EncoderConfig(16, (32, 64, 64), 2, 0.0, 0.0722),
        decoder=DecoderConfig(hidden=(128, 128, 128)),
        # translations in voxels: 5 of 2.26 mm here is about the paper's share of the ROI; more uniform samples
        # teach a briefly trained net that walls outside the target (the atrium) are far from it
        train=TrainConfig(points_per_case=4_000, sample_fractions=(0.4, 0.4, 0.2), batch_size=4, learning_rate=5e-4,
                          val_points_per_case=4_000, early_stopping_patience=1000,
                          augment=AugmentConfig(translate_voxels=5.0)),
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
    """Dense point cloud (encoder once, gradient projection) and mesh for one ROI image (res³, (Z, Y, X))."""
    image = torch.from_numpy(np.ascontiguousarray(roi_image_zyx, dtype=np.float32))[None, None].to(device)
    model.eval()
    points_unit, cloud_stats = dense_point_cloud(model, image, config.point_cloud, seed=seed)
    if len(points_unit) < 100:
        raise InputError(f"the model found no surface in the ROI centred at {np.round(roi.center_world_mm, 1).tolist()} mm "
                         f"({len(points_unit)} points came near its zero level): check the ROI centre and the image")
    points_world_mm = roi.unit_to_world(points_unit)
    mesh, mesh_stats = mesh_from_point_cloud(points_world_mm, config.meshing)
    timings = {"encoder_s": cloud_stats["encoder_s"], "point_cloud_s": cloud_stats["point_cloud_s"],
               "meshing_s": float(mesh_stats.get("total_s", sum(v for k, v in mesh_stats.items() if k.endswith("_s"))))}
    counts = {"n_seeds": cloud_stats["n_seeds"], "n_survivors": cloud_stats["n_survivors"],
              "n_points": cloud_stats["n_points"]}
    return RoiPrediction(timings, counts, mesh=mesh, points_world_mm=points_world_mm)


RECIPE = TrainingRecipe(method="nudf", module_class=NudfLightningModule, dataset=SurfaceSampleDataset.from_config)

METHOD = Method(
    name="nudf",
    description="neural unsigned distance field: conv encoder + point-wise decoder; open surfaces, finer than voxels",
    config_class=NudfConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=prepare_dataset,
    train=partial(train_run, RECIPE),
    load=partial(load_model, RECIPE),
    predict_roi=predict_roi,
)
