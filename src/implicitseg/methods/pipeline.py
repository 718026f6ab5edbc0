"""The pipeline stages behind the CLI: synth, prepare, train, predict, evaluate, demo.

Each stage looks the method up in the table (:func:`implicitseg.methods.get_method`) and writes its resolved
config as YAML next to its outputs.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implicitseg.config import MeshingConfig, config_from_dict, config_to_dict, load_yaml, save_config
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.io.atomic import write_json
from implicitseg.io.images import Volume, VolumeSeries
from implicitseg.io.meshes import Mesh
from implicitseg.versions import versions


DATA_SECTIONS = ("roi", "grid", "intensity", "labels", "sampling", "canonical", "shapes")
"""Config sections that ``prepare`` fixes; ``train`` takes them from PREP whatever the preset says."""


@dataclass
class RoiPrediction:
    """What a method predicts for one ROI, timings in s.

    Surface methods give a mesh and its dense point cloud in world LPS mm; voxel methods give the foreground
    probability on the ROI grid ``(res, res, res)`` in (Z, Y, X) order, which :func:`run_predict` upsamples to
    the image grid, thresholds at ``probability_level`` into a labelmap and isosurfaces into a mesh.
    """

    timings: dict[str, float]
    counts: dict[str, int]
    mesh: Mesh | None = None
    points_world_mm: np.ndarray | None = None
    probability_zyx: np.ndarray | None = None
    probability_level: float = 0.5
    meshing: dict | None = None
    """How the mesh was made (extractor, cell size, components kept and dropped), for prediction.json."""


@dataclass
class ImagePrediction:
    """What a whole-image method predicts for one image on its output grid (the image's own, or the same box at
    ``--spacing``), timings in s: the labelmap (class per voxel) and the probability of any foreground class,
    whose isosurface at 0.5 becomes the mesh."""

    timings: dict[str, float]
    counts: dict[str, object]
    labelmap: Volume | VolumeSeries
    """A class per voxel; a series for 3D+t methods (one labelmap per frame)."""
    foreground_probability: Volume
    mesh: Mesh | None = None
    """The method's own surface (world LPS mm), written instead of the isosurface of ``foreground_probability``."""
    points_world_mm: np.ndarray | None = None
    """Points (N, 3) world LPS mm worth showing with the result (ISMM: the trusted points), written as points.ply."""


def parse_spacing(text: str | None) -> float | tuple[float, float, float] | None:
    """``--spacing``: one number (isotropic mm) or three ``SI,SJ,SK`` along the image's axes; None stays None."""
    if text is None:
        return None
    try:
        values = [float(part) for part in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"--spacing {text!r}: expected one positive number (mm) or three, SI,SJ,SK")
    return values[0] if len(values) == 1 else (values[0], values[1], values[2])


def parse_plane(text: str) -> tuple[tuple[int, int, int], np.ndarray]:
    """``--plane "OX,OY,OZ;UX,UY,UZ;VX,VY,VZ;NU,NV"`` (world LPS mm): the first pixel's centre, the steps to the
    next pixel along the plane's two axes (their lengths are the pixel sizes), and the pixel counts → the grid
    (NU, NV, 1) and its index → world affine (third axis: the unit normal)."""
    try:
        parts = [[float(v) for v in part.split(",")] for part in text.split(";")]
    except ValueError:
        parts = []
    if len(parts) != 4 or [len(p) for p in parts] != [3, 3, 3, 2] or not all(
            np.isfinite(v) for p in parts for v in p):
        raise InputError(f"--plane {text!r}: expected OX,OY,OZ;UX,UY,UZ;VX,VY,VZ;NU,NV (world LPS mm, pixel counts)")
    origin, step_u, step_v = (np.array(p) for p in parts[:3])
    counts = [int(round(c)) for c in parts[3]]
    normal = np.cross(step_u, step_v)
    if min(counts) < 1 or np.linalg.norm(normal) < 1e-9:
        raise InputError(f"--plane {text!r}: the two axes must be non-zero and not parallel, the counts positive")
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = step_u, step_v, normal / np.linalg.norm(normal), origin
    return (counts[0], counts[1], 1), affine


def _progress_bar(description: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    task = progress.add_task(description, total=total)
    return progress, lambda done, total_=total: progress.update(task, completed=done, total=total_)


def run_synth(out: Path, *, kind: str, n_cases: int, seed: int, n_test: int | None = None) -> Path:
    """Write a synthetic dataset (``n_test`` held-out cases; default ``n_cases // 5``); returns its folder."""
    from implicitseg.data.synthetic import write_synthetic_dataset

    progress, advance = _progress_bar(f"synth {kind}", n_cases)
    with progress:
        return write_synthetic_dataset(Path(out), kind=kind, n_cases=n_cases, seed=seed, n_test=n_test,
                                         progress=advance)


def resolve_config(method_name: str, *, preset: str | None, res: int | None, roi_mm: float | None):
    """The method's preset config (chosen by ``preset`` or ``res``) with ``res`` / ``roi_mm`` overrides applied."""
    from implicitseg.methods import get_method

    method = get_method(method_name)
    name = preset or method.preset_for_res(res)
    if name not in method.presets:
        raise InputError(f"unknown preset {name!r} for {method_name}; available: {', '.join(method.presets)}")
    config = config_from_dict(method.config_class, config_to_dict(method.presets[name]))
    if not hasattr(config, "roi"):  # whole images: the ROI detector's grid, patch methods' patches, or coordinates
        if roi_mm is not None:
            raise InputError(f"--roi-mm does not apply to method {method_name!r} (it sees whole images)")
        grid = getattr(config, "grid", None)
        if res is not None:
            if hasattr(grid, "patch_voxels"):
                grid.patch_voxels = int(res)
            elif hasattr(grid, "res"):
                grid.res = int(res)
            else:
                raise InputError(f"--res does not apply to method {method_name!r} (it has no input grid)")
        return method, config
    if res is not None:
        config.roi.res = int(res)
    if roi_mm is not None:
        if roi_mm <= 0:
            raise InputError(f"--roi-mm must be positive, got {roi_mm}")
        config.roi.size_mm = float(roi_mm)
    return method, config


def run_prepare(dataset: Path, out: Path, *, method: str, preset: str | None = None, res: int | None = None,
                roi_mm: float | None = None, workers: int = 1, resample_labels: bool = False,
                show_progress: bool = True) -> dict:
    """Prepare every training case of ``dataset`` for ``method`` into ``out``; returns the manifest. Labelmaps on
    another grid than their image's are refused, or resampled onto it with ``resample_labels``."""
    method_entry, config = resolve_config(method, preset=preset, res=res, roi_mm=roi_mm)
    if not show_progress:
        return method_entry.prepare(Path(dataset), Path(out), config, workers=workers,
                                    resample_labels=resample_labels, progress=None)
    from implicitseg.io.dataset import load_dataset

    progress, advance = _progress_bar("prepare", len(load_dataset(dataset).training))
    with progress:
        return method_entry.prepare(Path(dataset), Path(out), config, workers=workers,
                                    resample_labels=resample_labels, progress=advance)


def run_check(dataset: Path, *, method: str | None = None, json_out: Path | None = None, workers: int = 1,
              show_progress: bool = True):
    """Check every case of ``dataset`` (:func:`implicitseg.data.check.check_dataset`; with ``method``, also what
    its ``prepare`` needs) and write the results to ``json_out`` (atomically) when given; returns the
    :class:`~implicitseg.data.check.DatasetCheck`."""
    from implicitseg.data.check import check_dataset
    from implicitseg.io.dataset import load_dataset
    from implicitseg.methods import get_method

    needs_label = get_method(method).needs_label if method is not None else False
    listing = load_dataset(dataset, strict=False)
    progress, advance = _progress_bar("check", len(listing.training) + len(listing.test))
    with progress if show_progress else contextlib.nullcontext():
        report = check_dataset(dataset, needs_label=needs_label, workers=workers,
                               progress=advance if show_progress else None)
    if json_out is not None:
        write_json(json_out, {**report.to_json(), "method": method})
    return report


def check_table(report):
    """The rich table of a :class:`~implicitseg.data.check.DatasetCheck`: one row per check (✓ / ✗, how many cases
    it held for, the first problem or what was found), then the spacing, size and intensity ranges."""
    from rich.table import Table

    table = Table(title=f"implicitseg check {report.dataset}", title_justify="left")
    for column in ("check", "result", "details"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        details = row.problems[0] + (f" (+{len(row.problems) - 1} more)" if len(row.problems) > 1 else "") \
            if row.problems else row.holds_when
        if row.check == "label values declared" and row.ok:
            details = f"values found: {', '.join(map(str, report.label_values))}"
        result = f"[green]✓[/] {row.passed}/{row.passed + row.failed}" if row.ok else \
            f"[red]✗[/] {row.failed} of {row.passed + row.failed} fail"
        table.add_row(row.check, result, details)

    def ranges(found: dict | None, unit: str) -> str:
        if found is None:
            return "–"
        return " × ".join(f"{low:.4g}" if low == high else f"{low:.4g}–{high:.4g}"
                          for low, high in zip(found["min"], found["max"])) + unit

    table.add_row("spacing", "", ranges(report.spacing_mm, " mm"))
    table.add_row("size", "", ranges(report.size, " voxels"))
    low_high = report.intensity_range
    table.add_row("intensity range", "", "–" if low_high is None else f"{low_high[0]:.6g} … {low_high[1]:.6g}")
    return table


def run_train(prep: Path, out: Path, *, method: str | None = None, preset: str | None = None,
              max_epochs: int | None = None, max_time: str | None = None, devices: int = 1, resume: bool = False,
              show_progress: bool = True) -> dict:
    """Train ``method`` on a prepared folder; the ROI, intensity and sampling settings come from PREP."""
    from implicitseg.data.datasets import read_manifest
    from implicitseg.methods import get_method

    manifest = read_manifest(prep)
    method_name = method or manifest.method
    if method_name != manifest.method:
        raise InputError(f"{prep} was prepared for {manifest.method!r}, not {method_name!r}; run prepare again")
    method_entry = get_method(method_name)
    prepared = config_from_dict(method_entry.config_class, manifest.config, where=f"{prep}/manifest.json")
    name = preset or prepared.preset
    if name not in method_entry.presets:
        raise InputError(f"unknown preset {name!r}; available: {', '.join(method_entry.presets)}")
    config = config_from_dict(method_entry.config_class, config_to_dict(method_entry.presets[name]))
    # the data were prepared once: their grid, intensities and samples stay as prepared
    for section in DATA_SECTIONS:
        if hasattr(config, section):
            setattr(config, section, getattr(prepared, section))
    return method_entry.train(Path(prep), Path(out), config, max_epochs=max_epochs, max_time=max_time,
                              devices=devices, resume=resume, progress=show_progress)


def _select_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        selected = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device!r}: not a torch device (auto, cpu, cuda, cuda:N)") from None
    if selected.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    return selected


ROI_SOURCE_NAMES = {"center": "the given --roi-center", "label": "the --roi-label centre of mass",
                    "detector": "the ROI detector's centre"}


def _roi_centers(roi_center: str | None, roi_label: Path | None, roi_run: Path | None, device):
    """A function ``(image_path, volume) -> (centre (3,) world LPS mm, source, details)`` for the one ROI source given."""
    from implicitseg.inference.roi import detect_roi_center, label_center_world_mm, label_for_image, parse_center
    from implicitseg.methods import get_method

    given = [name for name, value in (("--roi-center", roi_center), ("--roi-label", roi_label),
                                      ("--roi-run", roi_run)) if value is not None]
    if len(given) != 1:
        raise InputError("give exactly one of --roi-center X,Y,Z (world LPS mm), --roi-label LABELMAP or --roi-run "
                         f"ROI_RUN (a trained ROI detector); got {', '.join(given) or 'none'}")
    if roi_center is not None:
        center = parse_center(roi_center)
        return lambda image_path, volume: (center, "center", {})
    if roi_label is not None:
        return lambda image_path, volume: (label_center_world_mm(label_for_image(roi_label, image_path)), "label", {})
    detector, detector_config = get_method("roi").load(Path(roi_run), "best", device)

    def detected(image_path: Path, volume):
        found = detect_roi_center(detector, detector_config, volume, device=device, what=str(image_path))
        return found.center_world_mm, "detector", {"roi_run": str(roi_run), "detector_voxels": found.n_voxels,
                                                   "detector_max_probability": found.max_probability,
                                                   "detector_s": found.time_s}

    return detected


def _write_probability_outputs(prediction: RoiPrediction, roi: Roi, volume, case_dir: Path) -> tuple[Mesh, dict]:
    """Voxel methods: the ROI probability trilinearly upsampled onto the image grid → ``labelmap.nii.gz`` (the
    image's grid and geometry, 1 where probability > level) and the mesh at that level (world LPS mm)."""
    from implicitseg.io.images import Volume, resample_onto_image, roi_volume, write_image
    from implicitseg.meshing.isosurface import probability_to_mesh

    start = time.perf_counter()
    level = prediction.probability_level
    probability, low = resample_onto_image(roi_volume(prediction.probability_zyx, roi), volume,
                                           interpolation="linear", default_value=0.0)
    labelmap = np.zeros(volume.shape, dtype=np.uint8)
    high = low + np.array(probability.shape)
    labelmap[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = probability.array > level
    write_image(case_dir / "labelmap.nii.gz", Volume(labelmap, volume.affine_lps))
    mesh = probability_to_mesh(probability.array, probability.affine_lps, level=level,
                               what=f"{case_dir.name}: predicted probability")
    return mesh, {"upsample_and_mesh_s": time.perf_counter() - start}


def _write_image_outputs(prediction: ImagePrediction, case_dir: Path, mesh_path: Path, mesh_space: str) -> dict:
    """Whole-image methods: ``labelmap.nii.gz`` on the output grid and the mesh of the foreground (none when
    nothing was found: the labelmap is then all background). Returns what the record says of them."""
    from implicitseg.io.images import write_image, write_image_series
    from implicitseg.io.meshes import write_mesh, write_point_cloud
    from implicitseg.meshing.isosurface import probability_to_mesh

    start = time.perf_counter()
    labelmap = prediction.labelmap
    if isinstance(labelmap, VolumeSeries):
        write_image_series(case_dir / "labelmap.nii.gz", labelmap)
        first = labelmap.frame(0)
    else:
        write_image(case_dir / "labelmap.nii.gz", labelmap)
        first = labelmap
    record: dict = {"labelmap": str(case_dir / "labelmap.nii.gz"), "output_shape": list(first.shape),
                    "output_spacing_mm": [float(v) for v in first.spacing]}
    if prediction.points_world_mm is not None:
        write_point_cloud(case_dir / "points.ply", prediction.points_world_mm, space=mesh_space)
        record["points"] = str(case_dir / "points.ply")
    if prediction.mesh is not None:
        write_mesh(mesh_path, prediction.mesh, space=mesh_space)
        record.update(mesh=str(mesh_path), n_vertices=len(prediction.mesh.vertices_world_mm),
                      n_faces=len(prediction.mesh.faces))
    elif min(first.shape) < 2:
        record.update(mesh=None, note="a plane: labelmap only")
    elif np.any(first.array > 0):
        mesh = probability_to_mesh(prediction.foreground_probability.array, labelmap.affine_lps, level=0.5,
                                   what=f"{case_dir.name}: foreground probability")
        write_mesh(mesh_path, mesh, space=mesh_space)
        record.update(mesh=str(mesh_path), n_vertices=len(mesh.vertices_world_mm), n_faces=len(mesh.faces),
                      **({"mesh_frame": 0} if isinstance(labelmap, VolumeSeries) else {}))
    else:
        record.update(mesh=None, warning="no foreground found: the labelmap is all background and no mesh is written")
    record["write_s"] = time.perf_counter() - start
    return record


def _apply_meshing_options(config, method_name: str, mesher: str | None, band_mm: float | None) -> None:
    """Set ``meshing.method`` / ``meshing.band.cell_mm`` of a distance-field method's config from the CLI."""
    if mesher is None and band_mm is None:
        return
    meshing = getattr(config, "meshing", None)
    if not isinstance(meshing, MeshingConfig):
        raise InputError(f"--mesher and --band-mm apply to distance-field methods (nudf), not {method_name}")
    if mesher is not None:
        meshing.method = mesher
    if band_mm is not None:
        if not band_mm > 0:
            raise InputError(f"--band-mm must be a positive number of mm, got {band_mm}")
        meshing.band.cell_mm = float(band_mm)


def run_predict(run: Path, inputs: list[Path], out: Path, *, roi_center: str | None = None,
                roi_label: Path | None = None, roi_run: Path | None = None, spacing: str | None = None,
                plane: str | None = None, frames: list[int] | None = None, fit_weights: bool = False,
                initial: Path | None = None, mesh_format: str = "vtk", mesh_space: str = "LPS",
                checkpoint: str = "best", device: str = "auto", seed: int = 0, mesher: str | None = None,
                band_mm: float | None = None, show_progress: bool = True) -> list[dict]:
    """Predict each input image with the run's model.

    ROI methods: the ROI is centred by exactly one of ``roi_center`` (world LPS mm), ``roi_label`` (a labelmap's
    centre of mass) or ``roi_run`` (a trained ROI detector); OUT/<case>/ gets mesh.<fmt>, plus points.ply (surface
    methods) or labelmap.nii.gz on the image's grid (voxel methods). Whole-image methods need no ROI and write
    labelmap.nii.gz and mesh.<fmt> on the image's grid, on the same box at ``spacing`` (mm: one number or three)
    or on a ``plane`` (:func:`parse_plane`; labelmap only); 3D+t methods take ``frames`` (default: all); methods
    that fit a code first (NISF) also fit the network's weights with ``fit_weights`` (the authors' code); methods
    that refine a segmentation (ISMM) take it as ``initial`` (a labelmap or mesh file, or a folder of them by case).
    Distance-field methods (nudf) take ``mesher`` (``udf-mc``: the surface from the field's narrow band; ``poisson``:
    the paper's dense cloud + screened Poisson) and ``band_mm`` (the band's finest cell, mm) over the run's config.
    Every output is in the image's physical space; prediction.json records timings and counts.
    """
    from implicitseg.data.prepare import checked_roi
    from implicitseg.io.dataset import case_id, list_images
    from implicitseg.io.images import grid_at_spacing, read_image
    from implicitseg.io.intensities import roi_image_of
    from implicitseg.io.meshes import write_mesh, write_point_cloud
    from implicitseg.methods import get_method

    if checkpoint not in ("best", "last"):
        raise InputError(f"--checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = Path(run)
    run_config = load_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else None
    if run_config is None:
        raise InputError(f"{run}: not a run folder (no config.yaml); run `implicitseg train` first")
    method = get_method(str(run_config.get("method")))
    if method.predict_roi is None and method.predict_image is None:
        raise InputError(f"{run}: a run of method {method.name!r}, which does not predict on its own; "
                         f"pass it to another method's prediction as --roi-run {run}")
    torch_device = _select_device(device)
    spacing_mm = parse_spacing(spacing)
    plane_grid = parse_plane(plane) if plane is not None else None
    if spacing_mm is not None and plane_grid is not None:
        raise InputError("give --spacing or --plane, not both")
    extra: dict = {}
    if frames:
        if method.predict_image is None or "frames" not in inspect.signature(method.predict_image).parameters:
            raise InputError(f"--frame applies to 3D+t methods (nisf); {method.name} segments 3D images")
        extra["frames"] = [int(f) for f in frames]
    takes_initial = method.predict_image is not None and "initial" in inspect.signature(method.predict_image).parameters
    if initial is not None and not takes_initial:
        raise InputError(f"--initial applies to methods that refine a segmentation (ismm), not {method.name}")
    if takes_initial:
        if initial is None:
            raise InputError(f"{method.name} refines an initial segmentation: give --initial LABELMAP_OR_MESH (a "
                             f"file, or a folder of <case>.nii.gz / <case>.vtk)")
        if not Path(initial).exists():
            raise InputError(f"--initial {initial}: not found")
        extra["initial"] = Path(initial)
    if method.predict_image is not None:
        given = [name for name, value in (("--roi-center", roi_center), ("--roi-label", roi_label),
                                          ("--roi-run", roi_run)) if value is not None]
        if given:
            raise InputError(f"{method.name} segments whole images: {', '.join(given)} does not apply")
    else:
        if spacing_mm is not None or plane_grid is not None:
            raise InputError(f"--spacing and --plane apply to whole-image methods; {method.name} predicts on its ROI "
                             f"grid and writes the labelmap on the image's grid")
        center_of = _roi_centers(roi_center, roi_label, roi_run, torch_device)
    images = list_images(inputs)
    model, config = method.load(run, checkpoint, torch_device)
    _apply_meshing_options(config, method.name, mesher, band_mm)
    if fit_weights:
        if not hasattr(config, "fit"):
            raise InputError(f"--fit-weights applies to methods that fit a code at prediction (nisf), not {method.name}")
        config.fit.fit_weights = True
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out / "config.yaml", config)

    results = []
    progress, advance = _progress_bar("predict", len(images))
    with progress if show_progress else contextlib.nullcontext():
        for done, image_path in enumerate(images):
            start = time.perf_counter()
            identifier = case_id(image_path)
            volume = (method.read_input or read_image)(image_path)
            case_dir = out / identifier
            mesh_path = case_dir / f"mesh.{mesh_format}"
            if method.predict_image is not None:
                geometry = volume.frame(0) if isinstance(volume, VolumeSeries) else volume
                grid = plane_grid or (grid_at_spacing(geometry, spacing_mm) if spacing_mm is not None
                                      else (geometry.shape, geometry.affine_lps))
                image_prediction = method.predict_image(model, config, volume, image_path, device=torch_device,
                                                        output_grid=grid, seed=seed, **extra)
                written = _write_image_outputs(image_prediction, case_dir, mesh_path, mesh_space)
                timings = {**image_prediction.timings, "write_s": written.pop("write_s"),
                           "total_s": time.perf_counter() - start}
                record = {"case": identifier, "image": str(image_path), "mesh_space": mesh_space, **written,
                          "method": config.method, "preset": config.preset, "run": str(run), "checkpoint": checkpoint,
                          "device": str(torch_device), "timings": timings, "counts": image_prediction.counts,
                          "versions": versions()}
                write_json(case_dir / "prediction.json", record)
                results.append(record)
                if show_progress:
                    advance(done + 1)
                continue
            center, roi_source, roi_details = center_of(image_path, volume)
            roi = checked_roi(volume, center, config.roi, image_path, ROI_SOURCE_NAMES[roi_source])
            roi_image = roi_image_of(volume, roi, config.intensity, image_path)
            prediction = method.predict_roi(model, config, roi, roi_image, device=torch_device, seed=seed)
            timings = dict(prediction.timings)
            mesh = prediction.mesh
            if prediction.probability_zyx is not None:
                mesh, upsample_timings = _write_probability_outputs(prediction, roi, volume, case_dir)
                timings.update(upsample_timings)
            write_mesh(mesh_path, mesh, space=mesh_space)
            if prediction.points_world_mm is not None:
                write_point_cloud(case_dir / "points.ply", prediction.points_world_mm, space=mesh_space)
            timings["total_s"] = time.perf_counter() - start
            record = {
                "case": identifier, "image": str(image_path), "mesh": str(mesh_path), "mesh_space": mesh_space,
                "roi": roi.to_json(), "roi_source": roi_source, **roi_details,
                "method": config.method, "preset": config.preset, "run": str(run), "checkpoint": checkpoint,
                "device": str(torch_device), "timings": timings,
                "counts": {**prediction.counts, "n_vertices": len(mesh.vertices_world_mm), "n_faces": len(mesh.faces)},
                "versions": versions(),
            }
            if prediction.meshing is not None:
                record["meshing"] = prediction.meshing
            write_json(case_dir / "prediction.json", record)
            results.append(record)
            if show_progress:
                advance(done + 1)
    return results


def run_evaluate(pred: Path, gt: Path, out: Path, *, kind: str = "surface", gt_space: str = "LPS",
                 split: str | None = None, strict: bool = False) -> str:
    """Score every ground-truth case (of ``split``); writes METRICS.csv + METRICS.summary.json; returns a printable
    table. ``strict``: a missing or failed case is an InputError (after the files are written)."""
    from implicitseg.evaluation.tables import evaluate_folders, format_table

    summary = evaluate_folders(Path(pred), Path(gt), Path(out), kind=kind, gt_space=gt_space, split=split,
                               strict=strict)
    return format_table(summary)


def run_compare(metrics_a: Path, metrics_b: Path, *, out: Path | None = None, seed: int = 0) -> str:
    """Paired comparison of two evaluations of the same cases; writes ``out`` (JSON) when given; returns a
    printable table."""
    from implicitseg.evaluation.compare import compare_evaluations, format_comparison

    return format_comparison(compare_evaluations(Path(metrics_a), Path(metrics_b), out=out, seed=seed))


def run_report(preds: list[Path], out: Path, *, gt: Path | None = None, runs: list[Path] | None = None,
               gt_space: str = "LPS") -> dict:
    """One self-contained HTML file over prediction folders (one per method): metrics worst first, training
    curves of ``runs``, and per case slice overlays and a 3D view; returns what was written."""
    from implicitseg.evaluation.report import build_report

    return build_report([Path(p) for p in preds], Path(out), gt=None if gt is None else Path(gt),
                        runs=[Path(r) for r in runs or []], gt_space=gt_space)


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 10)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_demo(out: Path, *, train_minutes: float = 4.0, detector_minutes: float = 1.0, n_cases: int = 12,
             seed: int = 0, echo: Callable[[str], None] = print) -> dict:
    """synth → prepare → train NUDF and the ROI detector → predict the test images (ROI found by the detector,
    no label needed) → evaluate → report, with the small CPU presets; returns the metric summary. Re-running it
    in the same folder continues from what is already there."""
    out = Path(out)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dataset = out / "dataset"
    if not (dataset / "dataset.json").is_file():
        run_synth(dataset, kind="laa", n_cases=n_cases, seed=seed)
    timings["synth_s"] = time.perf_counter() - start

    start = time.perf_counter()
    prep, prep_roi = out / "prep", out / "prep_roi"
    if not (prep / "manifest.json").is_file():
        run_prepare(dataset, prep, method="nudf", preset="nudf-demo", workers=2)
    if not (prep_roi / "manifest.json").is_file():
        run_prepare(dataset, prep_roi, method="roi", preset="roi32", workers=2)
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    run, run_roi = out / "run", out / "run_roi"
    run_train(prep_roi, run_roi, max_time=_hms(detector_minutes * 60),
              resume=(run_roi / "checkpoints" / "last.ckpt").is_file())
    run_train(prep, run, max_time=_hms(train_minutes * 60), resume=(run / "checkpoints" / "last.ckpt").is_file())
    timings["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    predictions = out / "predictions"
    run_predict(run, [dataset], predictions, roi_run=run_roi)
    timings["predict_s"] = time.perf_counter() - start

    start = time.perf_counter()
    table = run_evaluate(predictions, dataset, out / "metrics")
    timings["evaluate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report = run_report([predictions], out / "report.html", gt=dataset, runs=[run, run_roi])
    timings["report_s"] = time.perf_counter() - start
    write_json(out / "demo.json", {"timings": timings, "versions": versions()})
    echo(table)
    echo(f"dataset:     {dataset}\nruns:        {run} (NUDF), {run_roi} (ROI detector): checkpoints, logs/\n"
         f"predictions: {predictions}/<case>/mesh.vtk, points.ply (world LPS mm: open them over the image in 3D "
         f"Slicer)\nmetrics:     {out / 'metrics.csv'}\n"
         f"report:      {report['path']} (open it in a browser: slices, 3D view, metrics)\n"
         f"time:        " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items()))
    return json.loads((out / "metrics.summary.json").read_text())
