"""What a method file builds and what its predictors return: :class:`Method` (the pipeline's view of a method:
what it is made of and what it can do), the signatures of its parts (:class:`Prepare`, :class:`Train`,
:class:`Load`, :class:`PredictRoi`, :class:`PredictImage`), :class:`RoiPrediction` / :class:`ImagePrediction`,
and the preset helpers every method file uses. The table of methods (:func:`implicitseg.methods.get_method`) is
built from the method files, which build on this module."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch

from implicitseg.config import MethodConfig
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.io.images import Volume, VolumeSeries
from implicitseg.io.meshes import Mesh
from implicitseg.training.run import TrainingRecipe, load_model, train_run

OutputGrid = tuple[tuple[int, int, int], np.ndarray]
"""A grid to predict on: its shape (i, j, k) and its index → world LPS mm affine (4, 4)."""


class Prepare(Protocol):
    """Prepare a dataset's training cases for a method into ``out_dir``; returns the manifest."""

    def __call__(self, dataset_dir: Path, out_dir: Path, config: Any, *, workers: int = 1,
                 resample_labels: bool = False, progress: Callable[[int], None] | None = None) -> dict: ...


class Train(Protocol):
    """Train a method's network on a prepared folder into ``run_dir``; returns the run's summary."""

    def __call__(self, prep_dir: Path, run_dir: Path, config: Any, *, max_epochs: int | None = None,
                 max_time: str | None = None, devices: int = 1, num_nodes: int = 1, resume: bool = False,
                 progress: bool = True) -> dict: ...


class Load(Protocol):
    """A trained run's network (eval mode, on ``map_location``) and its config."""

    def __call__(self, run_dir: Path, which: str = "best",
                 map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]: ...


class PredictRoi(Protocol):
    """One ROI image (res³, (Z, Y, X), normalised) → what the method finds in it."""

    def __call__(self, model: torch.nn.Module, config: Any, roi: Roi, roi_image_zyx: np.ndarray, *,
                 device: torch.device, seed: int = 0) -> "RoiPrediction": ...


class PredictImage(Protocol):
    """One whole image → its labelmap on ``output_grid``; ``options``: the method's declared ones
    (:data:`IMAGE_OPTIONS`)."""

    def __call__(self, model: torch.nn.Module, config: Any, image: Volume | VolumeSeries, image_path: Path, *,
                 device: torch.device, output_grid: OutputGrid, seed: int = 0, **options: Any) -> "ImagePrediction": ...


IMAGE_OPTIONS = {
    "frames": "the frames of a 3D+t image to segment (list of int; default: all)",
    "initial": "the segmentation to refine (a labelmap or mesh file, or a folder of them by case); required",
}
"""Options a whole-image method may declare (``Method.image_options``), passed to its ``predict_image`` as
keywords: ``predict --frame`` / ``--initial``, ``load_run(frames=..., initial=...)``."""


@dataclass(frozen=True)
class Method:
    """What the pipeline needs of a method, and what the method can do, declared (the pipeline asks, never guesses).

    - ``config_class``: its config (a :class:`~implicitseg.config.MethodConfig`: sections and their roles, input
      size); ``presets``: name → config of that class; ``preset_for_res(res)``: the default preset for ``--res``.
    - ``prepare`` (:class:`Prepare`); ``train`` and ``load`` (:class:`Train`, :class:`Load`), or a ``recipe``
      (:class:`~implicitseg.training.run.TrainingRecipe`) they are made from with the shared Lightning run.
    - What it predicts: ``predict_roi`` (:class:`PredictRoi`) for a method that sees a ROI around its target,
      ``predict_image`` (:class:`PredictImage`) for one that segments whole images on any grid, or neither for a
      method that only serves others (the ROI detector, used through ``predict --roi-run``); :attr:`predicts`.
    - ``image_options``: which of :data:`IMAGE_OPTIONS` its ``predict_image`` takes; ``input_series``: it segments
      3D+t images (read with :func:`~implicitseg.io.images.read_image_series`), not 3D ones.
    - ``needs_label``: ``prepare`` needs every case's labelmap (otherwise a labelmap or a mesh will do).

    A declaration that does not hold together (two predictors, options without ``predict_image``, an unknown option,
    presets of another class, neither ``train``/``load`` nor a recipe) raises ``TypeError`` when the method is built.
    """

    name: str
    description: str
    config_class: type[MethodConfig]
    presets: Mapping[str, MethodConfig]
    preset_for_res: Callable[[int | None], str]
    prepare: Prepare
    recipe: TrainingRecipe | None = None
    train: Train | None = None
    load: Load | None = None
    predict_roi: PredictRoi | None = None
    predict_image: PredictImage | None = None
    image_options: frozenset[str] = frozenset()
    input_series: bool = False
    needs_label: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.config_class, type) and issubclass(self.config_class, MethodConfig)):
            problems.append("config_class must be a subclass of implicitseg.config.MethodConfig")
        else:
            self.config_class.roles()
            problems += [f"preset {name!r} is not a {self.config_class.__name__}"
                         for name, preset in self.presets.items() if not isinstance(preset, self.config_class)]
        if self.recipe is not None:
            object.__setattr__(self, "train", self.train or partial(train_run, self.recipe))
            object.__setattr__(self, "load", self.load or partial(load_model, self.recipe))
        if self.train is None or self.load is None:
            problems.append("give train and load, or a recipe")
        if self.predict_roi is not None and self.predict_image is not None:
            problems.append("give predict_roi or predict_image, not both")
        if (self.image_options or self.input_series) and self.predict_image is None:
            problems.append("image_options and input_series need predict_image")
        unknown = sorted(set(self.image_options) - set(IMAGE_OPTIONS))
        if unknown:
            problems.append(f"unknown image_options {unknown}; known: {sorted(IMAGE_OPTIONS)}")
        if problems:
            raise TypeError(f"method {self.name!r}: " + "; ".join(problems))

    @property
    def predicts(self) -> Literal["roi", "image"] | None:
        """``roi``: it predicts on a ROI (each image needs a centre); ``image``: it segments whole images; None: it
        does not predict on its own."""
        if self.predict_roi is not None:
            return "roi"
        return "image" if self.predict_image is not None else None

    def preset(self, name: str) -> MethodConfig:
        """A fresh (deep) copy of preset ``name``; an unknown name raises :class:`InputError` listing the presets."""
        if name not in self.presets:
            raise InputError(f"unknown preset {name!r} for {self.name}; available: {', '.join(self.presets)}")
        return copy_preset(self.presets, name)


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
