"""The evaluate stage over folders: every ground-truth case a row (missing, empty, unreadable predictions counted
as failures), splits, GT spaces, CSV + summary files, table text."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from implicitseg.errors import InputError
from implicitseg.evaluation.surface import surface_metric_names
from implicitseg.evaluation.tables import evaluate_folders, format_table, metrics_paths
from implicitseg.io.meshes import Mesh, write_mesh

N_SAMPLES = 2_000


def square(z_mm: float) -> Mesh:
    """10 × 10 mm square at height ``z_mm``, far from the origin so an x/y flip moves it by ~50 mm."""
    vertices = np.array([[20.0, 30.0, z_mm], [30.0, 30.0, z_mm], [30.0, 40.0, z_mm], [20.0, 40.0, z_mm]])
    return Mesh(vertices, np.array([[0, 1, 2], [0, 2, 3]]))


EMPTY_VTK = "# vtk DataFile Version 4.2\nempty\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n0 0 0 1 0 0 0 1 0\n"


@pytest.fixture
def pred_dir(tmp_path: Path) -> Path:
    pred = tmp_path / "pred"
    write_mesh(pred / "case_a" / "mesh.vtk", square(1.0))  # 1.0 mm above its GT
    write_mesh(pred / "case_b" / "mesh.ply", square(0.5))  # 0.5 mm above its GT
    (pred / "case_b" / "prediction.json").write_text("{}")
    (pred / "not_a_case").mkdir()  # no mesh: skipped
    return pred


@pytest.fixture
def gt_dataset(tmp_path: Path) -> Path:
    """A dataset folder whose meshes are stored in RAS (STL has no header to say so: dataset.json does); case_c of
    the test split has no prediction."""
    root = tmp_path / "dataset"
    for case, z_mm in (("case_a", 0.0), ("case_b", 0.0), ("case_c", -5.0)):
        write_mesh(root / "meshesTs" / f"{case}.stl", square(z_mm), space="RAS")
    write_mesh(root / "meshesTr" / "case_a.stl", square(-5.0), space="RAS")  # the training split's case_a
    (root / "dataset.json").write_text(json.dumps({"name": "t", "mesh_space": "RAS", "training": [], "test": []}))
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_ground_truth_case_is_a_row_and_a_missing_one_scores_as_a_failure(pred_dir, gt_dataset, tmp_path):
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "out" / "metrics", n_samples=N_SAMPLES)
    csv_path, summary_path = tmp_path / "out" / "metrics.csv", tmp_path / "out" / "metrics.summary.json"
    rows = read_csv(csv_path)
    assert [(row["case"], row["status"]) for row in rows] == [("case_a", "ok"), ("case_b", "ok"), ("case_c", "missing")]
    assert list(rows[0]) == ["case", "status", *surface_metric_names()]
    for row, gap_mm in zip(rows, (1.0, 0.5)):
        for name in ("chamfer_pred_to_gt_mm", "chamfer_symmetric_mm", "accuracy_90_mm", "hd95_mm"):
            assert float(row[name]) == pytest.approx(gap_mm, abs=1e-9)
        assert float(row["completion_at_2mm"]) == 1.0 and float(row["far_area_fraction_at_2mm"]) == 0.0
    assert float(rows[2]["completion_at_2mm"]) == 0.0  # nothing of case_c's surface was found
    assert all(np.isnan(float(rows[2][name]))
               for name in ("chamfer_symmetric_mm", "hd95_mm", "far_area_fraction_at_2mm"))
    assert summary == json.loads(summary_path.read_text())
    assert (summary["n_cases"], summary["n_scored"], summary["n_missing"], summary["n_empty"], summary["n_failed"]) == \
        (3, 2, 1, 0, 0)
    assert summary["cases"] == ["case_a", "case_b", "case_c"] and summary["statuses"] == {"case_c": "missing"}
    assert summary["split"] == "test" and summary["gt_space"] == "RAS" and "ddof = 1" in summary["statistics"]
    chamfer = summary["metrics"]["chamfer_pred_to_gt_mm"]
    # over the two cases with a surface; sample std of (1.0, 0.5) = 0.25 * sqrt(2)
    assert {k: chamfer[k] for k in ("n", "mean", "std", "median")} == pytest.approx(
        {"n": 2, "mean": 0.75, "std": 0.25 * np.sqrt(2), "median": 0.75})
    assert 0.5 <= chamfer["ci95"][0] < 0.75 < chamfer["ci95"][1] <= 1.0
    completion = summary["metrics"]["completion_at_2mm"]  # over all three cases, the missing one at 0
    assert {k: completion[k] for k in ("n", "mean", "std", "median")} == pytest.approx(
        {"n": 3, "mean": 2 / 3, "std": np.std([1, 1, 0], ddof=1), "median": 1.0})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv", "metrics.summary.json"]
    again = evaluate_folders(pred_dir, gt_dataset, tmp_path / "again", n_samples=N_SAMPLES)
    assert again["metrics"]["completion_at_2mm"]["ci95"] == completion["ci95"]  # seeded



def test_a_case_predict_keep_going_could_not_predict_is_a_failed_row_even_over_an_earlier_mesh(
        pred_dir, gt_dataset, tmp_path):
    write_mesh(pred_dir / "case_c" / "mesh.vtk", square(-5.0))  # left by an earlier run: would score perfectly
    (pred_dir / "failures.json").write_text(json.dumps({"failures": [
        {"case": "case_c", "image": "imagesTs/case_c.nii.gz", "error": "the model found no surface"}]}))
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES)
    assert summary["statuses"] == {"case_c": "failed"} and summary["n_failed"] == 1
    assert summary["notes"]["case_c"] == "not predicted: the model found no surface"
    assert summary["metrics"]["completion_at_2mm"]["n"] == 3 and summary["metrics"]["chamfer_symmetric_mm"]["n"] == 2

    only_failures = tmp_path / "only_failures"
    only_failures.mkdir()
    (only_failures / "failures.json").write_text((pred_dir / "failures.json").read_text())
    summary = evaluate_folders(only_failures, gt_dataset, tmp_path / "metrics_none", n_samples=N_SAMPLES)
    assert (summary["n_cases"], summary["n_failed"], summary["n_missing"]) == (3, 1, 2)
    (tmp_path / "empty").mkdir()  # neither meshes nor failures: a wrong folder
    with pytest.raises(InputError, match="no predicted meshes"):
        evaluate_folders(tmp_path / "empty", gt_dataset, tmp_path / "m", n_samples=N_SAMPLES)


def test_strict_makes_a_missing_case_an_error_after_writing_the_files(pred_dir, gt_dataset, tmp_path):
    with pytest.raises(InputError, match=r"1 of 3 ground-truth case\(s\) missing or failed \(case_c\).*--strict"):
        evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES, strict=True)
    assert read_csv(tmp_path / "metrics.csv")[2]["status"] == "missing"
    write_mesh(pred_dir / "case_c" / "mesh.vtk", square(-5.0))
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES, strict=True)
    assert summary["n_scored"] == 3 and summary["metrics"]["hd95_mm"]["n"] == 3


def test_an_empty_and_an_unreadable_prediction_are_rows_with_their_status(pred_dir, gt_dataset, tmp_path):
    (pred_dir / "case_c").mkdir()
    (pred_dir / "case_c" / "mesh.vtk").write_text(EMPTY_VTK)
    (pred_dir / "case_b" / "mesh.ply").write_bytes(b"\x00\x01garbage")
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES)
    assert summary["statuses"] == {"case_b": "failed", "case_c": "empty"}
    assert "case_b" in summary["notes"] and "mesh.ply" in summary["notes"]["case_b"]
    assert (summary["n_scored"], summary["n_failed"], summary["n_empty"]) == (1, 1, 1)
    assert summary["metrics"]["completion_at_2mm"]["mean"] == pytest.approx(1 / 3)
    assert summary["metrics"]["hd95_mm"]["n"] == 1 and summary["metrics"]["hd95_mm"]["mean"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="case_b"):
        evaluate_folders(pred_dir, gt_dataset, tmp_path / "strict", n_samples=N_SAMPLES, strict=True)


def test_split_chooses_the_ground_truth_cases(pred_dir, gt_dataset, tmp_path):
    (pred_dir / "case_b" / "mesh.ply").unlink()
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES, split="training")
    assert summary["cases"] == ["case_a"] and summary["split"] == "training"
    assert summary["metrics"]["chamfer_pred_to_gt_mm"]["mean"] == pytest.approx(6.0, abs=1e-9)  # 1 mm vs -5 mm
    write_mesh(pred_dir / "case_b" / "mesh.ply", square(0.5))
    with pytest.raises(InputError, match=r"training split\): no ground truth for predicted case\(s\) case_b.*--split"):
        evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES, split="training")
    with pytest.raises(InputError, match="--split 'val' is not supported"):
        evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", split="val")


@pytest.mark.parametrize("gt_space, expected_mm", [("RAS", 1.0), ("LPS", None)])
def test_plain_ground_truth_folder_uses_gt_space(tmp_path, gt_space, expected_mm):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_mesh(pred / "c1" / "mesh.obj", square(1.0))
    write_mesh(gt / "c1.obj", square(0.0), space="RAS")
    summary = evaluate_folders(pred, gt, tmp_path / "m.csv", gt_space=gt_space, n_samples=N_SAMPLES)
    mean_mm = summary["metrics"]["chamfer_pred_to_gt_mm"]["mean"]
    if expected_mm is None:  # read as LPS, the GT lands ~60 mm away (x and y flipped)
        assert mean_mm > 50
    else:
        assert mean_mm == pytest.approx(expected_mm, abs=1e-9)
    assert (tmp_path / "m.csv").is_file() and (tmp_path / "m.summary.json").is_file()


def test_metrics_paths():
    assert metrics_paths("results/metrics") == (Path("results/metrics.csv"), Path("results/metrics.summary.json"))
    assert metrics_paths("results/run.csv") == (Path("results/run.csv"), Path("results/run.summary.json"))


def test_predicted_case_without_ground_truth_is_named(pred_dir, tmp_path):
    gt = tmp_path / "gt"
    write_mesh(gt / "case_a.vtk", square(0.0))
    with pytest.raises(InputError, match="case_b"):
        evaluate_folders(pred_dir, gt, tmp_path / "metrics", n_samples=N_SAMPLES)
    assert not (tmp_path / "metrics.csv").exists()


def test_no_predicted_cases_raises(tmp_path, gt_dataset):
    (tmp_path / "empty" / "case_a").mkdir(parents=True)
    with pytest.raises(InputError, match="no predicted meshes"):
        evaluate_folders(tmp_path / "empty", gt_dataset, tmp_path / "metrics")
    with pytest.raises(InputError, match="not found"):
        evaluate_folders(tmp_path / "missing", gt_dataset, tmp_path / "metrics")


def test_unknown_kind_and_volume_without_labelmaps_are_refused(pred_dir, gt_dataset, tmp_path):
    with pytest.raises(InputError, match="--kind 'area' is not supported; supported kinds: surface, volume, shape"):
        evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", kind="area")
    with pytest.raises(InputError, match="no predicted labelmaps.*--kind surface"):
        evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", kind="volume")
    assert not (tmp_path / "metrics.csv").exists()


def test_two_ground_truth_files_for_one_case_raise(tmp_path, pred_dir):
    gt = tmp_path / "gt"
    write_mesh(gt / "case_a.stl", square(0.0))
    write_mesh(gt / "case_a.ply", square(0.0))
    with pytest.raises(InputError, match="case_a"):
        evaluate_folders(pred_dir, gt, tmp_path / "metrics")


def test_format_table_shows_the_counts_n_and_the_cases_not_scored(pred_dir, gt_dataset, tmp_path):
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES)
    lines = format_table(summary).splitlines()
    assert lines[0] == "surface metrics over 3 case(s): 2 scored, 1 missing"
    assert lines[1].split() == ["metric", "n", "mean", "std", "median", "ci95", "of", "mean"]
    chamfer_line = next(line for line in lines if line.startswith("chamfer_pred_to_gt_mm"))
    assert chamfer_line.split()[1:5] == ["2", "0.7500", "0.3536", "0.7500"]
    assert next(line for line in lines if line.startswith("completion_at_2mm")).split()[1] == "3"
    assert lines[-1] == "case_c: missing"
    rows = [{"case": "case_a", "status": "ok", "hd95_mm": 1.0}, {"case": "case_b", "status": "missing",
                                                                   "hd95_mm": float("nan")}]
    lines = format_table(rows).splitlines()
    assert lines[1].split() == ["case", "status", "hd95_mm"] and lines[4].split() == ["case_b", "missing", "nan"]


def test_prediction_written_in_ras_is_read_back_by_its_prediction_json(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_mesh(pred / "c1" / "mesh.ply", square(1.0), space="RAS")  # PLY carries no space of its own
    (pred / "c1" / "prediction.json").write_text(json.dumps({"mesh_space": "RAS"}))
    write_mesh(gt / "c1.obj", square(0.0))
    summary = evaluate_folders(pred, gt, tmp_path / "m", n_samples=N_SAMPLES)
    assert summary["metrics"]["chamfer_pred_to_gt_mm"]["mean"] == pytest.approx(1.0, abs=1e-9)


def test_evaluate_command_prints_the_counts_and_strict_exits_2_with_one_line(pred_dir, gt_dataset, tmp_path):
    def evaluate(*extra):
        return subprocess.run([sys.executable, "-m", "implicitseg.cli", "evaluate", str(pred_dir), str(gt_dataset),
                               "--out", str(tmp_path / "metrics"), *extra], capture_output=True, text=True, timeout=300)

    shown = evaluate()
    assert shown.returncode == 0, shown.stderr
    assert "surface metrics over 3 case(s): 2 scored, 1 missing" in shown.stdout and "case_c: missing" in shown.stdout
    strict = evaluate("--strict")
    lines = [line for line in strict.stderr.splitlines() if line.strip()]
    assert strict.returncode == 2 and len(lines) == 1 and "case_c" in lines[0] and "Traceback" not in strict.stderr
