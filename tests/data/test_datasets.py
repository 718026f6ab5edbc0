"""Dataset over a prepared folder: sample-set proportions, fixed validation draws, errors naming files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from implicitseg.data.datasets import SurfaceSampleDataset, allocate_counts, read_manifest
from implicitseg.errors import InputError
from implicitseg.methods.nudf import preset_config

RES = 8


def write_case(prep_dir: Path, case: str, set_sizes: tuple[int, int, int]) -> None:
    """A case whose sample set ``s`` has distances in [s, s + 0.5) and points with x == distance, so a drawn
    sample tells which set it came from and that its point and distance stayed paired."""
    rng = np.random.default_rng(len(case))
    (prep_dir / case).mkdir(parents=True)
    np.save(prep_dir / case / "image.npy", rng.normal(size=(RES, RES, RES)).astype(np.float32))
    sample_set = np.concatenate([np.full(n, s, dtype=np.uint8) for s, n in enumerate(set_sizes)])
    distances = (sample_set + rng.uniform(0, 0.5, size=len(sample_set))).astype(np.float32)
    points = rng.uniform(-1, 1, size=(len(sample_set), 3)).astype(np.float32)
    points[:, 0] = distances
    np.savez_compressed(prep_dir / case / "samples.npz", points=points, distances=distances, sample_set=sample_set)


def write_prep(prep_dir: Path, cases: dict[str, tuple[int, int, int]], val: list[str]) -> Path:
    for case, sizes in cases.items():
        write_case(prep_dir, case, sizes)
    train = [c for c in cases if c not in val]
    manifest = {"method": "nudf", "preset": "nudf-demo", "res": RES, "roi_mm": 70.0, "cases": list(cases),
                "splits": {"train": train, "val": val}, "config": {}}
    (prep_dir / "manifest.json").write_text(json.dumps(manifest))
    return prep_dir


def small_config(points: int = 1000):
    config = preset_config("nudf-demo")
    config.roi.res = RES
    config.train.points_per_case = points
    config.train.val_points_per_case = points
    config.train.sample_fractions = (0.45, 0.45, 0.10)
    return config


@pytest.fixture
def prep(tmp_path: Path) -> Path:
    return write_prep(tmp_path / "prep", {"a": (50, 60, 20), "b": (0, 40, 30), "v": (30, 30, 30)}, val=["v"])


def set_of(distances: torch.Tensor) -> torch.Tensor:
    return torch.floor(distances).long()


def test_item_shapes_and_fractions(prep: Path) -> None:
    dataset = SurfaceSampleDataset.from_config(prep, "train", small_config(1000))
    assert len(dataset) == 2
    item = dataset[0]
    assert item["case_id"] == "a"
    assert item["image"].shape == (1, RES, RES, RES) and item["image"].dtype == torch.float32
    assert item["points_unit"].shape == (1000, 3) and item["distances_unit"].shape == (1000,)
    np.testing.assert_array_equal(item["image"][0].numpy(), np.load(prep / "a" / "image.npy"))
    assert torch.bincount(set_of(item["distances_unit"]), minlength=3).tolist() == [450, 450, 100]
    assert torch.equal(item["points_unit"][:, 0], item["distances_unit"])  # points stay with their distances


def test_empty_set_shares_its_fraction(prep: Path) -> None:
    item = SurfaceSampleDataset.from_config(prep, "train", small_config(1000))[1]  # case "b": no inside points
    assert torch.bincount(set_of(item["distances_unit"]), minlength=3).tolist() == [0, 818, 182]
    assert allocate_counts(7, (0.45, 0.45, 0.1), (True, True, True)) == [3, 3, 1]


def test_training_draws_change_validation_draws_do_not(prep: Path) -> None:
    train = SurfaceSampleDataset.from_config(prep, "train", small_config(200))
    assert not torch.equal(train[0]["points_unit"], train[0]["points_unit"])
    val = SurfaceSampleDataset.from_config(prep, "val", small_config(200))
    again = SurfaceSampleDataset.from_config(prep, "val", small_config(200))
    assert not val.random
    assert torch.equal(val[0]["points_unit"], val[0]["points_unit"])
    assert torch.equal(val[0]["points_unit"], again[0]["points_unit"])
    other_seed = small_config(200)
    other_seed.train.seed = 5
    assert not torch.equal(val[0]["points_unit"], SurfaceSampleDataset.from_config(prep, "val", other_seed)[0]
                           ["points_unit"])


def test_batches_collate(prep: Path) -> None:
    loader = torch.utils.data.DataLoader(SurfaceSampleDataset.from_config(prep, "train", small_config(64)),
                                         batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, RES, RES, RES)
    assert batch["points_unit"].shape == (2, 64, 3) and batch["distances_unit"].shape == (2, 64)
    assert batch["case_id"] == ["a", "b"]


def test_missing_files_name_them(prep: Path) -> None:
    (prep / "b" / "samples.npz").unlink()
    with pytest.raises(InputError, match=r"b/samples\.npz"):
        SurfaceSampleDataset.from_config(prep, "train", small_config())


def test_manifest_errors(prep: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nowhere")
    config = small_config()
    config.roi.res = 16
    with pytest.raises(InputError, match="res 8"):
        SurfaceSampleDataset.from_config(prep, "train", config)
    with pytest.raises(InputError, match="no split 'test'"):
        SurfaceSampleDataset.from_config(prep, "test", small_config())


def test_bad_samples_file_is_an_input_error(prep: Path) -> None:
    np.savez_compressed(prep / "a" / "samples.npz", points=np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match=r"a/samples\.npz.*missing array"):
        SurfaceSampleDataset.from_config(prep, "train", small_config())[0]
