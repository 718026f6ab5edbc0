"""The organ + lesion phantom: two labels in place in world space, the lesion inside the organ, deterministic."""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage

from implicitseg.data.synthetic import write_synthetic_dataset
from implicitseg.data.synthetic.organ import make_organ_case
from implicitseg.geometry.frames import world_to_index
from implicitseg.io.dataset import load_dataset
from implicitseg.io.images import read_labelmap


def test_lesion_lies_inside_the_organ_where_its_centre_says_with_its_contrast():
    for seed in range(4):
        case = make_organ_case(np.random.default_rng(seed))
        label, hu = case.labelmap.array, case.image.array.astype(np.float64)
        assert set(np.unique(label).tolist()) == {0, 1, 2}
        grown_lesion = ndimage.binary_dilation(label == 2, iterations=1)
        assert np.all(label[grown_lesion] > 0)  # organ all around the lesion
        center_index = np.rint(world_to_index(case.lesion_center_world_mm[None], case.labelmap.affine_lps)[0]).astype(int)
        assert label[tuple(center_index)] == 2
        core_lesion = ndimage.binary_erosion(label == 2, iterations=1)
        core_organ = ndimage.binary_erosion(label == 1, iterations=2)
        difference = hu[core_lesion].mean() - hu[core_organ].mean()
        assert np.sign(difference) == np.sign(case.lesion_contrast_hu) and abs(difference) > 15.0
        direction = case.image.direction
        spacing = case.image.spacing
        assert not np.allclose(np.abs(direction), np.eye(3), atol=0.05) and spacing[2] > 1.4 * spacing[0]


def test_same_seed_same_case_other_seed_other_case():
    first, again = make_organ_case(np.random.default_rng(3)), make_organ_case(np.random.default_rng(3))
    assert np.array_equal(first.image.array, again.image.array) and np.array_equal(first.labelmap.array,
                                                                                   again.labelmap.array)
    other = make_organ_case(np.random.default_rng(4))
    assert other.image.shape != first.image.shape or not np.array_equal(other.image.array, first.image.array)


def test_organ_dataset_has_two_labels_and_no_meshes(tmp_path):
    write_synthetic_dataset(tmp_path / "organ", kind="organ", n_cases=2, seed=1)
    dataset = load_dataset(tmp_path / "organ")
    assert [case.case_id for case in dataset.training] == ["organ_000", "organ_001"]
    assert all(case.mesh is None and case.label is not None for case in dataset.training)
    assert json.loads((tmp_path / "organ" / "dataset.json").read_text())["labels"] == {
        "0": "background", "1": "organ", "2": "lesion"}
    assert set(np.unique(read_labelmap(dataset.training[0].label).array).tolist()) == {0, 1, 2}
    assert (tmp_path / "organ" / "imagesTs" / "organ_002.nii.gz").is_file()
