import numpy as np
import pytest
import torch

from helpers import AFFINE_CASES, BrightIsForeground, sphere_volume
from implicitseg.errors import InputError
from implicitseg.inference.roi import detect_roi_center, label_center_world_mm, label_for_image, parse_center
from implicitseg.io.images import Volume, bounding_cube, write_image
from implicitseg.methods.roi_detector import preset_config


def test_parse_center():
    assert np.allclose(parse_center("1.5, -2,3e1"), [1.5, -2.0, 30.0])
    for bad in ["1,2", "a,b,c", "1,2,nan", ""]:
        with pytest.raises(InputError, match="--roi-center"):
            parse_center(bad)


def test_label_center_is_the_world_centre_of_mass_on_an_oblique_flipped_grid(tmp_path):
    affine = AFFINE_CASES["flipped_oblique"]
    from implicitseg.geometry.frames import index_to_world

    center = index_to_world(np.array([[20.0, 22.0, 18.0]]), affine)[0]
    write_image(tmp_path / "case_1.nii.gz", Volume(sphere_volume(affine, (40, 44, 36), center, 5.0).astype(np.int16), affine))
    assert np.linalg.norm(label_center_world_mm(tmp_path / "case_1.nii.gz") - center) < 0.3
    assert label_for_image(tmp_path, tmp_path / "images" / "case_1.nrrd") == tmp_path / "case_1.nii.gz"
    with pytest.raises(InputError, match="case_2"):
        label_for_image(tmp_path, tmp_path / "case_2.nii.gz")


@pytest.mark.parametrize("name", ["oblique", "flipped_oblique", "anisotropic"])
def test_detector_centre_is_the_largest_blob_in_world_space(name):
    affine = AFFINE_CASES[name]
    shape = (90, 80, 60)
    from implicitseg.geometry.frames import index_to_world

    target = index_to_world(np.array([[30.0, 50.0, 25.0]]), affine)[0]
    distractor = index_to_world(np.array([[75.0, 15.0, 45.0]]), affine)[0]
    image = 1000.0 * (sphere_volume(affine, shape, target, 12.0) + sphere_volume(affine, shape, distractor, 5.0))
    config = preset_config("roi32")
    found = detect_roi_center(BrightIsForeground(), config, Volume(image, affine), device=torch.device("cpu"))
    grid_spacing_mm = bounding_cube(Volume(image, affine), config.grid.res).spacing_mm
    assert np.linalg.norm(found.center_world_mm - target) < 0.25 * grid_spacing_mm
    assert found.max_probability > 0.99 and found.n_voxels > 10


def test_detector_that_finds_nothing_names_the_image():
    image = Volume(np.zeros((30, 30, 30), np.float32), AFFINE_CASES["oblique"])
    with pytest.raises(InputError, match="case_9.nii.gz: the ROI detector found no foreground"):
        detect_roi_center(BrightIsForeground(), preset_config("roi32"), image, device=torch.device("cpu"),
                          what="case_9.nii.gz")
