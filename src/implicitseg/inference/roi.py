"""Where the ROI goes at prediction time: a centre the user gives, or a labelmap's centre of mass."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from implicitseg.errors import InputError
from implicitseg.io.dataset import case_id
from implicitseg.io.images import IMAGE_SUFFIXES, read_labelmap


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
