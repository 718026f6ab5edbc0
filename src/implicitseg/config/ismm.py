"""ISMM's config (spec ``ismm.md``): training shapes and their canonical frame, networks, losses, training, the
template interaction module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from implicitseg.config.base import MethodConfig
from implicitseg.config.schema import choice
from implicitseg.config.sections import OptimisationConfig

ALIGNMENT_STARTS = ("principal-axes", "world")
"""``tim.alignment_start``: where CPD starts (see :class:`TimConfig`)."""
TRUST_RULES = ("posterior", "template")
"""``tim.trust_rule``: which of the initial surface's points the first fit trusts (see :class:`TimConfig`)."""
SURFACE_PARTS = ("all", "largest")
"""``tim.surface_parts``: which connected parts of the initial surface the alignment and the fit use (see
:class:`TimConfig`)."""
REMOVALS = ("anywhere", "islands")
"""``tim.removal``: which of the initial's foreground voxels the refinement may remove (see :class:`TimConfig`)."""


@dataclass(kw_only=True)
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


@dataclass(kw_only=True)
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


@dataclass(kw_only=True)
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


@dataclass(kw_only=True)
class IsmmTrainConfig(OptimisationConfig):
    """Template + deformation training: batches of ``batch_size`` shapes × (``surface_per_shape`` surface,
    ``uniform_per_shape`` uniform, ``free_per_shape`` free-space) points; Adam on networks and codes."""

    batch_size: int = 16
    surface_per_shape: int = 4000
    uniform_per_shape: int = 2000
    free_per_shape: int = 2000
    max_epochs: int = 200


@dataclass(kw_only=True)
class TimConfig:
    """Refinement of an initial segmentation (spec "Template interaction module"): ``surface_parts`` ``all`` (the
    paper's) or ``largest`` (not the paper's: the connected part of the initial surface with the most faces; the
    other parts, a CNN's far spurious component among them, are left to the safeguard), then CPD of it onto the
    template surface (``template_points`` of it, outlier weight ``outlier_weight``, started from ``alignment_start``: ``world``, the
    case's own pose in patient coordinates, or ``principal-axes``, the best of four principal-axes poses, for shapes
    in any pose), then, with ``align_trim_fraction`` > 0 (not the paper's), ``align_steps`` of a trimmed
    registration on the template's field: the pose that brings the nearest ``align_trim_fraction`` of those points
    closest to its surface, kept only if it brings both clouds closer; ``trust_rule`` ``posterior`` (the paper's): the top ``trusted_fraction`` of the initial
    surface's points (``initial_points`` drawn on it) by the template's posterior mass are trusted, and so are the
    ``fitting_points`` drawn on the initial surface whose nearest registered point is trusted; ``template``: the
    ``trusted_fraction`` of the fitting points nearest the aligned template's surface, those facing its way first
    (not the paper's: a cut face lies inside the template, the posterior trusts it); ``fit_steps`` Adam
    steps at ``learning_rate`` on fresh codes and the hypernetwork (template frozen) with those surface points and a
    quarter as many uniform points; then ``trim_rounds`` times (0: the paper's rule) the trusted points become every
    fitting point within ``trim_within_mm`` of the fitted surface and facing its way, and the fit continues
    ``trim_steps`` steps on them; the refined surface by marching cubes on a
    ``mesh_resolution``³ grid over the canonical box. The safeguard: where the fitted shape and the initial disagree
    within ``keep_within_mm`` of the fitted surface, the initial's label is kept (the prior overrules gross errors,
    not the boundary's position within its accuracy; 0: the fitted shape everywhere, the paper's), and a case whose fitted surface lies on average more than
    ``max_fit_residual_mm`` from the trusted points keeps its initial segmentation (0: never), as does one where more
    than ``max_overruled_fraction`` of the initial's boundary lies farther than ``keep_within_mm`` from the fitted
    surface (1: never; the fit would replace the initial rather than repair it), and one whose fit was last fitted to
    less than ``min_trusted_share`` of the initial surface's fitting points (0: never; with ``trim_rounds``, the share
    the fit explains). ``removal`` ``islands`` (not the paper's; the default since the organ and the appendage
    were measured with it): the refinement removes only whole connected components of the initial's foreground
    (26-connected) that the result does not overlap — a spurious island goes, a part attached to the shape stays
    (it may still add); ``anywhere`` (the paper's): the fitted shape may remove any of it (where the prior does not
    fit the anatomy it shrinks a lobe)."""

    template_points: int = 3000
    initial_points: int = 4000
    surface_parts: str = choice("all", SURFACE_PARTS)
    alignment_start: str = choice("world", ALIGNMENT_STARTS)
    fitting_points: int = 16_000
    outlier_weight: float = 0.2
    align_trim_fraction: float = 0.0
    align_steps: int = 400
    trust_rule: str = choice("posterior", TRUST_RULES)
    trusted_fraction: float = 0.25
    fit_steps: int = 600
    learning_rate: float = 1e-4
    trim_rounds: int = 2
    trim_within_mm: float = 1.0
    trim_steps: int = 150
    mesh_resolution: int = 256
    keep_within_mm: float = 1.0
    max_fit_residual_mm: float = 1.0
    max_overruled_fraction: float = 1.0
    min_trusted_share: float = 0.0
    removal: str = choice("islands", REMOVALS)
    seed: int = 0


@dataclass(kw_only=True)
class IsmmConfig(MethodConfig):
    """ISMM: an implicit SDF template + per-shape deformations learned from shapes aligned in physical space;
    refines an initial segmentation by fitting the shape prior to its trustworthy part (its input is coordinates:
    any image size). The loss weights may change when a run resumes, like ``train``."""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ("shapes",)
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ("model",)
    TRAIN_SECTIONS: ClassVar[tuple[str, ...]] = ("loss", "train")
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ("tim",)

    method: str = "ismm"
    preset: str = "ismm"
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    model: IsmmModelConfig = field(default_factory=IsmmModelConfig)
    loss: IsmmLossConfig = field(default_factory=IsmmLossConfig)
    train: IsmmTrainConfig = field(default_factory=IsmmTrainConfig)
    tim: TimConfig = field(default_factory=TimConfig)
