"""Coarse-to-fine labels on an output grid and the sliding window of point predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from implicitseg.config import ImplicitUnetModelConfig, SparseInferenceConfig
from implicitseg.inference.sparse_grid import (
    WindowedPointPredictor,
    boundary_band,
    segment_grid,
    window_starts,
)
from implicitseg.models.implicit_unet import build_patch_network


def test_windows_step_by_patch_times_one_minus_overlap_and_end_flush():
    assert window_starts(20, 32, 0.3) == [0]
    assert window_starts(32, 32, 0.3) == [0]
    assert window_starts(100, 32, 0.3) == [0, 22, 44, 66, 68]
    starts = window_starts(77, 16, 0.5)
    assert starts[-1] == 77 - 16 and all(b - a <= 8 for a, b in zip(starts, starts[1:]))


def test_band_surrounds_every_change_of_label():
    labels = np.zeros((20, 20, 20), np.int64)
    labels[5:15, 5:15, 5:15] = 1
    band = boundary_band(labels, 2)
    # the change lies between voxels 4 and 5: both are marked, and the band reaches 2 voxels further each way
    assert band[2:8, 10, 10].all() and not band[1, 10, 10] and not band[8, 10, 10]
    assert not band[10, 10, 10] and not band[0, 0, 0]
    assert not boundary_band(np.zeros((5, 5, 5), np.int64), 3).any()


def _two_balls(index_ijk: np.ndarray) -> np.ndarray:
    """Probabilities of 3 classes: a ball of radius 12 (class 1) holding a ball of radius 5 (class 2), steep edges."""
    radius = np.linalg.norm(index_ijk - np.array([20.0, 22.0, 17.0]), axis=1)
    outer = 1.0 / (1.0 + np.exp((radius - 12.0) * 4.0))
    inner = 1.0 / (1.0 + np.exp((radius - 5.0) * 4.0))
    return np.stack([1.0 - outer, outer - inner, inner], axis=1)


@pytest.mark.parametrize("smoothing", [1, 3])
def test_sparse_labels_equal_dense_ones_with_far_fewer_points(smoothing):
    shape = (41, 44, 35)
    sparse_config = SparseInferenceConfig(smoothing_voxels=smoothing)
    dense_config = SparseInferenceConfig(smoothing_voxels=smoothing, dense=True)
    sparse, counts = segment_grid(_two_balls, shape, sparse_config)
    dense, dense_counts = segment_grid(_two_balls, shape, dense_config)
    assert sparse.shape == (3, *shape)
    assert np.array_equal(sparse.argmax(axis=0), dense.argmax(axis=0))
    assert counts["n_coarse_points"] == 11 * 11 * 9 and counts["n_output_voxels"] == dense_counts["n_query_points"]
    assert counts["n_query_points"] < 0.45 * dense_counts["n_query_points"]
    assert set(np.unique(sparse.argmax(axis=0))) == {0, 1, 2}


def test_window_predictor_blends_overlapping_windows_into_probabilities():
    torch.manual_seed(0)
    config = ImplicitUnetModelConfig(stage_channels=(4, 8), stage_convs=(1, 1), hidden=16, n_hidden_layers=2,
                                     skip_layer=2, n_frequencies=2, dropout=0.0)
    model = build_patch_network(config, 3).eval()
    image = np.random.default_rng(0).normal(size=(30, 20, 12)).astype(np.float32)
    predictor = WindowedPointPredictor(model, image, patch=16, overlap=0.3, device=torch.device("cpu"))
    assert len(predictor.window_starts) == 3 * 2 * 1
    points = np.array([[0.0, 0.0, 0.0], [29.0, 19.0, 11.0], [15.0, 10.0, 5.0], [-3.0, 40.0, 5.0]])
    probabilities = predictor.probabilities(points)
    assert probabilities.shape == (4, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # a point in one window only gets exactly that window's prediction
    with torch.inference_mode():
        window = torch.from_numpy(np.pad(image, [(0, 0), (0, 0), (0, 4)], constant_values=image.min()))
        logits = model(window[None, None, :16, :16, :16], torch.zeros(1, 1, 3))
    assert np.allclose(probabilities[0], torch.softmax(logits[0, 0], -1).numpy(), atol=1e-5)
    assert predictor.counts.windows == 6  # each window encoded once (cached)
    predictor.probabilities(points)
    assert predictor.counts.windows == 6 and predictor.counts.evaluations > 2 * 4
