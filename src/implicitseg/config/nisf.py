"""NISF's config (spec ``nisf.md``): coordinates, the auto-decoder, prior training, fitting a new subject."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from implicitseg.config.base import MethodConfig
from implicitseg.config.sections import LabelsConfig, OptimisationConfig


@dataclass(kw_only=True)
class CanonicalConfig:
    """NISF's coordinates (spec "Coordinates"): a voxel's world LPS mm minus its image's centre, divided by
    ``scale_mm`` (one scale for every subject: about [-1, 1] over a 200 mm field of view); with ``with_time``,
    a fourth coordinate, the frame's time in [0, 1) of the cycle. ``n_training_subjects``: rows of the latent
    table, set by prepare."""

    scale_mm: float = 100.0
    with_time: bool = True
    n_training_subjects: int = 0


@dataclass(kw_only=True)
class NisfModelConfig:
    """The auto-decoder MLP (spec "Model"): ``n_layers`` residual Gabor layers of ``hidden`` units, a latent code
    of ``latent_dim`` values, Gabor frequency ``omega0`` and width ``s0``."""

    latent_dim: int = 128
    hidden: int = 128
    n_layers: int = 8
    omega0: float = 10.0
    s0: float = 10.0


@dataclass(kw_only=True)
class NisfTrainConfig(OptimisationConfig):
    """Prior training (spec "Prior training"): each step one subject and one frame, ``points_per_step`` of its
    voxels (0: all); loss = ``image_loss_weight`` × image BCE + segmentation BCE + Dice + ``latent_l2`` ×
    mean(h²) + ``weight_l2`` × Σθ². Every ``val_every_epochs`` epochs the validation subjects' codes are fitted
    for ``val_fit_steps`` steps, Dice recorded every ``val_record_every`` steps; the best step count becomes the
    run's inference steps."""

    batch_size: int = 1
    points_per_step: int = 0
    image_loss_weight: float = 1.0
    latent_l2: float = 1e-4
    weight_l2: float = 1e-4
    val_every_epochs: int = 10
    val_fit_steps: int = 1000
    val_record_every: int = 25


@dataclass(kw_only=True)
class NisfFitConfig:
    """Fitting a new subject (spec "Inference"): a new code from N(0, 1e-4²), ``learning_rate``, ``points_per_step``
    of the image's voxels per step (0: all), image BCE + latent L2; the network frozen unless ``fit_weights`` (the
    authors' code). The number of steps is the run's validated one (``steps`` when none was validated)."""

    steps: int = 672
    learning_rate: float = 1e-3
    points_per_step: int = 0
    fit_weights: bool = False


@dataclass(kw_only=True)
class NisfConfig(MethodConfig):
    """NISF: a latent code per subject + a Gabor MLP with image and segmentation heads, in physical space (its
    input is coordinates: any image size)."""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("canonical", "labels")
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("model",)
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("fit",)

    method: str = "nisf"
    preset: str = "nisf"
    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    model: NisfModelConfig = field(default_factory=NisfModelConfig)
    train: NisfTrainConfig = field(default_factory=NisfTrainConfig)
    fit: NisfFitConfig = field(default_factory=NisfFitConfig)
