"""NISF's data (spec "Coordinates", "Prior training"): the ``prepare`` stage and the training dataset, whose
coordinates are :func:`~implicitseg.geometry.frames.nisf_coordinates`. Images and labelmaps stay as they were
acquired — no resampling: NISF learns in physical space, so any grid, spacing and orientation is fine.

Per case, into ``PREP/<case>/``: ``image.npy`` float32 ``(T, I, J, K)`` (frames × the image's own index axes),
each frame min–max normalised to [0, 1]; ``label.npy`` uint8, same shape, class per voxel; ``grid.json`` with the
index → world LPS mm affine, the shape and ``center_world_mm`` (the centre of the image's box, from which
:func:`~implicitseg.geometry.frames.nisf_coordinates` measures). 3D images are one frame.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from implicitseg.config import NisfConfig
from implicitseg.data.check import InputRules
from implicitseg.data.datasets import IMAGE_NAME, LABEL_NAME, split_cases_of
from implicitseg.data.seeds import case_generator
from implicitseg.errors import InputError
from implicitseg.geometry.frames import image_center_world_mm, nisf_coordinates
from implicitseg.io.atomic import write_json, write_npy
from implicitseg.io.dataset import Case
from implicitseg.io.images import VolumeSeries, read_image_series, read_labelmap_series
from implicitseg.io.pairs import check_label_grid, check_label_values, grid_differences, label_series_onto_grid


def normalised_frames(frames: np.ndarray) -> np.ndarray:
    """Each frame of (T, I, J, K) min–max scaled to [0, 1] (a constant frame becomes zeros), float32."""
    frames = np.asarray(frames, dtype=np.float32)
    low = frames.reshape(len(frames), -1).min(axis=1)[:, None, None, None]
    high = frames.reshape(len(frames), -1).max(axis=1)[:, None, None, None]
    return ((frames - low) / np.where(high > low, high - low, 1.0)).astype(np.float32)


def read_series_pair(case: Case, rules: InputRules) -> tuple[VolumeSeries, VolumeSeries, str | None]:
    """A case's image and labelmap series (values declared, on the image's grid and frames — or resampled onto the
    grid with ``rules.resample_labels``), and what differed from the image's grid when resampled (else None)."""
    if case.label is None:
        raise InputError(f"case {case.case_id!r} has no labelmap; NISF trains on labelmaps (dataset.json 'label')")
    image = read_image_series(case.image)
    label = read_labelmap_series(case.label)
    if rules.label_values is not None:
        check_label_values(label.frames, case.label, rules.label_values)
    differences = grid_differences(image, label)
    if not differences:
        return image, label, None
    if not rules.resample_labels or len(image.frames) != len(label.frames):
        check_label_grid(label, case.label, image, case.image)
    return image, label_series_onto_grid(label, image), "; ".join(differences)


def prepare_nisf_case(case: Case, out_dir: Path, config: NisfConfig, rules: InputRules = InputRules(), *,
                      seed: int = 0) -> dict:
    """One case for NISF (see the module doc). ``seed`` is unused (points are drawn during training)."""
    start = time.perf_counter()
    image, label, resampled_from = read_series_pair(case, rules)
    n_classes = len(config.labels.names)
    values = np.unique(label.frames)
    unknown = [int(v) for v in values if not 0 <= v < n_classes]
    if unknown:
        raise InputError(f"{case.label}: label value(s) {unknown} are not among the dataset's classes 0..{n_classes - 1}")
    if not np.any(label.frames > 0):
        raise InputError(f"{case.label}: labelmap is empty (no voxel > 0)")
    case_dir = Path(out_dir) / case.case_id
    write_npy(case_dir / "image.npy", normalised_frames(image.frames))
    write_npy(case_dir / "label.npy", label.frames.astype(np.uint8))
    write_json(case_dir / "grid.json", {"affine_lps": image.affine_lps.tolist(), "shape": list(image.frames.shape),
                                        "center_world_mm": image_center_world_mm(image.frames.shape,
                                                                                 image.affine_lps).tolist(),
                                        "case": case.case_id, "image": str(case.image), "label": str(case.label)})
    return {"case": case.case_id, "frames": int(image.frames.shape[0]), "label_resampled_from": resampled_from,
            "timings_s": {"total_s": time.perf_counter() - start}}


class SubjectPoints(TypedDict):
    """One item: voxels of one subject (batched by the default collate when every item has N points)."""

    case_id: str
    subject: int
    """Row of the subject in the latent table (-1 for a subject that is not in it: validation, test)."""
    coordinates: torch.Tensor
    """(N, D) float32 NISF coordinates (:func:`~implicitseg.geometry.frames.nisf_coordinates`)."""
    intensity: torch.Tensor
    """(N,) float32 in [0, 1]."""
    label: torch.Tensor
    """(N,) int64 class per point."""


class NisfSubjectDataset(Dataset):
    """One item per subject. ``frames="random"`` (training): one random frame, ``points`` random voxels of it
    (0: all); ``frames="all"`` (fitting): ``points`` voxels drawn over every frame (0: all voxels of all frames),
    the same draw each time (seeded by ``seed`` and the case id). ``subjects`` maps a case to its latent row."""

    def __init__(self, prep_dir: str | Path, case_ids: list[str], config: NisfConfig, *, frames: str,
                 points: int, subjects: dict[str, int] | None = None, seed: int = 0) -> None:
        if frames not in ("random", "all"):
            raise ValueError(f"frames must be 'random' or 'all', got {frames!r}")
        self.prep_dir = Path(prep_dir)
        self.case_ids = list(case_ids)
        self.config = config
        self.frames = frames
        self.points = int(points)
        self.subjects = dict(subjects or {})
        self.seed = int(seed)
        missing = [str(self.prep_dir / c / n) for c in self.case_ids for n in (IMAGE_NAME, LABEL_NAME, "grid.json")
                   if not (self.prep_dir / c / n).is_file()]
        if missing:
            raise InputError(f"{self.prep_dir}: missing prepared file(s): {', '.join(missing[:5])}")
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, dict]] = {}

    @classmethod
    def from_config(cls, prep_dir: str | Path, split: str, config: NisfConfig) -> "NisfSubjectDataset":
        """Training (``train``: random frames, latent rows in split order) or validation subjects (all frames)."""
        manifest = split_cases_of(prep_dir, split, config.method, 0, config.preset)
        if split == "train":
            if config.train.batch_size > 1 and config.train.points_per_step <= 0:
                raise InputError("NISF batches of several subjects need train.points_per_step > 0 (equal sizes)")
            rows = {case: row for row, case in enumerate(manifest.splits["train"])}
            return cls(prep_dir, manifest.splits[split], config, frames="random",
                       points=config.train.points_per_step, subjects=rows, seed=config.train.seed)
        return cls(prep_dir, manifest.splits[split], config, frames="all", points=config.fit.points_per_step,
                   seed=config.train.seed)

    def __len__(self) -> int:
        return len(self.case_ids)

    def _case(self, case: str) -> tuple[np.ndarray, np.ndarray, dict]:
        if case not in self._cache:
            grid = json.loads((self.prep_dir / case / "grid.json").read_text())
            self._cache[case] = (np.load(self.prep_dir / case / IMAGE_NAME), np.load(self.prep_dir / case / LABEL_NAME),
                                 grid)
        return self._cache[case]

    def __getitem__(self, index: int) -> SubjectPoints:
        case = self.case_ids[index]
        image, label, grid = self._case(case)
        n_frames, spatial = image.shape[0], image.shape[1:]
        generator = None if self.frames == "random" else case_generator(case, self.seed)
        n_voxels = int(np.prod(spatial))
        if self.frames == "random":
            frame = np.full(self.points if self.points > 0 else n_voxels,
                            int(torch.randint(n_frames, (), generator=generator)))
            flat = (torch.randint(n_voxels, (self.points,), generator=generator).numpy() if self.points > 0
                    else np.arange(n_voxels))
        else:
            total = n_frames * n_voxels
            chosen = (torch.randint(total, (self.points,), generator=generator).numpy() if 0 < self.points < total
                      else np.arange(total))
            frame, flat = np.divmod(chosen, n_voxels)
        index_ijk = np.stack(np.unravel_index(flat, spatial), axis=1)
        coordinates = nisf_coordinates(index_ijk, np.array(grid["affine_lps"]), np.array(grid["center_world_mm"]),
                                            self.config, time=frame / n_frames)
        return SubjectPoints(
            case_id=case, subject=self.subjects.get(case, -1), coordinates=torch.from_numpy(coordinates),
            intensity=torch.from_numpy(image[frame, index_ijk[:, 0], index_ijk[:, 1], index_ijk[:, 2]]),
            label=torch.from_numpy(label[frame, index_ijk[:, 0], index_ijk[:, 1], index_ijk[:, 2]].astype(np.int64)))
