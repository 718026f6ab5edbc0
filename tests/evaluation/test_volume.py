"""Voxel metrics (Dice, HD95, ASSD, NSD) in mm on anisotropic and oblique grids, and `evaluate --kind volume`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import AFFINE_CASES, sphere_volume

from implicitseg.evaluation.tables import evaluate_folders
from implicitseg.evaluation.volume import compute_volume_metrics
from implicitseg.geometry.frames import affine_from_geometry, index_to_world
from implicitseg.io.images import Volume, write_image

SHAPE = (60, 56, 40)
AFFINE = AFFINE_CASES["anisotropic"]
CENTER = index_to_world(np.array([[30.0, 28.0, 20.0]]), AFFINE)[0]


def ball(radius_mm: float, affine=AFFINE, shape=SHAPE, label: int = 1) -> Volume:
    return Volume((label * sphere_volume(affine, shape, CENTER, radius_mm)).astype(np.int16), affine)


def test_identical_labelmaps_score_perfectly():
    metrics = compute_volume_metrics(ball(8.0), ball(8.0))
    assert metrics == {"dice": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0}


def test_concentric_balls_two_mm_apart():
    metrics = compute_volume_metrics(ball(10.0), ball(8.0))
    assert metrics["dice"] == pytest.approx(2 * 8**3 / (8**3 + 10**3), abs=0.03)
    assert metrics["hd95_mm"] == pytest.approx(2.0, abs=0.9)  # voxels are 0.6 x 0.8 x 1.7 mm
    assert metrics["assd_mm"] == pytest.approx(2.0, abs=0.5)
    assert metrics["nsd"] < 0.3  # surfaces 2 mm apart, tolerance 1 mm


def test_prediction_on_another_grid_is_compared_on_the_ground_truths():
    direction = AFFINE_CASES["oblique"][:3, :3] / np.linalg.norm(AFFINE_CASES["oblique"][:3, :3], axis=0)
    fine_oblique = affine_from_geometry(CENTER - direction @ np.full(3, 11.75), [0.5, 0.5, 0.5], direction)
    prediction = ball(8.0, affine=fine_oblique, shape=(48, 48, 48))
    metrics = compute_volume_metrics(prediction, ball(8.0))
    assert metrics["dice"] > 0.93 and metrics["hd95_mm"] < 1.8


def test_labels_are_scored_one_by_one_and_a_missing_one_has_no_distance():
    truth = Volume(ball(10.0).array + ball(5.0).array, AFFINE)  # 2 inside, 1 in the shell
    prediction = Volume(ball(10.0).array.copy(), AFFINE)        # only label 1, covering both
    metrics = compute_volume_metrics(prediction, truth)
    assert set(metrics) == {f"{name}_label{k}" for name in ("dice", "hd95_mm", "assd_mm", "nsd") for k in (1, 2)}
    assert 0.5 < metrics["dice_label1"] < 0.95 and metrics["dice_label2"] == 0.0
    assert math.isnan(metrics["hd95_mm_label2"])


def test_evaluate_volume_writes_rows_and_skips_nan_in_the_summary(tmp_path):
    for case, radius in (("c1", 8.0), ("c2", 9.0)):
        write_image(tmp_path / "gt" / "labelsTs" / f"{case}.nii.gz", ball(8.0))
        write_image(tmp_path / "pred" / case / "labelmap.nii.gz", ball(radius))
    write_image(tmp_path / "pred" / "c3" / "labelmap.nii.gz", Volume(np.zeros(SHAPE, np.int16), AFFINE))
    write_image(tmp_path / "gt" / "labelsTs" / "c3.nii.gz", ball(8.0))
    (tmp_path / "gt" / "dataset.json").write_text(json.dumps({"name": "balls", "training": [], "test": []}))
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "metrics", kind="volume")
    assert summary["cases"] == ["c1", "c2", "c3"] and summary["nsd_tolerance_mm"] == 1.0
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,dice,hd95_mm,assd_mm,nsd" and rows[3] == "c3,0.0,nan,nan,nan"
    assert summary["metrics"]["dice"]["mean"] == pytest.approx((1.0 + 0.0 + summary["metrics"]["dice"]["median"]) / 3)
    assert summary["metrics"]["hd95_mm"]["median"] == pytest.approx(summary["metrics"]["hd95_mm"]["mean"] * 1.0,
                                                                      abs=1.0)  # two finite values only
