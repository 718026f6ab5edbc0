import numpy as np
import pytest

from helpers import AFFINE_CASES, sphere_volume
from implicitseg.errors import InputError
from implicitseg.inference.roi import label_center_world_mm, label_for_image, parse_center
from implicitseg.io.images import Volume, write_image


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
