"""Voxel metrics of a predicted labelmap against a ground-truth labelmap, in mm (MONAI's implementations).

Both labelmaps are compared on the ground truth's grid: a prediction on another grid is first resampled onto
it (nearest neighbour, through world coordinates), so a labelmap predicted at any resolution can be scored.
Distances use the grid's spacing; the direction matrix is a rotation (or a flip), which preserves them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_surface_dice

from implicitseg.io.images import Volume, resample_onto_image

NSD_TOLERANCE_MM = 1.0
"""Tolerance of the normalised surface distance (surface Dice), mm."""


def on_grid_of(prediction: Volume, truth: Volume) -> np.ndarray:
    """``prediction``'s labels on ``truth``'s grid (nearest neighbour; 0 outside the prediction's grid), int64."""
    if prediction.shape == truth.shape and np.allclose(prediction.affine_lps, truth.affine_lps, atol=1e-4):
        return np.asarray(prediction.array).astype(np.int64)
    resampled, low = resample_onto_image(prediction, truth, interpolation="nearest", default_value=0.0)
    labels = np.zeros(truth.shape, dtype=np.int64)
    high = low + np.array(resampled.shape)
    labels[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = np.rint(resampled.array).astype(np.int64)
    return labels


def compute_volume_metrics(prediction: Volume, truth: Volume, *,
                           nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, float]:
    """Per foreground label of ``truth`` (and of ``prediction``): ``dice``, ``hd95_mm``, ``assd_mm`` (average
    symmetric surface distance) and ``nsd`` (surface Dice at ``nsd_tolerance_mm``). With one foreground label the
    names are bare; with several each carries ``_label<k>``. Distances are NaN where either side lacks the label
    (Dice is then 0, or 1 when both lack it)."""
    predicted = on_grid_of(prediction, truth)
    reference = np.asarray(truth.array).astype(np.int64)
    labels = sorted((set(np.unique(reference).tolist()) | set(np.unique(predicted).tolist())) - {0})
    spacing = [float(s) for s in truth.spacing]
    metrics: dict[str, float] = {}
    for label in labels:
        suffix = "" if len(labels) == 1 else f"_label{label}"
        pred_mask = torch.from_numpy(predicted == label)[None, None]
        true_mask = torch.from_numpy(reference == label)[None, None]
        one_hot_pred = torch.cat([~pred_mask, pred_mask], dim=1).float()
        one_hot_true = torch.cat([~true_mask, true_mask], dim=1).float()
        both_present = bool(pred_mask.any()) and bool(true_mask.any())
        if both_present:
            dice = float(compute_dice(one_hot_pred, one_hot_true, include_background=False)[0, 0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hd95 = float(compute_hausdorff_distance(one_hot_pred, one_hot_true, percentile=95, spacing=spacing)[0, 0])
                assd = float(compute_average_surface_distance(one_hot_pred, one_hot_true, symmetric=True,
                                                              spacing=spacing)[0, 0])
                nsd = float(compute_surface_dice(one_hot_pred, one_hot_true, class_thresholds=[nsd_tolerance_mm],
                                                 spacing=spacing)[0, 0])
        else:
            dice = 1.0 if not (pred_mask.any() or true_mask.any()) else 0.0
            hd95 = assd = nsd = math.nan
        metrics.update({f"dice{suffix}": dice, f"hd95_mm{suffix}": hd95, f"assd_mm{suffix}": assd,
                        f"nsd{suffix}": nsd})
    return metrics
