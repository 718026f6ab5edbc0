"""The ``prepare`` stage for voxel methods: the U-Net baseline (the NUDF ROI and its labelmap), the ROI detector
(the whole image on a coarse isotropic grid and its labelmap) and patch methods (the Implicit U-Net: the whole
image on its working grid with every label).

Per case, into ``PREP/<case>/`` (DESIGN §5): ``image.npy`` float32 ``(res, res, res)`` in ``(Z, Y, X)`` order,
normalised like NUDF's; ``label.npy`` uint8, same grid, 1 where the case's labelmap is > 0 (for an open-surface
target such as the LAA, the labelmap is the lumen closed at the ostium); ``roi.json`` (the grid as a ``Roi``, the
case id and source files, and the labelmap's centre of mass in world LPS mm).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from implicitseg.config import ImplicitUnetConfig, RoiDetectorConfig, RoiMethodConfig, UnetConfig
from implicitseg.data.check import CaseLabel, InputRules, read_case_label, read_case_mesh
from implicitseg.data.prepare import CasePreparer, checked_roi, label_center_world_mm, prepare_dataset
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.io.atomic import write_json, write_npy
from implicitseg.io.dataset import Case
from implicitseg.io.images import (Volume, bounding_cube, grid_at_spacing, read_image, resample_to_roi,
                                   resample_volume)
from implicitseg.io.intensities import normalise_intensities, roi_image_of
from implicitseg.models.unet import input_multiple

LABEL_MANIFEST_ENTRIES = {
    "files": {"image": "image.npy", "label": "label.npy", "roi": "roi.json"},
    "labels": {"0": "background", "1": "foreground (label > 0)"},
}
"""What a voxel method's manifest says of its per-case files and label values."""


def prepare_unet_dataset(dataset_dir: Path, out_dir: Path, config: UnetConfig | RoiDetectorConfig, *,
                         prepare_one: CasePreparer, **options: Any) -> dict:
    """Prepare for a MONAI U-Net (the baseline with ``prepare_one`` = :func:`prepare_roi_label_case`, the ROI
    detector with :func:`prepare_detector_case`): the input grid is checked against the network first (it halves
    the grid once per stride, so its side must be a multiple of their product), then
    :func:`~implicitseg.data.prepare.prepare_dataset` with the voxel methods' manifest entries."""
    multiple = input_multiple(config.model)
    res = config.input_res()
    if res % multiple:
        raise InputError(f"--res {res}: the {config.preset} U-Net needs a multiple of {multiple} voxels per side")
    return prepare_dataset(dataset_dir, out_dir, config, prepare_one=prepare_one,
                           manifest_entries=LABEL_MANIFEST_ENTRIES, **options)


def _labelmap_of(case: Case, image: Volume, rules: InputRules) -> CaseLabel:
    """The case's labelmap on ``image``'s grid, checked (:func:`~implicitseg.data.check.read_case_label`)."""
    if case.label is None:
        raise InputError(f"case {case.case_id!r} has no labelmap; voxel methods (unet, roi) train on labelmaps "
                         f"(dataset.json 'label' entries)")
    return read_case_label(case, image, rules)


def _foreground_on_grid(labelmap: Volume, grid: Roi, path: Path) -> np.ndarray:
    """``labelmap > 0`` on ``grid`` as uint8 (Z, Y, X): the mask resampled linearly and kept where ≥ 0.5, so a
    coarse grid keeps a structure by the share of each voxel it fills rather than by one nearest voxel."""
    fraction = resample_to_roi(Volume((labelmap.array > 0).astype(np.float32), labelmap.affine_lps), grid,
                               interpolation="linear", default_value=0.0)
    label = (fraction >= 0.5).astype(np.uint8)
    if not label.any():
        raise InputError(f"{path}: the labelmap has no foreground left on the {grid.res}³ grid of "
                         f"{grid.spacing_mm:.2f} mm voxels (structure too small or outside the grid)")
    return label


def _write_case(case: Case, out_dir: Path, grid: Roi, image_zyx: np.ndarray, label_zyx: np.ndarray,
                labelmap: Volume, mesh_space: str) -> None:
    case_dir = Path(out_dir) / case.case_id
    write_npy(case_dir / "image.npy", image_zyx)
    write_npy(case_dir / "label.npy", label_zyx)
    write_json(case_dir / "roi.json", {
        **grid.to_json(),
        "case": case.case_id,
        "image": str(case.image),
        "label": str(case.label),
        "mesh": str(case.mesh) if case.mesh is not None else None,
        "mesh_space": mesh_space,
        "label_center_world_mm": [float(c) for c in label_center_world_mm(labelmap)],
    })


def prepare_roi_label_case(case: Case, out_dir: Path, config: RoiMethodConfig, rules: InputRules = InputRules(),
                           *, seed: int = 0) -> dict:
    """One case for a voxel method on the ROI (the U-Net baseline): the ROI NUDF would train on (centred on the
    mesh's centroid, or the labelmap's centre of mass without a mesh), its image and its labelmap. ``seed`` is
    unused (no sampling)."""
    start = time.perf_counter()
    image = read_image(case.image)
    label = _labelmap_of(case, image, rules)
    center_world_mm = read_case_mesh(case, image, rules).center_of_mass_world_mm() if case.mesh is not None \
        else label_center_world_mm(label.volume)
    roi = checked_roi(image, center_world_mm, config.roi, case.image, "the ground truth's centre")
    image_zyx = roi_image_of(image, roi, config.intensity, case.image)
    label_zyx = _foreground_on_grid(label.volume, roi, case.label)
    _write_case(case, out_dir, roi, image_zyx, label_zyx, label.volume, rules.mesh_space)
    return {"case": case.case_id, "n_foreground": int(label_zyx.sum()), "label_resampled_from": label.resampled_from,
            "timings_s": {"total_s": time.perf_counter() - start}}


def prepare_detector_case(case: Case, out_dir: Path, config: RoiDetectorConfig, rules: InputRules = InputRules(), *,
                          seed: int = 0) -> dict:
    """One case for the ROI detector: the whole image and its labelmap on the coarse grid of
    :func:`~implicitseg.io.images.bounding_cube` (what :func:`implicitseg.inference.roi.detect_roi_center` sees)."""
    start = time.perf_counter()
    image = read_image(case.image)
    label = _labelmap_of(case, image, rules)
    grid = bounding_cube(image, config.grid.res, config.grid.margin_mm)
    image_zyx = roi_image_of(image, grid, config.intensity, case.image)
    label_zyx = _foreground_on_grid(label.volume, grid, case.label)
    _write_case(case, out_dir, grid, image_zyx, label_zyx, label.volume, rules.mesh_space)
    return {"case": case.case_id, "n_foreground": int(label_zyx.sum()), "label_resampled_from": label.resampled_from,
            "timings_s": {"total_s": time.perf_counter() - start}}


def working_grid(image: Volume, config: ImplicitUnetConfig) -> tuple[tuple[int, int, int], np.ndarray]:
    """A patch method's working grid of ``image``: its own axes at ``config.grid.spacing_mm`` (shape (i, j, k),
    affine index → world LPS mm)."""
    return grid_at_spacing(image, config.grid.spacing_mm)


def working_image(image: Volume, config: ImplicitUnetConfig, image_path: Path) -> Volume:
    """``image`` on its working grid (linear; outside: its minimum) with normalised intensities; NaN or infinite
    values raise :class:`InputError`."""
    shape, affine = working_grid(image, config)
    resampled = resample_volume(image, shape, affine, interpolation="linear", default_value=float(image.array.min()))
    resampled.array = normalise_intensities(resampled.array, config.intensity)
    if not np.all(np.isfinite(resampled.array)):
        raise InputError(f"{image_path}: the image holds NaN or infinite values")
    return resampled


def classes_on_grid(labelmap: Volume, n_classes: int, shape: tuple[int, int, int], affine_lps: np.ndarray,
                    path: Path) -> np.ndarray:
    """The labelmap on another grid, uint8 (i, j, k): each class's indicator resampled linearly, the largest share
    wins (a coarse grid keeps each structure by the part of each voxel it fills). Values outside 0 .. C - 1 raise
    :class:`InputError`."""
    values = np.unique(labelmap.array)
    unknown = [int(v) for v in values if not 0 <= v < n_classes]
    if unknown:
        raise InputError(f"{path}: label value(s) {unknown} are not among the dataset's classes 0..{n_classes - 1}")
    shares = np.stack([resample_volume(Volume((labelmap.array == value).astype(np.float32), labelmap.affine_lps),
                                       shape, affine_lps, interpolation="linear",
                                       default_value=1.0 if value == 0 else 0.0).array
                       for value in range(n_classes)])
    return shares.argmax(axis=0).astype(np.uint8)


def prepare_volume_case(case: Case, out_dir: Path, config: ImplicitUnetConfig, rules: InputRules = InputRules(), *,
                        seed: int = 0) -> dict:
    """One case for a patch method: ``image.npy`` (normalised) and ``label.npy`` (class per voxel, uint8) on the
    working grid in (D, H, W) = (k, j, i) order, and ``grid.json`` (its shape (i, j, k) and affine index → world
    LPS mm, the case id and sources). ``seed`` is unused (patches are drawn during training)."""
    start = time.perf_counter()
    n_classes = len(config.labels.names)
    image = read_image(case.image)
    labelmap = _labelmap_of(case, image, rules)
    grid_image = working_image(image, config, case.image)
    label = classes_on_grid(labelmap.volume, n_classes, grid_image.shape, grid_image.affine_lps, case.label)
    if not label.any():
        raise InputError(f"{case.label}: no labelled voxel left on the {config.grid.spacing_mm:g} mm working grid")
    case_dir = Path(out_dir) / case.case_id
    write_npy(case_dir / "image.npy", np.ascontiguousarray(grid_image.array.transpose(2, 1, 0)))
    write_npy(case_dir / "label.npy", np.ascontiguousarray(label.transpose(2, 1, 0)))
    write_json(case_dir / "grid.json", {"shape_ijk": list(grid_image.shape),
                                        "affine_lps": grid_image.affine_lps.tolist(),
                                        "case": case.case_id, "image": str(case.image), "label": str(case.label)})
    counts = np.bincount(label.ravel(), minlength=n_classes)
    return {"case": case.case_id, "voxels_per_class": [int(c) for c in counts],
            "label_resampled_from": labelmap.resampled_from, "timings_s": {"total_s": time.perf_counter() - start}}


def with_dataset_labels(config: ImplicitUnetConfig, dataset_labels: dict[str, str], dataset_dir: Path) -> None:
    """Fill ``config.labels.names`` from ``dataset.json``'s ``labels`` (values must be 0 .. C - 1); names already
    set must agree with it."""
    try:
        values = sorted(int(value) for value in dataset_labels)
    except ValueError:
        raise InputError(f"{dataset_dir}/dataset.json: label values must be integers, "
                         f"got {list(dataset_labels)}") from None
    if values != list(range(len(values))) or len(values) < 2:
        raise InputError(f"{dataset_dir}/dataset.json: labels must be 0, 1, ..., C - 1 with C >= 2 (0 = background), "
                         f"got {values}")
    names = tuple(dataset_labels[str(value)] for value in values)
    if config.labels.names and tuple(config.labels.names) != names:
        raise InputError(f"{dataset_dir}/dataset.json: labels {names} differ from the config's {config.labels.names}")
    config.labels.names = names
