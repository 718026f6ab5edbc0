"""Typed configs, data only (the bottom layer). A method's config names every part and value it uses; presets are
instances of it.

- :mod:`~implicitseg.config.base`: :class:`MethodConfig` (the role of each section: data, network, train,
  predict; the input size) and :class:`RoiMethodConfig`;
- :mod:`~implicitseg.config.sections`: sections several methods share;
- one module per method: :mod:`~implicitseg.config.nudf`, :mod:`~implicitseg.config.unet` (with the ROI
  detector), :mod:`~implicitseg.config.implicit_unet`, :mod:`~implicitseg.config.nisf`, :mod:`~implicitseg.config.ismm`;
- :mod:`~implicitseg.config.schema`: the plain-dict form, type-checked reading, :class:`Settings` (``--set``).

Every name is also importable from this package. Files: :mod:`implicitseg.io.configs`.
"""

from implicitseg.config.base import ROLES, MethodConfig, RoiMethodConfig
from implicitseg.config.implicit_unet import (
    ImplicitUnetConfig,
    ImplicitUnetModelConfig,
    PatchTrainConfig,
    PointSamplingConfig,
    SparseInferenceConfig,
    VolumeGridConfig,
)
from implicitseg.config.ismm import (
    IsmmConfig,
    IsmmLossConfig,
    IsmmModelConfig,
    IsmmTrainConfig,
    ShapesConfig,
    TimConfig,
)
from implicitseg.config.nisf import CanonicalConfig, NisfConfig, NisfFitConfig, NisfModelConfig, NisfTrainConfig
from implicitseg.config.nudf import (
    BandConfig,
    ComponentConfig,
    DecoderConfig,
    EncoderConfig,
    MeshingConfig,
    NudfConfig,
    PointCloudConfig,
    SurfaceSamplingConfig,
    TrainConfig,
)
from implicitseg.config.schema import Settings, config_from_dict, config_to_dict, preset_named
from implicitseg.config.sections import (
    AugmentConfig,
    IntensityConfig,
    LabelsConfig,
    OptimisationConfig,
    RoiConfig,
    UnetModelConfig,
    VoxelTrainConfig,
)
from implicitseg.config.unet import DetectorGridConfig, RoiDetectorConfig, UnetConfig

__all__ = [
    "ROLES", "AugmentConfig", "BandConfig", "CanonicalConfig", "ComponentConfig", "DecoderConfig",
    "DetectorGridConfig", "EncoderConfig", "ImplicitUnetConfig", "ImplicitUnetModelConfig", "IntensityConfig",
    "IsmmConfig", "IsmmLossConfig", "IsmmModelConfig", "IsmmTrainConfig", "LabelsConfig", "MeshingConfig",
    "MethodConfig", "NisfConfig", "NisfFitConfig", "NisfModelConfig", "NisfTrainConfig", "NudfConfig",
    "OptimisationConfig", "PatchTrainConfig", "PointCloudConfig", "PointSamplingConfig", "RoiConfig",
    "RoiDetectorConfig", "RoiMethodConfig", "Settings", "ShapesConfig", "SparseInferenceConfig",
    "SurfaceSamplingConfig", "TimConfig", "TrainConfig", "UnetConfig", "UnetModelConfig", "VolumeGridConfig",
    "VoxelTrainConfig", "config_from_dict", "config_to_dict", "preset_named",
]
