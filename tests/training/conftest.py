"""A tiny prepared folder (the format of ``data/prepare.py``): spheres with exact unsigned distances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from implicitseg.config import NudfConfig
from implicitseg.methods.nudf import preset_config

RES = 16
POINTS_PER_SET = 400


def write_sphere_case(case_dir: Path, center_unit: np.ndarray, radius_unit: float, rng: np.random.Generator) -> None:
    """``image.npy`` (RES³, Z-Y-X, 1 inside the sphere, 0 outside, smooth edge) and ``samples.npz`` with exact
    distances ``| |p - c| - r |`` for near-surface inside/outside points and uniform points."""
    case_dir.mkdir(parents=True)
    axis = np.linspace(-1.0, 1.0, RES)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    radial = np.sqrt((x - center_unit[0]) ** 2 + (y - center_unit[1]) ** 2 + (z - center_unit[2]) ** 2)
    image = (1.0 / (1.0 + np.exp((radial - radius_unit) / 0.05))).astype(np.float32)
    np.save(case_dir / "image.npy", image)

    directions = rng.normal(size=(2 * POINTS_PER_SET, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    offsets = np.abs(rng.normal(0.0, 0.05, size=2 * POINTS_PER_SET))
    signs = np.repeat([-1.0, 1.0], POINTS_PER_SET)
    near = center_unit + directions * (radius_unit + signs * offsets)[:, None]
    uniform = rng.uniform(-1.0, 1.0, size=(POINTS_PER_SET, 3))
    points = np.concatenate([near, uniform]).astype(np.float32)
    distances = np.abs(np.linalg.norm(points - center_unit, axis=1) - radius_unit).astype(np.float32)
    sample_set = np.repeat(np.array([0, 1, 2], dtype=np.uint8), POINTS_PER_SET)
    np.savez_compressed(case_dir / "samples.npz", points=points, distances=distances, sample_set=sample_set)
    (case_dir / "roi.json").write_text(json.dumps({"center_world_mm": [0.0, 0.0, 0.0], "size_mm": 70.0, "res": RES}))


def write_sphere_prep(prep_dir: Path, *, n_train: int = 2, n_val: int = 1, seed: int = 0) -> Path:
    """A PREP folder with ``n_train`` + ``n_val`` sphere cases of varying centre and radius."""
    rng = np.random.default_rng(seed)
    cases = [f"sphere{i:02d}" for i in range(n_train + n_val)]
    for case in cases:
        write_sphere_case(prep_dir / case, rng.uniform(-0.2, 0.2, size=3), float(rng.uniform(0.35, 0.6)), rng)
    manifest = {"method": "nudf", "preset": "nudf-demo", "res": RES, "roi_mm": 70.0, "cases": cases,
                "splits": {"train": cases[:n_train], "val": cases[n_train:]}, "config": {}}
    (prep_dir / "manifest.json").write_text(json.dumps(manifest))
    return prep_dir


def tiny_config(preset: str = "nudf-demo") -> NudfConfig:
    """``preset`` shrunk to RES³ input and a few hundred points per case, batches of 2."""
    config = preset_config(preset)
    config.roi.res = RES
    config.train.points_per_case = 256
    config.train.val_points_per_case = 256
    config.train.batch_size = 2
    return config


@pytest.fixture(scope="session")
def sphere_prep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training spheres and one validation sphere (shared, read-only)."""
    return write_sphere_prep(tmp_path_factory.mktemp("prep"))


@pytest.fixture(name="tiny_config", scope="session")
def tiny_config_fixture():
    """The :func:`tiny_config` factory (fixtures avoid importing this conftest by module name)."""
    return tiny_config
