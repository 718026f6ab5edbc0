"""Torch datasets over a prepared folder (DESIGN §5):

``PREP/manifest.json`` ``{"method", "preset", "res", "roi_mm", "cases", "splits": {"train", "val"}, "config"}``,
``PREP/<case>/image.npy`` float32 ``(res, res, res)`` in ``(Z, Y, X)`` order, and ``PREP/<case>/samples.npz`` with
``points`` (N, 3) float32 unit (x, y, z), ``distances`` (N,) float32 unit, ``sample_set`` (N,) uint8
(:class:`~implicitseg.geometry.sampling.SampleSet`, whose value is also the index into ``sample_fractions``).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from implicitseg.config import NudfConfig, RoiDetectorConfig, UnetConfig
from implicitseg.data.seeds import case_generator
from implicitseg.errors import InputError
from implicitseg.geometry.sampling import SampleSet
from implicitseg.io.atomic import read_json_object
from implicitseg.models.unet import input_multiple

MANIFEST_NAME = "manifest.json"
IMAGE_NAME = "image.npy"
SAMPLES_NAME = "samples.npz"
LABEL_NAME = "label.npy"


class SurfaceSample(TypedDict):
    """One item (batched by the default collate: a leading batch axis, ``case_id`` becomes a list)."""

    case_id: str
    image: torch.Tensor
    """(1, D, H, W) float32, (Z, Y, X)."""
    points_unit: torch.Tensor
    """(N, 3) float32, unit (x, y, z)."""
    distances_unit: torch.Tensor
    """(N,) float32, unsigned distance to the surface in unit lengths."""


class LabelledVolume(TypedDict):
    """One item of a voxel method (batched by the default collate)."""

    case_id: str
    image: torch.Tensor
    """(1, D, H, W) float32, (Z, Y, X)."""
    label: torch.Tensor
    """(1, D, H, W) int64 class per voxel (0 background, 1 foreground), same grid as ``image``."""


@dataclass(frozen=True)
class PrepManifest:
    """A parsed ``PREP/manifest.json``."""

    prep_dir: Path
    method: str
    preset: str
    res: int
    roi_mm: float | None
    """ROI side in mm; None for a method that sees whole images (the ROI detector)."""
    splits: dict[str, list[str]]
    config: dict = field(default_factory=dict)


def read_manifest(prep_dir: str | Path) -> PrepManifest:
    """Read and check ``prep_dir/manifest.json``; problems raise :class:`InputError` naming the file."""
    prep_dir = Path(prep_dir)
    path = prep_dir / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (is {prep_dir} the output of `implicitseg prepare`?)")
    data = read_json_object(path)
    missing = [key for key in ("method", "res", "splits") if key not in data]
    if missing:
        raise InputError(f"{path}: missing key(s) {missing}")
    splits = data["splits"]
    if not isinstance(splits, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in splits.values()
    ):
        raise InputError(f"{path}: 'splits' must map split names to lists of case ids")
    return PrepManifest(
        prep_dir=prep_dir,
        method=str(data["method"]),
        preset=str(data.get("preset", "")),
        res=int(data["res"]),
        roi_mm=None if data.get("roi_mm") is None else float(data["roi_mm"]),
        splits={name: list(ids) for name, ids in splits.items()},
        config=dict(data.get("config") or {}),
    )


def split_cases_of(prep_dir: str | Path, split: str, method: str, res: int, preset: str) -> PrepManifest:
    """The manifest of ``prep_dir``, checked to be prepared for ``method`` at ``res`` and to have ``split``."""
    manifest = read_manifest(prep_dir)
    where = Path(prep_dir) / MANIFEST_NAME
    if manifest.method != method:
        raise InputError(f"{where}: prepared for method {manifest.method!r}, not {method!r}")
    if manifest.res != res:
        raise InputError(f"{where}: prepared at res {manifest.res}, but the config expects {res} "
                         f"(preset {preset!r}); prepare again with --res {res}")
    if split not in manifest.splits:
        raise InputError(f"{where}: no split {split!r} (has {sorted(manifest.splits)})")
    return manifest


def load_volume_array(path: Path, expected_shape: tuple[int, ...] | None, dtype: type) -> np.ndarray:
    """A prepared ``.npy`` volume; unreadable files or wrong shapes raise :class:`InputError` naming ``path``."""
    try:
        array = np.load(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read ({error})") from None
    if array.ndim != 3 or (expected_shape is not None and array.shape != expected_shape):
        raise InputError(f"{path}: volume shape {array.shape}, expected {expected_shape or '(D, H, W)'}")
    return np.ascontiguousarray(array, dtype=dtype)


def allocate_counts(total: int, fractions: tuple[float, ...], available: tuple[bool, ...]) -> list[int]:
    """Split ``total`` points over sample sets in proportion to ``fractions``; sets that are not ``available``
    (empty in a case) get none and the others share their part. Counts sum to ``total`` exactly."""
    weights = np.array([f if ok else 0.0 for f, ok in zip(fractions, available)], dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("no sample set with a positive fraction has any points")
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return [int(c) for c in counts]


@dataclass
class _CaseSamples:
    points_unit: list[torch.Tensor]
    distances_unit: list[torch.Tensor]


class SurfaceSampleDataset(Dataset):
    """One item per case: the ROI image and ``points_per_case`` samples drawn with replacement from the sample
    sets in proportions ``sample_fractions`` (inside, outside, uniform).

    ``random=True`` (training) draws afresh on every access from torch's global generator (seeded per
    DataLoader worker); ``random=False`` (validation) makes the same draw for a case every time, seeded by
    ``seed`` and the case id, so the validation loss is comparable across epochs.
    """

    def __init__(self, prep_dir: str | Path, case_ids: list[str], *, points_per_case: int,
                 sample_fractions: tuple[float, float, float], random: bool, seed: int = 0,
                 res: int | None = None, cache: bool = True) -> None:
        self.prep_dir = Path(prep_dir)
        if int(points_per_case) < 1:
            raise InputError(f"points_per_case must be >= 1, got {points_per_case!r}")
        if len(sample_fractions) != len(SampleSet) or any(f < 0 for f in sample_fractions) or sum(
            sample_fractions
        ) <= 0:
            raise InputError(f"sample_fractions must be {len(SampleSet)} non-negative numbers with a positive sum, "
                             f"got {tuple(sample_fractions)!r}")
        self.case_ids = list(case_ids)
        self.points_per_case = int(points_per_case)
        self.sample_fractions = tuple(float(f) for f in sample_fractions)
        self.random = bool(random)
        self.seed = int(seed)
        self.res = None if res is None else int(res)
        self.cache = cache
        self._samples: dict[str, _CaseSamples] = {}
        self._images: dict[str, torch.Tensor] = {}
        missing = [
            str(self.prep_dir / case / name)
            for case in self.case_ids
            for name in (IMAGE_NAME, SAMPLES_NAME)
            if not (self.prep_dir / case / name).is_file()
        ]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(f"{self.prep_dir}: missing prepared file(s): {shown}")

    @classmethod
    def from_config(cls, prep_dir: str | Path, split: str, config: NudfConfig) -> "SurfaceSampleDataset":
        """The ``split`` (``train``: random draws, otherwise fixed draws) of a prepared folder, sized by
        ``config.train``; checks that the folder was prepared for ``config``'s method and resolution."""
        manifest = split_cases_of(prep_dir, split, config.method, config.roi.res, config.preset)
        training = split == "train"
        return cls(
            prep_dir,
            manifest.splits[split],
            points_per_case=config.train.points_per_case if training else config.train.val_points_per_case,
            sample_fractions=tuple(config.train.sample_fractions),  # type: ignore[arg-type]
            random=training,
            seed=config.train.seed,
            res=manifest.res,
        )

    def __len__(self) -> int:
        return len(self.case_ids)

    def _load_image(self, case: str) -> torch.Tensor:
        if case in self._images:
            return self._images[case]
        expected = None if self.res is None else (self.res,) * 3
        image = torch.from_numpy(load_volume_array(self.prep_dir / case / IMAGE_NAME, expected, np.float32))[None]
        if self.cache:
            self._images[case] = image
        return image

    def _load_samples(self, case: str) -> _CaseSamples:
        if case in self._samples:
            return self._samples[case]
        path = self.prep_dir / case / SAMPLES_NAME
        try:
            with np.load(path) as data:
                missing = [key for key in ("points", "distances", "sample_set") if key not in data.files]
                if missing:
                    raise InputError(f"{path}: missing array(s) {missing}")
                points = np.asarray(data["points"], dtype=np.float32)
                distances = np.asarray(data["distances"], dtype=np.float32)
                sample_set = np.asarray(data["sample_set"])
        except (OSError, ValueError, zlib.error, zipfile.BadZipFile) as error:
            raise InputError(f"{path}: cannot read ({error})") from None
        count = len(points)
        if points.shape != (count, 3) or distances.shape != (count,) or sample_set.shape != (count,):
            raise InputError(f"{path}: expected points (N, 3), distances (N,), sample_set (N,); got "
                             f"{points.shape}, {distances.shape}, {sample_set.shape}")
        samples = _CaseSamples([], [])
        for member in SampleSet:
            chosen = sample_set == member.value
            samples.points_unit.append(torch.from_numpy(np.ascontiguousarray(points[chosen])))
            samples.distances_unit.append(torch.from_numpy(np.ascontiguousarray(distances[chosen])))
        if self.cache:
            self._samples[case] = samples
        return samples

    def __getitem__(self, index: int) -> SurfaceSample:
        case = self.case_ids[index]
        samples = self._load_samples(case)
        available = tuple(len(d) > 0 for d in samples.distances_unit)
        try:
            counts = allocate_counts(self.points_per_case, self.sample_fractions, available)
        except ValueError:
            raise InputError(f"{self.prep_dir / case / SAMPLES_NAME}: no samples in any set with a positive "
                             f"fraction {self.sample_fractions}") from None
        generator = None
        if not self.random:
            generator = case_generator(case, self.seed)
        points, distances = [], []
        for member, count in zip(SampleSet, counts):
            if count == 0:
                continue
            picks = torch.randint(len(samples.distances_unit[member]), (count,), generator=generator)
            points.append(samples.points_unit[member][picks])
            distances.append(samples.distances_unit[member][picks])
        return SurfaceSample(
            case_id=case,
            image=self._load_image(case),
            points_unit=torch.cat(points),
            distances_unit=torch.cat(distances),
        )


class LabelledVolumeDataset(Dataset):
    """One item per case: the prepared image and labelmap (``image.npy``, ``label.npy``, both (res, res, res) in
    (Z, Y, X)), kept in memory after the first read."""

    def __init__(self, prep_dir: str | Path, case_ids: list[str], *, res: int) -> None:
        self.prep_dir = Path(prep_dir)
        self.case_ids = list(case_ids)
        self.res = int(res)
        self._items: dict[str, LabelledVolume] = {}
        missing = [str(self.prep_dir / case / name) for case in self.case_ids for name in (IMAGE_NAME, LABEL_NAME)
                   if not (self.prep_dir / case / name).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(f"{self.prep_dir}: missing prepared file(s): {shown}")

    @classmethod
    def from_config(cls, prep_dir: str | Path, split: str,
                    config: UnetConfig | RoiDetectorConfig) -> "LabelledVolumeDataset":
        """The ``split`` of a folder prepared for ``config``'s method at its resolution."""
        res = config.input_res()
        manifest = split_cases_of(prep_dir, split, config.method, res, config.preset)
        if res % input_multiple(config.model):
            raise InputError(f"{prep_dir}: res {res} is not a multiple of {input_multiple(config.model)}, which "
                             f"the {config.preset} U-Net needs")
        return cls(prep_dir, manifest.splits[split], res=res)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> LabelledVolume:
        case = self.case_ids[index]
        if case not in self._items:
            shape = (self.res,) * 3
            image = load_volume_array(self.prep_dir / case / IMAGE_NAME, shape, np.float32)
            label = load_volume_array(self.prep_dir / case / LABEL_NAME, shape, np.int64)
            self._items[case] = LabelledVolume(case_id=case, image=torch.from_numpy(image)[None],
                                               label=torch.from_numpy(label)[None])
        return self._items[case]
