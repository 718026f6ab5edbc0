"""Voxel metrics of a predicted labelmap against a ground-truth labelmap, in mm (MONAI's implementations).

Both labelmaps are compared on the ground truth's grid: a prediction on another grid is first resampled onto
it (nearest neighbour, through world coordinates), so a labelmap predicted at any resolution can be scored.
Distances use the grid's spacing; the direction matrix is a rotation (or a flip), which preserves them.

The labels scored are the task's (a ground truth's ``dataset.json``), never the prediction's: a stray label in a
prediction is background for every scored label, and the metric names stay the same for every case.
NSD (normalised surface distance, surface Dice) weighs boundary elements by their sub-voxel area (MONAI
``use_subvoxels=True``, Nikolov et al.'s surfels), so an anisotropic grid's boundary is not counted in voxels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_surface_dice

from implicitseg.errors import InputError
from implicitseg.io.images import Volume, resample_onto_image

NSD_TOLERANCE_MM = 1.0
"""Tolerance of the normalised surface distance (surface Dice), mm."""


def _threshold_name(threshold_mm: float) -> str:
    return f"at_{threshold_mm:g}mm"


def volume_metric_names(labels: Sequence[int], *, nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> tuple[str, ...]:
    """The keys :func:`compute_volume_metrics` returns for the foreground ``labels``, in order: ``dice``,
    ``nsd_at_<t>mm``, ``hd95_mm``, ``assd_mm`` — bare for one label, each with ``_label<k>`` for several."""
    base = ("dice", f"nsd_{_threshold_name(nsd_tolerance_mm)}", "hd95_mm", "assd_mm")
    if len(labels) == 1:
        return base
    return tuple(f"{name}_label{label}" for label in labels for name in base)


def on_grid_of(prediction: Volume, truth: Volume) -> np.ndarray:
    """``prediction``'s labels on ``truth``'s grid (nearest neighbour; 0 outside the prediction's grid), int64."""
    if prediction.shape == truth.shape and np.allclose(prediction.affine_lps, truth.affine_lps, atol=1e-4):
        return np.asarray(prediction.array).astype(np.int64)
    resampled, low = resample_onto_image(prediction, truth, interpolation="nearest", default_value=0.0)
    labels = np.zeros(truth.shape, dtype=np.int64)
    high = low + np.array(resampled.shape)
    labels[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = np.rint(resampled.array).astype(np.int64)
    return labels


def _label_metrics(predicted: np.ndarray, reference: np.ndarray, spacing: list[float],
                   nsd_tolerance_mm: float) -> tuple[float, float, float, float]:
    """(dice, nsd, hd95 mm, assd mm) of two boolean masks on one grid of ``spacing`` mm."""
    pred_any, true_any = bool(predicted.any()), bool(reference.any())
    if not (pred_any or true_any):
        return math.nan, math.nan, math.nan, math.nan  # nothing to find and nothing found: not scored
    if not (pred_any and true_any):
        return 0.0, 0.0, math.nan, math.nan  # a failure: no overlap, no surface to measure a distance to
    pred_mask = torch.from_numpy(predicted)[None, None]
    true_mask = torch.from_numpy(reference)[None, None]
    one_hot_pred = torch.cat([~pred_mask, pred_mask], dim=1).float()
    one_hot_true = torch.cat([~true_mask, true_mask], dim=1).float()
    dice = float(compute_dice(one_hot_pred, one_hot_true, include_background=False)[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = float(compute_hausdorff_distance(one_hot_pred, one_hot_true, percentile=95, spacing=spacing)[0, 0])
        assd = float(compute_average_surface_distance(one_hot_pred, one_hot_true, symmetric=True,
                                                      spacing=spacing)[0, 0])
        nsd = float(compute_surface_dice(one_hot_pred, one_hot_true, class_thresholds=[nsd_tolerance_mm],
                                         spacing=spacing, use_subvoxels=True)[0, 0])
    return dice, nsd, hd95, assd


def compute_volume_metrics(prediction: Volume, truth: Volume, labels: Sequence[int] | None = None, *,
                           nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, float]:
    """Per foreground label of ``labels`` (default: those in ``truth``; never those of ``prediction``): ``dice``,
    ``nsd_at_<t>mm`` (surface Dice at ``nsd_tolerance_mm``, sub-voxel boundary weighting), ``hd95_mm`` and
    ``assd_mm`` (average symmetric surface distance); names from :func:`volume_metric_names`.

    A label on one side only scores Dice 0 and NSD 0 (a failure) and NaN distances (no surface to measure to);
    a label on neither side is not scored (NaN everywhere). Other labels of ``prediction`` count as background.
    """
    predicted = on_grid_of(prediction, truth)
    reference = np.asarray(truth.array).astype(np.int64)
    if labels is None:
        labels = sorted(set(np.unique(reference).tolist()) - {0})
    labels = [int(label) for label in labels]
    if not labels:
        raise InputError("no foreground label to score (the ground truth holds none and none was given)")
    spacing = [float(s) for s in truth.spacing]
    names = volume_metric_names(labels, nsd_tolerance_mm=nsd_tolerance_mm)
    values: list[float] = []
    for label in labels:
        values += _label_metrics(predicted == label, reference == label, spacing, nsd_tolerance_mm)
    return dict(zip(names, values))
