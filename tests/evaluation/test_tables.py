"""The evaluate stage over folders: case matching, GT spaces, CSV + summary files, table text."""

from __future__ import annotations

import csv
import json
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
    """A dataset folder whose meshes are stored in RAS (STL has no header to say so: dataset.json does)."""
    root = tmp_path / "dataset"
    write_mesh(root / "meshesTs" / "case_a.stl", square(0.0), space="RAS")
    write_mesh(root / "meshesTr" / "case_b.stl", square(0.0), space="RAS")
    write_mesh(root / "meshesTr" / "case_a.stl", square(-5.0), space="RAS")  # meshesTs wins for case_a
    write_mesh(root / "meshesTr" / "case_c.stl", square(-5.0), space="RAS")  # no prediction: ignored
    (root / "dataset.json").write_text(json.dumps({"name": "t", "mesh_space": "RAS", "training": [], "test": []}))
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_dataset_ground_truth_in_ras_gives_known_chamfer(pred_dir, gt_dataset, tmp_path):
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "out" / "metrics", n_samples=N_SAMPLES)
    csv_path, summary_path = tmp_path / "out" / "metrics.csv", tmp_path / "out" / "metrics.summary.json"
    rows = read_csv(csv_path)
    assert [row["case"] for row in rows] == ["case_a", "case_b"]
    assert list(rows[0]) == ["case", *surface_metric_names()]
    for row, gap_mm in zip(rows, (1.0, 0.5)):
        for name in ("chamfer_pred_to_gt", "chamfer_symmetric", "accuracy_90", "hd95"):
            assert float(row[name]) == pytest.approx(gap_mm, abs=1e-9)
        assert float(row["completion_2mm"]) == 1.0 and float(row["far_area_fraction_2mm"]) == 0.0
    assert summary == json.loads(summary_path.read_text())
    assert summary["n_cases"] == 2 and summary["cases"] == ["case_a", "case_b"] and summary["gt_space"] == "RAS"
    chamfer = summary["metrics"]["chamfer_pred_to_gt"]
    assert chamfer == pytest.approx({"mean": 0.75, "std": 0.25, "median": 0.75})
    assert summary["metrics"]["completion_2mm"] == pytest.approx({"mean": 1.0, "std": 0.0, "median": 1.0})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv", "metrics.summary.json"]


@pytest.mark.parametrize("gt_space, expected_mm", [("RAS", 1.0), ("LPS", None)])
def test_plain_ground_truth_folder_uses_gt_space(tmp_path, gt_space, expected_mm):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_mesh(pred / "c1" / "mesh.obj", square(1.0))
    write_mesh(gt / "c1.obj", square(0.0), space="RAS")
    summary = evaluate_folders(pred, gt, tmp_path / "m.csv", gt_space=gt_space, n_samples=N_SAMPLES)
    mean_mm = summary["metrics"]["chamfer_pred_to_gt"]["mean"]
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


def test_format_table_summary_and_rows(pred_dir, gt_dataset, tmp_path):
    summary = evaluate_folders(pred_dir, gt_dataset, tmp_path / "metrics", n_samples=N_SAMPLES)
    text = format_table(summary)
    assert "2 case(s)" in text
    chamfer_line = next(line for line in text.splitlines() if line.startswith("chamfer_pred_to_gt"))
    assert chamfer_line.split()[1:] == ["0.7500", "0.2500", "0.7500"]
    rows = [{"case": "case_a", "hd95": 1.0}, {"case": "case_b", "hd95": 0.5}]
    lines = format_table(rows).splitlines()
    assert lines[1].split() == ["case", "hd95"] and lines[3].split() == ["case_a", "1.0000"]


def test_prediction_written_in_ras_is_read_back_by_its_prediction_json(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_mesh(pred / "c1" / "mesh.ply", square(1.0), space="RAS")  # PLY carries no space of its own
    (pred / "c1" / "prediction.json").write_text(json.dumps({"mesh_space": "RAS"}))
    write_mesh(gt / "c1.obj", square(0.0))
    summary = evaluate_folders(pred, gt, tmp_path / "m", n_samples=N_SAMPLES)
    assert summary["metrics"]["chamfer_pred_to_gt"]["mean"] == pytest.approx(1.0, abs=1e-9)
