"""The ``prepare`` stage for distance-field methods (NUDF spec, "Region of interest" and "Training samples").

Per case, into ``PREP/<case>/`` (DESIGN §5):

- ``image.npy``: the ROI image, float32 ``(res, res, res)`` in ``(Z, Y, X)`` order (see ``geometry/frames.py``),
  intensities normalised by :func:`~implicitseg.io.intensities.normalise_intensities`;
- ``samples.npz``: ``points`` (N, 3) float32 unit coordinates (x, y, z), ``distances`` (N,) float32 exact
  unsigned distance to the ground-truth surface in unit lengths, ``sample_set`` (N,) uint8
  (:class:`~implicitseg.geometry.sampling.SampleSet`: 0 = in, 1 = out, 2 = uniform);
- ``roi.json``: the ROI (``Roi.to_json()``) plus the case id, source files, mesh space and surface centre.

For the whole dataset, ``PREP/manifest.json`` lists the cases, a deterministic train/val split, the
resolved config, the library versions and which labelmaps were resampled onto their image's grid, and
``PREP/config.yaml`` holds the resolved config. Each case's files are read and checked
(:mod:`implicitseg.data.check`) before anything is written for it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from implicitseg.config import NudfConfig, RoiConfig, config_to_dict
from implicitseg.data.check import InputRules, read_case_label, read_case_mesh
from implicitseg.data.seeds import case_rng
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.geometry.sampling import SampleSet, training_samples
from implicitseg.io.atomic import write_json, write_npy, write_npz
from implicitseg.io.configs import save_config
from implicitseg.io.dataset import Case, load_dataset
from implicitseg.io.images import Volume, read_image, roi_overlaps_image
from implicitseg.io.intensities import roi_image_of
from implicitseg.io.meshes import Mesh
from implicitseg.meshing.isosurface import labelmap_to_mesh
from implicitseg.versions import versions

MIN_ROI_OVERLAP = 0.5
"""A ROI with less than this fraction of its volume inside the image is refused."""

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(n_done, n_total)`` after each case is prepared (as the synth stage does)."""


def checked_roi(image: Volume, center_world_mm: np.ndarray, roi_config: RoiConfig, image_path: Path,
                what: str) -> Roi:
    """The ROI of ``roi_config`` centred at ``center_world_mm``; refused (:class:`InputError`) when less than
    :data:`MIN_ROI_OVERLAP` of it lies inside ``image``. ``what`` names the centre in the message."""
    roi = Roi(tuple(center_world_mm), roi_config.size_mm, roi_config.res)
    overlap = roi_overlaps_image(image, roi)
    if overlap < MIN_ROI_OVERLAP:
        centre = ", ".join(f"{c:.1f}" for c in center_world_mm)
        raise InputError(
            f"{image_path}: ROI outside the image: only {overlap:.0%} of the {roi.size_mm:g} mm ROI centred at "
            f"{what} ({centre}) mm LPS lies inside the image")
    return roi


def label_center_world_mm(labelmap: Volume) -> np.ndarray:
    """Centre of mass (3,) world LPS mm of a labelmap's voxels > 0."""
    return labelmap.voxel_centers_world_mm(labelmap.array > 0).mean(axis=0)


def ground_truth_surface(case: Case, image: Volume, rules: InputRules) -> tuple[Mesh, np.ndarray, str | None]:
    """The case's ground-truth surface (world LPS mm), the ROI centre (3,) world LPS mm, and what differed from the
    image's grid when the labelmap was resampled onto it (None otherwise).

    With a mesh: the mesh (read in ``rules.mesh_space``, inside ``image``) and its area-weighted surface centroid.
    Label only: the labelmap's isosurface (marching cubes at 0.5 of label > 0) and the centre of mass of its voxels.
    """
    if case.mesh is not None:
        mesh = read_case_mesh(case, image, rules)
        if not mesh.face_areas_mm2.sum() > 0:
            raise InputError(f"{case.mesh}: mesh has zero surface area")
        return mesh, mesh.center_of_mass_world_mm(), None
    if case.label is None:
        raise InputError(f"case {case.case_id!r}: neither a mesh nor a label to take the surface from")
    label = read_case_label(case, image, rules)
    try:
        mesh = labelmap_to_mesh(label.volume, level=0.5)
    except InputError as error:
        raise InputError(f"{case.label}: {error}") from None
    return mesh, label_center_world_mm(label.volume), label.resampled_from


def prepare_case(case: Case, out_dir: Path, config: NudfConfig, rules: InputRules = InputRules(), *,
                 seed: int = 0) -> dict:
    """Prepare one case into ``out_dir/<case_id>/`` (``out_dir`` is the PREP folder).

    Returns ``{"case": id, "n_faces": F, "n_samples": N, "label_resampled_from": what differed or None,
    "timings_s": {stage: seconds}}``. Raises :class:`InputError`, before writing anything, for files that are
    unreadable or break ``rules`` (:mod:`implicitseg.data.check`), an empty label, a mesh without area or outside
    the image, or a ROI that lies mostly (< 50 %) outside the image.
    """
    timings: dict[str, float] = {}
    start_total = start = time.perf_counter()
    image = read_image(case.image)
    mesh, center_world_mm, resampled_from = ground_truth_surface(case, image, rules)
    timings["read_s"] = time.perf_counter() - start

    roi = checked_roi(image, center_world_mm, config.roi, case.image,
                      f"the ground truth's centre (mesh space {rules.mesh_space}; does the mesh/label match the "
                      f"image?)")

    start = time.perf_counter()
    roi_image = roi_image_of(image, roi, config.intensity, case.image)
    timings["roi_image_s"] = time.perf_counter() - start

    samples = training_samples(mesh.vertices_world_mm, mesh.faces, roi, config.sampling, case_rng(case.case_id, seed))
    timings.update(samples.timings_s)
    if not (np.all(np.isfinite(samples.points_unit)) and np.all(np.isfinite(samples.distances_unit))):
        raise InputError(f"case {case.case_id!r}: samples hold NaN or infinite values (degenerate ground-truth mesh?)")

    start = time.perf_counter()
    case_dir = Path(out_dir) / case.case_id
    write_npy(case_dir / "image.npy", roi_image)
    write_npz(case_dir / "samples.npz", points=samples.points_unit, distances=samples.distances_unit,
              sample_set=samples.sample_set)
    write_json(case_dir / "roi.json", {
        **roi.to_json(),
        "case": case.case_id,
        "image": str(case.image),
        "label": str(case.label) if case.label is not None else None,
        "mesh": str(case.mesh) if case.mesh is not None else None,
        "mesh_space": rules.mesh_space,
        "surface_source": "mesh" if case.mesh is not None else "label",
        "surface_center_world_mm": [float(c) for c in center_world_mm],
    })
    timings["write_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - start_total
    return {"case": case.case_id, "n_faces": int(len(mesh.faces)), "n_samples": int(len(samples.sample_set)),
            "label_resampled_from": resampled_from, "timings_s": timings}


def split_cases(case_ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic train/val split: a seeded permutation of the sorted ids; ``round(val_fraction × n)`` val
    cases, at least 1 when there are ≥ 2 cases and never all of them."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(case_ids)
    n_val = 0 if len(ordered) < 2 else min(max(1, round(val_fraction * len(ordered))), len(ordered) - 1)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    val = sorted(ordered[i] for i in permutation[:n_val])
    return {"train": [c for c in ordered if c not in set(val)], "val": val}


CasePreparer = Callable[..., dict]
"""``prepare_one(case, out_dir, config, rules, *, seed) -> {"case", "timings_s", "label_resampled_from"?, ...}`` for
one case: it reads the case's files through :mod:`implicitseg.data.check` with ``rules`` (:class:`InputRules`) and
writes nothing for a case that breaks them."""

NUDF_MANIFEST_ENTRIES = {
    "files": {"image": "image.npy", "samples": "samples.npz", "roi": "roi.json"},
    "sample_sets": {str(int(s)): s.name.lower() for s in SampleSet},
}
"""What NUDF's manifest says of its per-case files and sample-set codes."""


def _prepare_or_name(prepare_one: CasePreparer, case: Case, out_dir: Path, config: Any, rules: InputRules,
                     seed: int) -> dict:
    """``prepare_one``, with the case id put in front of any :class:`InputError` message."""
    try:
        return prepare_one(case, out_dir, config, rules, seed=seed)
    except InputError as error:
        raise InputError(f"case {case.case_id!r}: {error}") from None


def prepare_dataset(dataset_dir: Path, out_dir: Path, config: Any, *, prepare_one: CasePreparer = prepare_case,
                    manifest_entries: dict | None = None, workers: int = 1, val_fraction: float = 0.2, seed: int = 0,
                    resample_labels: bool = False, progress: ProgressCallback | None = None) -> dict:
    """Prepare every training case of the dataset at ``dataset_dir`` into ``out_dir`` with ``prepare_one``
    (default: NUDF's :func:`prepare_case`) and write the manifest, with ``manifest_entries`` (default
    :data:`NUDF_MANIFEST_ENTRIES`: the per-case files and what their codes mean) added to it.

    Cases run in ``workers`` processes (``workers > 1``). Each case's files are checked as they are read
    (:class:`InputRules` of ``dataset.json``: declared label values, mesh space, labelmaps on their image's grid, or
    resampled onto it with ``resample_labels``); the first case failing with :class:`InputError` stops the whole
    stage with that message (prefixed with the case id), nothing written for that case and no manifest. Returns the
    manifest (also written to ``out_dir/manifest.json``), which holds per-case timings under ``"timings_s"`` and the
    resampled labelmaps under ``"label_resampling"``.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    dataset = load_dataset(dataset_dir)
    if not dataset.training:
        raise InputError(f"{dataset_dir}: dataset.json lists no training cases")
    rules = InputRules.of(dataset, resample_labels=resample_labels)
    splits = split_cases([case.case_id for case in dataset.training], val_fraction, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    total = len(dataset.training)
    if workers == 1:
        for case in dataset.training:
            results[case.case_id] = _prepare_or_name(prepare_one, case, out_dir, config, rules, seed)
            if progress is not None:
                progress(len(results), total)
    else:
        # forkserver: workers never inherit the caller's threads (torch, OpenMP), which plain fork can deadlock on.
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, total), mp_context=context) as pool:
            futures = {pool.submit(_prepare_or_name, prepare_one, case, out_dir, config, rules, seed):
                       case.case_id
                       for case in dataset.training}
            try:
                for future in concurrent.futures.as_completed(futures):
                    results[futures[future]] = future.result()
                    if progress is not None:
                        progress(len(results), total)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    case_ids = [case.case_id for case in dataset.training]
    manifest = {
        "method": config.method,
        "preset": config.preset,
        "res": config.input_res(),
        "roi_mm": config.roi_size_mm(),
        "cases": case_ids,
        "splits": splits,
        **(NUDF_MANIFEST_ENTRIES if manifest_entries is None else manifest_entries),
        "config": config_to_dict(config),
        "versions": versions(),
        "dataset": str(Path(dataset_dir).resolve()),
        "mesh_space": dataset.mesh_space,
        "label_resampling": {
            "enabled": resample_labels,
            "how": "nearest neighbour in world space, onto the image's grid",
            "cases": {case_id: results[case_id]["label_resampled_from"] for case_id in case_ids
                      if results[case_id].get("label_resampled_from")},
        },
        "seed": seed,
        "timings_s": {case_id: results[case_id]["timings_s"] for case_id in case_ids},
    }
    save_config(out_dir / "config.yaml", config)
    write_json(out_dir / "manifest.json", manifest)
    return manifest
