"""Training augmentation on batched tensors (CPU or GPU): a random draw of parameters, then a deterministic rigid
transform that moves the image and its sample points (or its labelmap) together (STYLE §8), plus Gaussian
intensity noise.

The transform acts in the unit frame, about the ROI centre: ``p' = R @ p + t`` for points ``p`` in unit
``(x, y, z)``. The image is resampled so that ``image_after(p') == image_before(p)``; distances to the surface
are unchanged by a rigid motion, so targets need no update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from implicitseg.config import AugmentConfig


@dataclass(frozen=True)
class RigidAugmentation:
    """Per-item augmentation parameters for a batch of ``B`` items; replaying them gives the same result.

    ``rotation_radians``: (B, 3) angles about the x, y, z axes (applied x first, then y, then z).
    ``translation_voxels``: (B, 3) shift along x, y, z in voxels of the image it is applied to.
    ``noise_sigma``: (B,) standard deviation of additive Gaussian intensity noise (0: none).
    ``noise_seed``: seed of the noise field.
    """

    rotation_radians: torch.Tensor
    translation_voxels: torch.Tensor
    noise_sigma: torch.Tensor
    noise_seed: int

    @property
    def batch_size(self) -> int:
        return int(self.rotation_radians.shape[0])


def draw_augmentation(config: AugmentConfig, batch_size: int, *, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> RigidAugmentation:
    """Draw parameters for ``batch_size`` items. Independently, with ``config.probability`` each: a translation
    uniform in ``±config.translate_voxels`` per axis, a rotation uniform in ``±config.rotate_degrees`` per axis,
    and noise of sigma ``config.noise_sigma``. ``generator`` (on ``device``) defaults to torch's global one."""
    if not 0.0 <= config.probability <= 1.0:
        raise ValueError(f"augment.probability must be in [0, 1], got {config.probability!r}")
    if config.translate_voxels < 0 or config.rotate_degrees < 0 or config.noise_sigma < 0:
        raise ValueError(f"augment.translate_voxels, rotate_degrees and noise_sigma must be >= 0, got "
                         f"{config.translate_voxels!r}, {config.rotate_degrees!r}, {config.noise_sigma!r}")
    options = {"device": device, "generator": generator}

    def uniform_symmetric(limit: float) -> torch.Tensor:
        return (2.0 * torch.rand(batch_size, 3, **options) - 1.0) * limit

    def chosen() -> torch.Tensor:
        return torch.rand(batch_size, **options) < config.probability

    translation = uniform_symmetric(float(config.translate_voxels)) * chosen()[:, None]
    rotation = uniform_symmetric(math.radians(float(config.rotate_degrees))) * chosen()[:, None]
    sigma = chosen().to(torch.float32) * float(config.noise_sigma)
    seed = int(torch.randint(0, 2**62, (1,), **options).item())
    return RigidAugmentation(rotation, translation, sigma, seed)


def rotation_matrices(rotation_radians: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles about x, y, z → (B, 3, 3) rotations ``Rz @ Ry @ Rx`` acting on column vectors (x, y, z)."""
    cos, sin = torch.cos(rotation_radians), torch.sin(rotation_radians)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    cx, cy, cz = cos.unbind(-1)
    sx, sy, sz = sin.unbind(-1)
    rx = matrix([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = matrix([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return rz @ ry @ rx


def voxels_to_unit(translation_voxels: torch.Tensor, image_shape_zyx: tuple[int, int, int]) -> torch.Tensor:
    """(B, 3) shifts in voxels (x, y, z) → unit lengths; with ``align_corners=True`` one voxel along an axis of
    ``n`` voxels is ``2 / (n - 1)`` units."""
    depth, height, width = image_shape_zyx
    per_voxel = torch.tensor([2.0 / (width - 1), 2.0 / (height - 1), 2.0 / (depth - 1)],
                             dtype=translation_voxels.dtype, device=translation_voxels.device)
    return translation_voxels * per_voxel


def _transforms(params: RigidAugmentation, image_shape_zyx: tuple[int, int, int], *, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, 3) rotations, (B, 3) translations in unit lengths, and the (B,) mask of items that move."""
    rotation = rotation_matrices(params.rotation_radians.to(device=device, dtype=dtype))
    translation_unit = voxels_to_unit(params.translation_voxels.to(device=device, dtype=dtype), image_shape_zyx)
    moved = params.rotation_radians.ne(0).any(dim=1) | params.translation_voxels.ne(0).any(dim=1)
    return rotation, translation_unit, moved.to(device)


def _warp(volume: torch.Tensor, rotation: torch.Tensor, translation_unit: torch.Tensor, moved: torch.Tensor, *,
          mode: str, padding_mode: str) -> torch.Tensor:
    """Resample the moved items of ``volume`` (B, C, D, H, W) so that ``after(R p + t) == before(p)``."""
    if not bool(moved.any()):
        return volume
    # affine_grid maps output positions q to input positions: p = R^T (q - t).
    inverse = rotation.transpose(1, 2)
    theta = torch.cat([inverse, -(inverse @ translation_unit[:, :, None])], dim=2)[moved]
    subset = volume[moved]
    values = subset if subset.is_floating_point() else subset.to(torch.float32)
    grid = F.affine_grid(theta.to(values.dtype), list(values.shape), align_corners=True)
    resampled = F.grid_sample(values, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    out = volume.clone()
    out[moved] = resampled.to(volume.dtype)
    return out


def _add_noise(image: torch.Tensor, params: RigidAugmentation) -> torch.Tensor:
    sigma = params.noise_sigma.to(device=image.device, dtype=image.dtype)
    if not bool((sigma > 0).any()):
        return image
    generator = torch.Generator(device=image.device).manual_seed(params.noise_seed)
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return image + sigma.view(-1, 1, 1, 1, 1) * noise


def _check_batch(image: torch.Tensor, params: RigidAugmentation) -> None:
    if image.dim() != 5:
        raise ValueError(f"expected an image batch (B, C, D, H, W), got {tuple(image.shape)}")
    if image.shape[0] != params.batch_size:
        raise ValueError(f"parameters for {params.batch_size} items, batch has {image.shape[0]}")


def apply_augmentation(image: torch.Tensor, points_unit: torch.Tensor, params: RigidAugmentation, *,
                       padding_mode: str = "border") -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``params`` to a batch of images and sample points.

    ``image``: (B, 1, D, H, W) float, (Z, Y, X); ``points_unit``: (B, N, 3) unit (x, y, z). Returns the moved
    image and points, same shapes; items without rotation or translation keep their exact image and points.
    Where the moved image needs values from outside the ROI, ``padding_mode`` (``grid_sample``'s) fills them;
    points may leave the unit cube.
    """
    _check_batch(image, params)
    if points_unit.dim() != 3 or points_unit.shape[-1] != 3 or points_unit.shape[0] != image.shape[0]:
        raise ValueError(f"expected points (B, N, 3) for {image.shape[0]} images, got {tuple(points_unit.shape)}")
    rotation, translation_unit, moved = _transforms(params, tuple(image.shape[2:]), dtype=points_unit.dtype,
                                                    device=points_unit.device)
    points_out = torch.where(moved[:, None, None],
                             points_unit @ rotation.transpose(1, 2) + translation_unit[:, None, :], points_unit)
    image_out = _warp(image, rotation, translation_unit, moved, mode="bilinear", padding_mode=padding_mode)
    return _add_noise(image_out, params), points_out


def warp_volumes(image: torch.Tensor, label: torch.Tensor, params: RigidAugmentation, *,
                 padding_mode: str = "border") -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``params`` to a batch of images (B, 1, D, H, W) float and their labelmaps (B, 1, D, H, W), moving both
    by the same rigid transform: trilinear for the image, nearest for the labels (background outside the grid);
    noise goes on the image only."""
    _check_batch(image, params)
    if label.shape[0] != image.shape[0] or label.shape[2:] != image.shape[2:]:
        raise ValueError(f"labelmap {tuple(label.shape)} does not match image {tuple(image.shape)}")
    rotation, translation_unit, moved = _transforms(params, tuple(image.shape[2:]), dtype=image.dtype,
                                                    device=image.device)
    image_out = _warp(image, rotation, translation_unit, moved, mode="bilinear", padding_mode=padding_mode)
    label_out = _warp(label, rotation, translation_unit, moved, mode="nearest", padding_mode="zeros")
    return _add_noise(image_out, params), label_out
