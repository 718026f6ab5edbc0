"""Voxel metrics (Dice, NSD, HD95, ASSD) in mm on anisotropic and oblique grids, and `evaluate --kind volume`: the
task's labels only, every ground-truth case a row, failures counted."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers import AFFINE_CASES, sphere_volume

from implicitseg.errors import InputError
from implicitseg.evaluation.tables import evaluate_folders
from implicitseg.evaluation.volume import compute_volume_metrics, volume_metric_names
from implicitseg.geometry.frames import affine_from_geometry, index_to_world
from implicitseg.io.images import Volume, write_image

SHAPE = (60, 56, 40)
AFFINE = AFFINE_CASES["anisotropic"]  # axis-aligned, 0.6 x 0.8 x 1.7 mm voxels
CENTER = index_to_world(np.array([[30.0, 28.0, 20.0]]), AFFINE)[0]
NAMES = ("dice", "nsd_at_1mm", "hd95_mm", "assd_mm")


def ball(radius_mm: float, affine=AFFINE, shape=SHAPE, label: int = 1) -> Volume:
    return Volume((label * sphere_volume(affine, shape, CENTER, radius_mm)).astype(np.int16), affine)


def test_identical_labelmaps_score_perfectly():
    metrics = compute_volume_metrics(ball(8.0), ball(8.0))
    assert metrics == {"dice": 1.0, "nsd_at_1mm": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0}
    assert volume_metric_names([1]) == NAMES
    assert volume_metric_names([1, 3])[4:] == tuple(f"{name}_label3" for name in NAMES)


def test_concentric_balls_two_mm_apart():
    metrics = compute_volume_metrics(ball(10.0), ball(8.0))
    assert metrics["dice"] == pytest.approx(2 * 8**3 / (8**3 + 10**3), abs=0.03)
    assert metrics["hd95_mm"] == pytest.approx(2.0, abs=0.9)  # voxels are 0.6 x 0.8 x 1.7 mm
    assert metrics["assd_mm"] == pytest.approx(2.0, abs=0.5)
    assert metrics["nsd_at_1mm"] < 0.3  # surfaces 2 mm apart, tolerance 1 mm


def test_nsd_weighs_the_boundary_by_area_on_an_anisotropic_grid():
    """A box and the same box 3 mm longer along x. The GT surface within 1 mm of the other surface, plus the
    other surface within 1 mm of the GT's, over both areas: everything but the GT's +x face less a 1 mm rim, the
    longer box's +x face and 2 mm of its side band (analytic: 0.8253). Counting boundary voxels instead of their
    face areas gives 0.878 on these 0.6 x 0.8 x 1.7 mm voxels, where an x face is 2.8 times a z face."""
    spacing = np.array([0.6, 0.8, 1.7])
    world = np.indices((80, 60, 30)).astype(float) * spacing[:, None, None, None]

    def box(high_x_mm: float) -> Volume:
        inside = np.ones((80, 60, 30), bool)
        for axis, (low, high) in enumerate(((6.0, high_x_mm), (6.0, 26.0), (6.8, 37.4))):
            inside &= (world[axis] >= low) & (world[axis] < high)
        return Volume(inside.astype(np.int16), affine_from_geometry([0.0, 0.0, 0.0], spacing, np.eye(3)))

    lx, ly, lz = 24.0, 20.0, 30.6  # the GT box, mm (40, 25 and 18 voxels)
    area_gt, area_pred = 2 * (lx * ly + ly * lz + lx * lz), 2 * ((lx + 3) * ly + ly * lz + (lx + 3) * lz)
    outside_tolerance = (ly - 2) * (lz - 2) + ly * lz + 2 * (ly + lz) * 2
    expected = 1 - outside_tolerance / (area_gt + area_pred)
    assert compute_volume_metrics(box(33.0), box(30.0))["nsd_at_1mm"] == pytest.approx(expected, abs=0.01)


def test_prediction_on_another_grid_is_compared_on_the_ground_truths():
    direction = AFFINE_CASES["oblique"][:3, :3] / np.linalg.norm(AFFINE_CASES["oblique"][:3, :3], axis=0)
    fine_oblique = affine_from_geometry(CENTER - direction @ np.full(3, 11.75), [0.5, 0.5, 0.5], direction)
    prediction = ball(8.0, affine=fine_oblique, shape=(48, 48, 48))
    metrics = compute_volume_metrics(prediction, ball(8.0))
    assert metrics["dice"] > 0.93 and metrics["hd95_mm"] < 1.8


def test_a_label_on_one_side_is_a_failure_and_on_neither_side_not_scored():
    truth = Volume(ball(10.0).array + ball(5.0).array, AFFINE)  # 2 inside, 1 in the shell
    prediction = Volume(ball(10.0).array.copy(), AFFINE)        # only label 1, covering both
    metrics = compute_volume_metrics(prediction, truth, [1, 2, 3])
    assert list(metrics) == list(volume_metric_names([1, 2, 3]))
    assert 0.5 < metrics["dice_label1"] < 0.95
    assert metrics["dice_label2"] == 0.0 and metrics["nsd_at_1mm_label2"] == 0.0  # missed: a failure
    assert math.isnan(metrics["hd95_mm_label2"]) and math.isnan(metrics["assd_mm_label2"])  # nothing to measure to
    assert all(math.isnan(metrics[f"{name}_label3"]) for name in NAMES)  # on neither side


def test_a_stray_label_in_the_prediction_keeps_the_names_and_counts_as_background():
    prediction = ball(8.0)
    index = tuple(np.argwhere(prediction.array == 1)[0])
    prediction.array[index] = 2  # one voxel of a label the binary task does not have
    metrics = compute_volume_metrics(prediction, ball(8.0), [1])
    assert list(metrics) == list(NAMES)
    n = int((ball(8.0).array == 1).sum())
    assert metrics["dice"] == pytest.approx(2 * (n - 1) / (2 * n - 1))


def _write_task(root, labels: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"name": "balls", "labels": labels, "training": [], "test": []}))


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_volume_counts_every_case_with_known_answers(tmp_path):
    """Four GT cases: c1 perfect, c2 with one stray voxel of label 2, c3 predicted empty, c4 not predicted. Dice
    (1, ≈1, 0, 0), NSD (1, ≈1, 0, 0); HD95 only over c1 and c2 (n = 2)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write_task(gt, {"0": "background", "1": "ball"})
    for case in ("c1", "c2", "c3", "c4"):
        write_image(gt / "labelsTs" / f"{case}.nii.gz", ball(8.0))
    write_image(pred / "c1" / "labelmap.nii.gz", ball(8.0))
    stray = ball(8.0)
    stray.array[tuple(np.argwhere(stray.array == 0)[0])] = 2
    write_image(pred / "c2" / "labelmap.nii.gz", stray)
    write_image(pred / "c3" / "labelmap.nii.gz", Volume(np.zeros(SHAPE, np.int16), AFFINE))
    summary = evaluate_folders(pred, gt, tmp_path / "metrics", kind="volume")

    rows = _rows(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["case", "status", *NAMES]
    assert [(r["case"], r["status"]) for r in rows] == [("c1", "ok"), ("c2", "ok"), ("c3", "empty"), ("c4", "missing")]
    assert rows[2]["dice"] == rows[3]["dice"] == "0.0" and rows[3]["nsd_at_1mm"] == "0.0"
    assert rows[3]["hd95_mm"] == "nan" and rows[2]["assd_mm"] == "nan"
    assert (summary["n_cases"], summary["n_scored"], summary["n_empty"], summary["n_missing"]) == (4, 2, 1, 1)
    assert summary["labels"] == {"1": "ball"} and summary["nsd_tolerance_mm"] == 1.0
    assert "not in the task" in summary["notes"]["c2"]
    dice = summary["metrics"]["dice"]
    assert dice["n"] == 4 and dice["mean"] == pytest.approx(0.5, abs=1e-3)  # (1 + 1 + 0 + 0) / 4
    assert dice["std"] == pytest.approx(np.std([1, 1, 0, 0], ddof=1), abs=1e-3)
    assert summary["metrics"]["nsd_at_1mm"]["mean"] == pytest.approx(0.5, abs=1e-3)
    assert summary["metrics"]["hd95_mm"]["n"] == 2 and summary["metrics"]["hd95_mm"]["mean"] == pytest.approx(0.0)
    with pytest.raises(InputError, match=r"c4"):
        evaluate_folders(pred, gt, tmp_path / "strict", kind="volume", strict=True)


def test_the_label_set_comes_from_the_task_not_the_prediction(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write_task(gt, {"0": "background", "1": "shell", "2": "core"})
    write_image(gt / "labelsTs" / "c1.nii.gz", Volume(ball(10.0).array + ball(5.0).array, AFFINE))
    write_image(gt / "labelsTs" / "c2.nii.gz", ball(10.0))  # no core in this case
    write_image(pred / "c1" / "labelmap.nii.gz", ball(10.0))  # the core is missed
    write_image(pred / "c2" / "labelmap.nii.gz", ball(10.0))
    summary = evaluate_folders(pred, gt, tmp_path / "metrics", kind="volume")
    assert list(summary["metrics"]) == list(volume_metric_names([1, 2]))
    assert summary["labels"] == {"1": "shell", "2": "core"}
    core = summary["metrics"]["dice_label2"]
    assert core["n"] == 1 and core["mean"] == 0.0  # c1 missed it; c2 has none on either side: not scored
    assert summary["metrics"]["hd95_mm_label2"]["n"] == 0 and math.isnan(summary["metrics"]["hd95_mm_label2"]["mean"])
    assert summary["metrics"]["dice_label1"]["n"] == 2

    write_image(gt / "labelsTs" / "c2.nii.gz", ball(10.0, label=3))
    with pytest.raises(InputError, match=r"c2.nii.gz: label\(s\) \[3\] not declared"):
        evaluate_folders(pred, gt, tmp_path / "metrics", kind="volume")
