"""Prepare time per case for the nudf64 settings (110k samples with the shape diameter), and the shape-diameter
subset trade-off on a large mesh.

    .venv/bin/python benchmarks/prepare_time.py [--cases 3] [--source auto|synthetic|builtin] [--shape 200 200 140]

Cases come from ``implicitseg.data.synthetic.write_synthetic_dataset(kind="laa")`` (``--source auto`` uses it
when that module can be imported), or from a built-in phantom: a lobed ellipsoid (~19k faces) cut open at one end (an open surface, like an
LAA at its ostium) inside an oblique, anisotropic int16 CT-like image, once with the mesh and once label-only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from implicitseg.config import SurfaceSamplingConfig
from implicitseg.data.check import InputRules
from implicitseg.data.prepare import prepare_case
from implicitseg.geometry.frames import affine_from_geometry, index_to_world
from implicitseg.geometry.sampling import shape_diameter_mm
from implicitseg.io.dataset import Case, load_dataset, write_dataset_json
from implicitseg.io.images import Volume, write_image
from implicitseg.io.meshes import Mesh, write_mesh
from implicitseg.methods.nudf import preset_config

RADII_MM = np.array([9.0, 7.0, 14.0])
STAGES = ("read_s", "roi_image_s", "shape_diameter_s", "sampling_s", "distance_s", "write_s", "total_s")


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _lobes(directions: np.ndarray) -> np.ndarray:
    """Radial modulation (unitless) of the phantom along unit ``directions`` (N, 3)."""
    theta = np.arccos(np.clip(directions[:, 2], -1, 1))
    phi = np.arctan2(directions[:, 1], directions[:, 0])
    return 1.0 + 0.2 * np.sin(3 * phi) * np.sin(2 * theta)


def phantom_mesh(center_world_mm: np.ndarray, rotation: np.ndarray) -> Mesh:
    """A lobed ellipsoid (world LPS mm), open at its +z end; ~19k faces."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    directions = np.asarray(sphere.vertices)
    local = directions * _lobes(directions)[:, None] * RADII_MM
    faces = np.asarray(sphere.faces)
    faces = faces[local[faces].mean(axis=1)[:, 2] < 0.85 * RADII_MM[2]]  # cut the ostium open
    return Mesh(local @ rotation.T + center_world_mm, faces)


def phantom_image(shape: tuple[int, int, int], seed: int) -> tuple[Volume, Volume, np.ndarray, np.ndarray]:
    """CT-like int16 image (blood pool 350 HU, tissue 40 HU, noise), its labelmap, the shape's centre and rotation."""
    rng = np.random.default_rng(seed)
    affine = affine_from_geometry([-40.0, 20.0, -150.0], [0.45, 0.45, 0.6], _rotation(seed))
    center_index = (np.array(shape) - 1) / 2 + rng.uniform(-5, 5, 3)
    center_world_mm = index_to_world(center_index[None], affine)[0]
    rotation = _rotation(seed + 100)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    local = (index_to_world(index, affine) - center_world_mm) @ rotation / RADII_MM
    norm = np.linalg.norm(local, axis=1)
    inside = (norm < _lobes(local / np.maximum(norm, 1e-9)[:, None])).reshape(shape)
    hu = np.where(inside, 350.0, 40.0) + rng.normal(0.0, 30.0, size=shape)
    return Volume(hu.astype(np.int16), affine), Volume(inside.astype(np.int16), affine), center_world_mm, rotation


def builtin_cases(root: Path, n_cases: int, shape: tuple[int, int, int]) -> tuple[list[Case], str]:
    training = []
    for number in range(n_cases):
        image, label, center, rotation = phantom_image(shape, seed=number)
        name = f"phantom_{number:03d}"
        write_image(root / "imagesTr" / f"{name}.nii.gz", image)
        write_image(root / "labelsTr" / f"{name}.nii.gz", label)
        write_mesh(root / "meshesTr" / f"{name}.vtk", phantom_mesh(center, rotation))
        training.append({"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz",
                         "mesh": f"meshesTr/{name}.vtk"})
    write_dataset_json(root, name="phantom", modality="CT", labels={"0": "background", "1": "LAA"},
                       training=training, test=[])
    return load_dataset(root).training, "LPS"


def make_cases(root: Path, n_cases: int, shape: tuple[int, int, int], source: str) -> tuple[list[Case], str, str]:
    """``source``: ``auto`` (the synthetic generator if it can be imported, else the built-in phantom),
    ``synthetic`` or ``builtin``."""
    if source in ("auto", "synthetic"):
        try:
            from implicitseg.data.synthetic import write_synthetic_dataset
        except ImportError:
            if source == "synthetic":
                raise
        else:
            write_synthetic_dataset(root, kind="laa", n_cases=n_cases, seed=0)
            dataset = load_dataset(root)
            return dataset.training, dataset.mesh_space, "implicitseg.data.synthetic (kind=laa)"
    cases, space = builtin_cases(root, n_cases, shape)
    return cases, space, f"built-in phantom, image {shape} at 0.45×0.45×0.6 mm, oblique"


def time_cases(cases: list[Case], mesh_space: str, out: Path, *, label_only: bool) -> list[dict]:
    config = preset_config("nudf64")
    results = []
    for case in cases:
        if label_only:
            if case.label is None:
                continue
            case = Case(case.case_id, case.image, case.label, None)
        results.append(prepare_case(case, out, config, InputRules(mesh_space=mesh_space)))
    return results


def print_table(title: str, results: list[dict]) -> None:
    if not results:
        return
    print(f"\n{title}: {len(results)} case(s), faces {[r['n_faces'] for r in results]}, "
          f"samples {results[0]['n_samples']}")
    for stage in STAGES:
        values = np.array([r["timings_s"].get(stage, 0.0) for r in results])
        print(f"  {stage:<18} mean {values.mean():6.3f} s   max {values.max():6.3f} s")


def shape_diameter_subset_trade_off() -> None:
    """Full ray casting vs a 100k-face subset + nearest-neighbour copy, on a ~330k-face lobed mesh."""
    sphere = trimesh.creation.icosphere(subdivisions=7, radius=1.0)
    directions = np.asarray(sphere.vertices)
    vertices = directions * _lobes(directions)[:, None] * RADII_MM
    faces = np.asarray(sphere.faces)
    settings = dict(side="in", n_rays=SurfaceSamplingConfig().sd_rays, cone_degrees=45.0, max_mm=35.0)
    start = time.perf_counter()
    full = shape_diameter_mm(vertices, faces, max_faces=None, **settings)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    subset = shape_diameter_mm(vertices, faces, max_faces=100_000, rng=np.random.default_rng(0), **settings)
    subset_s = time.perf_counter() - start
    relative = np.abs(subset - full) / full
    print(f"\nshape diameter, one side, {len(faces)} faces, {settings['n_rays']} rays: full {full_s:.2f} s, "
          f"100k-face subset {subset_s:.2f} s; |subset - full| / full: median {np.median(relative):.4f}, "
          f"95th pct {np.percentile(relative, 95):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 200, 140), help="built-in phantom image shape")
    parser.add_argument("--source", choices=("auto", "synthetic", "builtin"), default="auto",
                        help="cases from implicitseg.data.synthetic (auto: when importable) or the built-in phantom")
    parser.add_argument("--skip-subset", action="store_true", help="skip the large-mesh shape-diameter comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        cases, mesh_space, source = make_cases(root / "data", args.cases, tuple(args.shape), args.source)
        print(f"source: {source}; preset nudf64 (res 64, 70 mm, 10k uniform + 100k near-surface, 32 rays)")
        time_cases(cases[:1], mesh_space, root / "warmup", label_only=False)  # imports, first-call costs
        print_table("mesh ground truth", time_cases(cases, mesh_space, root / "prep_mesh", label_only=False))
        print_table("label-only ground truth (marching cubes)",
                    time_cases(cases, mesh_space, root / "prep_label", label_only=True))
    if not args.skip_subset:
        shape_diameter_subset_trade_off()


if __name__ == "__main__":
    main()
