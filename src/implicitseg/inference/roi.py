"""Where the ROI goes at prediction time: a centre the user gives, a labelmap's centre of mass, or the ROI
detector's (a coarse whole-image U-Net) foreground's centre of mass."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from implicitseg.config import RoiDetectorConfig
from implicitseg.errors import InputError
from implicitseg.io.dataset import case_id
from implicitseg.io.images import IMAGE_SUFFIXES, Volume, bounding_cube, read_labelmap
from implicitseg.io.intensities import roi_image_of


def parse_center(text: str) -> np.ndarray:
    """``"X,Y,Z"`` (world LPS mm) → (3,) float64; anything else raises :class:`InputError`."""
    parts = [p.strip() for p in text.split(",")]
    try:
        center = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        center = np.zeros(0)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise InputError(f"--roi-center {text!r}: expected three numbers X,Y,Z in world LPS mm")
    return center


def label_center_world_mm(path: str | os.PathLike) -> np.ndarray:
    """Centre of mass (3,) in world LPS mm of the voxels > 0 of a labelmap (e.g. a coarse segmentation)."""
    labelmap = read_labelmap(path)
    return labelmap.voxel_centers_world_mm(labelmap.array > 0).mean(axis=0)


def label_for_image(label_source: str | os.PathLike, image_path: Path) -> Path:
    """The labelmap for ``image_path``: ``label_source`` itself if it is a file, else ``<folder>/<case id>.<ext>``."""
    source = Path(label_source)
    if source.is_file():
        return source
    if source.is_dir():
        identifier = case_id(image_path)
        for suffix in IMAGE_SUFFIXES:
            candidate = source / f"{identifier}{suffix}"
            if candidate.is_file():
                return candidate
        raise InputError(f"{source}: no labelmap for case {identifier!r}")
    raise InputError(f"{source}: ROI labelmap not found")


def foreground_probability(model: torch.nn.Module, image_zyx: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax probability of class 1 of a segmentation network (logits (1, 2, D, H, W)) for one image
    ``(D, H, W)`` in (Z, Y, X) order; returns float32 ``(D, H, W)``."""
    image = torch.from_numpy(np.ascontiguousarray(image_zyx, dtype=np.float32))[None, None].to(device)
    with torch.inference_mode():
        logits = model(image)
    return torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy()


@dataclass
class DetectedRoi:
    """The ROI detector's answer for one image: the centre (3,) world LPS mm and how it was found."""

    center_world_mm: np.ndarray
    n_voxels: int
    """Voxels of the detector grid in the component whose centre of mass is the centre."""
    max_probability: float
    time_s: float


def detect_roi_center(model: torch.nn.Module, config: RoiDetectorConfig, volume: Volume, *, device: torch.device,
                      what: str = "image") -> DetectedRoi:
    """Run the ROI detector on the whole image: the image on its bounding cube's coarse grid → foreground
    probability → the largest connected component above ``config.threshold`` → its probability-weighted centre
    of mass in world LPS mm. No voxel above the threshold raises :class:`InputError` naming ``what``."""
    start = time.perf_counter()
    grid = bounding_cube(volume, config.grid.res, config.grid.margin_mm)
    image_zyx = roi_image_of(volume, grid, config.intensity, Path(what))
    probability_zyx = foreground_probability(model, image_zyx, device)
    foreground = probability_zyx > config.threshold
    if not foreground.any():
        raise InputError(f"{what}: the ROI detector found no foreground (highest probability "
                         f"{probability_zyx.max():.2f} < {config.threshold}); give --roi-center or --roi-label")
    components, count = ndimage.label(foreground)
    sizes = np.bincount(components.ravel())[1:]
    largest = components == int(np.argmax(sizes)) + 1
    weights = probability_zyx[largest]
    index_zyx = np.argwhere(largest).astype(np.float64)
    center_index_xyz = (index_zyx * weights[:, None]).sum(axis=0)[::-1] / weights.sum()
    center_world_mm = grid.roi_index_to_world(center_index_xyz[None])[0]
    return DetectedRoi(center_world_mm, int(largest.sum()), float(probability_zyx.max()), time.perf_counter() - start)
