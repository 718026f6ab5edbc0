"""ISMM (spec ``ismm.md``): an implicit signed-distance template and per-shape deformations learned from training
shapes aligned in physical space (PICCT); it refines an initial segmentation (a CNN's labelmap or a mesh) by
fitting the shape prior to the part of it that agrees with the template.

``prepare`` aligns and samples the shapes, ``train`` learns the template and deformations and writes
``RUN/template.vtk`` (the template in the anchor case's world LPS mm), ``predict --initial`` / ``refine`` write the
refined mesh and labelmap of each image.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from implicitseg.config import IsmmConfig, IsmmModelConfig, IsmmTrainConfig, ShapesConfig, TimConfig
from implicitseg.data.ismm import ShapeSampleDataset, labelmap_surface, prepare_shapes, shape_surface
from implicitseg.errors import InputError
from implicitseg.geometry.distances import signed_distance
from implicitseg.geometry.frames import anchor_picct, index_to_world
from implicitseg.inference.refinement import refine_surface, safeguard, zero_level_mesh
from implicitseg.io.dataset import case_id
from implicitseg.io.images import IMAGE_SUFFIXES, Volume, read_labelmap
from implicitseg.io.meshes import MESH_SUFFIXES, Mesh, write_mesh
from implicitseg.methods.base import ImagePrediction, Method
from implicitseg.models.ismm import IsmmModel
from implicitseg.training.module import IsmmLightningModule
from implicitseg.training.run import TrainingRecipe, load_model, train_run

PRESETS: dict[str, IsmmConfig] = {
    # The paper's networks and losses (template 4 x 256, deformation 3 x 128 from hypernetworks of 256, codes of
    # 128), 500k surface + 200k free-space points per shape, batches of 16 shapes x 8,000 points, 200 epochs.
    "ismm": IsmmConfig(preset="ismm"),
    # CPU: template 3 x 128, deformation 2 x 64, hypernetworks of 64, codes of 32; 8 shapes x 2,000 points a step;
    # CPD on 1,000-1,500 points (pycpd is quadratic: ~5 s per shape); refinement 300 steps, 96^3 marching cubes.
    "ismm-demo": IsmmConfig(
        preset="ismm-demo",
        shapes=ShapesConfig(cpd_points=1000, surface_points=60_000, free_space_points=30_000),
        model=IsmmModelConfig(template_hidden=128, template_layers=3, deform_hidden=64, deform_layers=2,
                              hyper_hidden=64, hyper_code_dim=32, instance_code_dim=32),
        train=IsmmTrainConfig(batch_size=8, surface_per_shape=1000, uniform_per_shape=500, free_per_shape=500,
                              learning_rate=5e-4, max_epochs=400, early_stopping_patience=1000),
        tim=TimConfig(template_points=1000, initial_points=1500, fitting_points=6000, fit_steps=300, learning_rate=5e-4,
                      mesh_resolution=96),
    ),
}


def preset_for_res(res: int | None) -> str:
    """ISMM has no input grid: ``--res`` does not apply."""
    if res is not None:
        raise InputError("--res does not apply to ismm (it learns shapes as continuous signed distances)")
    return "ismm"


def template_mesh_world_mm(model: IsmmModel, config: IsmmConfig, resolution: int = 128) -> Mesh:
    """The learned template's surface in the anchor case's world LPS mm (through the anchor's own PICCT)."""
    canonical = zero_level_mesh(model, resolution)
    picct = anchor_picct(np.array(config.shapes.anchor_center_world_mm), config.shapes.global_scale)
    return Mesh(picct.canonical_to_world(canonical.vertices_canonical), canonical.faces)


def train(prep_dir: Path, run_dir: Path, config: IsmmConfig, **options) -> dict:
    """Train the template and deformations (:func:`~implicitseg.training.run.train_run`), then write
    ``RUN/template.vtk`` from the best checkpoint."""
    summary = train_run(RECIPE, prep_dir, run_dir, config, **options)
    model, trained = load_model(RECIPE, run_dir, "best")
    try:
        path = Path(run_dir) / "template.vtk"
        write_mesh(path, template_mesh_world_mm(model, trained))
        summary["template_mesh"] = str(path)
    except InputError as error:  # a run too short to have a surface yet: say so, keep the checkpoints
        summary["template_mesh"] = None
        summary["template_warning"] = str(error)
    return summary


def initial_for_image(initial: Path, image_path: Path) -> Path:
    """The initial segmentation of ``image_path``: ``initial`` itself if it is a file, else
    ``<folder>/<case id>.<labelmap or mesh extension>``."""
    initial = Path(initial)
    if initial.is_file():
        return initial
    if initial.is_dir():
        identifier = case_id(image_path)
        for suffix in IMAGE_SUFFIXES + MESH_SUFFIXES:
            if (initial / f"{identifier}{suffix}").is_file():
                return initial / f"{identifier}{suffix}"
        raise InputError(f"{initial}: no initial segmentation (labelmap or mesh) for case {identifier!r}")
    raise InputError(f"{initial}: initial segmentation not found")


def _label_value(config: IsmmConfig, source: Path) -> int:
    """The label the refined labelmap carries: ``shapes.label``, else the initial labelmap's most common label > 0
    (1 for a mesh)."""
    if config.shapes.label:
        return int(config.shapes.label)
    if any(source.name.lower().endswith(suffix) for suffix in MESH_SUFFIXES):
        return 1
    array = read_labelmap(source).array
    return int(np.bincount(array[array > 0].ravel().astype(np.int64)).argmax())


def initial_labelmap(source: Path, surface_world_mm: Mesh, output_grid: tuple[tuple[int, int, int], np.ndarray],
                     label_value: int) -> Volume:
    """The initial segmentation on ``output_grid``: the labelmap file itself (nearest, on another grid), or a mesh's
    inside (voxel centres of negative signed distance)."""
    if not any(source.name.lower().endswith(suffix) for suffix in MESH_SUFFIXES):
        labelmap = read_labelmap(source)
        return Volume((labelmap.array > 0).astype(np.uint8) * np.uint8(label_value), labelmap.affine_lps)
    shape, affine = output_grid
    index = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    inside = signed_distance(index_to_world(index, affine), surface_world_mm.vertices_world_mm,
                                surface_world_mm.faces) < 0
    return Volume(np.where(inside.reshape(shape), label_value, 0).astype(np.uint8), affine)


def predict_image(model: IsmmModel, config: IsmmConfig, image: Volume, image_path: Path, *, device: torch.device,
                  output_grid: tuple[tuple[int, int, int], np.ndarray], seed: int = 0,
                  initial: Path | None = None) -> ImagePrediction:
    """Refine the initial segmentation of ``image_path`` (a labelmap on any grid, or a closed mesh in world LPS mm):
    the refined labelmap on ``output_grid`` after the safeguard (:func:`~implicitseg.inference.refinement.safeguard`:
    ``counts["safeguard"]`` says what it kept and why) and its mesh (world LPS mm: the fitted surface where the
    safeguard kept none of the initial, else the labelmap's 1 mm-smoothed isosurface, or the initial mesh itself
    when the case keeps its initial); the trusted points as the point cloud."""
    if initial is None:
        raise InputError("ismm refines an initial segmentation: give --initial LABELMAP_OR_MESH (a file, or a "
                         "folder of <case>.nii.gz / <case>.vtk)")
    start = time.perf_counter()
    source = initial_for_image(initial, image_path)
    surface = shape_surface(source, config.shapes)
    label_value = _label_value(config, source)
    read_s = time.perf_counter() - start
    refinement = refine_surface(model.to(device), config, surface, output_grid, label_value=label_value, seed=seed)
    start = time.perf_counter()
    guard = safeguard(refinement, initial_labelmap(source, surface, output_grid, label_value), config)
    if guard.decision == "refined" or guard.n_voxels_kept == 0 or not guard.labelmap.array.any():
        mesh = refinement.mesh
    elif guard.decision == "initial" and any(source.name.lower().endswith(s) for s in MESH_SUFFIXES):
        mesh = surface
    else:
        mesh = labelmap_surface(guard.labelmap, 0, f"{source} (refined)")
    safeguard_s = time.perf_counter() - start
    counts = {**refinement.counts, "initial": str(source), "picct": refinement.picct.to_json(),
              "safeguard": guard.to_json(), "n_vertices": int(len(mesh.vertices_world_mm)),
              "n_faces": int(len(mesh.faces))}
    return ImagePrediction(timings={"read_initial_s": read_s, **refinement.timings, "safeguard_s": safeguard_s},
                           counts=counts, labelmap=guard.labelmap,
                           foreground_probability=Volume(guard.labelmap.array > 0, guard.labelmap.affine_lps),
                           mesh=mesh, points_world_mm=refinement.trusted_points_world_mm)


RECIPE = TrainingRecipe(method="ismm", module_class=IsmmLightningModule, dataset=ShapeSampleDataset.from_config,
                        # the losses need gradients of the SDF, also in validation
                        trainer_options=lambda config: {"inference_mode": False})

METHOD = Method(
    name="ismm",
    description="ISMM: an implicit shape template + deformations learned from shapes; refines an initial "
                "segmentation (predict --initial / refine)",
    config_class=IsmmConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=prepare_shapes,
    train=train,
    recipe=RECIPE,
    predict_image=predict_image,
    image_options=frozenset({"initial"}),
)
