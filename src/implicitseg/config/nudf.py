"""NUDF's config (spec ``nudf.md``): surface samples, encoder, decoder, training, point cloud, meshing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from implicitseg.config.base import RoiMethodConfig
from implicitseg.config.schema import choice
from implicitseg.config.sections import PRECISIONS, OptimisationConfig

OUTPUT_ACTIVATIONS = ("softplus", "relu", "none")
"""``decoder.output``: the decoder's last activation."""
COMPONENT_RULES = ("supported", "largest", "all")
"""``meshing.components.rule``: which connected surfaces a mesh keeps."""
SEEDINGS = ("uniform", "band")
"""``point_cloud.seeding``: where the dense point cloud's seeds come from."""
MESHERS = ("udf-mc", "poisson")
"""``meshing.method``: the direct extractor (default) and the paper's recipe."""


@dataclass(kw_only=True)
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


@dataclass(kw_only=True)
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


@dataclass(kw_only=True)
class DecoderConfig:
    """Point-wise MLP on gathered features; ``output`` is ``softplus``, ``relu`` or ``none``."""

    hidden: tuple[int, ...] = (256, 256, 256)
    output: str = choice("softplus", OUTPUT_ACTIVATIONS)


@dataclass(kw_only=True)
class TrainConfig(OptimisationConfig):
    """NUDF's optimisation. An epoch is one pass over the training cases, ``points_per_case`` points each."""

    points_per_case: int = 15_000
    sample_fractions: tuple[float, float, float] = (0.45, 0.45, 0.10)
    clamp_unit: float = 0.1
    clamp_keeps_gradient: bool = True
    """(fix) near-surface points predicted beyond the clamp still get a gradient; False: the reference loss."""
    val_points_per_case: int = 15_000
    precision: str = choice("auto", PRECISIONS)
    """bf16-mixed where the device runs it natively: at 64³ it learns what float32 does over the same steps (within
    float32's run-to-run spread) in less than half the time per epoch (BENCHMARKS.md)."""


@dataclass(kw_only=True)
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
    snap_samples: int = 9
    """udf-mc: each kept vertex then moves along its normal to the field's smallest value among this many samples
    within half a cell either side (:func:`~implicitseg.meshing.udf_mc.snap_to_minimum`); 0: where marching cubes put
    it. At least 3. On 8 held-out ``nudf64`` images 9 lowers the one-sided Chamfer by 0.010 mm [0.005, 0.015] for
    0.5 s per image (BENCHMARKS.md)."""
    batch_points: int = 32_768


@dataclass(kw_only=True)
class ComponentConfig:
    """Which connected surfaces a mesh keeps. ``supported``: every component whose supported area (faces whose
    vertices' mean field distance is ≤ ``max_mean_distance_mm``) is at least ``min_area_mm2`` and at least
    ``min_area_fraction`` of the best-supported component's; ``largest``: the component with the most faces (the
    paper's); ``all``: every component."""

    rule: str = choice("supported", COMPONENT_RULES)
    min_area_mm2: float = 0.0
    min_area_fraction: float = 0.1
    max_mean_distance_mm: float = 0.5


@dataclass(kw_only=True)
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
    seeding: str = choice("uniform", SEEDINGS)
    band_cell_mm: float = 1.0
    band_steps: int = 2


@dataclass(kw_only=True)
class MeshingConfig:
    """Distance field → mesh; lengths in mm. ``method``: ``udf-mc`` extracts the surface directly from the field's
    narrow band (``band``; NUDF spec, "Fast extraction"); ``poisson`` is the paper's recipe: the dense point cloud
    (``point_cloud``) → screened Poisson → trimming (NUDF spec, "Meshing"; the values below). Either keeps the
    surfaces that ``components`` selects, then closes holes smaller than ``close_holes_mm`` across (the paper's
    3.5 mm; 0 keeps every hole): a hole that small is where the field missed the surface, not an open boundary."""

    method: str = choice("udf-mc", MESHERS)
    band: BandConfig = field(default_factory=BandConfig)
    components: ComponentConfig = field(default_factory=ComponentConfig)
    n_subsample: int = 10_000
    normal_neighbours: int = 10
    poisson_depth: int = 8
    trim_support_mm: float = 0.35
    trim_min_points: int = 2
    close_holes_mm: float = 3.5


@dataclass(kw_only=True)
class NudfConfig(RoiMethodConfig):
    """NUDF: encoder + point-wise decoder regressing an unsigned distance field from a CT ROI."""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("roi", "intensity", "sampling")
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("encoder", "decoder")
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("point_cloud", "meshing")

    method: str = "nudf"
    preset: str = "nudf64"
    sampling: SurfaceSamplingConfig = field(default_factory=SurfaceSamplingConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    point_cloud: PointCloudConfig = field(default_factory=PointCloudConfig)
    meshing: MeshingConfig = field(default_factory=MeshingConfig)
