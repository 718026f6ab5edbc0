"""Whole-image inference for patch methods (Implicit U-Net spec, "Inference").

The image is seen on its **working grid** (``data/prepare_labels.working_image``) through a sliding window of
cubic patches with overlap and Gaussian weighting (MONAI's importance map). The labels are wanted on an
**output grid** — the input image's, or the same box at any spacing — whose voxels are mapped into working-grid
coordinates, so the implicit decoder is asked exactly at the output voxels (no resampling of its output).

Coarse-to-fine (:func:`segment_grid`): every ``coarse_stride``-th output voxel per axis first, nearest-neighbour
fill, then every voxel within ``band_voxels`` of a change of label, then a 3×3×3 average of the class
probabilities. The U-Net with the same encoder predicts the working grid densely
(:func:`convolutional_probabilities`) and its probabilities are interpolated onto the output grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from scipy import ndimage

from implicitseg.config import SparseInferenceConfig
from implicitseg.models.implicit_unet import ImplicitUnet

CACHE_LIMIT_BYTES = 2 * 1024**3
"""Encodings of all windows are kept between the coarse and fine passes when they fit in this; otherwise each
pass encodes its windows again."""

GAUSSIAN_SIGMA_SCALE = 0.125
"""MONAI's default: the weight of a window falls off as a Gaussian of sigma 0.125 × its side from its centre."""


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """First voxels of the windows along one axis of ``size`` voxels: steps of ``patch · (1 - overlap)`` (as
    MONAI's sliding window), the last window flush with the end; ``[0]`` when the axis fits in one patch."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - float(overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def pad_to_patch(image_dhw: np.ndarray, patch: int) -> np.ndarray:
    """``image_dhw`` padded at the far end of each axis shorter than ``patch`` with its minimum (coordinates of
    existing voxels do not change)."""
    padding = [(0, max(0, patch - n)) for n in image_dhw.shape]
    return np.pad(image_dhw, padding, constant_values=float(image_dhw.min())) if any(p for _, p in padding) \
        else image_dhw


@dataclass
class DecoderCounts:
    """What the decoder evaluated: ``points`` distinct query points, ``evaluations`` point × window pairs
    (a point in the overlap of k windows is evaluated k times), ``windows`` windows encoded."""

    points: int = 0
    evaluations: int = 0
    windows: int = 0


@dataclass
class WindowedPointPredictor:
    """Class probabilities of the Implicit U-Net at any points of the working grid, blended over the sliding
    windows that contain them with Gaussian weights.

    ``image_dhw``: the normalised working image (D, H, W); points: working voxel coordinates (d, h, w).
    """

    model: ImplicitUnet
    image_dhw: np.ndarray
    patch: int
    overlap: float
    device: torch.device
    batch_points: int = 65_536
    counts: DecoderCounts = field(default_factory=DecoderCounts)

    def __post_init__(self) -> None:
        self.shape = np.array(self.image_dhw.shape)
        self._image = torch.from_numpy(np.ascontiguousarray(pad_to_patch(self.image_dhw, self.patch)))
        starts = [window_starts(int(n), self.patch, self.overlap) for n in self.shape]
        self.window_starts = [np.array(start) for start in itertools.product(*starts)]
        self._weights = compute_importance_map((self.patch,) * 3, mode="gaussian", sigma_scale=GAUSSIAN_SIGMA_SCALE,
                                               device="cpu").float()
        sides = [self.patch // 2**s for s in range(len(self.model.encoder.stage_channels))]
        window_bytes = 4 * sum(c * n**3 for c, n in zip(self.model.encoder.stage_channels, sides))
        self._cache: dict[int, list[torch.Tensor]] | None = (
            {} if window_bytes * len(self.window_starts) <= CACHE_LIMIT_BYTES else None)

    def _encoding(self, index: int) -> list[torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        d, h, w = (int(s) for s in self.window_starts[index])
        window = self._image[d:d + self.patch, h:h + self.patch, w:w + self.patch]
        stages = self.model.encode(window[None, None].to(self.device))
        self.counts.windows += 1
        if self._cache is not None:
            self._cache[index] = stages
        return stages

    @torch.inference_mode()
    def probabilities(self, points_work_dhw: np.ndarray) -> np.ndarray:
        """(N, 3) working voxel coordinates (d, h, w) → (N, C) float32 class probabilities (points outside the
        working grid take its border)."""
        points = np.clip(np.asarray(points_work_dhw, dtype=np.float32), 0.0, (self.shape - 1).astype(np.float32))
        total = np.zeros((len(points), self.model.n_classes), dtype=np.float32)
        weight_sum = np.zeros(len(points), dtype=np.float32)
        for index, start in enumerate(self.window_starts):
            local = points - start.astype(np.float32)
            inside = np.flatnonzero(np.all((local >= 0.0) & (local <= self.patch - 1), axis=1))
            if len(inside) == 0:
                continue
            stages = self._encoding(index)
            for chunk in np.array_split(inside, int(np.ceil(len(inside) / self.batch_points))):
                local_points = torch.from_numpy(local[chunk])
                nearest = local_points.round().long()
                weights = self._weights[nearest[:, 0], nearest[:, 1], nearest[:, 2]]
                logits = self.model.decode(stages, local_points[None].to(self.device))[0]
                total[chunk] += (weights[:, None] * torch.softmax(logits.float(), dim=-1).cpu()).numpy()
                weight_sum[chunk] += weights.numpy()
            self.counts.evaluations += len(inside)
        self.counts.points += len(points)
        return total / weight_sum[:, None]


def boundary_band(labels: np.ndarray, band_voxels: int) -> np.ndarray:
    """Voxels within ``band_voxels`` (Chebyshev) of a voxel whose label differs from a face neighbour's."""
    changes = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        differs = np.diff(labels, axis=axis) != 0
        low = [slice(None)] * labels.ndim
        high = [slice(None)] * labels.ndim
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        changes[tuple(low)] |= differs
        changes[tuple(high)] |= differs
    if band_voxels < 1 or not changes.any():
        return changes
    return ndimage.binary_dilation(changes, structure=np.ones((3, 3, 3), bool), iterations=int(band_voxels))


def smooth_probabilities(probabilities: np.ndarray, side: int) -> np.ndarray:
    """A ``side``³ moving average of each class's probabilities (C, I, J, K); ``side`` ≤ 1 returns them as they are."""
    if side <= 1:
        return probabilities
    return np.stack([ndimage.uniform_filter(channel, size=int(side), mode="nearest") for channel in probabilities])


def segment_grid(probabilities_at: Callable[[np.ndarray], np.ndarray], shape_ijk: tuple[int, int, int],
                 config: SparseInferenceConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Class probabilities (C, I, J, K) on an output grid of ``shape_ijk``, asking ``probabilities_at(index (N, 3)
    int (i, j, k)) -> (N, C)`` coarse-to-fine (or at every voxel when ``config.dense``), then smoothed.

    Returns them with counts: ``n_output_voxels``, ``n_coarse_points``, ``n_band_points`` (0 when dense) and
    ``n_query_points`` (all points asked).
    """
    shape = tuple(int(n) for n in shape_ijk)
    n_voxels = int(np.prod(shape))
    if config.dense:
        index = np.indices(shape).reshape(3, -1).T
        probabilities = probabilities_at(index).T.reshape(-1, *shape)
        counts = {"n_output_voxels": n_voxels, "n_coarse_points": 0, "n_band_points": 0, "n_query_points": n_voxels}
        return smooth_probabilities(probabilities, config.smoothing_voxels), counts
    stride = int(config.coarse_stride)
    if stride < 1:
        raise ValueError(f"inference.coarse_stride must be >= 1, got {stride}")
    lattice_axes = [np.arange(0, n, stride) for n in shape]
    lattice = np.stack(np.meshgrid(*lattice_axes, indexing="ij"), axis=-1).reshape(-1, 3)
    coarse = probabilities_at(lattice).T.reshape(-1, *(len(a) for a in lattice_axes))
    # every output voxel takes its nearest lattice voxel's probabilities
    probabilities = coarse
    for axis, n in enumerate(shape):
        nearest = np.minimum(np.round(np.arange(n) / stride).astype(int), len(lattice_axes[axis]) - 1)
        probabilities = np.take(probabilities, nearest, axis=axis + 1)
    probabilities = np.ascontiguousarray(probabilities)
    band = boundary_band(probabilities.argmax(axis=0), int(config.band_voxels))
    band_index = np.argwhere(band)
    if len(band_index):
        probabilities[:, band] = probabilities_at(band_index).T
    counts = {"n_output_voxels": n_voxels, "n_coarse_points": len(lattice), "n_band_points": len(band_index),
              "n_query_points": len(lattice) + len(band_index)}
    return smooth_probabilities(probabilities, config.smoothing_voxels), counts


@torch.inference_mode()
def convolutional_probabilities(model: torch.nn.Module, image_dhw: np.ndarray, patch: int, overlap: float,
                                device: torch.device) -> np.ndarray:
    """Class probabilities (C, D, H, W) of a convolutional network on the whole working image, by MONAI's sliding
    window (``patch``³ windows, ``overlap``, Gaussian weighting)."""
    image = torch.from_numpy(np.ascontiguousarray(image_dhw))[None, None].to(device)
    logits = sliding_window_inference(image, roi_size=(patch,) * 3, sw_batch_size=1, predictor=model,
                                      overlap=float(overlap), mode="gaussian", sigma_scale=GAUSSIAN_SIGMA_SCALE,
                                      padding_mode="replicate")
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
