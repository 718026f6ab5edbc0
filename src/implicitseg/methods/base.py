"""What a method file builds and what its predictors return: :class:`Method` (the pipeline's view of a method),
:class:`RoiPrediction` / :class:`ImagePrediction`, and the preset helpers every method file uses. The table of
methods (:func:`implicitseg.methods.get_method`) is built from the method files, which build on this module."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from implicitseg.errors import InputError
from implicitseg.io.images import Volume, VolumeSeries
from implicitseg.io.meshes import Mesh


@dataclass(frozen=True)
class Method:
    """What the pipeline needs of a method.

    - ``presets``: name → config; ``preset_for_res(res)`` picks the default preset for a resolution.
    - ``prepare(dataset_dir, out_dir, config, *, workers, progress) -> manifest``
    - ``train(prep_dir, run_dir, config, *, max_epochs, max_time, devices, resume) -> summary``
    - ``load(run_dir, which, map_location) -> (model, config)``
    - ``predict_roi(model, config, roi, roi_image_zyx, *, device, seed) -> RoiPrediction`` for a method that sees
      a ROI, or
    - ``predict_image(model, config, image, image_path, *, device, output_grid, seed[, frames]) -> ImagePrediction``
      for one that segments whole images (no ROI needed) on any grid ``(shape, affine)``; ``read_input(path)``
      reads its input (default: a 3D image);
    - neither for a method that only serves others (the ROI detector, used through ``predict --roi-run``);
    - ``needs_label``: ``prepare`` needs every case's labelmap (otherwise a labelmap or a mesh will do).
    """

    name: str
    description: str
    config_class: type
    presets: Mapping[str, Any]
    preset_for_res: Callable[[int | None], str]
    prepare: Callable[..., dict]
    train: Callable[..., dict]
    load: Callable[..., tuple[Any, Any]]
    predict_roi: Callable[..., Any] | None = None
    predict_image: Callable[..., Any] | None = None
    read_input: Callable[..., Any] | None = None
    needs_label: bool = False


PresetConfig = TypeVar("PresetConfig")


def copy_preset(presets: Mapping[str, PresetConfig], name: str) -> PresetConfig:
    """A fresh (deep) copy of preset ``name``; an unknown name raises ``KeyError``."""
    return copy.deepcopy(presets[name])


def preset_chooser(presets: Mapping[str, Any], prefix: str, label: str,
                   default_res: int = 64) -> Callable[[int | None], str]:
    """``choose(res)`` → the preset named ``<prefix><res>`` (``default_res`` when ``res`` is None); a resolution
    without a preset raises :class:`InputError` listing the presets."""
    sizes = [name[len(prefix):] for name in presets if name[len(prefix):].isdigit()]

    def choose(res: int | None) -> str:
        name = f"{prefix}{res or default_res}"
        if name not in presets:
            raise InputError(f"no {label} preset for --res {res}; the presets take {', '.join(sizes)} "
                             f"(or name one with --preset: {', '.join(presets)})")
        return name

    return choose


@dataclass
class RoiPrediction:
    """What a method predicts for one ROI, timings in s.

    Surface methods give a mesh and its dense point cloud in world LPS mm; voxel methods give the foreground
    probability on the ROI grid ``(res, res, res)`` in (Z, Y, X) order, which the predictor upsamples to the image
    grid, thresholds at ``probability_level`` into a labelmap and isosurfaces into a mesh.
    """

    timings: dict[str, float]
    counts: dict[str, int]
    mesh: Mesh | None = None
    points_world_mm: np.ndarray | None = None
    probability_zyx: np.ndarray | None = None
    probability_level: float = 0.5
    meshing: dict | None = None
    """How the mesh was made (extractor, cell size, components kept and dropped), for prediction.json."""


@dataclass
class ImagePrediction:
    """What a whole-image method predicts for one image on its output grid (the image's own, or the same box at
    ``--spacing``), timings in s: the labelmap (class per voxel) and the probability of any foreground class,
    whose isosurface at 0.5 becomes the mesh."""

    timings: dict[str, float]
    counts: dict[str, object]
    labelmap: Volume | VolumeSeries
    """A class per voxel; a series for 3D+t methods (one labelmap per frame)."""
    foreground_probability: Volume
    mesh: Mesh | None = None
    """The method's own surface (world LPS mm), written instead of the isosurface of ``foreground_probability``."""
    points_world_mm: np.ndarray | None = None
    """Points (N, 3) world LPS mm worth showing with the result (ISMM: the trusted points), written as points.ply."""
