"""The ``evaluate`` stage: predictions vs ground truth → per-case CSV + summary JSON (DESIGN §2, §5).

``PRED`` is a ``predict`` output folder, one sub-folder per case holding ``mesh.<vtk|ply|stl|obj>`` (kinds
``surface`` and ``shape``) and, for voxel methods, ``labelmap.nii.gz`` (kind ``volume``). ``GT`` is either a
dataset folder (``dataset.json`` gives ``mesh_space``; meshes are looked up as ``meshesTs/<case>.<ext>``, then
``meshesTr/<case>.<ext>``; labelmaps as ``labelsTs/``, then ``labelsTr/``) or a plain folder of
``<case>.<ext>`` files. Meshes are read into world LPS mm (:func:`~implicitseg.io.meshes.read_mesh`) before any
distance is taken; labelmaps are compared on the ground truth's grid. Kind ``shape`` alone falls back, for a case
with no GT mesh, on the marching-cubes surface of its GT labelmap (every label > 0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from implicitseg.errors import InputError
from implicitseg.evaluation.shape import (
    N_CHAMFER,
    N_EMD,
    NORMALISATION,
    compute_shape_metrics,
)
from implicitseg.evaluation.surface import compute_surface_metrics
from implicitseg.evaluation.volume import NSD_TOLERANCE_MM, compute_volume_metrics
from implicitseg.io.atomic import write_json, write_text
from implicitseg.io.dataset import case_id
from implicitseg.io.images import IMAGE_SUFFIXES, read_labelmap
from implicitseg.io.meshes import MESH_SUFFIXES, SPACES, Mesh, read_mesh
from implicitseg.meshing.isosurface import labelmap_to_mesh

KINDS = ("surface", "volume", "shape")
"""Metric kinds: ``surface`` (meshes, :mod:`~implicitseg.evaluation.surface`), ``volume`` (labelmaps,
:mod:`~implicitseg.evaluation.volume`) and ``shape`` (meshes, or a GT labelmap's surface where the GT has no
mesh: the ISMM paper's Chamfer distance and EMD, :mod:`~implicitseg.evaluation.shape`)."""

PREDICTED_LABELMAP = "labelmap.nii.gz"

SUMMARY_STATISTICS = ("mean", "std", "median")


def metrics_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(CSV path, summary JSON path) for the METRICS argument: ``m`` → ``m.csv``, ``m.summary.json``;
    ``m.csv`` → ``m.csv``, ``m.summary.json``."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        return out, out.with_name(out.stem + ".summary.json")
    return out.with_name(out.name + ".csv"), out.with_name(out.name + ".summary.json")


def find_predicted_meshes(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """Case id → ``PRED/<case>/mesh.<ext>``. A case folder holding the mesh in several formats uses the first
    of ``.vtk, .ply, .stl, .obj``; folders with no mesh (e.g. a voxel method's labelmap only) are skipped."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: prediction folder not found")
    found: dict[str, Path] = {}
    for folder in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        for suffix in MESH_SUFFIXES:
            if (folder / f"mesh{suffix}").is_file():
                found[folder.name] = folder / f"mesh{suffix}"
                break
    if not found:
        raise InputError(f"{pred_dir}: no predicted meshes (expected <case>/mesh.{{vtk,ply,stl,obj}})")
    return found


def _mesh_files_by_case(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in MESH_SUFFIXES:
            identifier = case_id(path)
            if identifier in files:
                raise InputError(f"{folder}: two ground-truth meshes for case {identifier!r}: "
                                 f"{files[identifier].name} and {path.name}")
            files[identifier] = path
    return files


def _dataset_mesh_space(json_path: Path) -> str:
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{json_path}: invalid JSON ({error.msg} at line {error.lineno})") from None
    space = str(data.get("mesh_space", "LPS")).upper() if isinstance(data, dict) else "LPS"
    if space not in SPACES:
        raise InputError(f"{json_path}: mesh_space must be one of {SPACES}, got {space!r}")
    return space


def predicted_space(mesh_path: Path) -> str:
    """The space a predicted mesh was written in: ``prediction.json``'s ``mesh_space`` beside it, else LPS."""
    record = mesh_path.parent / "prediction.json"
    if not record.is_file():
        return "LPS"
    try:
        space = str(json.loads(record.read_text()).get("mesh_space", "LPS")).upper()
    except json.JSONDecodeError as error:
        raise InputError(f"{record}: invalid JSON ({error.msg} at line {error.lineno})") from None
    if space not in SPACES:
        raise InputError(f"{record}: mesh_space must be one of {SPACES}, got {space!r}")
    return space


def find_ground_truth_meshes(gt: str | os.PathLike, *, gt_space: str = "LPS") -> tuple[dict[str, Path], str]:
    """(case id → GT mesh path, the meshes' space). A dataset folder's ``mesh_space`` overrides ``gt_space``;
    ``meshesTs/`` wins over ``meshesTr/`` for a case present in both."""
    gt = Path(gt)
    if not gt.is_dir():
        raise InputError(f"{gt}: ground-truth folder not found")
    space = gt_space.upper()
    if space not in SPACES:
        raise InputError(f"ground-truth mesh space must be one of {SPACES}, got {gt_space!r}")
    if not (gt / "dataset.json").is_file():
        return _mesh_files_by_case(gt), space
    space = _dataset_mesh_space(gt / "dataset.json")
    found: dict[str, Path] = {}
    for sub in ("meshesTr", "meshesTs"):  # meshesTs is read last, so its files replace meshesTr's
        if (gt / sub).is_dir():
            found.update(_mesh_files_by_case(gt / sub))
    return found, space


def _is_image(path: Path) -> bool:
    return any(path.name.endswith(suffix) for suffix in IMAGE_SUFFIXES)


def find_ground_truth_labelmaps(gt: str | os.PathLike) -> dict[str, Path]:
    """Case id → GT labelmap. A dataset folder's ``labelsTs/`` wins over its ``labelsTr/``; a plain GT folder
    holds ``<case>.<image suffix>`` files."""
    gt = Path(gt)
    if not gt.is_dir():
        raise InputError(f"{gt}: ground-truth folder not found")
    folders = [gt / "labelsTr", gt / "labelsTs"] if (gt / "dataset.json").is_file() else [gt]
    truth: dict[str, Path] = {}
    for folder in folders:  # labelsTs is read last, so its files replace labelsTr's
        if folder.is_dir():
            truth.update({case_id(path): path for path in sorted(folder.iterdir()) if _is_image(path)})
    return truth


def find_labelmaps(pred_dir: str | os.PathLike, gt: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Path]]:
    """(case id → ``PRED/<case>/labelmap.nii.gz``, case id → GT labelmap); see
    :func:`find_ground_truth_labelmaps`."""
    pred_dir, gt = Path(pred_dir), Path(gt)
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: prediction folder not found")
    if not gt.is_dir():
        raise InputError(f"{gt}: ground-truth folder not found")
    predicted = {folder.name: folder / PREDICTED_LABELMAP for folder in sorted(pred_dir.iterdir())
                 if (folder / PREDICTED_LABELMAP).is_file()}
    if not predicted:
        raise InputError(f"{pred_dir}: no predicted labelmaps (expected <case>/{PREDICTED_LABELMAP}; surface "
                         f"methods are scored with --kind surface)")
    return predicted, find_ground_truth_labelmaps(gt)


def find_ground_truth_surfaces(gt: str | os.PathLike, *,
                               gt_space: str = "LPS") -> tuple[dict[str, Path], str]:
    """(case id → GT mesh, or GT labelmap for a case with no mesh; the meshes' space), for kind ``shape``.
    Meshes as :func:`find_ground_truth_meshes`; labelmaps as :func:`find_ground_truth_labelmaps` (they are in
    world LPS mm whatever the meshes' space). Tell the two apart by suffix (:func:`is_labelmap_path`)."""
    meshes, space = find_ground_truth_meshes(gt, gt_space=gt_space)
    labelmaps = find_ground_truth_labelmaps(gt)
    return {**{identifier: path for identifier, path in labelmaps.items() if identifier not in meshes},
            **meshes}, space


def is_labelmap_path(path: Path) -> bool:
    """Whether a ground-truth path is a labelmap (an image suffix) rather than a mesh."""
    return _is_image(Path(path))


def read_ground_truth_surface(path: Path, space: str) -> Mesh:
    """The GT surface in world LPS mm: a mesh read in ``space``, or a labelmap's marching-cubes surface of every
    voxel > 0 (:func:`~implicitseg.meshing.isosurface.labelmap_to_mesh`, level 0.5)."""
    if is_labelmap_path(path):
        return labelmap_to_mesh(read_labelmap(path))
    return read_mesh(path, space=space)


def score_cases(pred_dir: str | os.PathLike, gt: str | os.PathLike, *, kind: str = "surface", gt_space: str = "LPS",
                n_samples: int = 100_000, completion_mm: float = 2.0, seed: int = 0, n_chamfer: int = N_CHAMFER,
                n_emd: int = N_EMD) -> tuple[list[dict], str]:
    """Per-case metric rows (``{"case", metric...}``, NaN where a metric is missing) of every predicted case of
    ``pred_dir`` against its ground truth, and the GT meshes' space; see :func:`evaluate_folders`."""
    if kind not in KINDS:
        raise InputError(f"evaluate: --kind {kind!r} is not supported; supported kinds: {', '.join(KINDS)}")
    if kind == "volume":
        predicted, truth = find_labelmaps(pred_dir, gt)
        space = "LPS"
    elif kind == "shape":
        predicted = find_predicted_meshes(pred_dir)
        truth, space = find_ground_truth_surfaces(gt, gt_space=gt_space)
    else:
        predicted = find_predicted_meshes(pred_dir)
        truth, space = find_ground_truth_meshes(gt, gt_space=gt_space)
    missing = sorted(set(predicted) - set(truth))
    if missing:
        raise InputError(f"{gt}: no ground truth for predicted case(s) {', '.join(missing)}")
    rows: list[dict] = []
    for identifier, pred_path in predicted.items():
        if kind == "volume":
            metrics = compute_volume_metrics(read_labelmap(pred_path, allow_empty=True), read_labelmap(truth[identifier]))
        elif kind == "shape":
            metrics = compute_shape_metrics(read_mesh(pred_path, space=predicted_space(pred_path)),
                                            read_ground_truth_surface(truth[identifier], space),
                                            n_chamfer=n_chamfer, n_emd=n_emd, seed=seed)
        else:
            metrics = compute_surface_metrics(read_mesh(pred_path, space=predicted_space(pred_path)),
                                              read_mesh(truth[identifier], space=space),
                                              n_samples=n_samples, completion_mm=completion_mm, seed=seed)
        rows.append({"case": identifier, **metrics})
    columns = list(dict.fromkeys(name for row in rows for name in row if name != "case"))  # first-seen order
    return [{"case": row["case"], **{name: row.get(name, math.nan) for name in columns}} for row in rows], space


def evaluate_folders(pred_dir: str | os.PathLike, gt: str | os.PathLike, out: str | os.PathLike, *,
                     kind: str = "surface", gt_space: str = "LPS", n_samples: int = 100_000,
                     completion_mm: float = 2.0, seed: int = 0, n_chamfer: int = N_CHAMFER,
                     n_emd: int = N_EMD) -> dict:
    """Score every predicted case against its ground truth; write ``METRICS.csv`` and ``METRICS.summary.json``.

    ``kind`` ``"surface"``: the metrics of :func:`~implicitseg.evaluation.surface.compute_surface_metrics` (mm)
    on meshes; ``"volume"``: those of :func:`~implicitseg.evaluation.volume.compute_volume_metrics` on labelmaps;
    ``"shape"``: those of :func:`~implicitseg.evaluation.shape.compute_shape_metrics` (Chamfer on ``n_chamfer``
    points per surface, EMD on ``n_emd``; normalised and mm) on meshes, a GT labelmap's surface standing in for
    a missing GT mesh. ``gt_space`` is the convention of a plain GT folder's files (``"LPS"``/``"RAS"``).
    Predicted meshes are read in the space their ``prediction.json`` names (LPS without one; a VTK header's
    ``SPACE=`` wins). Every predicted case needs a ground truth (InputError naming the cases without one); GT
    cases with no prediction are ignored. Returns the summary: ``kind``, ``n_cases``, ``cases``, ``pred``,
    ``gt``, ``gt_space``, ``n_samples`` (not for ``shape``), ``seed``, ``metrics`` (name → ``{"mean", "std",
    "median"}``; std is the population std, ddof = 0); ``volume`` adds ``nsd_tolerance_mm``; ``shape`` adds
    ``n_chamfer``, ``n_emd``, ``normalisation`` (in words) and ``gt_from_labelmap`` (the cases whose GT surface
    is a labelmap's).
    """
    rows, space = score_cases(pred_dir, gt, kind=kind, gt_space=gt_space, n_samples=n_samples,
                              completion_mm=completion_mm, seed=seed, n_chamfer=n_chamfer, n_emd=n_emd)
    cases = [row["case"] for row in rows]
    if kind == "shape":
        truth, _ = find_ground_truth_surfaces(gt, gt_space=gt_space)
        specific = {"n_chamfer": n_chamfer, "n_emd": n_emd, "normalisation": NORMALISATION,
                    "gt_from_labelmap": [case for case in cases if is_labelmap_path(truth[case])]}
    else:
        specific = {"n_samples": n_samples}
    summary = {
        "kind": kind,
        "n_cases": len(rows),
        "cases": cases,
        "pred": str(Path(pred_dir)),
        "gt": str(Path(gt)),
        "gt_space": space,
        **specific,
        "seed": seed,
        **({"nsd_tolerance_mm": NSD_TOLERANCE_MM} if kind == "volume" else {}),
        "metrics": summarize(rows),
    }
    csv_path, summary_path = metrics_paths(out)
    write_text(csv_path, rows_to_csv(rows))
    write_json(summary_path, summary)
    return summary


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Metric name → ``{"mean", "std" (ddof = 0), "median"}`` over the rows' numeric columns."""
    names = [name for name in rows[0] if name != "case"] if rows else []
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([row[name] for row in rows], dtype=np.float64)
        # NaN (a label missing on one side: no surface distance) is left out of the statistics
        values = values[~np.isnan(values)]
        summary[name] = ({"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values))}
                         if len(values) else {"mean": math.nan, "std": math.nan, "median": math.nan})
    return summary


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text, one row per case, columns ``case`` then the metrics; floats at full precision (``repr``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: repr(value) if isinstance(value, float) else value for key, value in row.items()})
    return buffer.getvalue()


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def format_table(summary_or_rows: dict | list[dict]) -> str:
    """Plain-text table for the terminal: a summary from :func:`evaluate_folders` (metric | mean | std |
    median) or a list of per-case rows (case | metrics...); numbers with 4 decimals."""
    if isinstance(summary_or_rows, dict):
        header = ["metric", *SUMMARY_STATISTICS]
        body = [[name, *(_number(stats[s]) for s in SUMMARY_STATISTICS)]
                for name, stats in summary_or_rows["metrics"].items()]
        title = f"{summary_or_rows['kind']} metrics over {summary_or_rows['n_cases']} case(s)"
    else:
        if not summary_or_rows:
            return "(no cases)"
        header = list(summary_or_rows[0])
        body = [[str(row[h]) if not isinstance(row[h], float) else _number(row[h]) for h in header]
                for row in summary_or_rows]
        title = f"{len(body)} case(s)"
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
              for line in body]
    return "\n".join(lines)
