"""The ``evaluate`` stage: predictions vs ground truth → per-case CSV + summary JSON (DESIGN §2, §5).

``PRED`` is a ``predict`` output folder, one sub-folder per case holding ``mesh.<vtk|ply|stl|obj>`` (kinds
``surface`` and ``shape``) and, for voxel methods, ``labelmap.nii.gz`` (kind ``volume``). ``GT`` is either a
dataset folder or a plain folder of ``<case>.<ext>`` files. Meshes are read into world LPS mm
(:func:`~implicitseg.io.meshes.read_mesh`) before any distance is taken; labelmaps are compared on the ground
truth's grid. Kind ``shape`` alone falls back, for a case with no GT mesh, on the marching-cubes surface of its GT
labelmap (every label > 0).

**Every ground-truth case is a row.** The cases are the ground truth's: in a dataset folder those of one split,
``test`` (``meshesTs/``, ``labelsTs/``) or ``training`` (``meshesTr/``, ``labelsTr/``; by default ``test`` when the
dataset has test ground truth of the kind scored), in a plain folder all its files. Each row has a status
(:data:`STATUSES`); a case that was not predicted, or whose prediction is empty or unreadable, is scored as a
failure where the metric has one (Dice 0, NSD 0, completion 0) and NaN where it has none (distances: no surface to
measure them on). Summaries count the cases by status and give, per metric, how many values it is over (``n``).
The labels of ``--kind volume`` are the task's: ``dataset.json``'s ``labels`` (or, in a plain folder, every label
of the ground truths), never the prediction's. Statistics: :mod:`~implicitseg.evaluation.stats`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from implicitseg.errors import InputError
from implicitseg.evaluation.shape import N_CHAMFER, N_EMD, NORMALISATION, SHAPE_METRIC_NAMES, compute_shape_metrics
from implicitseg.evaluation.stats import CONFIDENCE, N_BOOTSTRAP, describe
from implicitseg.evaluation.surface import compute_surface_metrics, missing_surface_metrics
from implicitseg.evaluation.volume import NSD_TOLERANCE_MM, compute_volume_metrics
from implicitseg.io.atomic import read_json_object, write_json, write_text
from implicitseg.io.dataset import PREDICTION_FAILURES, case_id, read_prediction_failures
from implicitseg.io.images import IMAGE_SUFFIXES, Volume, read_labelmap
from implicitseg.io.meshes import MESH_SUFFIXES, SPACES, Mesh, read_mesh
from implicitseg.meshing.isosurface import labelmap_to_mesh

KINDS = ("surface", "volume", "shape")
"""Metric kinds: ``surface`` (meshes, :mod:`~implicitseg.evaluation.surface`), ``volume`` (labelmaps,
:mod:`~implicitseg.evaluation.volume`) and ``shape`` (meshes, or a GT labelmap's surface where the GT has no
mesh: the ISMM paper's Chamfer distance and EMD, :mod:`~implicitseg.evaluation.shape`)."""

SPLITS = ("test", "training")
"""The splits of a dataset folder whose ground truth can be scored: ``test`` (``*Ts/``) and ``training``
(``*Tr/``)."""

STATUSES = ("ok", "empty", "missing", "failed")
"""Row statuses: ``ok`` scored; ``empty`` the prediction holds nothing (no voxel of a scored label, or a mesh with
no faces or no area); ``missing`` no prediction for the case; ``failed`` the prediction could not be read, or
``predict --keep-going`` could not make it (``PRED/failures.json``; the summary's ``notes`` say why). All but ``ok``
are scored as failures."""

PREDICTED_LABELMAP = "labelmap.nii.gz"

SUMMARY_STATISTICS = ("n", "mean", "std", "median")


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
    if not found and not (pred_dir / PREDICTION_FAILURES).is_file():
        raise InputError(f"{pred_dir}: no predicted meshes (expected <case>/mesh.{{vtk,ply,stl,obj}})")
    return found


def find_predicted_labelmaps(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """Case id → ``PRED/<case>/labelmap.nii.gz``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: prediction folder not found")
    predicted = {folder.name: folder / PREDICTED_LABELMAP for folder in sorted(pred_dir.iterdir())
                 if (folder / PREDICTED_LABELMAP).is_file()}
    if not predicted and not (pred_dir / PREDICTION_FAILURES).is_file():
        raise InputError(f"{pred_dir}: no predicted labelmaps (expected <case>/{PREDICTED_LABELMAP}; surface "
                         f"methods are scored with --kind surface)")
    return predicted


def _is_image(path: Path) -> bool:
    return any(path.name.endswith(suffix) for suffix in IMAGE_SUFFIXES)


def _files_by_case(folder: Path, wanted, what: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.iterdir()):
        if wanted(path):
            identifier = case_id(path)
            if identifier in files:
                raise InputError(f"{folder}: two ground-truth {what}s for case {identifier!r}: "
                                 f"{files[identifier].name} and {path.name}")
            files[identifier] = path
    return files


def _mesh_files(folder: Path) -> dict[str, Path]:
    return _files_by_case(folder, lambda p: p.is_file() and p.suffix.lower() in MESH_SUFFIXES, "mesh")


def _labelmap_files(folder: Path) -> dict[str, Path]:
    return _files_by_case(folder, _is_image, "labelmap")


def _read_dataset_json(json_path: Path) -> dict:
    data = read_json_object(json_path)
    return data


def _dataset_mesh_space(json_path: Path) -> str:
    space = str(_read_dataset_json(json_path).get("mesh_space", "LPS")).upper()
    if space not in SPACES:
        raise InputError(f"{json_path}: mesh_space must be one of {SPACES}, got {space!r}")
    return space


def predicted_space(mesh_path: Path) -> str:
    """The space a predicted mesh was written in: ``prediction.json``'s ``mesh_space`` beside it, else LPS."""
    record = mesh_path.parent / "prediction.json"
    if not record.is_file():
        return "LPS"
    space = str(read_json_object(record).get("mesh_space", "LPS")).upper()
    if space not in SPACES:
        raise InputError(f"{record}: mesh_space must be one of {SPACES}, got {space!r}")
    return space


def _folder(gt: Path, prefix: str, split: str) -> Path:
    return gt / f"{prefix}{'Ts' if split == 'test' else 'Tr'}"


def resolve_split(gt: str | os.PathLike, prefixes: tuple[str, ...], split: str | None) -> str | None:
    """The split scored in dataset folder ``gt`` (None for a plain folder): ``split`` if given, else ``test`` when
    a ``<prefix>Ts/`` folder of ``prefixes`` (``"meshes"``, ``"labels"``) holds files, else ``training``."""
    gt = Path(gt)
    if not gt.is_dir():
        raise InputError(f"{gt}: ground-truth folder not found")
    if split is not None and split not in SPLITS:
        raise InputError(f"evaluate: --split {split!r} is not supported; supported splits: {', '.join(SPLITS)}")
    if not (gt / "dataset.json").is_file():
        return None
    if split is not None:
        return split
    has_test = any(_folder(gt, prefix, "test").is_dir() and any(_folder(gt, prefix, "test").iterdir())
                   for prefix in prefixes)
    return "test" if has_test else "training"


def find_ground_truth_meshes(gt: str | os.PathLike, *, gt_space: str = "LPS",
                             split: str | None = None) -> tuple[dict[str, Path], str]:
    """(case id → GT mesh path, the meshes' space). A dataset folder's meshes are those of ``split`` (see
    :func:`resolve_split`) and its ``mesh_space`` overrides ``gt_space``."""
    gt = Path(gt)
    space = gt_space.upper()
    if space not in SPACES:
        raise InputError(f"ground-truth mesh space must be one of {SPACES}, got {gt_space!r}")
    chosen = resolve_split(gt, ("meshes",), split)
    if chosen is None:
        return _mesh_files(gt), space
    return _mesh_files(_folder(gt, "meshes", chosen)), _dataset_mesh_space(gt / "dataset.json")


def find_ground_truth_labelmaps(gt: str | os.PathLike, *, split: str | None = None) -> dict[str, Path]:
    """Case id → GT labelmap: a dataset folder's ``labelsTs/`` or ``labelsTr/`` (``split``, see
    :func:`resolve_split`), or a plain folder's ``<case>.<image suffix>`` files."""
    gt = Path(gt)
    chosen = resolve_split(gt, ("labels",), split)
    return _labelmap_files(gt if chosen is None else _folder(gt, "labels", chosen))


def find_ground_truth_surfaces(gt: str | os.PathLike, *, gt_space: str = "LPS",
                               split: str | None = None) -> tuple[dict[str, Path], str]:
    """(case id → GT mesh, or GT labelmap for a case with no mesh; the meshes' space), for kind ``shape``; one split
    for both (:func:`resolve_split` over meshes and labels). Tell the two apart with :func:`is_labelmap_path`."""
    chosen = resolve_split(gt, ("meshes", "labels"), split)
    meshes, space = find_ground_truth_meshes(gt, gt_space=gt_space, split=chosen)
    labelmaps = find_ground_truth_labelmaps(gt, split=chosen)
    return {**{identifier: path for identifier, path in labelmaps.items() if identifier not in meshes},
            **meshes}, space


def task_labels(gt: str | os.PathLike) -> dict[int, str] | None:
    """Foreground label → name from a dataset folder's ``dataset.json`` ``labels``; None for a plain folder or a
    ``dataset.json`` without ``labels``."""
    json_path = Path(gt) / "dataset.json"
    if not json_path.is_file():
        return None
    labels = _read_dataset_json(json_path).get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise InputError(f"{json_path}: labels must be an object such as {{\"0\": \"background\", \"1\": \"organ\"}}")
    try:
        parsed = {int(key): str(name) for key, name in labels.items()}
    except ValueError:
        raise InputError(f"{json_path}: label values must be integers, got {sorted(labels)}") from None
    foreground = {value: name for value, name in sorted(parsed.items()) if value != 0}
    if not foreground:
        raise InputError(f"{json_path}: labels declare no foreground label")
    return foreground


def is_labelmap_path(path: Path) -> bool:
    """Whether a ground-truth path is a labelmap (an image suffix) rather than a mesh."""
    return _is_image(Path(path))


def read_ground_truth_surface(path: Path, space: str) -> Mesh:
    """The GT surface in world LPS mm: a mesh read in ``space``, or a labelmap's marching-cubes surface of every
    voxel > 0 (:func:`~implicitseg.meshing.isosurface.labelmap_to_mesh`, level 0.5)."""
    if is_labelmap_path(path):
        return labelmap_to_mesh(read_labelmap(path))
    return read_mesh(path, space=space)


@dataclass
class Scored:
    """Per-case rows of one evaluation and what they were scored against."""

    rows: list[dict]
    """``{"case", "status", metric...}`` per GT case, in case order; NaN where a metric has no value."""
    gt_paths: dict[str, Path]
    space: str
    split: str | None
    labels: dict[int, str] | None = None
    """Volume kind: the foreground labels scored → their names."""
    notes: dict[str, str] = field(default_factory=dict)
    """Case → why it failed, or what it held besides the task's labels."""


def _read_prediction_mesh(path: Path) -> tuple[Mesh | None, str, str | None]:
    """(mesh or None, status, note) of a predicted mesh file: ``empty`` for one with no faces or no area,
    ``failed`` (with the reason) for one that cannot be read."""
    try:
        mesh = read_mesh(path, space=predicted_space(path))
    except InputError as error:
        if str(error).endswith("mesh has no faces"):
            return None, "empty", None
        return None, "failed", str(error)
    if not mesh.face_areas_mm2.sum() > 0:
        return None, "empty", None
    return mesh, "ok", None


def _score_volume(pred_path: Path | None, truth_path: Path, labels: dict[int, str] | None,
                  nsd_tolerance_mm: float) -> tuple[str, dict[str, float], str | None]:
    truth = read_labelmap(truth_path)
    present = set(np.unique(np.asarray(truth.array)).tolist()) - {0}
    if labels is not None and present - set(labels):
        raise InputError(f"{truth_path}: label(s) {sorted(present - set(labels))} not declared in dataset.json "
                         f"labels {sorted(labels)}")
    scored = sorted(labels) if labels is not None else sorted(present)
    status, note, prediction = "ok", None, None
    if pred_path is None:
        status = "missing"
    else:
        try:
            prediction = read_labelmap(pred_path, allow_empty=True)
        except InputError as error:
            status, note = "failed", str(error)
    if prediction is None:  # scored as an empty prediction on the truth's grid
        prediction = Volume(np.zeros(truth.shape, np.int16), truth.affine_lps)
    metrics = compute_volume_metrics(prediction, truth, scored, nsd_tolerance_mm=nsd_tolerance_mm)
    if status == "ok":
        values = set(np.unique(np.asarray(prediction.array)).tolist()) - {0}
        if not values & set(scored):
            status = "empty"
        if values - set(scored):
            note = f"label(s) {sorted(values - set(scored))} not in the task, scored as background"
    return status, metrics, note


def _plain_folder_labels(truth: dict[str, Path]) -> dict[int, str]:
    """Every foreground label of a plain folder's GT labelmaps (read once each), named ``label<k>``."""
    values: set[int] = set()
    for path in truth.values():
        values |= set(np.unique(np.asarray(read_labelmap(path).array)).tolist()) - {0}
    return {value: f"label{value}" for value in sorted(values)}


def score_cases(pred_dir: str | os.PathLike, gt: str | os.PathLike, *, kind: str = "surface", gt_space: str = "LPS",
                split: str | None = None, n_samples: int = 100_000, completion_mm: float = 2.0, seed: int = 0,
                n_chamfer: int = N_CHAMFER, n_emd: int = N_EMD,
                nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> Scored:
    """One row per ground-truth case of ``gt`` (``split``) with its status and metrics; see
    :func:`evaluate_folders`. Raises :class:`InputError` for a predicted case with no ground truth, a GT that
    cannot be read, or a GT label that ``dataset.json`` does not declare."""
    if kind not in KINDS:
        raise InputError(f"evaluate: --kind {kind!r} is not supported; supported kinds: {', '.join(KINDS)}")
    labels: dict[int, str] | None = None
    if kind == "volume":
        predicted = find_predicted_labelmaps(pred_dir)
        chosen = resolve_split(gt, ("labels",), split)
        truth, space = find_ground_truth_labelmaps(gt, split=chosen), "LPS"
        labels = task_labels(gt)
    elif kind == "shape":
        predicted = find_predicted_meshes(pred_dir)
        chosen = resolve_split(gt, ("meshes", "labels"), split)
        truth, space = find_ground_truth_surfaces(gt, gt_space=gt_space, split=chosen)
    else:
        predicted = find_predicted_meshes(pred_dir)
        chosen = resolve_split(gt, ("meshes",), split)
        truth, space = find_ground_truth_meshes(gt, gt_space=gt_space, split=chosen)
    where = f"{gt} ({chosen} split)" if chosen else str(gt)
    if not truth:
        raise InputError(f"{where}: no ground truth for --kind {kind}")
    unmatched = sorted(set(predicted) - set(truth))
    if unmatched:
        raise InputError(f"{where}: no ground truth for predicted case(s) {', '.join(unmatched)}"
                         + (" (--split chooses the split)" if chosen else ""))
    if kind == "volume" and labels is None:
        labels = _plain_folder_labels(truth)
    rows: list[dict] = []
    notes: dict[str, str] = {}
    not_predicted = read_prediction_failures(pred_dir)  # the last predict run's: a mesh left by an earlier one is stale
    predicted = {case: path for case, path in predicted.items() if case not in not_predicted}
    for identifier in sorted(truth):
        pred_path = predicted.get(identifier)
        note = None
        if kind == "volume":
            status, metrics, note = _score_volume(pred_path, truth[identifier], labels, nsd_tolerance_mm)
        else:
            gt_mesh = (read_ground_truth_surface(truth[identifier], space) if kind == "shape"
                       else read_mesh(truth[identifier], space=space))
            mesh, status, note = (None, "missing", None) if pred_path is None else _read_prediction_mesh(pred_path)
            if kind == "shape":
                metrics = (compute_shape_metrics(mesh, gt_mesh, n_chamfer=n_chamfer, n_emd=n_emd, seed=seed)
                           if mesh is not None else {name: math.nan for name in SHAPE_METRIC_NAMES})
            else:
                metrics = (compute_surface_metrics(mesh, gt_mesh, n_samples=n_samples, completion_mm=completion_mm,
                                                   seed=seed)
                           if mesh is not None else missing_surface_metrics(completion_mm))
        if status == "missing" and identifier in not_predicted:
            status, note = "failed", f"not predicted: {not_predicted[identifier]}"
        if note:
            notes[identifier] = note
        rows.append({"case": identifier, "status": status, **metrics})
    return Scored(rows, truth, space, chosen, labels, notes)


def status_counts(rows: list[dict]) -> dict[str, int]:
    """``{"n_cases", "n_scored", "n_empty", "n_missing", "n_failed"}`` of rows with a ``status``."""
    statuses = [row["status"] for row in rows]
    return {"n_cases": len(rows), "n_scored": statuses.count("ok"),
            **{f"n_{status}": statuses.count(status) for status in STATUSES[1:]}}


def evaluate_folders(pred_dir: str | os.PathLike, gt: str | os.PathLike, out: str | os.PathLike, *,
                     kind: str = "surface", gt_space: str = "LPS", split: str | None = None, strict: bool = False,
                     n_samples: int = 100_000, completion_mm: float = 2.0, seed: int = 0, n_chamfer: int = N_CHAMFER,
                     n_emd: int = N_EMD, n_bootstrap: int = N_BOOTSTRAP) -> dict:
    """Score every ground-truth case; write ``METRICS.csv`` (``case``, ``status``, metrics) and
    ``METRICS.summary.json``.

    ``kind`` ``"surface"``: the metrics of :func:`~implicitseg.evaluation.surface.compute_surface_metrics` (mm)
    on meshes; ``"volume"``: those of :func:`~implicitseg.evaluation.volume.compute_volume_metrics` on labelmaps,
    per label of the task; ``"shape"``: those of :func:`~implicitseg.evaluation.shape.compute_shape_metrics`
    (Chamfer on ``n_chamfer`` points per surface, EMD on ``n_emd``; normalised and mm) on meshes, a GT labelmap's
    surface standing in for a missing GT mesh. ``gt_space`` is the convention of a plain GT folder's files
    (``"LPS"``/``"RAS"``); ``split`` the dataset split scored (:func:`resolve_split`). Predicted meshes are read in
    the space their ``prediction.json`` names (LPS without one; a VTK header's ``SPACE=`` wins). A predicted case
    with no ground truth is an :class:`InputError`; a GT case with no prediction is a ``missing`` row. With
    ``strict``, any ``missing`` or ``failed`` case raises :class:`InputError` after the files are written.

    Returns the summary: ``kind``, the counts of :func:`status_counts`, ``cases``, ``statuses`` (case → status,
    for the cases not ``ok``), ``notes``, ``pred``, ``gt``, ``split``, ``gt_space``, ``n_samples`` (not for
    ``shape``), ``seed``, ``statistics`` (how the numbers are taken, in words), ``metrics`` (name → ``{"n",
    "mean", "std", "median", "ci95"}`` of :func:`~implicitseg.evaluation.stats.describe`); ``volume`` adds
    ``labels`` and ``nsd_tolerance_mm``; ``shape`` adds ``n_chamfer``, ``n_emd``, ``normalisation`` and
    ``gt_from_labelmap``.
    """
    scored = score_cases(pred_dir, gt, kind=kind, gt_space=gt_space, split=split, n_samples=n_samples,
                         completion_mm=completion_mm, seed=seed, n_chamfer=n_chamfer, n_emd=n_emd)
    rows = scored.rows
    cases = [row["case"] for row in rows]
    if kind == "shape":
        specific = {"n_chamfer": n_chamfer, "n_emd": n_emd, "normalisation": NORMALISATION,
                    "gt_from_labelmap": [case for case in cases if is_labelmap_path(scored.gt_paths[case])]}
    else:
        specific = {"n_samples": n_samples}
    if kind == "volume":
        specific.update(labels={str(k): v for k, v in (scored.labels or {}).items()},
                        nsd_tolerance_mm=NSD_TOLERANCE_MM)
    summary = {
        "kind": kind,
        **status_counts(rows),
        "cases": cases,
        "statuses": {row["case"]: row["status"] for row in rows if row["status"] != "ok"},
        "notes": scored.notes,
        "pred": str(Path(pred_dir)),
        "gt": str(Path(gt)),
        "split": scored.split,
        "gt_space": scored.space,
        **specific,
        "seed": seed,
        "statistics": statistics_text(n_bootstrap),
        "metrics": summarize(rows, seed=seed, n_bootstrap=n_bootstrap),
    }
    csv_path, summary_path = metrics_paths(out)
    write_text(csv_path, rows_to_csv(rows))
    write_json(summary_path, summary)
    unscored = [row["case"] for row in rows if row["status"] in ("missing", "failed")]
    if strict and unscored:
        raise InputError(f"{pred_dir}: {len(unscored)} of {len(rows)} ground-truth case(s) missing or failed "
                         f"({', '.join(unscored)}); metrics written to {csv_path} (--strict)")
    return summary


def statistics_text(n_bootstrap: int = N_BOOTSTRAP) -> str:
    """How a summary's numbers are taken, in words (written into every summary)."""
    return (f"over the rows of each metric with a finite value (n); std: sample standard deviation (ddof = 1); "
            f"ci95: {CONFIDENCE:.0%} percentile bootstrap interval of the mean ({n_bootstrap} resamples of the cases, "
            f"seeded); cases missing, empty or failed count as failures where the metric has one (Dice 0, NSD 0, "
            f"completion 0) and are left out of distances")


def metric_columns(rows: list[dict]) -> list[str]:
    """The metric columns of per-case rows (every key but ``case`` and ``status``), in order."""
    return [name for name in rows[0] if name not in ("case", "status")] if rows else []


def summarize(rows: list[dict], *, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> dict[str, dict]:
    """Metric name → :func:`~implicitseg.evaluation.stats.describe` over the rows (NaN values left out)."""
    return {name: describe([row[name] for row in rows], seed=seed, n_bootstrap=n_bootstrap)
            for name in metric_columns(rows)}


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text, one row per case, columns ``case``, ``status`` then the metrics; floats at full precision
    (``repr``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: repr(value) if isinstance(value, float) else value for key, value in row.items()})
    return buffer.getvalue()


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def counts_text(summary: dict) -> str:
    """``"4 case(s): 3 scored, 1 missing"`` (statuses with no case left out)."""
    parts = [f"{summary['n_scored']} scored"] + [f"{summary[f'n_{s}']} {s}" for s in STATUSES[1:]
                                                  if summary.get(f"n_{s}")]
    return f"{summary['n_cases']} case(s): " + ", ".join(parts)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    return lines + ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(line, widths))) for line in body]


def format_table(summary_or_rows: dict | list[dict]) -> str:
    """Plain-text table for the terminal: a summary from :func:`evaluate_folders` (its counts, then metric | n |
    mean | std | median | 95 % CI of the mean, then the cases not scored) or a list of per-case rows (case |
    status | metrics...); numbers with 4 decimals."""
    if isinstance(summary_or_rows, dict):
        summary = summary_or_rows
        header = [*("metric", *SUMMARY_STATISTICS), "ci95 of mean"]
        body = [[name, str(stats["n"]), *(_number(stats[s]) for s in SUMMARY_STATISTICS[1:]),
                 f"[{_number(stats['ci95'][0])}, {_number(stats['ci95'][1])}]"]
                for name, stats in summary["metrics"].items()]
        lines = [f"{summary['kind']} metrics over {counts_text(summary)}", *_table(header, body)]
        lines += [f"{case}: {status}" + (f" ({summary['notes'][case]})" if case in summary["notes"] else "")
                  for case, status in summary["statuses"].items()]
        lines += [f"{case}: {note}" for case, note in summary["notes"].items() if case not in summary["statuses"]]
        return "\n".join(lines)
    if not summary_or_rows:
        return "(no cases)"
    header = list(summary_or_rows[0])
    body = [[_number(row[h]) if isinstance(row[h], float) else str(row[h]) for h in header] for row in summary_or_rows]
    return "\n".join([f"{len(body)} case(s)", *_table(header, body)])
