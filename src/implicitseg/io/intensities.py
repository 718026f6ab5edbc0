"""Images as networks see them: resampled onto a ROI grid and normalised (NUDF spec, "Region of interest")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from implicitseg.config import IntensityConfig
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.io.images import Volume, resample_to_roi


def normalise_intensities(roi_image: np.ndarray, intensity_config: IntensityConfig) -> np.ndarray:
    """Normalised copy of ``roi_image`` (any shape) as float32.

    ``window`` mode: clip to ``window`` (e.g. HU) then divide by ``scale``; ``zscore`` mode: subtract the
    mean and divide by the standard deviation over the whole array (a constant array becomes zeros).
    """
    image = np.asarray(roi_image, dtype=np.float64)
    mode = intensity_config.mode
    if mode == "window":
        low, high = (float(v) for v in intensity_config.window)
        if not low < high:
            raise InputError(f"intensity window must be (low, high) with low < high, got {intensity_config.window}")
        if not intensity_config.scale > 0:
            raise InputError(f"intensity scale must be positive, got {intensity_config.scale}")
        normalised = np.clip(image, low, high) / float(intensity_config.scale)
    elif mode == "zscore":
        std = float(image.std())
        normalised = (image - image.mean()) / (std if std > 0 else 1.0)
    else:
        raise InputError(f"intensity mode must be 'window' or 'zscore', got {mode!r}")
    return normalised.astype(np.float32)


def roi_image_of(image: Volume, roi: Roi, intensity_config: IntensityConfig, image_path: Path) -> np.ndarray:
    """``image`` resampled into ``roi`` (linear; outside the image: its minimum, air in CT) and normalised;
    (res, res, res) float32 in (Z, Y, X). NaN or infinite values raise :class:`InputError`."""
    roi_image = resample_to_roi(image, roi, interpolation="linear", default_value=float(image.array.min()))
    roi_image = normalise_intensities(roi_image, intensity_config)
    if not np.all(np.isfinite(roi_image)):
        raise InputError(f"{image_path}: the ROI image holds NaN or infinite values after resampling")
    return roi_image
