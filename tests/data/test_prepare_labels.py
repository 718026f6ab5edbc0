"""prepare for the U-Net baseline and the ROI detector: image and labelmap on the same grid, in the right place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import AFFINE_CASES, damage_small_dataset, sphere_volume, write_small_dataset

from implicitseg.data.prepare import prepare_dataset
from implicitseg.data.prepare_labels import (LABEL_MANIFEST_ENTRIES, prepare_detector_case, prepare_roi_label_case,
                                             prepare_unet_dataset)
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi, index_to_world
from implicitseg.io.dataset import Case, write_dataset_json
from implicitseg.io.images import Volume, write_image
from implicitseg.methods import roi_detector, unet

SHAPE = (64, 56, 40)
RADIUS_MM = 9.0


def _case(root: Path, name: str, affine: np.ndarray, center_world: np.ndarray, *, label: bool = True) -> Case:
    image = 1000.0 * sphere_volume(affine, SHAPE, center_world, RADIUS_MM)
    write_image(root / "imagesTr" / f"{name}.nii.gz", Volume(image, affine))
    if label:
        write_image(root / "labelsTr" / f"{name}.nii.gz",
                    Volume(sphere_volume(affine, SHAPE, center_world, RADIUS_MM).astype(np.uint8), affine))
    return Case(name, root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz" if label else None, None)


def _foreground_center_world(prep: Path, name: str) -> np.ndarray:
    roi = Roi.from_json(json.loads((prep / name / "roi.json").read_text()))
    label_zyx = np.load(prep / name / "label.npy")
    return roi.roi_index_to_world(np.argwhere(label_zyx > 0)[:, ::-1].astype(np.float64)).mean(axis=0)


@pytest.mark.parametrize("name", ["oblique", "flipped_oblique", "anisotropic"])
def test_unet_case_holds_the_roi_image_and_its_label_in_place(tmp_path, name):
    affine = AFFINE_CASES[name]
    center = index_to_world(np.array([[30.0, 28.0, 20.0]]), affine)[0]
    config = unet.preset_config("unet-demo")
    config.roi.size_mm = 40.0
    result = prepare_roi_label_case(_case(tmp_path, "c1", affine, center), tmp_path / "prep", config)
    image, label = np.load(tmp_path / "prep" / "c1" / "image.npy"), np.load(tmp_path / "prep" / "c1" / "label.npy")
    assert image.shape == label.shape == (32, 32, 32) and label.dtype == np.uint8 and image.dtype == np.float32
    assert result["n_foreground"] == int(label.sum()) > 0
    # the label marks the bright voxels of the image (same grid, same order) and sits at the sphere's centre
    assert np.all(image[label == 1] > 0.5) and np.mean(image[label == 0] < 0.5) > 0.98
    assert np.linalg.norm(_foreground_center_world(tmp_path / "prep", "c1") - center) < 0.5
    volume_mm3 = label.sum() * (40.0 / 31) ** 3
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * RADIUS_MM**3, rel=0.1)


def test_detector_case_sees_the_whole_image_on_an_isotropic_cube(tmp_path):
    affine = AFFINE_CASES["flipped_oblique"]
    center = index_to_world(np.array([[10.0, 40.0, 12.0]]), affine)[0]  # off-centre in the image
    prepare_detector_case(_case(tmp_path, "c1", affine, center), tmp_path / "prep", roi_detector.preset_config("roi32"))
    roi_json = json.loads((tmp_path / "prep" / "c1" / "roi.json").read_text())
    grid = Roi.from_json(roi_json)
    corners = index_to_world(np.array([[i, j, k] for i in (0, SHAPE[0] - 1) for j in (0, SHAPE[1] - 1)
                                       for k in (0, SHAPE[2] - 1)], dtype=float), affine)
    assert np.abs(grid.world_to_unit(corners)).max() == pytest.approx(1.0) and grid.res == 32  # the cube fits
    assert np.linalg.norm(_foreground_center_world(tmp_path / "prep", "c1") - center) < grid.spacing_mm
    assert np.linalg.norm(np.array(roi_json["label_center_world_mm"]) - center) < 0.5


def test_voxel_methods_need_a_label_that_survives_the_grid(tmp_path):
    affine = AFFINE_CASES["oblique"]
    center = index_to_world(np.array([[30.0, 28.0, 20.0]]), affine)[0]
    with pytest.raises(InputError, match="'c1' has no labelmap"):
        prepare_roi_label_case(_case(tmp_path, "c1", affine, center, label=False), tmp_path / "prep",
                          unet.preset_config("unet-demo"))
    write_image(tmp_path / "labelsTr" / "c2.nii.gz", Volume(np.zeros(SHAPE, np.uint8), affine))
    case = Case("c2", _case(tmp_path, "c1", affine, center).image, tmp_path / "labelsTr" / "c2.nii.gz", None)
    with pytest.raises(InputError, match="c2.nii.gz: labelmap is empty"):
        prepare_detector_case(case, tmp_path / "prep", roi_detector.preset_config("roi32"))
    tiny = np.zeros(SHAPE, np.uint8)
    tiny[30, 28, 20] = 1  # one voxel: less than half of any 4 mm detector voxel
    write_image(tmp_path / "labelsTr" / "c3.nii.gz", Volume(tiny, affine))
    case = Case("c3", case.image, tmp_path / "labelsTr" / "c3.nii.gz", None)
    with pytest.raises(InputError, match="no foreground left on the 32³ grid"):
        prepare_detector_case(case, tmp_path / "prep", roi_detector.preset_config("roi32"))


def test_prepare_dataset_for_the_unet_writes_its_manifest(tmp_path):
    affine = AFFINE_CASES["anisotropic"]
    center = index_to_world(np.array([[30.0, 28.0, 20.0]]), affine)[0]
    entries = []
    for name in ("a", "b", "c"):
        _case(tmp_path / "data", name, affine, center)
        entries.append({"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz"})
    write_dataset_json(tmp_path / "data", name="spheres", modality="CT", labels={"0": "background", "1": "ball"},
                       training=entries, test=[])
    config = unet.preset_config("unet-demo")
    config.roi.size_mm = 30.0
    manifest = prepare_dataset(tmp_path / "data", tmp_path / "prep", config, prepare_one=prepare_roi_label_case,
                               manifest_entries=LABEL_MANIFEST_ENTRIES)
    on_disk = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert on_disk["method"] == "unet" and on_disk["res"] == 32 and on_disk["roi_mm"] == 30.0
    assert on_disk["files"] == {"image": "image.npy", "label": "label.npy", "roi": "roi.json"}
    assert sorted(manifest["cases"]) == ["a", "b", "c"] and len(manifest["splits"]["val"]) == 1


def test_a_grid_the_unet_cannot_halve_is_refused_before_any_work(tmp_path):
    config = unet.preset_config("unet-demo")
    config.roi.res = 36
    with pytest.raises(InputError, match="--res 36: the unet-demo U-Net needs a multiple of 8"):
        prepare_unet_dataset(tmp_path / "no_dataset", tmp_path / "prep", config, prepare_one=prepare_roi_label_case)
    assert not (tmp_path / "prep").exists()


def _two_label_case(root: Path, name: str, affine: np.ndarray) -> Case:
    """A sphere (label 1) with a smaller sphere (label 2) inside it, 0 / 500 / 1000 HU."""
    center = index_to_world(np.array(SHAPE)[None] / 2.0, affine)[0]
    labels = sphere_volume(affine, SHAPE, center, RADIUS_MM) + sphere_volume(affine, SHAPE, center, RADIUS_MM / 2)
    write_image(root / "imagesTr" / f"{name}.nii.gz", Volume(500.0 * labels, affine))
    write_image(root / "labelsTr" / f"{name}.nii.gz", Volume(labels.astype(np.uint8), affine))
    return Case(name, root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz", None)


@pytest.mark.parametrize("name", ["flipped_oblique", "anisotropic"])
def test_patch_case_keeps_every_label_on_the_working_grid_in_place(tmp_path, name):
    from implicitseg.data.prepare_labels import prepare_volume_case
    from implicitseg.methods.base import copy_preset
    from implicitseg.methods.implicit_unet import PRESETS

    affine = AFFINE_CASES[name]
    case = _two_label_case(tmp_path, "c", affine)
    config = copy_preset(PRESETS, "iunet-demo")
    config.labels.names = ("background", "outer", "inner")
    result = prepare_volume_case(case, tmp_path / "prep", config)
    grid = json.loads((tmp_path / "prep" / "c" / "grid.json").read_text())
    grid_affine = np.array(grid["affine_lps"])
    assert np.allclose(np.linalg.norm(grid_affine[:3, :3], axis=0), 2.0)  # isotropic working spacing
    label_dhw = np.load(tmp_path / "prep" / "c" / "label.npy")
    assert label_dhw.shape == tuple(grid["shape_ijk"][::-1]) and set(np.unique(label_dhw)) == {0, 1, 2}
    center = index_to_world(np.array(SHAPE)[None] / 2.0, affine)[0]
    for value, radius in ((1, RADIUS_MM), (2, RADIUS_MM / 2)):
        world = index_to_world(np.argwhere(label_dhw >= value)[:, ::-1].astype(np.float64), grid_affine)
        assert np.linalg.norm(world.mean(axis=0) - center) < 0.6
        volume_mm3 = len(world) * 8.0
        assert abs(volume_mm3 / (4 / 3 * np.pi * radius**3) - 1.0) < 0.2
    assert result["voxels_per_class"][2] > 0


def test_patch_prepare_takes_the_classes_from_dataset_json_and_checks_labels(tmp_path):
    from implicitseg.methods import implicit_unet

    affine = AFFINE_CASES["oblique"]
    cases = [_two_label_case(tmp_path / "ds", f"c{i}", affine) for i in range(2)]
    training = [{"image": f"imagesTr/{c.case_id}.nii.gz", "label": f"labelsTr/{c.case_id}.nii.gz"} for c in cases]
    labels = {"0": "background", "1": "outer", "2": "inner"}
    write_dataset_json(tmp_path / "ds", name="two", modality="CT", labels=labels, training=training, test=[])
    manifest = implicit_unet.METHOD.prepare(tmp_path / "ds", tmp_path / "prep", implicit_unet.PRESETS["iunet-demo"])
    assert manifest["config"]["labels"]["names"] == ["background", "outer", "inner"]
    assert manifest["labels"] == {"0": "background", "1": "outer", "2": "inner"}
    assert implicit_unet.PRESETS["iunet-demo"].labels.names == ()  # the preset itself is untouched
    write_dataset_json(tmp_path / "ds", name="two", modality="CT", labels={"0": "background", "1": "outer"},
                       training=training, test=[])
    with pytest.raises(InputError, match=r"c0.nii.gz: label value\(s\) 2 are not declared in dataset.json's "
                                         r"labels \(0, 1\)"):
        implicit_unet.METHOD.prepare(tmp_path / "ds", tmp_path / "prep2", implicit_unet.PRESETS["iunet-demo"])
    write_dataset_json(tmp_path / "ds", name="two", modality="CT", labels={"0": "background", "2": "inner"},
                       training=training, test=[])
    with pytest.raises(InputError, match="labels must be 0, 1, ..., C - 1"):
        implicit_unet.METHOD.prepare(tmp_path / "ds", tmp_path / "prep3", implicit_unet.PRESETS["iunet-demo"])


PAIR_DAMAGES = {
    "label origin 5 mm off": ["labelsTr/c1.nii.gz: labelmap not on the grid of its image", "imagesTr/c1.nii.gz",
                              "origin 5.00 mm apart", "--resample-labels"],
    "label cropped 10 voxels": ["labelsTr/c1.nii.gz", "imagesTr/c1.nii.gz", "size: image 40×44×30, label 40×44×20"],
    "undeclared label value": ["labelsTr/c1.nii.gz: label value(s) 3 are not declared in dataset.json's labels (0, 1)"],
    "truncated image": ["imagesTr/c1.nii.gz: truncated file"],
}


@pytest.mark.parametrize("damage, workers", [(damage, 1) for damage in sorted(PAIR_DAMAGES)]
                         + [("label origin 5 mm off", 2)])  # worker processes: one is enough (each starts torch)
def test_unet_prepare_stops_at_a_damaged_case_and_writes_nothing_for_it(tmp_path, damage, workers):
    write_small_dataset(tmp_path / "data")
    damage_small_dataset(tmp_path / "data", damage)
    config = unet.preset_config("unet-demo")
    config.roi.size_mm = 40.0
    with pytest.raises(InputError) as raised:
        unet.METHOD.prepare(tmp_path / "data", tmp_path / "prep", config, workers=workers)
    message = str(raised.value)
    assert message.startswith("case 'c1': ") and "\n" not in message
    for fragment in PAIR_DAMAGES[damage]:
        assert fragment in message, message
    assert not (tmp_path / "prep" / "c1").exists() and not (tmp_path / "prep" / "manifest.json").exists()


@pytest.mark.parametrize("damage", ["label origin 5 mm off", "label cropped 10 voxels"])
def test_resample_labels_puts_the_label_on_the_image_grid_in_world_space_and_says_so(tmp_path, damage):
    center = write_small_dataset(tmp_path / "data")
    damage_small_dataset(tmp_path / "data", damage)
    config = unet.preset_config("unet-demo")
    config.roi.size_mm = 40.0
    manifest = unet.METHOD.prepare(tmp_path / "data", tmp_path / "prep", config, resample_labels=True)
    resampling = manifest["label_resampling"]
    assert resampling["enabled"] and list(resampling["cases"]) == ["c1"]
    assert ("origin 5.00 mm apart" if "origin" in damage else "size: image 40×44×30") in resampling["cases"]["c1"]
    assert json.loads((tmp_path / "prep" / "manifest.json").read_text())["label_resampling"] == resampling
    # where the label lies in the world is kept: shifted 5 mm along x, or cropped (the sphere's lower part gone)
    found = json.loads((tmp_path / "prep" / "c1" / "roi.json").read_text())["label_center_world_mm"]
    untouched = json.loads((tmp_path / "prep" / "c0" / "roi.json").read_text())["label_center_world_mm"]
    np.testing.assert_allclose(untouched, center, atol=0.3)
    if "origin" in damage:
        np.testing.assert_allclose(np.array(found) - center, [5.0, 0.0, 0.0], atol=0.6)
    else:
        kept, whole = (np.load(tmp_path / "prep" / case / "label.npy").sum() for case in ("c1", "c0"))
        assert kept < 0.99 * whole and found[2] < center[2] - 0.1 and np.allclose(found[:2], center[:2], atol=0.3)
