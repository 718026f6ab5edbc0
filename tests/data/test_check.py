"""implicitseg check: every damaged input is one problem naming the file; clean datasets (synthetic ones too) pass."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import damage_small_dataset, write_small_dataset
from implicitseg.data.check import CHECKS, check_dataset
from implicitseg.data.synthetic import write_synthetic_dataset
from implicitseg.io.images import Volume, read_image, write_image
from implicitseg.io.meshes import read_mesh, write_mesh


def _rewrite_label(root: Path, change) -> None:
    path = root / "labelsTr" / "c1.nii.gz"
    write_image(path, change(read_image(path, dtype=np.int16)))


def truncated_image(root):
    damage_small_dataset(root, "truncated image")
    return "images readable", ["imagesTr/c1.nii.gz: truncated file"]


def label_origin_5mm_off(root):
    damage_small_dataset(root, "label origin 5 mm off")
    return "labels on the image grid", ["labelsTr/c1.nii.gz: labelmap not on the grid of its image",
                                        "imagesTr/c1.nii.gz", "origin 5.00 mm apart"]


def label_cropped_10_voxels(root):
    damage_small_dataset(root, "label cropped 10 voxels")
    return "labels on the image grid", ["labelsTr/c1.nii.gz", "size: image 40×44×30, label 40×44×20"]


def undeclared_label_value(root):
    damage_small_dataset(root, "undeclared label value")
    return "label values declared", ["labelsTr/c1.nii.gz: label value(s) 3 are not declared", "(0, 1)"]


def empty_label(root):
    _rewrite_label(root, lambda label: Volume(np.zeros_like(label.array), label.affine_lps))
    return "labels not empty", ["labelsTr/c1.nii.gz: labelmap is empty"]


def nan_intensities(root):
    path = root / "imagesTr" / "c1.nii.gz"
    image = read_image(path)
    image.array[3, 4, 5] = np.nan
    write_image(path, image)
    return "intensities finite", ["imagesTr/c1.nii.gz: image holds NaN or infinite intensities"]


def mesh_in_ras(root):
    path = root / "meshesTr" / "c1.ply"
    write_mesh(path, read_mesh(path), space="RAS")  # PLY says nothing of its space; dataset.json says LPS
    return "meshes inside the image", ["meshesTr/c1.ply: only 0% of the mesh's vertices lie inside its image",
                                       "other convention (LPS ↔ RAS) 100% would", "mesh_space"]


def mesh_faces_on_missing_vertices(root):
    path = root / "meshesTr" / "c1.ply"
    text = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n" \
           "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n"
    path.write_text(text)
    return "meshes readable, with faces", ["meshesTr/c1.ply: mesh faces index vertex 9"]


def truncated_test_image(root):
    path = root / "imagesTs" / "t0.nii.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return "test images readable", ["imagesTs/t0.nii.gz: truncated file"]


def duplicate_case_id(root):
    listing = json.loads((root / "dataset.json").read_text())
    listing["training"].append(listing["training"][0])
    (root / "dataset.json").write_text(json.dumps(listing))
    return "case ids unique", ["dataset.json: case id 'c0' is listed 2 times"]


DAMAGES = [truncated_image, label_origin_5mm_off, label_cropped_10_voxels, undeclared_label_value, empty_label,
           nan_intensities, mesh_in_ras, mesh_faces_on_missing_vertices, truncated_test_image, duplicate_case_id]


def test_a_clean_dataset_passes_every_check_and_reports_its_ranges(tmp_path):
    write_small_dataset(tmp_path, mesh_suffix=".ply")
    report = check_dataset(tmp_path, needs_label=True)
    assert report.ok and report.problems == []
    assert [row.check for row in report.rows] == list(CHECKS)
    assert all(row.passed == (1 if row.check == "test images readable" else 2) for row in report.rows)
    assert report.size == {"min": [40, 44, 30], "max": [40, 44, 30]}
    np.testing.assert_allclose(report.spacing_mm["min"], [1.1, 1.0, 1.5], atol=1e-5)
    assert report.intensity_range[0] >= 0.0 and report.intensity_range[1] > 900.0
    assert report.label_values == [0, 1]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda damage: damage.__name__)
def test_each_damaged_input_is_one_problem_naming_the_file(tmp_path, damage):
    write_small_dataset(tmp_path, mesh_suffix=".ply")
    check, fragments = damage(tmp_path)
    report = check_dataset(tmp_path)
    assert not report.ok
    assert [row.check for row in report.rows if not row.ok] == [check]
    assert len(report.problems) == 1 and "\n" not in report.problems[0]
    for fragment in fragments:
        assert fragment in report.problems[0], report.problems[0]


def test_workers_give_the_same_results_and_missing_labels_count_for_label_methods(tmp_path):
    write_small_dataset(tmp_path, n_cases=3)
    label_origin_5mm_off(tmp_path)
    listing = json.loads((tmp_path / "dataset.json").read_text())
    del listing["training"][2]["label"]
    (tmp_path / "dataset.json").write_text(json.dumps(listing))
    one, two = check_dataset(tmp_path, workers=1), check_dataset(tmp_path, workers=2, needs_label=True)
    assert [c.case_id for c in two.cases] == ["c0", "c1", "c2"]
    for first, second in zip(one.cases, two.cases):
        assert first.outcomes == {k: v for k, v in second.outcomes.items() if k != "labels present"}
    assert [row.check for row in two.rows if not row.ok] == ["labels present", "labels on the image grid"]
    assert "case 'c2': no labelmap" in two.problems[0]


@pytest.mark.parametrize("kind", ["laa", "organ", "cardiac"])
def test_synthetic_datasets_are_all_clear(tmp_path, kind):
    write_synthetic_dataset(tmp_path, kind=kind, n_cases=1, seed=0, n_test=1)
    report = check_dataset(tmp_path, needs_label=True)
    assert report.ok, report.problems
    assert {"images readable", "labels on the image grid", "label values declared"} <= {r.check for r in report.rows}
