"""Augmentation moves the image and its sample points together; translations are symmetric."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from implicitseg.config import AugmentConfig
from implicitseg.data.augment import (
    RigidAugmentation,
    apply_augmentation,
    draw_augmentation,
    rotation_matrices,
    warp_volumes,
)

RES = 33


def sample(image: torch.Tensor, points_unit: torch.Tensor) -> torch.Tensor:
    """(B, 1, D, H, W), (B, N, 3) unit (x, y, z) → (B, N) trilinear values."""
    grid = points_unit[:, :, None, None, :]
    return F.grid_sample(image, grid, mode="bilinear", align_corners=True)[:, 0, :, 0, 0]


def blob_image(center_unit: torch.Tensor, sigma_unit: float = 0.12) -> torch.Tensor:
    """(1, 1, RES, RES, RES) Gaussian blob of peak 1 at ``center_unit`` (x, y, z)."""
    axis = torch.linspace(-1.0, 1.0, RES)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    squared = (x - center_unit[0]) ** 2 + (y - center_unit[1]) ** 2 + (z - center_unit[2]) ** 2
    return torch.exp(-squared / (2 * sigma_unit**2))[None, None]


def no_noise(batch: int) -> torch.Tensor:
    return torch.zeros(batch)


@pytest.mark.parametrize("seed", range(4))
def test_bright_blob_stays_under_its_moved_point(seed: int) -> None:
    center = torch.tensor([0.3, -0.2, 0.1])
    image = blob_image(center)
    points = torch.stack([center, torch.tensor([-0.4, 0.4, -0.3])])[None]
    config = AugmentConfig(probability=1.0, translate_voxels=5.0, rotate_degrees=10.0, noise_sigma=0.0)
    params = draw_augmentation(config, 1, generator=torch.Generator().manual_seed(seed))
    assert bool(params.translation_voxels.ne(0).all()) and bool(params.rotation_radians.ne(0).all())
    moved_image, moved_points = apply_augmentation(image, points, params)
    after = sample(moved_image, moved_points)[0]
    before = sample(image, points)[0]
    # the blob's centre is still bright (two trilinear resamplings blur the peak a little; a wrong or inverted
    # transform would land ≥ 5 voxels away, where the blob is < 0.05)
    assert float(before[0]) > 0.9 and float(after[0]) > 0.8
    assert float(after[1]) < 0.01  # the far point is still dark
    # the brightest voxel of the moved image sits at the moved centre (within one voxel)
    flat = int(moved_image.argmax())
    z, y, x = flat // RES**2, (flat // RES) % RES, flat % RES
    peak_unit = torch.tensor([x, y, z], dtype=torch.float32) * 2 / (RES - 1) - 1
    assert float((peak_unit - moved_points[0, 0]).norm()) <= 2.0 / (RES - 1) * math.sqrt(3)


def test_integer_translation_shifts_voxels_and_points_along_x() -> None:
    image = torch.rand(2, 1, RES, RES, RES)
    points = torch.rand(2, 5, 3) * 2 - 1
    translation = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, -2.0]])
    params = RigidAugmentation(torch.zeros(2, 3), translation, no_noise(2), noise_seed=0)
    moved_image, moved_points = apply_augmentation(image, points, params)
    torch.testing.assert_close(moved_image[0, 0, :, :, 3:], image[0, 0, :, :, :-3], atol=1e-5, rtol=0)
    torch.testing.assert_close(moved_image[1, 0, :-2], image[1, 0, 2:], atol=1e-5, rtol=0)
    voxel = 2.0 / (RES - 1)
    torch.testing.assert_close(moved_points - points, (translation * voxel)[:, None, :].expand(2, 5, 3))


def test_rotation_about_z_moves_x_axis_to_y_axis() -> None:
    matrix = rotation_matrices(torch.tensor([[0.0, 0.0, math.pi / 2]]))[0]
    torch.testing.assert_close(matrix @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    center = torch.tensor([0.5, 0.0, 0.0])
    params = RigidAugmentation(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.zeros(1, 3), no_noise(1), 0)
    moved_image, moved_points = apply_augmentation(blob_image(center), center[None, None], params)
    torch.testing.assert_close(moved_points[0, 0], torch.tensor([0.0, 0.5, 0.0]))
    assert float(sample(moved_image, torch.tensor([[[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]]))[0, 0]) > 0.95


def test_translation_is_symmetric_and_bounded() -> None:
    config = AugmentConfig(probability=1.0, translate_voxels=20.0, rotate_degrees=10.0, noise_sigma=0.0)
    params = draw_augmentation(config, 4000, generator=torch.Generator().manual_seed(1))
    shifts = params.translation_voxels
    assert float(shifts.abs().max()) <= 20.0
    assert float(shifts.min()) < -19.0 and float(shifts.max()) > 19.0
    assert abs(float((shifts < 0).float().mean()) - 0.5) < 0.03
    assert abs(float(shifts.mean())) < 0.5
    angles = params.rotation_radians
    assert float(angles.abs().max()) <= math.radians(10.0) + 1e-6
    assert abs(float((angles < 0).float().mean()) - 0.5) < 0.03


def test_probability_selects_each_augmentation_independently() -> None:
    config = AugmentConfig(probability=0.3, translate_voxels=20.0, rotate_degrees=10.0, noise_sigma=0.05)
    params = draw_augmentation(config, 4000, generator=torch.Generator().manual_seed(2))
    translated = params.translation_voxels.ne(0).any(dim=1)
    rotated = params.rotation_radians.ne(0).any(dim=1)
    noisy = params.noise_sigma > 0
    for chosen in (translated, rotated, noisy):
        assert abs(float(chosen.float().mean()) - 0.3) < 0.03
    assert abs(float((translated & rotated).float().mean()) - 0.09) < 0.02
    assert params.noise_sigma.unique().tolist() == pytest.approx([0.0, 0.05])


def test_unselected_items_are_untouched_and_noise_is_replayable() -> None:
    image = torch.rand(2, 1, RES, RES, RES)
    points = torch.rand(2, 7, 3) * 2 - 1
    params = RigidAugmentation(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 0.05]), noise_seed=123)
    first_image, first_points = apply_augmentation(image, points, params)
    second_image, _ = apply_augmentation(image, points, params)
    assert torch.equal(first_image[0], image[0]) and torch.equal(first_points, points)
    assert torch.equal(first_image, second_image)
    assert float((first_image[1] - image[1]).std()) == pytest.approx(0.05, rel=0.05)


def test_labelmap_moves_with_its_image_and_stays_integer() -> None:
    image = blob_image(torch.tensor([0.2, -0.1, 0.3]))
    label = (image > 0.5).long()
    params = RigidAugmentation(rotation_radians=torch.tensor([[0.2, -0.1, 0.3]]),
                               translation_voxels=torch.tensor([[3.0, -2.0, 1.0]]),
                               noise_sigma=torch.zeros(1), noise_seed=0)
    moved_image, moved_label = warp_volumes(image, label, params)
    assert moved_label.dtype == torch.long and set(moved_label.unique().tolist()) <= {0, 1}
    # the moved labelmap still marks where the moved image is bright (nearest vs trilinear: edges may differ)
    agreement = ((moved_image > 0.5).long() == moved_label).float().mean()
    assert agreement > 0.995 and moved_label.sum() > 0.9 * label.sum()
    # and it did move: the blob's centre shifted by the translation (3 voxels along x)
    axis = torch.arange(RES, dtype=torch.float32)
    x_before = (label[0, 0].sum(dim=(0, 1)) * axis).sum() / label.sum()
    x_after = (moved_label[0, 0].sum(dim=(0, 1)) * axis).sum() / moved_label.sum()
    assert abs(float(x_after - x_before)) > 1.5
    with pytest.raises(ValueError, match="does not match"):
        warp_volumes(image, label[:, :, :-1], params)
