"""Training patches of whole images and the points the implicit decoder learns from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from implicitseg.data.patches import PatchDataset, extract_patch, label_boundary, sample_patch_points
from implicitseg.errors import InputError


def test_extract_patch_pads_past_the_array_with_the_fill_value():
    array = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    patch = extract_patch(array, np.array([-1, 1, 2]), 3, -5.0)
    assert patch.shape == (3, 3, 3)
    assert patch[0].max() == -5.0 and patch[1, 0, 0] == array[0, 1, 2] and patch[1, 0, 1] == -5.0
    assert patch[2, 1, 0] == array[1, 2, 2] and patch[:, 2].max() == -5.0


def _write_case(prep, name, shape, blob_at, blob_radius=2):
    """A cube of label 1 (and image 1.0), ``2 * blob_radius + 1`` voxels across, centred at ``blob_at``."""
    (prep / name).mkdir(parents=True)
    image = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(c - blob_radius, c + blob_radius + 1) for c in blob_at)] = 1
    image[label > 0] = 1.0
    np.save(prep / name / "image.npy", image)
    np.save(prep / name / "label.npy", label)


def test_positive_patches_hold_labels_validation_patches_repeat_small_images_are_padded(tmp_path):
    _write_case(tmp_path, "big", (40, 48, 44), (20, 24, 22), blob_radius=0)
    _write_case(tmp_path, "small", (10, 12, 9), (5, 6, 4))
    positive = PatchDataset(tmp_path, ["big"], patch_voxels=16, positive_fraction=1.0, patches_per_case=20,
                            random=True)
    assert len(positive) == 20
    positions = []
    for index in range(20):
        item = positive[index]
        assert item["image"].shape == (1, 16, 16, 16) and item["label"].dtype == torch.int64
        assert item["label"].sum() == 1  # the one labelled voxel, within a quarter patch of the centre (8)
        position = torch.nonzero(item["label"][0])[0]
        assert position.min() >= 4 and position.max() <= 12
        positions.append(tuple(position.tolist()))
    assert len(set(positions)) > 1  # jittered, not always centred
    fixed = PatchDataset(tmp_path, ["big"], patch_voxels=16, positive_fraction=0.0, patches_per_case=3, random=False)
    assert torch.equal(fixed[1]["image"], fixed[1]["image"]) and torch.equal(fixed[2]["label"], fixed[2]["label"])
    small = PatchDataset(tmp_path, ["small"], patch_voxels=16, positive_fraction=0.5, patches_per_case=2, random=True)
    item = small[0]
    assert item["image"].shape == (1, 16, 16, 16) and int(item["label"].sum()) == 125
    with pytest.raises(InputError, match="missing prepared file"):
        PatchDataset(tmp_path, ["nothing"], patch_voxels=16, positive_fraction=0.5, patches_per_case=1, random=True)


def test_from_config_checks_method_and_patch_side(tmp_path):
    from implicitseg.methods.implicit_unet import PRESETS

    _write_case(tmp_path, "a", (20, 20, 20), (10, 10, 10))
    manifest = {"method": "implicit-unet", "res": 32, "splits": {"train": ["a"], "val": ["a"]}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert len(PatchDataset.from_config(tmp_path, "train", PRESETS["iunet-demo"])) == 4
    with pytest.raises(InputError, match="prepared at res 32"):
        PatchDataset.from_config(tmp_path, "train", PRESETS["iunet"])


def test_boundary_points_lie_near_label_changes_and_targets_are_nearest_voxel_labels():
    label = torch.zeros(2, 1, 16, 16, 16, dtype=torch.int64)
    label[0, 0, 4:12, 4:12, 4:12] = 1
    label[0, 0, 7:9, 7:9, 7:9] = 2
    boundary = label_boundary(label)
    assert boundary[0, 0, 4, 8, 8] and boundary[0, 0, 3, 8, 8] and not boundary[0, 0, 5, 5, 5]
    assert not boundary[1].any()
    generator = torch.Generator().manual_seed(0)
    points, targets = sample_patch_points(label, 2000, 0.5, 0.0, generator=generator)
    assert points.shape == (2, 2000, 3) and targets.shape == (2, 2000)
    assert points.min() >= 0 and points.max() <= 15
    near = boundary[0, 0][tuple(points[0, :1000].round().long().T)]
    assert near.all()  # sigma 0: the boundary half sits on boundary voxels
    index = points.round().long()
    assert torch.equal(targets[0], label[0, 0][tuple(index[0].T)])
    assert (targets[1] == 0).all()  # no boundary: all uniform, all background
    points, _ = sample_patch_points(label, 2000, 0.5, 3.0, generator=generator)
    assert not boundary[0, 0][tuple(points[0, :1000].round().long().T)].all()  # displaced off the boundary
