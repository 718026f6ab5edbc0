"""The pipeline stages behind the CLI: synth, prepare, train, predict, evaluate, demo.

Each stage looks the method up in the table (:func:`implicitseg.methods.get_method`) and writes its resolved
config as YAML next to its outputs.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implicitseg.config import config_from_dict, config_to_dict, load_yaml, save_config
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.io.atomic import write_json
from implicitseg.io.meshes import Mesh
from implicitseg.versions import versions


@dataclass
class SurfacePrediction:
    """What a surface method predicts for one ROI: dense cloud and mesh in world LPS mm, timings in s."""

    points_world_mm: np.ndarray
    mesh: Mesh
    timings: dict[str, float]
    counts: dict[str, int]


def _progress_bar(description: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    task = progress.add_task(description, total=total)
    return progress, lambda done, total_=total: progress.update(task, completed=done, total=total_)


def run_synth(out: Path, *, kind: str, n_cases: int, seed: int) -> Path:
    """Write a synthetic dataset; returns its folder."""
    from implicitseg.data.synthetic import write_synthetic_dataset

    progress, advance = _progress_bar(f"synth {kind}", n_cases)
    with progress:
        return write_synthetic_dataset(Path(out), kind=kind, n_cases=n_cases, seed=seed, progress=advance)


def resolve_config(method_name: str, *, preset: str | None, res: int | None, roi_mm: float | None):
    """The method's preset config (chosen by ``preset`` or ``res``) with ``res`` / ``roi_mm`` overrides applied."""
    from implicitseg.methods import get_method

    method = get_method(method_name)
    name = preset or method.preset_for_res(res)
    if name not in method.presets:
        raise InputError(f"unknown preset {name!r} for {method_name}; available: {', '.join(method.presets)}")
    config = config_from_dict(method.config_class, config_to_dict(method.presets[name]))
    if res is not None:
        config.roi.res = int(res)
    if roi_mm is not None:
        if roi_mm <= 0:
            raise InputError(f"--roi-mm must be positive, got {roi_mm}")
        config.roi.size_mm = float(roi_mm)
    return method, config


def run_prepare(dataset: Path, out: Path, *, method: str, preset: str | None = None, res: int | None = None,
                roi_mm: float | None = None, workers: int = 1, show_progress: bool = True) -> dict:
    """Prepare every training case of ``dataset`` for ``method`` into ``out``; returns the manifest."""
    method_entry, config = resolve_config(method, preset=preset, res=res, roi_mm=roi_mm)
    if not show_progress:
        return method_entry.prepare(Path(dataset), Path(out), config, workers=workers, progress=None)
    from implicitseg.io.dataset import load_dataset

    progress, advance = _progress_bar("prepare", len(load_dataset(dataset).training))
    with progress:
        return method_entry.prepare(Path(dataset), Path(out), config, workers=workers, progress=advance)


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
    # the data were prepared once: their ROI, intensities and samples stay as prepared
    config.roi, config.intensity, config.sampling = prepared.roi, prepared.intensity, prepared.sampling
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


def run_predict(run: Path, inputs: list[Path], out: Path, *, roi_center: str | None = None,
                roi_label: Path | None = None, mesh_format: str = "vtk", mesh_space: str = "LPS",
                checkpoint: str = "best", device: str = "auto", seed: int = 0,
                show_progress: bool = True) -> list[dict]:
    """Predict each input image with the run's model; writes OUT/<case>/{mesh.<fmt>, points.ply, prediction.json}."""
    from implicitseg.data.prepare import MIN_ROI_OVERLAP, normalise_intensities
    from implicitseg.inference.roi import label_center_world_mm, label_for_image, parse_center
    from implicitseg.io.dataset import case_id, list_images
    from implicitseg.io.images import read_image, resample_to_roi, roi_overlaps_image
    from implicitseg.io.meshes import write_mesh, write_point_cloud
    from implicitseg.methods import get_method

    if (roi_center is None) == (roi_label is None):
        raise InputError("give exactly one of --roi-center X,Y,Z (world LPS mm) or --roi-label LABELMAP")
    if checkpoint not in ("best", "last"):
        raise InputError(f"--checkpoint must be 'best' or 'last', got {checkpoint!r}")
    center_given = parse_center(roi_center) if roi_center is not None else None
    run = Path(run)
    run_config = load_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else None
    if run_config is None:
        raise InputError(f"{run}: not a run folder (no config.yaml); run `implicitseg train` first")
    method = get_method(str(run_config.get("method")))
    torch_device = _select_device(device)
    images = list_images(inputs)
    model, config = method.load(run, checkpoint, torch_device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out / "config.yaml", config)

    results = []
    progress, advance = _progress_bar("predict", len(images))
    with progress if show_progress else contextlib.nullcontext():
        for done, image_path in enumerate(images):
            start = time.perf_counter()
            identifier = case_id(image_path)
            volume = read_image(image_path)
            center = center_given if center_given is not None else label_center_world_mm(label_for_image(roi_label, image_path))
            roi = Roi(tuple(center), config.roi.size_mm, config.roi.res)
            overlap = roi_overlaps_image(volume, roi)
            if overlap < MIN_ROI_OVERLAP:
                raise InputError(f"{image_path}: ROI centred at {np.round(center, 1).tolist()} mm lies outside the "
                                 f"image ({overlap:.0%} of it inside)")
            roi_image = normalise_intensities(resample_to_roi(volume, roi, default_value=float(volume.array.min())),
                                              config.intensity)
            prediction = method.predict_roi(model, config, roi, roi_image, device=torch_device, seed=seed)
            case_dir = out / identifier
            mesh_path = case_dir / f"mesh.{mesh_format}"
            write_mesh(mesh_path, prediction.mesh, space=mesh_space)
            write_point_cloud(case_dir / "points.ply", prediction.points_world_mm, space=mesh_space)
            timings = {**prediction.timings, "total_s": time.perf_counter() - start}
            record = {
                "case": identifier, "image": str(image_path), "mesh": str(mesh_path), "mesh_space": mesh_space,
                "roi": roi.to_json(), "roi_source": "center" if center_given is not None else "label",
                "method": config.method, "preset": config.preset, "run": str(run), "checkpoint": checkpoint,
                "device": str(torch_device), "timings": timings, "counts": prediction.counts, "versions": versions(),
            }
            write_json(case_dir / "prediction.json", record)
            results.append(record)
            if show_progress:
                advance(done + 1)
    return results


def run_evaluate(pred: Path, gt: Path, out: Path, *, kind: str = "surface", gt_space: str = "LPS") -> str:
    """Score predictions against ground truth; writes METRICS.csv + METRICS.summary.json; returns a printable table."""
    from implicitseg.evaluation.tables import evaluate_folders, format_table

    summary = evaluate_folders(Path(pred), Path(gt), Path(out), kind=kind, gt_space=gt_space)
    return format_table(summary)


def run_demo(out: Path, *, train_minutes: float = 4.0, n_cases: int = 12, seed: int = 0,
             echo: Callable[[str], None] = print) -> dict:
    """synth → prepare → train → predict → evaluate with the small CPU preset; returns the metric summary."""
    out = Path(out)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dataset = out / "dataset"
    if not (dataset / "dataset.json").is_file():
        run_synth(dataset, kind="laa", n_cases=n_cases, seed=seed)
    timings["synth_s"] = time.perf_counter() - start

    start = time.perf_counter()
    prep = out / "prep"
    if not (prep / "manifest.json").is_file():
        run_prepare(dataset, prep, method="nudf", preset="nudf-demo", workers=2)
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    run = out / "run"
    seconds = max(int(train_minutes * 60), 10)
    run_train(prep, run, max_time=f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
              resume=(run / "checkpoints" / "last.ckpt").is_file())
    timings["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    predictions = out / "predictions"
    # No ROI detector in this release: the ROI is centred on each test case's labelmap (a coarse segmentation).
    run_predict(run, [dataset], predictions, roi_label=dataset / "labelsTs")
    timings["predict_s"] = time.perf_counter() - start

    start = time.perf_counter()
    table = run_evaluate(predictions, dataset, out / "metrics")
    timings["evaluate_s"] = time.perf_counter() - start
    write_json(out / "demo.json", {"timings": timings, "versions": versions()})
    echo(table)
    echo(f"dataset:     {dataset}\nrun:         {run}  (checkpoints, logs/)\npredictions: {predictions}/<case>/mesh.vtk, "
         f"points.ply (world LPS mm: open them over the image in 3D Slicer)\nmetrics:     {out / 'metrics.csv'}\n"
         f"time:        " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items()))
    return json.loads((out / "metrics.summary.json").read_text())
