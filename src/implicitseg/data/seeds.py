"""Per-case random draws that depend only on a seed and the case id, so a case gets the same samples whatever the
order in which workers, epochs or resumed runs reach it."""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _case_number(case_id: str) -> int:
    return zlib.crc32(case_id.encode("utf-8"))


def case_rng(case_id: str, seed: int, *stream: int) -> np.random.Generator:
    """A NumPy generator of ``(seed, case_id[, stream...])``; ``stream`` keeps two uses of one seed apart."""
    return np.random.default_rng([int(seed), _case_number(case_id), *map(int, stream)])


def case_generator(case_id: str, seed: int, offset: int = 0) -> torch.Generator:
    """A torch CPU generator of ``(seed, case_id)``, moved on by ``offset`` (e.g. the item's index)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + _case_number(case_id) + int(offset))
