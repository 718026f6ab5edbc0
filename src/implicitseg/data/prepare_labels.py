"""The ``prepare`` stage for voxel methods: the U-Net baseline (the NUDF ROI and its labelmap) and the ROI detector
(the whole image on a coarse isotropic grid and its labelmap).

Per case, into ``PREP/<case>/`` (DESIGN §5): ``image.npy`` float32 ``(res, res, res)`` in ``(Z, Y, X)`` order,
normalised like NUDF's; ``label.npy`` uint8, same grid, 1 where the case's labelmap is > 0 (for an open-surface
target such as the LAA, the labelmap is the lumen closed at the ostium); ``roi.json`` (the grid as a ``Roi``, the
case id and source files, and the labelmap's centre of mass in world LPS mm).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from implicitseg.config import RoiDetectorConfig, UnetConfig, input_res
from implicitseg.data.prepare import checked_roi, ground_truth_center_world_mm
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.io.atomic import write_json, write_npy
from implicitseg.io.dataset import Case
from implicitseg.io.images import Volume, bounding_cube, read_image, read_labelmap, resample_to_roi
from implicitseg.io.intensities import roi_image_of
from implicitseg.models.unet import input_multiple

LABEL_MANIFEST_ENTRIES = {
    "files": {"image": "image.npy", "label": "label.npy", "roi": "roi.json"},
    "labels": {"0": "background", "1": "foreground (label > 0)"},
}
"""What a voxel method's manifest says of its per-case files and label values."""


def check_grid_fits_network(config: UnetConfig | RoiDetectorConfig) -> None:
    """The U-Net halves its grid once per stride: the input side must be a multiple of their product."""
    multiple = input_multiple(config.model)
    res = input_res(config)
    if res % multiple:
        raise InputError(f"--res {res}: the {config.preset} U-Net needs a multiple of {multiple} voxels per side")


def _labelmap_of(case: Case) -> Volume:
    if case.label is None:
        raise InputError(f"case {case.case_id!r} has no labelmap; voxel methods (unet, roi) train on labelmaps "
                         f"(dataset.json 'label' entries)")
    return read_labelmap(case.label)  # refuses an empty labelmap


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
        "label_center_world_mm": [float(c) for c in labelmap.voxel_centers_world_mm(labelmap.array > 0).mean(axis=0)],
    })


def prepare_unet_case(case: Case, out_dir: Path, config: UnetConfig, mesh_space: str = "LPS", *,
                      seed: int = 0) -> dict:
    """One case for the U-Net baseline: the ROI NUDF would train on (centred on the mesh's centroid, or the
    labelmap's centre of mass without a mesh), its image and its labelmap. ``seed`` is unused (no sampling)."""
    check_grid_fits_network(config)
    start = time.perf_counter()
    image = read_image(case.image)
    labelmap = _labelmap_of(case)
    center_world_mm = ground_truth_center_world_mm(case, mesh_space)
    roi = checked_roi(image, center_world_mm, config.roi, case.image, "the ground truth's centre")
    image_zyx = roi_image_of(image, roi, config.intensity, case.image)
    label_zyx = _foreground_on_grid(labelmap, roi, case.label)
    _write_case(case, out_dir, roi, image_zyx, label_zyx, labelmap, mesh_space)
    return {"case": case.case_id, "n_foreground": int(label_zyx.sum()),
            "timings_s": {"total_s": time.perf_counter() - start}}


def prepare_detector_case(case: Case, out_dir: Path, config: RoiDetectorConfig, mesh_space: str = "LPS", *,
                          seed: int = 0) -> dict:
    """One case for the ROI detector: the whole image and its labelmap on the coarse grid of
    :func:`~implicitseg.io.images.bounding_cube` (what :func:`implicitseg.inference.roi.detect_roi_center` sees)."""
    check_grid_fits_network(config)
    start = time.perf_counter()
    image = read_image(case.image)
    labelmap = _labelmap_of(case)
    grid = bounding_cube(image, config.grid.res, config.grid.margin_mm)
    image_zyx = roi_image_of(image, grid, config.intensity, case.image)
    label_zyx = _foreground_on_grid(labelmap, grid, case.label)
    _write_case(case, out_dir, grid, image_zyx, label_zyx, labelmap, mesh_space)
    return {"case": case.case_id, "n_foreground": int(label_zyx.sum()),
            "timings_s": {"total_s": time.perf_counter() - start}}
