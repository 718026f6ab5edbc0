"""Typed configs. A method's config names every part and value it uses; presets are instances of it.

Configs are plain dataclasses: :func:`config_to_dict` gives the plain-YAML form written next to every
run's outputs, :func:`config_from_dict` reads it back and refuses unknown keys and values of the wrong type, and
:class:`Settings` sets values by dotted key (``--set point_cloud.n_dense=200000``, ``--config FILE.yaml``) with the
same checks, so the file, the CLI and the code share one schema.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from implicitseg.errors import InputError

T = TypeVar("T")


@dataclass
class RoiConfig:
    """Region of interest: a world-axis-aligned cube of ``size_mm`` resampled to ``res``³ voxels."""

    size_mm: float = 70.0
    res: int = 64


@dataclass
class IntensityConfig:
    """Intensity normalisation. ``window``: clip to ``window`` then divide by ``scale`` (CT, HU); ``zscore``: MRI."""

    mode: str = "window"
    window: tuple[float, float] = (-1000.0, 1000.0)
    scale: float = 1000.0


@dataclass
class SurfaceSamplingConfig:
    """Training samples for distance-field methods (NUDF spec, "Training samples")."""

    n_uniform: int = 10_000
    n_near_surface: int = 100_000
    sd_rays: int = 32
    sd_cone_degrees: float = 45.0
    sd_threshold_mm: float = 3.5
    sd_density_factor: float = 500.0
    sd_sigma_fraction: float = 0.25
    sd_max_mm: float = 35.0
    """Shape diameters are capped at this (mm); rays that hit nothing count as this far."""


@dataclass
class EncoderConfig:
    """IF-Net style 3D conv encoder: a full-resolution stem conv, then levels of MaxPool → 2 convs → BN.

    ``first_pool`` is the pooling factor before the first level (4 for nudf512). Features are gathered at a
    query point and its 6 axis neighbours at ± ``displacement_unit``.
    """

    stem_channels: int = 32
    level_channels: tuple[int, ...] = (64, 128, 128)
    first_pool: int = 2
    dropout: float = 0.0
    displacement_unit: float = 0.0722


@dataclass
class DecoderConfig:
    """Point-wise MLP on gathered features; ``output`` is ``softplus``, ``relu`` or ``none``."""

    hidden: tuple[int, ...] = (256, 256, 256)
    output: str = "softplus"


@dataclass
class AugmentConfig:
    """Training augmentation, each applied with ``probability`` (NUDF spec; translation is symmetric)."""

    probability: float = 0.5
    translate_voxels: float = 20.0
    rotate_degrees: float = 10.0
    noise_sigma: float = 0.05


@dataclass
class OptimisationConfig:
    """What every method's ``train`` section holds: optimiser step size, batch, stopping (``max_epochs``, or
    ``early_stopping_patience`` epochs without a better validation loss), data-loader workers, seed, augmentation."""

    learning_rate: float = 1e-4
    batch_size: int = 4
    max_epochs: int = 1000
    early_stopping_patience: int = 50
    num_workers: int = 0
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainConfig(OptimisationConfig):
    """NUDF's optimisation. An epoch is one pass over the training cases, ``points_per_case`` points each."""

    points_per_case: int = 15_000
    sample_fractions: tuple[float, float, float] = (0.45, 0.45, 0.10)
    clamp_unit: float = 0.1
    clamp_keeps_gradient: bool = True
    """(fix) near-surface points predicted beyond the clamp still get a gradient; False: the reference loss."""
    val_points_per_case: int = 15_000


@dataclass
class BandConfig:
    """Narrow-band evaluation of a distance field over the ROI (NUDF spec, "Fast extraction"); lengths in mm.

    A coarse grid of at least ``coarse_cells`` cells per side covers the ROI; a cell is kept when its smallest corner
    distance is below ``max_face_distance_mm + margin · half-diagonal`` (what an exact distance field allows, with a
    margin for the learned field's error), kept cells are split into 8, down to cells of at most ``cell_mm``.
    ``batch_points`` decoder queries at a time."""

    cell_mm: float = 1.0
    coarse_cells: int = 32
    margin: float = 1.5
    max_face_distance_mm: float = 0.75
    """The surface: faces of the extracted mesh whose vertices or edge midpoints lie farther than this are removed
    (walls closer than twice this merge). A learned field's zero level is not 0: on held-out cases of a briefly
    trained ``nudf-demo`` its median on the true surface is a few tenths of a mm (BENCHMARKS.md)."""
    batch_points: int = 32_768


@dataclass
class ComponentConfig:
    """Which connected surfaces a mesh keeps. ``supported``: every component whose supported area (faces whose
    vertices' mean field distance is ≤ ``max_mean_distance_mm``) is at least ``min_area_mm2`` and at least
    ``min_area_fraction`` of the best-supported component's; ``largest``: the component with the most faces (the
    paper's); ``all``: every component."""

    rule: str = "supported"
    min_area_mm2: float = 0.0
    min_area_fraction: float = 0.1
    max_mean_distance_mm: float = 0.5


@dataclass
class PointCloudConfig:
    """Dense point cloud by projection along the UDF gradient (NUDF spec, in unit lengths).

    ``seeding``: ``uniform`` is the paper's (``n_seeds`` uniform seeds, ``steps`` steps, resampled to ``n_dense`` with
    noise, ``steps`` more); ``band`` draws the ``n_dense`` seeds uniformly in the field's narrow band (cells of
    ``band_cell_mm``, see :class:`BandConfig`) and projects them ``band_steps`` steps."""

    n_seeds: int = 100_000
    n_dense: int = 1_000_000
    batch_points: int = 100_000
    steps: int = 5
    filter_unit: float = 0.1
    noise_unit: float = 0.1 / 3
    keep_unit: float = 0.05
    seeding: str = "uniform"
    band_cell_mm: float = 1.0
    band_steps: int = 2


@dataclass
class MeshingConfig:
    """Distance field → mesh; lengths in mm. ``method``: ``udf-mc`` extracts the surface directly from the field's
    narrow band (``band``; NUDF spec, "Fast extraction"); ``poisson`` is the paper's recipe: the dense point cloud
    (``point_cloud``) → screened Poisson → trimming (NUDF spec, "Meshing"; the values below). Either keeps the
    surfaces that ``components`` selects."""

    method: str = "udf-mc"
    band: BandConfig = field(default_factory=BandConfig)
    components: ComponentConfig = field(default_factory=ComponentConfig)
    n_subsample: int = 10_000
    normal_neighbours: int = 10
    poisson_depth: int = 8
    trim_support_mm: float = 0.35
    trim_min_points: int = 2
    close_holes_mm: float = 3.5


@dataclass
class NudfConfig:
    """NUDF: encoder + point-wise decoder regressing an unsigned distance field from a CT ROI."""

    method: str = "nudf"
    preset: str = "nudf64"
    roi: RoiConfig = field(default_factory=RoiConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    sampling: SurfaceSamplingConfig = field(default_factory=SurfaceSamplingConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    point_cloud: PointCloudConfig = field(default_factory=PointCloudConfig)
    meshing: MeshingConfig = field(default_factory=MeshingConfig)


@dataclass
class UnetModelConfig:
    """MONAI ``UNet`` (residual units, instance of ``monai.networks.nets.UNet``): one stride-2 level per entry of
    ``channels`` after the first; ``num_res_units`` residual units per level."""

    channels: tuple[int, ...] = (32, 64, 128, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: str = "batch"
    dropout: float = 0.0


@dataclass
class VoxelTrainConfig(OptimisationConfig):
    """Optimisation of voxel-wise segmentation networks (Dice + cross-entropy on whole ROI images)."""

    learning_rate: float = 1e-3


@dataclass
class UnetConfig:
    """3D U-Net baseline on the same ROI as NUDF; its surface is the isosurface at ``mesh_level`` of the foreground
    probability, upsampled to the original image grid (NUDF paper's baseline)."""

    method: str = "unet"
    preset: str = "unet64"
    roi: RoiConfig = field(default_factory=RoiConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    model: UnetModelConfig = field(default_factory=UnetModelConfig)
    train: VoxelTrainConfig = field(default_factory=VoxelTrainConfig)
    mesh_level: float = 0.5


@dataclass
class DetectorGridConfig:
    """The ROI detector's input: the image's world-axis bounding cube (side = its largest extent + ``margin_mm``)
    resampled to ``res``³ isotropic voxels."""

    res: int = 64
    margin_mm: float = 0.0


@dataclass
class RoiDetectorConfig:
    """Coarse whole-image U-Net whose foreground's centre of mass is the ROI centre (NUDF spec, "Region of interest")."""

    method: str = "roi"
    preset: str = "roi64"
    grid: DetectorGridConfig = field(default_factory=DetectorGridConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    model: UnetModelConfig = field(default_factory=lambda: UnetModelConfig(channels=(16, 32, 64, 64)))
    train: VoxelTrainConfig = field(default_factory=VoxelTrainConfig)
    threshold: float = 0.5


@dataclass
class VolumeGridConfig:
    """Whole images as patch methods see them: resampled along their own axes to isotropic ``spacing_mm`` voxels
    (the working grid); training and sliding-window inference take cubes of ``patch_voxels`` per side, a
    ``positive_fraction`` of training patches centred on a labelled voxel (Implicit U-Net spec, "Training")."""

    spacing_mm: float = 1.0
    patch_voxels: int = 96
    positive_fraction: float = 1.0 / 3.0


@dataclass
class LabelsConfig:
    """Class names by value (0 = background); empty: taken from the dataset's ``dataset.json`` at prepare time.
    Label values must be 0, 1, ..., C - 1."""

    names: tuple[str, ...] = ()


@dataclass
class ImplicitUnetModelConfig:
    """Implicit U-Net (spec "Network"): an nnU-Net-style encoder of stride-2 stages (``stage_channels``; stage s
    holds ``stage_convs[s]`` conv-norm-LeakyReLU layers), and either the implicit decoder (``decoder:
    implicit``: features gathered from every stage at a point, ``gather`` ``nearest`` or ``trilinear``, plus a
    positional encoding of ``n_frequencies`` octaves, into a DeepSDF MLP) or a U-Net's convolutional decoder
    (``decoder: convolutional``: the same encoder's baseline)."""

    stage_channels: tuple[int, ...] = (32, 64, 128, 256)
    stage_convs: tuple[int, ...] = (2, 2, 4, 4)
    norm: str = "instance"
    decoder: str = "implicit"
    gather: str = "nearest"
    n_frequencies: int = 10
    hidden: int = 512
    n_hidden_layers: int = 8
    skip_layer: int = 4
    dropout: float = 0.2


@dataclass
class PointSamplingConfig:
    """Points per training patch for the implicit decoder (spec "Training"): ``boundary_fraction`` of them at
    label-boundary voxels displaced by N(0, ``boundary_sigma_voxels``), the rest uniform in the patch."""

    points_per_patch: int = 30_000
    boundary_fraction: float = 0.5
    boundary_sigma_voxels: float = 5.0


@dataclass
class PatchTrainConfig(OptimisationConfig):
    """Optimisation of patch-based segmentation (AdamW, Dice + cross-entropy). An epoch draws
    ``patches_per_case`` patches from each training case; validation uses fixed patches."""

    batch_size: int = 2
    weight_decay: float = 1e-2
    patches_per_case: int = 4


@dataclass
class SparseInferenceConfig:
    """Coarse-to-fine inference (spec "Inference"): the implicit decoder first labels every ``coarse_stride``-th
    voxel of the output grid, then every voxel within ``band_voxels`` of a change of label; a sliding window of
    patches with ``overlap`` and Gaussian weighting covers the image; ``smoothing_voxels`` is the side of the final
    average filter of the class probabilities (1: none). ``dense: true`` evaluates every voxel (for checks)."""

    coarse_stride: int = 4
    band_voxels: int = 4
    overlap: float = 0.3
    smoothing_voxels: int = 3
    batch_points: int = 65_536
    dense: bool = False


@dataclass
class ImplicitUnetConfig:
    """Implicit U-Net on whole images (or, with ``model.decoder: convolutional``, the U-Net with the same encoder)."""

    method: str = "implicit-unet"
    preset: str = "iunet"
    grid: VolumeGridConfig = field(default_factory=VolumeGridConfig)
    intensity: IntensityConfig = field(default_factory=lambda: IntensityConfig(window=(-160.0, 240.0), scale=100.0))
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    model: ImplicitUnetModelConfig = field(default_factory=ImplicitUnetModelConfig)
    sampling: PointSamplingConfig = field(default_factory=PointSamplingConfig)
    train: PatchTrainConfig = field(default_factory=PatchTrainConfig)
    inference: SparseInferenceConfig = field(default_factory=SparseInferenceConfig)


@dataclass
class CanonicalConfig:
    """NISF's coordinates (spec "Coordinates"): a voxel's world LPS mm minus its image's centre, divided by
    ``scale_mm`` (one scale for every subject: about [-1, 1] over a 200 mm field of view); with ``with_time``,
    a fourth coordinate, the frame's time in [0, 1) of the cycle. ``n_training_subjects``: rows of the latent
    table, set by prepare."""

    scale_mm: float = 100.0
    with_time: bool = True
    n_training_subjects: int = 0


@dataclass
class NisfModelConfig:
    """The auto-decoder MLP (spec "Model"): ``n_layers`` residual Gabor layers of ``hidden`` units, a latent code
    of ``latent_dim`` values, Gabor frequency ``omega0`` and width ``s0``."""

    latent_dim: int = 128
    hidden: int = 128
    n_layers: int = 8
    omega0: float = 10.0
    s0: float = 10.0


@dataclass
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


@dataclass
class NisfFitConfig:
    """Fitting a new subject (spec "Inference"): a new code from N(0, 1e-4²), ``learning_rate``, ``points_per_step``
    of the image's voxels per step (0: all), image BCE + latent L2; the network frozen unless ``fit_weights`` (the
    authors' code). The number of steps is the run's validated one (``steps`` when none was validated)."""

    steps: int = 672
    learning_rate: float = 1e-3
    points_per_step: int = 0
    fit_weights: bool = False


@dataclass
class NisfConfig:
    """NISF: a latent code per subject + a Gabor MLP with image and segmentation heads, in physical space."""

    method: str = "nisf"
    preset: str = "nisf"
    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    model: NisfModelConfig = field(default_factory=NisfModelConfig)
    train: NisfTrainConfig = field(default_factory=NisfTrainConfig)
    fit: NisfFitConfig = field(default_factory=NisfFitConfig)


@dataclass
class ShapesConfig:
    """ISMM's training shapes and their canonical frame (PICCT, spec ``ismm.md``). ``label``: which labelmap label
    is the shape (0: every voxel > 0); ``anchor``: the case every shape is aligned to ("": the training shape whose
    principal-axis lengths are closest to the dataset's mean); Coherent Point Drift with ``cpd_points`` points per
    cloud, ``cpd_iterations``, ``cpd_tolerance``; then one scale so every shape lies within ``unit_sphere_margin`` of
    the unit sphere's centre. Per shape ``surface_points`` (with normals) and ``free_space_points`` (exact signed
    distance, inside negative, canonical units), ``validation_fraction`` of each held out for validation.
    Set by prepare: ``anchor_case``, ``anchor_center_world_mm``, ``global_scale`` (canonical units per mm),
    ``n_shapes`` (rows of the code tables)."""

    label: int = 0
    anchor: str = ""
    cpd_points: int = 3000
    cpd_iterations: int = 100
    cpd_tolerance: float = 1e-3
    unit_sphere_margin: float = 0.9
    surface_points: int = 500_000
    free_space_points: int = 200_000
    validation_fraction: float = 0.1
    anchor_case: str = ""
    anchor_center_world_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    global_scale: float = 0.0
    n_shapes: int = 0


@dataclass
class IsmmModelConfig:
    """The DIF-Net-style networks (spec "Networks"): template SIREN ``template_hidden`` × ``template_layers`` hidden
    layers; deformation SIREN of ``deform_hidden`` × ``deform_layers`` on (x, instance code), all its weights made by
    one hypernetwork MLP per tensor (hidden ``hyper_hidden``) from the hyper code; codes of ``hyper_code_dim`` and
    ``instance_code_dim``; sine frequency ``omega0``."""

    template_hidden: int = 256
    template_layers: int = 4
    deform_hidden: int = 128
    deform_layers: int = 3
    hyper_hidden: int = 256
    hyper_code_dim: int = 128
    instance_code_dim: int = 128
    omega0: float = 30.0


@dataclass
class IsmmLossConfig:
    """Loss weights (spec "Losses", the reference configs'): clamped SDF L1 (``sdf_clamp``), off-surface
    exp(-``off_surface_sharpness`` |SDF|), normal, eikonal, hyper / instance code L2, template normal consistency,
    deformation Laplacian smoothness (on ``smoothness_points`` points per shape), minimal correction |c|."""

    sdf: float = 3e3
    sdf_clamp: float = 0.5
    off_surface: float = 5e2
    off_surface_sharpness: float = 100.0
    normal: float = 1e2
    eikonal: float = 5e1
    hyper_code: float = 1e6
    instance_code: float = 1e5
    template_normal: float = 1e2
    smoothness: float = 5.0
    smoothness_points: int = 256
    correction: float = 1e2


@dataclass
class IsmmTrainConfig(OptimisationConfig):
    """Template + deformation training: batches of ``batch_size`` shapes × (``surface_per_shape`` surface,
    ``uniform_per_shape`` uniform, ``free_per_shape`` free-space) points; Adam on networks and codes."""

    batch_size: int = 16
    surface_per_shape: int = 4000
    uniform_per_shape: int = 2000
    free_per_shape: int = 2000
    max_epochs: int = 200


@dataclass
class TimConfig:
    """Refinement of an initial segmentation (spec "Template interaction module"): CPD onto the template surface
    (``template_points`` of it, outlier weight ``outlier_weight``, started from ``alignment_start``: ``world``, the
    case's own pose in patient coordinates, or ``principal-axes``, the best of four principal-axes poses, for shapes
    in any pose), the top ``trusted_fraction`` of the initial
    surface's points (``initial_points`` drawn on it) by the template's posterior mass are trusted, and so are the
    ``fitting_points`` drawn on the initial surface whose nearest registered point is trusted; ``fit_steps`` Adam
    steps at ``learning_rate`` on fresh codes and the hypernetwork (template frozen) with those surface points and a
    quarter as many uniform points; the refined surface by marching cubes on a
    ``mesh_resolution``³ grid over the canonical box. The safeguard: where the fitted shape and the initial disagree
    within ``keep_within_mm`` of the fitted surface, the initial's label is kept (the prior overrules gross errors,
    not the boundary's position within its accuracy; 0: the fitted shape everywhere, the paper's), and a case whose fitted surface lies on average more than
    ``max_fit_residual_mm`` from the trusted points keeps its initial segmentation (0: never)."""

    template_points: int = 3000
    initial_points: int = 4000
    alignment_start: str = "world"
    fitting_points: int = 16_000
    outlier_weight: float = 0.2
    trusted_fraction: float = 0.25
    fit_steps: int = 600
    learning_rate: float = 1e-4
    mesh_resolution: int = 256
    keep_within_mm: float = 1.0
    max_fit_residual_mm: float = 1.0
    seed: int = 0


@dataclass
class IsmmConfig:
    """ISMM: an implicit SDF template + per-shape deformations learned from shapes aligned in physical space;
    refines an initial segmentation by fitting the shape prior to its trustworthy part."""

    method: str = "ismm"
    preset: str = "ismm"
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    model: IsmmModelConfig = field(default_factory=IsmmModelConfig)
    loss: IsmmLossConfig = field(default_factory=IsmmLossConfig)
    train: IsmmTrainConfig = field(default_factory=IsmmTrainConfig)
    tim: TimConfig = field(default_factory=TimConfig)


def input_res(config: Any) -> int:
    """Voxels per side of a method's network input: the ROI's, the ROI detector's whole-image grid's, or a patch
    method's patch side."""
    if isinstance(config, RoiDetectorConfig):
        return int(config.grid.res)
    if isinstance(config, ImplicitUnetConfig):
        return int(config.grid.patch_voxels)
    if isinstance(config, (NisfConfig, IsmmConfig)):
        return 0  # coordinates, not a grid: any image size

    return int(config.roi.res)


def config_to_dict(config: Any) -> dict:
    """Plain nested dict (tuples become lists) for YAML/JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A number written as text (YAML 1.1 reads ``1e-4`` as a string)."""

_TYPE_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
               str: ("a string", "strings")}


def _expected(hint: Any) -> str:
    """What a field of type ``hint`` takes, for error messages ("an integer", "a list of 2 numbers")."""
    if dataclasses.is_dataclass(hint):
        return "a mapping of its keys"
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return f"a list of {_TYPE_NAMES[items[0]][1]}"
        return f"a list of {len(items)} {_TYPE_NAMES[items[0]][1]}"
    return _TYPE_NAMES[hint][0]


def _checked(hint: Any, value: Any, where: str, key: str) -> Any:
    """``value`` as a field of type ``hint`` holds it (ints become floats for float fields, lists tuples); a value of
    another type raises :class:`InputError` naming ``key`` and the expected type."""
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where, f"{key}.")
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        variadic = len(items) == 2 and items[1] is Ellipsis
        if isinstance(value, (list, tuple)) and (variadic or len(value) == len(items)):
            item_hints = items[:1] * len(value) if variadic else items
            return tuple(_checked(item_hint, item, where, f"{key}[{index}]")
                         for index, (item_hint, item) in enumerate(zip(item_hints, value)))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint in (int, float):
        number = float(value) if isinstance(value, str) and _NUMBER.fullmatch(value.strip()) else value
        if isinstance(number, numbers.Real) and not isinstance(number, bool):
            if hint is float:
                return float(number)
            if float(number).is_integer():
                return int(number)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{key}: config fields of type {hint!r} are not supported")
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise InputError(f"{where}: {key}: expected {_expected(hint)}, got {shown}")


def _from_dict(cls: type[T], data: Any, where: str, prefix: str) -> T:
    section = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: {section}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(prefix + str(name) for name in unknown)}; "
                         f"{section} has {', '.join(names)}")
    return cls(**{name: _checked(hints[name], value, where, prefix + name)  # type: ignore[call-arg]
                  for name, value in data.items()})


def config_from_dict(cls: type[T], data: Mapping, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested mapping (missing keys keep their defaults). Unknown keys and values of
    the wrong type raise :class:`InputError` naming the key and what it takes (``where``: the source, e.g. a file)."""
    return _from_dict(cls, data, where, "")


def _flattened(values: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"meshing": {"band": {"cell_mm": 2}}}`` → ``{"meshing.band.cell_mm": 2}`` (dotted keys stay as they are)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _from_text(hint: Any, text: str) -> Any:
    """A ``--set`` value for a field of type ``hint``: YAML (scalars, ``[a, b]`` lists), except that a string field
    takes the text as written unless YAML reads it as a string (``012`` stays ``"012"``, ``"a b"`` loses its quotes)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if hint is str and not isinstance(parsed, str) else parsed


@dataclass(frozen=True)
class Settings:
    """Config values to set over a preset or a run's config, from one source.

    ``values`` maps dotted keys (``"point_cloud.n_dense"``) or nested sections to values; with ``as_text`` the
    values are ``--set`` text, parsed for each field's type. ``where`` names the source in errors (``--set``, a file).
    """

    where: str
    values: Mapping[str, Any]
    as_text: bool = False

    @classmethod
    def from_assignments(cls, assignments: list[str], where: str = "--set") -> "Settings":
        """``["section.key=value", ...]`` (``--set``, repeatable); a text without ``=`` or a key raises InputError."""
        values: dict[str, str] = {}
        for text in assignments:
            key, sign, value = text.partition("=")
            if not sign or not key.strip() or not all(part.isidentifier() for part in key.strip().split(".")):
                raise InputError(f"{where} {text!r}: expected section.key=value (e.g. point_cloud.n_dense=200000)")
            values[key.strip()] = value.strip()
        return cls(where, values, as_text=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Settings":
        """A YAML file holding part or all of a config mapping (``--config``)."""
        return cls(str(path), load_yaml(path))

    def apply(self, config: T, fixed: Mapping[str, str] | None = None) -> tuple[T, dict[str, Any]]:
        """A copy of ``config`` with these values set, each checked against its field's type, and the values set
        by dotted key. A key under a top-level name of ``fixed`` (name → why it may not change) raises
        :class:`InputError` when its value would change; so do unknown keys and values of the wrong type."""
        config = copy.deepcopy(config)
        applied: dict[str, Any] = {}
        for key, value in _flattened(self.values).items():
            parts = key.split(".")
            owner = config
            for depth, part in enumerate(parts):
                names = [f.name for f in dataclasses.fields(owner)]
                if part not in names:
                    section = ".".join(parts[:depth]) or f"{config.method}'s config"  # type: ignore[attr-defined]
                    raise InputError(f"{self.where}: {key}: no such setting ({section} has {', '.join(names)})")
                hint = typing.get_type_hints(type(owner))[part]
                if depth == len(parts) - 1:
                    break
                if not dataclasses.is_dataclass(hint):
                    raise InputError(f"{self.where}: {key}: {'.'.join(parts[:depth + 1])} is a value, not a section")
                owner = getattr(owner, part)
            if dataclasses.is_dataclass(hint):
                raise InputError(f"{self.where}: {key}: a section; set its keys ({key}.KEY=VALUE)")
            checked = _checked(hint, _from_text(hint, value) if self.as_text else value, self.where, key)
            if fixed and parts[0] in fixed and checked != getattr(owner, parts[-1]):
                raise InputError(f"{self.where}: {key}: {fixed[parts[0]]}")
            setattr(owner, parts[-1], checked)
            applied[key] = list(checked) if isinstance(checked, tuple) else checked
        return config, applied


def preset_named(settings: list[Settings]) -> str | None:
    """The preset the last of ``settings`` that names one names (a ``--config`` file's ``preset:``), else None."""
    named = [source.values["preset"] for source in settings if isinstance(source.values.get("preset"), str)]
    return named[-1] if named else None


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; a missing or broken file raises :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a YAML mapping")
    return data
