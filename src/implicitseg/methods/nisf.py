"""NISF (spec ``nisf.md``): a population prior as an auto-decoder; a new image is segmented by fitting its latent
code to the image alone, after which the segmentation can be sampled anywhere — the input grid, any spacing,
any plane given in world mm, any time frame."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from implicitseg.config import NisfConfig, NisfFitConfig, NisfModelConfig, NisfTrainConfig
from implicitseg.data.nisf import NisfSubjectDataset, normalised_frames, prepare_nisf_case
from implicitseg.data.prepare import ProgressCallback, prepare_dataset, split_cases
from implicitseg.data.prepare_labels import with_dataset_labels
from implicitseg.errors import InputError
from implicitseg.fitting.latent import fit_latent
from implicitseg.geometry.frames import (image_center_world_mm, index_to_world, nisf_coordinates,
                                        nisf_coordinates_of_world)
from implicitseg.io.dataset import load_dataset
from implicitseg.io.images import Volume, VolumeSeries, read_image_series
from implicitseg.methods.base import ImagePrediction, Method, copy_preset
from implicitseg.models.batching import point_batches
from implicitseg.models.nisf import NisfModel
from implicitseg.training.module import NisfLightningModule
from implicitseg.training.run import TrainingRecipe

PRESETS: dict[str, NisfConfig] = {
    # The paper's network: 8 residual Gabor layers of 128, codes of 128; every voxel of a frame per step.
    "nisf": NisfConfig(preset="nisf"),
    # CPU: 4 layers of 64, 8,192 voxels per step, validation fitting every 5 epochs for up to 300 steps.
    "nisf-demo": NisfConfig(
        preset="nisf-demo",
        model=NisfModelConfig(latent_dim=64, hidden=64, n_layers=4),
        train=NisfTrainConfig(learning_rate=1e-3, points_per_step=8192, val_every_epochs=5, val_fit_steps=300,
                              val_record_every=25, early_stopping_patience=1000),
        fit=NisfFitConfig(steps=300, learning_rate=1e-2, points_per_step=8192),
    ),
}


def preset_for_res(res: int | None) -> str:
    """NISF has no input grid: ``--res`` does not apply."""
    if res is not None:
        raise InputError("--res does not apply to nisf (it learns coordinates, at any resolution)")
    return "nisf"


def prepare(dataset_dir: Path, out_dir: Path, config: NisfConfig, *, workers: int = 1, val_fraction: float = 0.2,
            seed: int = 0, resample_labels: bool = False, progress: ProgressCallback | None = None) -> dict:
    """Prepare every training case with the dataset's classes, one latent row per training subject, and time
    as a coordinate when the images have several frames."""
    config = copy_preset({"": config}, "")
    dataset = load_dataset(dataset_dir)
    with_dataset_labels(config, dataset.labels, Path(dataset_dir))
    splits = split_cases([case.case_id for case in dataset.training], val_fraction, seed)
    # the dataset's first image says whether it is 3D+t (time becomes a coordinate) or 3D
    n_frames = read_image_series(dataset.training[0].image).frames.shape[0] if dataset.training else 1
    config.canonical = dataclasses.replace(config.canonical, n_training_subjects=len(splits["train"]),
                                           with_time=n_frames > 1)
    entries = {"files": {"image": "image.npy", "label": "label.npy", "grid": "grid.json"},
               "labels": {str(value): name for value, name in enumerate(config.labels.names)},
               "latent_rows": {case: row for row, case in enumerate(splits["train"])}}
    return prepare_dataset(dataset_dir, out_dir, config, prepare_one=prepare_nisf_case, manifest_entries=entries,
                           workers=workers, val_fraction=val_fraction, seed=seed, resample_labels=resample_labels,
                           progress=progress)


def fit_subject(model: NisfModel, config: NisfConfig, series: VolumeSeries, *, device: torch.device,
                seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """Fit a new code to the image ``series`` alone (every voxel of every frame, ``fit.points_per_step`` a step)
    for the run's validated number of steps (``fit.steps`` when none was validated). Returns the network (a
    fitted copy with ``fit.fit_weights``), the code (1, latent_dim) and what was done."""
    n_frames, spatial = series.frames.shape[0], series.frames.shape[1:]
    intensity = normalised_frames(series.frames)
    center = image_center_world_mm(series.frames.shape, series.affine_lps)
    index = np.indices(spatial).reshape(3, -1).T
    coordinates = np.concatenate([nisf_coordinates(index, series.affine_lps, center, config, time=f / n_frames)
                                  for f in range(n_frames)])
    validated = int(model.inference_steps)
    steps = validated if validated >= 0 else int(config.fit.steps)
    generator = torch.Generator().manual_seed(int(seed))
    network, latent = fit_latent(model.network.to(device), torch.from_numpy(coordinates).to(device),
                                 torch.from_numpy(intensity.reshape(-1)).to(device), config.fit, steps=steps,
                                 latent_l2=config.train.latent_l2, generator=generator)
    return network, latent, {"fit_steps": steps, "fit_points": int(len(coordinates)),
                             "fit_weights": bool(config.fit.fit_weights)}


@torch.inference_mode()
def class_probabilities(network: torch.nn.Module, latent: torch.Tensor, points_world_mm: np.ndarray,
                        center_world_mm: np.ndarray, config: NisfConfig, time: float, *,
                        batch_points: int = 131_072) -> np.ndarray:
    """Class probabilities (N, C) of the fitted subject at world LPS mm points (N, 3) and cycle time ``time``."""
    device = latent.device
    coordinates = nisf_coordinates_of_world(points_world_mm, center_world_mm, config, time)
    probabilities = np.zeros((len(coordinates), network.segmentation_head.out_features), np.float32)
    for rows, chunk in point_batches(coordinates, batch_points, device):
        probabilities[rows] = torch.softmax(network(chunk[None], latent)[0][0].float(), dim=-1).cpu().numpy()
    return probabilities


def predict_image(model: NisfModel, config: NisfConfig, series: VolumeSeries, image_path: Path, *,
                  device: torch.device, output_grid: tuple[tuple[int, int, int], np.ndarray], seed: int = 0,
                  frames: list[int] | None = None) -> ImagePrediction:
    """Fit the subject's code to ``series``, then its labels on ``output_grid`` (shape, index → world affine) at
    each frame of the input (or the given ``frames``): a labelmap series (T', I, J, K)."""
    start = time.perf_counter()
    network, latent, counts = fit_subject(model, config, series, device=device, seed=seed)
    timings = {"fitting_s": time.perf_counter() - start}
    start = time.perf_counter()
    n_frames = series.frames.shape[0]
    chosen = list(range(n_frames)) if frames is None else list(frames)
    bad = [f for f in chosen if not 0 <= f < n_frames]
    if bad:
        raise InputError(f"{image_path}: frame(s) {bad} outside 0..{n_frames - 1}")
    shape, affine = output_grid
    points = index_to_world(np.indices(shape).reshape(3, -1).T.astype(np.float64), affine)
    center = image_center_world_mm(series.frames.shape, series.affine_lps)
    labels, foreground = [], None
    for frame in chosen:
        probabilities = class_probabilities(network, latent, points, center, config, frame / n_frames)
        labels.append(probabilities.argmax(axis=1).astype(np.uint8).reshape(shape))
        if foreground is None:
            foreground = (1.0 - probabilities[:, 0]).reshape(shape)
    timings["sampling_s"] = time.perf_counter() - start
    counts.update({"frames": chosen, "n_output_voxels": int(np.prod(shape))})
    labelmap = VolumeSeries(np.stack(labels), affine, 1.0 / n_frames) if len(labels) > 1 else Volume(labels[0], affine)
    return ImagePrediction(timings=timings, counts=counts, labelmap=labelmap,
                           foreground_probability=Volume(foreground, affine))


RECIPE = TrainingRecipe(
    method="nisf", module_class=NisfLightningModule, dataset=NisfSubjectDataset.from_config,
    # validation fits codes (it needs gradients) and is costly: only every val_every_epochs epochs
    trainer_options=lambda config: {"inference_mode": False,
                                    "check_val_every_n_epoch": int(config.train.val_every_epochs)})

METHOD = Method(
    name="nisf",
    description="NISF: fit a subject's latent code to its image, then segment anywhere (between slices, planes, "
                "any spacing, any frame); 3D or 3D+t",
    config_class=NisfConfig,
    presets=PRESETS,
    preset_for_res=preset_for_res,
    prepare=prepare,
    recipe=RECIPE,
    predict_image=predict_image,
    image_options=frozenset({"frames"}),
    input_series=True,
    needs_label=True,
)
