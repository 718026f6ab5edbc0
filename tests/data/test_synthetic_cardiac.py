"""The cine MRI phantom: a short-axis stack of a beating heart whose labels are known at any world point."""

from __future__ import annotations

import json

import numpy as np

from implicitseg.data.synthetic import write_synthetic_dataset
from implicitseg.data.synthetic.cardiac import CARDIAC_LABELS, CardiacPhantom, make_cardiac_case
from implicitseg.geometry.frames import geometry_from_affine, index_to_world
from implicitseg.io.dataset import load_dataset
from implicitseg.io.images import read_image_series


def test_stack_is_short_axis_anisotropic_and_oblique_with_three_labels():
    case = make_cardiac_case(np.random.default_rng(1))
    _, spacing, direction = geometry_from_affine(case.affine_lps)
    assert spacing[0] == spacing[1] and 1.6 <= spacing[0] <= 2.0 and 8.0 <= spacing[2] <= 10.0
    long_axis = np.array(case.phantom.axes)[:, 2]
    assert abs(direction[:, 2] @ long_axis) > np.cos(np.radians(7))  # slices across the long axis
    assert np.abs(direction).max() < 0.99  # oblique in the world
    assert case.image.shape[0] == len(case.frame_times) == 10 and case.image.shape == case.labelmap.shape
    assert set(np.unique(case.labelmap)) == {0, 1, 2, 3}
    blood = case.image[0][case.labelmap[0] == 1].mean()
    muscle = case.image[0][case.labelmap[0] == 2].mean()
    assert blood > 2.0 * muscle  # bSSFP: bright blood, dark myocardium


def test_the_heart_beats_and_the_stored_labels_are_the_phantom_at_voxel_centres():
    case = make_cardiac_case(np.random.default_rng(2))
    lv_volume = (case.labelmap == 1).reshape(len(case.labelmap), -1).sum(axis=1)
    assert lv_volume[5] < 0.75 * lv_volume[0]  # end-systole (t = 0.5) against end-diastole
    assert np.argmin(lv_volume) == 5
    index = np.argwhere(np.ones(case.labelmap.shape[1:], bool))
    world = index_to_world(index, case.affine_lps)
    for frame in (0, 3):
        expected = case.phantom.labels_at(world, case.frame_times[frame]).reshape(case.labelmap.shape[1:])
        assert np.array_equal(expected, case.labelmap[frame])


def test_labels_between_slices_are_continuous_and_the_phantom_round_trips_through_json():
    case = make_cardiac_case(np.random.default_rng(3))
    phantom = CardiacPhantom.from_json(case.phantom.to_json())
    assert phantom == case.phantom
    # a line along the long axis through the LV centre: blood from the base, then myocardium at the apex
    axes = np.array(phantom.axes)
    depths = np.linspace(1.0, phantom.lv_length_mm + 3.0, 200)
    labels = phantom.labels_at(np.array(phantom.center_mm) + depths[:, None] * axes[:, 2], 0.0)
    assert labels[0] == 1 and labels[-1] == 2 and np.all(np.diff((labels == 1).astype(int)) <= 0)


def test_cardiac_dataset_holds_4d_images_labelmaps_and_phantoms(tmp_path):
    write_synthetic_dataset(tmp_path / "ds", kind="cardiac", n_cases=1, n_test=1, seed=0)
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.labels == CARDIAC_LABELS and len(dataset.training) == 1
    image = read_image_series(dataset.training[0].image)
    labels = read_image_series(dataset.training[0].label)
    assert image.frames.shape == labels.frames.shape and image.frames.shape[0] == 10
    assert np.isclose(image.time_step, 0.1) and np.allclose(image.affine_lps, labels.affine_lps)
    phantom = CardiacPhantom.from_json((tmp_path / "ds" / "phantoms" / "cardiac_000.json").read_text())
    index = np.argwhere(np.ones(labels.frames.shape[1:], bool))
    expected = phantom.labels_at(index_to_world(index, labels.affine_lps), 0.2).reshape(labels.frames.shape[1:])
    assert np.array_equal(expected, labels.frames[2])
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["modality"] == "MR"
    assert (tmp_path / "ds" / "imagesTs" / "cardiac_001.nii.gz").is_file()
