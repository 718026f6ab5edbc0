"""The Implicit U-Net (spec ``implicit_unet.md``): whole images, patch-based training on points, sparse
coarse-to-fine inference at the voxels of any output grid. The ``*-conv`` presets swap the implicit decoder for a
U-Net's convolutional one on the same encoder: the paper's baseline, trained from the same prepared folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from implicitseg.config import (
    AugmentConfig,
    ImplicitUnetConfig,
    ImplicitUnetModelConfig,
    PatchTrainConfig,
    PointSamplingConfig,
    VolumeGridConfig,
)
from implicitseg.data.patches import PatchDataset
from implicitseg.data.prepare import prepare_dataset
from implicitseg.data.prepare_labels import prepare_volume_case, with_dataset_labels, working_image
from implicitseg.errors import InputError
from implicitseg.geometry.frames import index_to_world, world_to_index
from implicitseg.inference.sparse_grid import (
    WindowedPointPredictor,
    convolutional_probabilities,
    segment_grid,
)
from implicitseg.io.dataset import load_dataset
from implicitseg.io.images import Volume, resample_volume
from implicitseg.methods.base import ImagePrediction, Method, copy_preset
from implicitseg.models.implicit_unet import ImplicitUnet
from implicitseg.training.module import PatchSegmentationModule
from implicitseg.training.run import TrainingRecipe

_DEMO_MODEL = ImplicitUnetModelConfig(stage_channels=(16, 32, 64, 128), hidden=128)
_DEMO_TRAIN = PatchTrainConfig(learning_rate=1e-3, batch_size=4, patches_per_case=4, early_stopping_patience=1000,
                               augment=AugmentConfig(translate_voxels=4.0))
_DEMO_GRID = VolumeGridConfig(spacing_mm=2.0, patch_voxels=32)
_DEMO_SAMPLING = PointSamplingConfig(points_per_patch=4096, boundary_sigma_voxels=2.5)


def _with_conv_decoder(config: ImplicitUnetConfig, name: str) -> ImplicitUnetConfig:
    conv = copy_preset({"": config}, "")
    conv.preset = name
    conv.model = dataclasses.replace(conv.model, decoder="convolutional")
    return conv


_IUNET = ImplicitUnetConfig(preset="iunet")
_IUNET_DEMO = ImplicitUnetConfig(preset="iunet-demo", grid=_DEMO_GRID, model=_DEMO_MODEL, sampling=_DEMO_SAMPLING,
                                 train=_DEMO_TRAIN)

PRESETS: dict[str, ImplicitUnetConfig] = {
    # The spec's network: 4 stages 32-64-128-256 (2, 2, 4, 4 convs), 8 × 512 DeepSDF decoder, 96³ patches at 1 mm.
    "iunet": _IUNET,
    "iunet-conv": _with_conv_decoder(_IUNET, "iunet-conv"),
    # CPU demo: 32³ patches at 2 mm, stages 16-32-64-128, decoder 8 × 128, 4,096 points per patch.
    "iunet-demo": _IUNET_DEMO,
    "iunet-conv-demo": _with_conv_decoder(_IUNET_DEMO, "iunet-conv-demo"),
}


def preset_for_res(res: int | None) -> str:
    """The default preset (``--res`` sets its patch side)."""
    return "iunet"


def prepare(dataset_dir: Path, out_dir: Path, config: ImplicitUnetConfig, **options: object) -> dict:
    """Prepare every training case on its working grid, with the class names of ``dataset.json``."""
    multiple = 2 ** (len(config.model.stage_channels) - 1)
    if config.grid.patch_voxels < multiple or config.grid.patch_voxels % multiple:
        raise InputError(f"patch side {config.grid.patch_voxels} (--res): the {config.preset} encoder halves it "
                         f"{len(config.model.stage_channels) - 1} times; use a multiple of {multiple}")
    config = copy_preset({"": config}, "")
    with_dataset_labels(config, load_dataset(dataset_dir).labels, Path(dataset_dir))
    entries = {"files": {"image": "image.npy", "label": "label.npy", "grid": "grid.json"},
               "labels": {str(value): name for value, name in enumerate(config.labels.names)}}
    return prepare_dataset(dataset_dir, out_dir, config, prepare_one=prepare_volume_case, manifest_entries=entries,
                           **options)


def predict_image(model: torch.nn.Module, config: ImplicitUnetConfig, volume: Volume, image_path: Path, *,
                  device: torch.device, output_grid: tuple[tuple[int, int, int], np.ndarray] | None = None,
                  seed: int = 0) -> ImagePrediction:
    """Class probabilities and labels of a whole image on ``output_grid`` (shape, index → world LPS affine; default
    the image's own grid): the input grid, the same box at another spacing, a plane, anything."""
    start = time.perf_counter()
    work = working_image(volume, config, image_path)
    image_dhw = np.ascontiguousarray(work.array.transpose(2, 1, 0))
    shape, affine = output_grid if output_grid is not None else (volume.shape, volume.affine_lps)
    timings = {"working_image_s": time.perf_counter() - start}
    start = time.perf_counter()
    patch, overlap = int(config.grid.patch_voxels), float(config.inference.overlap)
    if isinstance(model, ImplicitUnet):
        predictor = WindowedPointPredictor(model.eval(), image_dhw, patch, overlap, device,
                                           batch_points=int(config.inference.batch_points))

        def probabilities_at(index_ijk: np.ndarray) -> np.ndarray:
            work_ijk = world_to_index(index_to_world(index_ijk.astype(np.float64), affine), work.affine_lps)
            return predictor.probabilities(work_ijk[:, ::-1])

        probabilities, counts = segment_grid(probabilities_at, shape, config.inference)
        counts.update({"n_decoder_evaluations": predictor.counts.evaluations, "n_windows": len(predictor.window_starts),
                       "n_window_encodings": predictor.counts.windows})
    else:
        work_probabilities = convolutional_probabilities(model.eval(), image_dhw, patch, overlap, device)
        probabilities = np.stack([resample_volume(Volume(channel.transpose(2, 1, 0), work.affine_lps), shape, affine,
                                                  interpolation="linear", default_value=float(index == 0)).array
                                  for index, channel in enumerate(work_probabilities)])
        counts = {"n_output_voxels": int(np.prod(shape)), "n_working_voxels": int(image_dhw.size)}
    timings["network_s"] = time.perf_counter() - start
    labels = probabilities.argmax(axis=0).astype(np.uint8)
    counts["voxels_per_class"] = [int(c) for c in np.bincount(labels.ravel(), minlength=probabilities.shape[0])]
    return ImagePrediction(timings=timings, counts=counts, labelmap=Volume(labels, affine),
                           foreground_probability=Volume(1.0 - probabilities[0], affine))


RECIPE = TrainingRecipe(method="implicit-unet", module_class=PatchSegmentationModule, dataset=PatchDataset.from_config)

METHOD = Method(
    name="implicit-unet",
    description="Implicit U-Net: whole images, implicit decoder on multi-scale features, sparse coarse-to-fine "
                "labels on any grid (presets *-conv: the U-Net with the same encoder)",
    config_class=ImplicitUnetConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=prepare,
    recipe=RECIPE,
    predict_image=predict_image,
    needs_label=True,
)
