"""ISMM's shapes (spec ``ismm.md``, "PICCT" and "Training samples").

``prepare`` reads every training shape's surface in world LPS mm (a labelmap's isosurface after a light Gaussian
smoothing, or a closed mesh), chooses the anchor shape, aligns every shape to it by Coherent Point Drift (PICCT) and
scales them all into the unit sphere with one factor. Per case, into ``PREP/<case>/``:

- ``samples.npz``: ``surface_points`` (S, 3) and outward unit ``surface_normals`` (S, 3), area-uniform on the
  surface; ``free_points`` (F, 3) uniform in the unit sphere with their exact ``free_sdf`` (F,) (inside negative);
  all float32, canonical frame and units; shuffled, the last ``validation_fraction`` of each held out;
- ``shape.json``: the case's PICCT (world LPS mm → canonical), its source and the surface's size.
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import time
from functools import partial
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from implicitseg.config import IsmmConfig, ShapesConfig
from implicitseg.data.check import InputRules
from implicitseg.data.datasets import split_cases_of
from implicitseg.data.prepare import ProgressCallback, prepare_dataset
from implicitseg.data.seeds import case_generator, case_rng
from implicitseg.errors import InputError
from implicitseg.geometry.alignment import cpd_similarity, unit_sphere_scale
from implicitseg.geometry.distances import signed_distance
from implicitseg.geometry.frames import CanonicalMesh, Picct, SimilarityTransform
from implicitseg.geometry.sampling import surface_samples
from implicitseg.io.atomic import write_json, write_npz
from implicitseg.io.dataset import Case, load_dataset
from implicitseg.io.images import IMAGE_SUFFIXES, Volume, read_labelmap
from implicitseg.io.meshes import MESH_SUFFIXES, Mesh, read_mesh
from implicitseg.io.pairs import check_label_values
from implicitseg.meshing.isosurface import probability_to_mesh
from implicitseg.meshing.components import boundary_edges

SMOOTHING_MM = 1.0
"""Gaussian sigma (mm) applied to a binary mask before its isosurface is taken: removes the voxel staircase of
training shapes (the spec allows light smoothing) without moving the surface by more than a fraction of a voxel."""


def labelmap_surface(labelmap: Volume, label: int, what: str) -> Mesh:
    """The surface (world LPS mm, outward normals) of ``label`` (0: every voxel > 0) of a labelmap: the mask
    smoothed by a Gaussian of :data:`SMOOTHING_MM` (per axis in voxels), isosurface at 0.5."""
    mask = labelmap.array > 0 if label == 0 else labelmap.array == label
    if not mask.any():
        raise InputError(f"{what}: no voxel with {'any label' if label == 0 else f'label {label}'}")
    sigma_voxels = SMOOTHING_MM / labelmap.spacing
    smoothed = ndimage.gaussian_filter(np.pad(mask.astype(np.float32), 2), sigma=sigma_voxels)[2:-2, 2:-2, 2:-2]
    if not (smoothed > 0.5).any():  # a structure thinner than the smoothing: its unsmoothed surface
        smoothed = mask.astype(np.float32)
    return probability_to_mesh(smoothed, labelmap.affine_lps, level=0.5, what=what)


def closed_mesh(path: Path, mesh_space: str) -> Mesh:
    """A mesh file as a closed surface (world LPS mm); an open mesh raises :class:`InputError` (ISMM learns signed
    distances, which need an inside)."""
    mesh = read_mesh(path, space=mesh_space)
    if len(mesh.faces) == 0 or not mesh.face_areas_mm2.sum() > 0:
        raise InputError(f"{path}: mesh has no faces or no area")
    if len(boundary_edges(mesh.faces)):
        raise InputError(f"{path}: the mesh is open ({len(boundary_edges(mesh.faces))} boundary edges); ISMM needs "
                         f"closed surfaces (give labelmaps instead)")
    return mesh


def shape_surface(source: Path, shapes: ShapesConfig, mesh_space: str = "LPS") -> Mesh:
    """A shape's surface in world LPS mm from a labelmap file (:func:`labelmap_surface`) or a closed mesh file."""
    name = source.name.lower()
    if any(name.endswith(suffix) for suffix in MESH_SUFFIXES):
        return closed_mesh(source, mesh_space)
    if any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES) or source.is_dir():
        return labelmap_surface(read_labelmap(source), shapes.label, str(source))
    raise InputError(f"{source}: neither a labelmap ({', '.join(IMAGE_SUFFIXES)}) nor a mesh "
                     f"({', '.join(MESH_SUFFIXES)})")


def case_surface(case: Case, shapes: ShapesConfig, rules: InputRules) -> Mesh:
    """A training case's surface: its labelmap's (values declared in ``rules``), else its mesh (which must be
    closed)."""
    if case.label is not None:
        labelmap = read_labelmap(case.label)
        if rules.label_values is not None:
            check_label_values(labelmap.array, case.label, rules.label_values)
        return labelmap_surface(labelmap, shapes.label, str(case.label))
    if case.mesh is not None:
        return closed_mesh(case.mesh, rules.mesh_space)
    raise InputError(f"case {case.case_id!r}: neither a label nor a mesh")


def principal_lengths_mm(points: np.ndarray) -> np.ndarray:
    """(3,) standard deviations of a cloud along its principal axes, largest first (a pose-free size descriptor)."""
    centred = points - points.mean(axis=0)
    return np.sqrt(np.clip(np.linalg.eigvalsh(centred.T @ centred / len(points))[::-1], 0.0, None))


def choose_anchor(clouds_world_mm: dict[str, np.ndarray], requested: str = "") -> str:
    """The anchor shape: ``requested`` when given, else the case whose principal lengths are closest (Euclidean) to
    the mean principal lengths of all shapes."""
    if requested:
        if requested not in clouds_world_mm:
            raise InputError(f"shapes.anchor {requested!r} is not a training case")
        return requested
    names = sorted(clouds_world_mm)
    lengths = np.stack([principal_lengths_mm(clouds_world_mm[name]) for name in names])
    return names[int(np.argmin(np.linalg.norm(lengths - lengths.mean(axis=0), axis=1)))]


def uniform_in_unit_ball(n_points: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) points uniform in the unit ball (canonical frame)."""
    direction = rng.normal(size=(n_points, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    return direction * rng.random((n_points, 1)) ** (1.0 / 3.0)


def prepare_shape_case(case: Case, out_dir: Path, config: IsmmConfig, rules: InputRules = InputRules(), *,
                       transforms: dict[str, dict], seed: int = 0) -> dict:
    """Samples of one shape in its canonical frame (``transforms[case]``: its PICCT as JSON) into
    ``out_dir/<case>/``."""
    start = time.perf_counter()
    shapes = config.shapes
    picct = Picct.from_json(transforms[case.case_id])
    mesh = case_surface(case, shapes, rules)
    canonical = CanonicalMesh(picct.world_to_canonical(mesh.vertices_world_mm), mesh.faces)
    rng = case_rng(case.case_id, seed, 7)
    surface_points, surface_normals = surface_samples(canonical.vertices_canonical, canonical.faces,
                                                      shapes.surface_points, rng)
    free_points = uniform_in_unit_ball(shapes.free_space_points, rng)
    free_sdf = signed_distance(free_points, canonical.vertices_canonical, canonical.faces)
    if not (np.all(np.isfinite(free_sdf)) and np.all(np.isfinite(surface_normals))):
        raise InputError(f"case {case.case_id!r}: samples hold NaN (degenerate surface?)")
    case_dir = Path(out_dir) / case.case_id
    write_npz(case_dir / "samples.npz", surface_points=surface_points.astype(np.float32),
              surface_normals=surface_normals.astype(np.float32), free_points=free_points.astype(np.float32),
              free_sdf=free_sdf.astype(np.float32))
    radius = float(np.linalg.norm(canonical.vertices_canonical, axis=1).max())
    write_json(case_dir / "shape.json", {"case": case.case_id, "picct": picct.to_json(),
                                         "source": str(case.label if case.label is not None else case.mesh),
                                         "max_radius_canonical": radius, "n_faces": int(len(mesh.faces))})
    return {"case": case.case_id, "n_faces": int(len(mesh.faces)),
            "timings_s": {"total_s": time.perf_counter() - start}}


def prepare_shapes(dataset_dir: Path, out_dir: Path, config: IsmmConfig, *, workers: int = 1,
                   val_fraction: float = 0.2, seed: int = 0, resample_labels: bool = False,
                   progress: ProgressCallback | None = None) -> dict:
    """PICCT for every training shape (anchor, CPD similarity, one unit-sphere scale; recorded in the config's
    ``shapes`` section and per case), then their samples (:func:`prepare_shape_case`). Every case gets a code row:
    ISMM is an auto-decoder of shapes, and its validation measures the fit on held-out points of each shape. Shapes
    are taken in world space and no image is read, so ``resample_labels`` changes nothing here."""
    config = copy.deepcopy(config)  # prepare fills in the shapes section; the caller's config stays as given
    dataset = load_dataset(dataset_dir)
    if len(dataset.training) < 2:
        raise InputError(f"{dataset_dir}: ISMM needs at least 2 training shapes, got {len(dataset.training)}")
    shapes = config.shapes
    if not 0.0 < shapes.validation_fraction < 1.0:
        raise InputError(f"shapes.validation_fraction must be in (0, 1), got {shapes.validation_fraction}")
    rng = np.random.default_rng(seed)
    surfaces: dict[str, Mesh] = {}
    for case in dataset.training:
        try:
            surfaces[case.case_id] = case_surface(case, shapes, InputRules.of(dataset))
        except InputError as error:
            raise InputError(f"case {case.case_id!r}: {error}") from None
    clouds = {name: surface_samples(mesh.vertices_world_mm, mesh.faces, shapes.cpd_points, rng)[0]
              for name, mesh in surfaces.items()}
    anchor = choose_anchor(clouds, shapes.anchor)
    anchor_center = clouds[anchor].mean(axis=0)
    fixed = clouds[anchor] - anchor_center
    align = partial(cpd_similarity, max_points=shapes.cpd_points, iterations=shapes.cpd_iterations,
                    tolerance=shapes.cpd_tolerance, seed=seed)
    others = [name for name in sorted(clouds) if name != anchor]
    if workers > 1:  # CPD costs seconds per shape (quadratic in cpd_points): one process per shape
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(others)), mp_context=context) as pool:
            aligned = list(pool.map(align, [clouds[name] for name in others], [fixed] * len(others)))
    else:
        aligned = [align(clouds[name], fixed) for name in others]
    similarities = {anchor: SimilarityTransform(1.0, np.eye(3), -anchor_center), **dict(zip(others, aligned))}
    scale = unit_sphere_scale([similarities[name].apply(mesh.vertices_world_mm) for name, mesh in surfaces.items()],
                              margin=shapes.unit_sphere_margin)
    names = sorted(surfaces)
    config.shapes.anchor_case = anchor
    config.shapes.anchor_center_world_mm = tuple(float(v) for v in anchor_center)
    config.shapes.global_scale = float(scale)
    config.shapes.n_shapes = len(names)
    transforms = {name: Picct(similarities[name], scale).to_json() for name in names}
    entries = {"files": {"samples": "samples.npz", "shape": "shape.json"}, "anchor": anchor,
               "code_rows": {name: row for row, name in enumerate(names)}}
    return prepare_dataset(dataset_dir, out_dir, config, prepare_one=partial(prepare_shape_case, transforms=transforms),
                           manifest_entries=entries, workers=workers, val_fraction=val_fraction, seed=seed,
                           resample_labels=resample_labels, progress=progress)


class ShapePoints(TypedDict):
    """One shape's points for a step (canonical frame): its code ``row``, surface points and normals, free-space
    points with exact SDF, uniform points (unknown SDF) in the canonical cube."""

    case_id: str
    row: int
    surface_points: torch.Tensor
    surface_normals: torch.Tensor
    free_points: torch.Tensor
    free_sdf: torch.Tensor
    uniform_points: torch.Tensor


class ShapeSampleDataset(Dataset):
    """Every prepared shape; ``split`` ``train`` draws random points from the first part of each sample array,
    ``val`` a fixed draw from the held-out last ``validation_fraction``."""

    def __init__(self, prep_dir: str | Path, rows: dict[str, int], config: IsmmConfig, *, split: str) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.prep_dir, self.rows, self.config, self.split = Path(prep_dir), dict(rows), config, split
        self.case_ids = sorted(self.rows, key=self.rows.get)
        missing = [str(self.prep_dir / c / "samples.npz") for c in self.case_ids
                   if not (self.prep_dir / c / "samples.npz").is_file()]
        if missing:
            raise InputError(f"{self.prep_dir}: missing prepared file(s): {', '.join(missing[:5])}")
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def from_config(cls, prep_dir: str | Path, split: str, config: IsmmConfig) -> "ShapeSampleDataset":
        """Every prepared shape with its code row (case ids in sorted order, as prepare numbered them)."""
        manifest = split_cases_of(prep_dir, "train", config.method, 0, config.preset)
        names = sorted(manifest.splits["train"] + manifest.splits.get("val", []))
        if len(names) != config.shapes.n_shapes:
            raise InputError(f"{prep_dir}: {len(names)} prepared shapes, but the config has code rows for "
                             f"{config.shapes.n_shapes}; run prepare again")
        return cls(prep_dir, {name: row for row, name in enumerate(names)}, config, split=split)

    def __len__(self) -> int:
        return len(self.case_ids)

    def _arrays(self, case: str) -> dict[str, np.ndarray]:
        if case not in self._cache:
            with np.load(self.prep_dir / case / "samples.npz") as data:
                arrays = {name: data[name] for name in data.files}
            held_out = self.config.shapes.validation_fraction
            for prefix, names in (("surface", ("surface_points", "surface_normals")), ("free", ("free_points",
                                                                                                "free_sdf"))):
                cut = int(round(len(arrays[names[0]]) * (1.0 - held_out)))
                for name in names:
                    arrays[name] = arrays[name][:cut] if self.split == "train" else arrays[name][cut:]
                if len(arrays[names[0]]) == 0:
                    raise InputError(f"{self.prep_dir / case}: no {prefix} points in the {self.split} part")
            self._cache[case] = arrays
        return self._cache[case]

    def __getitem__(self, index: int) -> ShapePoints:
        case = self.case_ids[index]
        arrays = self._arrays(case)
        train = self.config.train
        generator = None if self.split == "train" else case_generator(case, self.config.train.seed)

        def draw(n_available: int, n: int) -> np.ndarray:
            return torch.randint(n_available, (n,), generator=generator).numpy()

        surface = draw(len(arrays["surface_points"]), train.surface_per_shape)
        free = draw(len(arrays["free_points"]), train.free_per_shape)
        uniform = torch.rand((train.uniform_per_shape, 3), generator=generator) * 2.0 - 1.0
        return ShapePoints(case_id=case, row=self.rows[case],
                           surface_points=torch.from_numpy(arrays["surface_points"][surface]),
                           surface_normals=torch.from_numpy(arrays["surface_normals"][surface]),
                           free_points=torch.from_numpy(arrays["free_points"][free]),
                           free_sdf=torch.from_numpy(arrays["free_sdf"][free]), uniform_points=uniform)
