"""Training patches of whole images on their working grid, and the points the implicit decoder learns from
(Implicit U-Net spec, "Training").

A prepared case (``data/prepare_labels.py``, :func:`prepare_volume_case`) holds ``image.npy`` float32 and
``label.npy`` uint8 on the working grid in (D, H, W) = (k, j, i) order. Patches are ``(1, P, P, P)`` in the same
order; points are patch voxel coordinates (d, h, w) (see ``models/implicit_unet.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from implicitseg.config import ImplicitUnetConfig
from implicitseg.data.datasets import IMAGE_NAME, LABEL_NAME, load_volume_array, split_cases_of
from implicitseg.data.seeds import case_generator
from implicitseg.errors import InputError


class LabelledPatch(TypedDict):
    """One item (batched by the default collate)."""

    case_id: str
    image: torch.Tensor
    """(1, P, P, P) float32, (D, H, W)."""
    label: torch.Tensor
    """(1, P, P, P) int64 class per voxel."""


def extract_patch(array: np.ndarray, start: np.ndarray, side: int, fill: float) -> np.ndarray:
    """The cube ``array[start : start + side]`` (per axis), ``fill`` where it runs past the array."""
    patch = np.full((side,) * 3, fill, dtype=array.dtype)
    low = np.maximum(start, 0)
    high = np.minimum(start + side, np.array(array.shape))
    if np.all(high > low):
        target = tuple(slice(lo - s, hi - s) for lo, hi, s in zip(low, high, start))
        patch[target] = array[tuple(slice(lo, hi) for lo, hi in zip(low, high))]
    return patch


class PatchDataset(Dataset):
    """``patches_per_case`` patches of side ``patch_voxels`` per case: a ``positive_fraction`` of them centred
    (± a quarter patch) on a random labelled voxel, the others anywhere in the image; images smaller than a patch
    are padded with their minimum (labels with background).

    ``random=True`` draws afresh on each access (torch's global generator); ``random=False`` (validation) makes
    the same draw for an index every time, seeded by ``seed`` and the case id.
    """

    def __init__(self, prep_dir: str | Path, case_ids: list[str], *, patch_voxels: int, positive_fraction: float,
                 patches_per_case: int, random: bool, seed: int = 0) -> None:
        self.prep_dir = Path(prep_dir)
        self.case_ids = list(case_ids)
        self.patch_voxels = int(patch_voxels)
        self.positive_fraction = float(positive_fraction)
        self.patches_per_case = int(patches_per_case)
        self.random = bool(random)
        self.seed = int(seed)
        if self.patch_voxels < 1 or self.patches_per_case < 1 or not 0.0 <= self.positive_fraction <= 1.0:
            raise InputError(f"patches need patch_voxels >= 1, patches_per_case >= 1 and positive_fraction in "
                             f"[0, 1]; got {patch_voxels}, {patches_per_case}, {positive_fraction}")
        missing = [str(self.prep_dir / case / name) for case in self.case_ids for name in (IMAGE_NAME, LABEL_NAME)
                   if not (self.prep_dir / case / name).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(f"{self.prep_dir}: missing prepared file(s): {shown}")
        self._cases: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_config(cls, prep_dir: str | Path, split: str, config: ImplicitUnetConfig) -> "PatchDataset":
        manifest = split_cases_of(prep_dir, split, config.method, config.grid.patch_voxels, config.preset)
        training = split == "train"
        return cls(prep_dir, manifest.splits[split], patch_voxels=config.grid.patch_voxels,
                   positive_fraction=config.grid.positive_fraction, patches_per_case=config.train.patches_per_case,
                   random=training, seed=config.train.seed)

    def __len__(self) -> int:
        return len(self.case_ids) * self.patches_per_case

    def _case(self, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if case not in self._cases:
            image = load_volume_array(self.prep_dir / case / IMAGE_NAME, None, np.float32)
            label = load_volume_array(self.prep_dir / case / LABEL_NAME, image.shape, np.uint8)
            self._cases[case] = (image, label, np.argwhere(label > 0))
        return self._cases[case]

    def __getitem__(self, index: int) -> LabelledPatch:
        case = self.case_ids[index // self.patches_per_case]
        image, label, labelled_voxels = self._case(case)
        generator = None if self.random else case_generator(case, self.seed, index)
        side = self.patch_voxels
        shape = np.array(image.shape)
        positive = len(labelled_voxels) > 0 and float(torch.rand((), generator=generator)) < self.positive_fraction
        if positive:
            center = labelled_voxels[int(torch.randint(len(labelled_voxels), (), generator=generator))]
            jitter = (torch.rand(3, generator=generator).numpy() - 0.5) * (side / 2.0)
            start = np.round(center + jitter - side / 2.0).astype(int)
        else:
            start = np.floor(torch.rand(3, generator=generator).numpy() * np.maximum(shape - side + 1, 1)).astype(int)
        # keep the patch inside the image where the image is large enough; centre it where it is not
        start = np.where(shape >= side, np.clip(start, 0, np.maximum(shape - side, 0)), (shape - side) // 2)
        return LabelledPatch(
            case_id=case,
            image=torch.from_numpy(extract_patch(image, start, side, float(image.min())))[None],
            label=torch.from_numpy(extract_patch(label, start, side, 0).astype(np.int64))[None],
        )


def label_boundary(label: torch.Tensor) -> torch.Tensor:
    """Voxels whose label differs from one of their 26 neighbours: (B, 1, D, H, W) int → bool, same shape."""
    values = label.float()
    highest = F.max_pool3d(values, 3, stride=1, padding=1)
    lowest = -F.max_pool3d(-values, 3, stride=1, padding=1)
    return (highest != values) | (lowest != values)


def sample_patch_points(label: torch.Tensor, n_points: int, boundary_fraction: float, sigma_voxels: float, *,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of each patch and their labels for the implicit decoder's loss.

    ``label`` (B, 1, P, P, P) int. Per patch, ``round(boundary_fraction · n_points)`` points at label-boundary
    voxels displaced by N(0, ``sigma_voxels``) and the rest uniform in the patch (all uniform in a patch without a
    boundary); each point's target is the label of its nearest voxel. Returns points (B, N, 3) float32 patch
    voxel coordinates (d, h, w) and targets (B, N) int64, on ``label``'s device. Draws come from ``generator``
    (a CPU generator; default torch's global one).
    """
    batch, side = label.shape[0], label.shape[2:]
    sides = torch.tensor(side, dtype=torch.float32)
    boundary = label_boundary(label).cpu()
    n_boundary_wanted = int(round(float(boundary_fraction) * n_points))
    points = []
    for item in range(batch):
        candidates = torch.nonzero(boundary[item, 0]).float()
        n_boundary = n_boundary_wanted if len(candidates) else 0
        chosen = candidates[torch.randint(len(candidates), (n_boundary,), generator=generator)] if n_boundary else \
            torch.zeros(0, 3)
        near = chosen + float(sigma_voxels) * torch.randn(n_boundary, 3, generator=generator)
        uniform = torch.rand(n_points - n_boundary, 3, generator=generator) * (sides - 1)
        points.append(torch.minimum(torch.cat([near, uniform]).clamp(min=0.0), sides - 1))
    points_patch_voxel = torch.stack(points).to(label.device)
    nearest = points_patch_voxel.round().long()
    flat = (nearest[..., 0] * side[1] + nearest[..., 1]) * side[2] + nearest[..., 2]
    targets = label.flatten(1).gather(1, flat)
    return points_patch_voxel, targets
