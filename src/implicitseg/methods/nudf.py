"""NUDF: presets and the parts the pipeline uses (NUDF spec, ``shared/specs/nudf.md``)."""

from __future__ import annotations

import copy

from implicitseg.config import (
    DecoderConfig,
    EncoderConfig,
    MeshingConfig,
    NudfConfig,
    PointCloudConfig,
    RoiConfig,
    SurfaceSamplingConfig,
    TrainConfig,
)


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
        train=TrainConfig(points_per_case=4_000, batch_size=4, learning_rate=1e-3, val_points_per_case=4_000,
                          early_stopping_patience=1000),
        point_cloud=PointCloudConfig(n_seeds=50_000, n_dense=200_000, batch_points=50_000),
        meshing=MeshingConfig(n_subsample=5_000, poisson_depth=7),
    ),
}


def preset_config(name: str) -> NudfConfig:
    """A fresh copy of preset ``name``."""
    if name not in PRESETS:
        raise KeyError(name)
    return copy.deepcopy(PRESETS[name])
