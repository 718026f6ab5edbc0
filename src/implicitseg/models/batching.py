"""A network evaluated at many points, a batch at a time (the memory of one forward pass stays bounded)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def point_batches(points: np.ndarray, batch_points: int,
                  device: torch.device | str = "cpu") -> Iterator[tuple[slice, torch.Tensor]]:
    """Consecutive batches of at most ``batch_points`` rows of ``points`` (N, D): each as the rows it holds and a
    float32 tensor (n, D) on ``device``. No batch for N = 0."""
    if batch_points < 1:
        raise ValueError(f"batch_points must be positive, got {batch_points}")
    for start in range(0, len(points), batch_points):
        rows = slice(start, min(start + batch_points, len(points)))
        yield rows, torch.from_numpy(np.ascontiguousarray(points[rows], dtype=np.float32)).to(device)
