"""Config sections that several methods share: the ROI, intensities, augmentation, optimisation, labels, the
MONAI U-Net."""

from __future__ import annotations

from dataclasses import dataclass, field

from implicitseg.config.schema import choice

INTENSITY_MODES = ("window", "zscore")
"""``intensity.mode``: a CT window, or z-scores (MRI)."""
PRECISIONS = ("32-true", "bf16-mixed", "auto")
"""``train.precision``: Lightning's precision of the training steps."""


@dataclass(kw_only=True)
class RoiConfig:
    """Region of interest: a world-axis-aligned cube of ``size_mm`` resampled to ``res``³ voxels."""

    size_mm: float = 70.0
    res: int = 64


@dataclass(kw_only=True)
class IntensityConfig:
    """Intensity normalisation. ``window``: clip to ``window`` then divide by ``scale`` (CT, HU); ``zscore``: MRI."""

    mode: str = choice("window", INTENSITY_MODES)
    window: tuple[float, float] = (-1000.0, 1000.0)
    scale: float = 1000.0


@dataclass(kw_only=True)
class AugmentConfig:
    """Training augmentation, each applied with ``probability`` (NUDF spec; translation is symmetric)."""

    probability: float = 0.5
    translate_voxels: float = 20.0
    rotate_degrees: float = 10.0
    noise_sigma: float = 0.05


@dataclass(kw_only=True)
class OptimisationConfig:
    """What every method's ``train`` section holds: optimiser step size, batch, stopping (``max_epochs``, or
    ``early_stopping_patience`` epochs without a better validation loss), data-loader workers, seed, augmentation,
    and the arithmetic of the training steps (``precision``, Lightning's: ``32-true``, or ``bf16-mixed``: forward
    passes and losses in bfloat16 under autocast, weights and optimiser in float32; CPUs with AVX-512 BF16 and
    recent GPUs run it natively; ``auto``: ``bf16-mixed`` where the training device runs bfloat16 natively, else
    ``32-true``, see :func:`implicitseg.training.run.resolve_precision`). Prediction always runs in float32."""

    learning_rate: float = 1e-4
    batch_size: int = 4
    max_epochs: int = 1000
    early_stopping_patience: int = 50
    num_workers: int = 0
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = choice("32-true", PRECISIONS)


@dataclass(kw_only=True)
class VoxelTrainConfig(OptimisationConfig):
    """Optimisation of voxel-wise segmentation networks (Dice + cross-entropy on whole ROI images)."""

    learning_rate: float = 1e-3


@dataclass(kw_only=True)
class LabelsConfig:
    """Class names by value (0 = background); empty: taken from the dataset's ``dataset.json`` at prepare time.
    Label values must be 0, 1, ..., C - 1."""

    names: tuple[str, ...] = ()


@dataclass(kw_only=True)
class UnetModelConfig:
    """MONAI ``UNet`` (residual units, instance of ``monai.networks.nets.UNet``): one stride-2 level per entry of
    ``channels`` after the first; ``num_res_units`` residual units per level."""

    channels: tuple[int, ...] = (32, 64, 128, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: str = "batch"
    dropout: float = 0.0
