"""``implicitseg report``: one self-contained HTML file to look at predictions (DESIGN §2).

Per case: three orthogonal world planes (axial, coronal, sagittal in LPS) through the object, the image with the
predicted and ground-truth contours on it (mesh-plane intersections for surfaces, label boundaries for
labelmaps), and an interactive 3D view of the surfaces (``report_viewer.js``: a 2D canvas, no WebGL, no
network). On top: the metrics of every case and method, worst first, and training curves of the runs given.
Everything (images as JPEG data URIs, meshes as JSON, the viewer's script) is inside the file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from implicitseg.errors import InputError
from implicitseg.evaluation.tables import (
    PREDICTED_LABELMAP,
    counts_text,
    find_ground_truth_labelmaps,
    find_ground_truth_meshes,
    find_predicted_meshes,
    predicted_space,
    score_cases,
    status_counts,
)
from implicitseg.geometry.frames import affine_from_geometry
from implicitseg.io.atomic import write_text
from implicitseg.io.images import read_image, read_labelmap, resample_volume
from implicitseg.io.meshes import Mesh, read_mesh

METHOD_COLORS = ("#e4572e", "#2e86de", "#8e44ad", "#f39c12")
"""Contour and surface colours of the first, second, … method; the ground truth is green."""
TRUTH_COLOR = "#27ae60"
VIEW_FACES = 2000
"""Faces per surface in the 3D view (quadric decimation): about 35 kB of JSON per surface."""
SLICE_PIXELS = 192
PLANES = {
    # name: (screen-right axis, screen-down axis) in world LPS; radiological display
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "coronal": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
}


@dataclass
class MethodCase:
    """One method's outputs for one case."""

    label: str
    mesh_path: Path | None
    labelmap_path: Path | None
    record: dict
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    """The evaluation's row status (:data:`~implicitseg.evaluation.tables.STATUSES`)."""


@dataclass
class ReportCase:
    """Everything shown for one case: the image, each method's outputs and the ground truth (any may be missing)."""

    case: str
    image_path: Path | None
    methods: list[MethodCase]
    truth_mesh_path: Path | None = None
    truth_mesh_space: str = "LPS"
    truth_labelmap_path: Path | None = None


def _color(label: str, labels: list[str]) -> str:
    return METHOD_COLORS[labels.index(label) % len(METHOD_COLORS)]


def _data_uri_jpeg(figure) -> str:
    """The figure as a JPEG data URI (about a third of a PNG's size for these image-like figures)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="jpeg", dpi=72, bbox_inches="tight", pil_kwargs={"quality": 90})
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _method_labels(pred_dirs: list[Path]) -> list[str]:
    labels = []
    for pred_dir in pred_dirs:
        record = next((json.loads(p.read_text()) for p in sorted(pred_dir.glob("*/prediction.json"))), {})
        label = f"{record.get('method', pred_dir.name)} ({record.get('preset', '?')})"
        labels.append(label if label not in labels else f"{label} [{pred_dir.name}]")
    return labels


@dataclass
class Unpredicted:
    """A ground-truth case a method has no usable prediction for: its evaluation row (status and failure scores)."""

    case: str
    label: str
    status: str
    metrics: dict[str, float]


def collect_cases(pred_dirs: list[Path], gt: Path | None, *, gt_space: str = "LPS", score: bool = True
                  ) -> tuple[list[ReportCase], list[str], list[Unpredicted], dict[str, dict[str, int]]]:
    """The cases of every prediction folder (one folder per method), their ground truth in ``gt`` (a dataset
    folder or a folder of ``<case>`` files) and, with ``score``, their metrics (``volume`` where both sides have
    labelmaps, else ``surface``; every GT case is scored, see :func:`~implicitseg.evaluation.tables.score_cases`).
    Returns the predicted cases in id order, the method labels, the GT cases a method did not predict, and per
    method label the evaluation's counts (:func:`~implicitseg.evaluation.tables.status_counts`; empty without
    scoring)."""
    if not pred_dirs:
        raise InputError("report: give at least one prediction folder")
    for pred_dir in pred_dirs:
        if not pred_dir.is_dir() or not any(pred_dir.glob("*/prediction.json")):
            raise InputError(f"{pred_dir}: not a prediction folder (no <case>/prediction.json); run `predict` first")
    labels = _method_labels(pred_dirs)
    truth_meshes: dict[str, Path] = {}
    truth_labelmaps: dict[str, Path] = {}
    space = gt_space
    if gt is not None:
        truth_meshes, space = find_ground_truth_meshes(gt, gt_space=gt_space)
        if any(d.glob(f"*/{PREDICTED_LABELMAP}") for d in pred_dirs):
            truth_labelmaps = find_ground_truth_labelmaps(gt)
    cases: dict[str, ReportCase] = {}
    unpredicted: list[Unpredicted] = []
    counts: dict[str, dict[str, int]] = {}
    for pred_dir, label in zip(pred_dirs, labels):
        meshes = find_predicted_meshes(pred_dir) if any(pred_dir.glob("*/mesh.*")) else {}
        rows: dict[str, dict] = {}
        if gt is not None and score:
            has_labelmaps = any(pred_dir.glob(f"*/{PREDICTED_LABELMAP}")) and truth_labelmaps
            kind = "volume" if has_labelmaps else "surface"
            scored = score_cases(pred_dir, gt, kind=kind, gt_space=gt_space, n_samples=20_000)
            rows = {row["case"]: row for row in scored.rows}
            counts[label] = status_counts(scored.rows)
        predicted = {path.parent.name for path in pred_dir.glob("*/prediction.json")}
        unpredicted += [Unpredicted(case, label, row["status"], _metrics_of(row))
                        for case, row in rows.items() if case not in predicted]
        for record_path in sorted(pred_dir.glob("*/prediction.json")):
            identifier = record_path.parent.name
            record = json.loads(record_path.read_text())
            labelmap = record_path.parent / PREDICTED_LABELMAP
            image = Path(record["image"]) if record.get("image") else None
            entry = cases.setdefault(identifier, ReportCase(identifier, image, []))
            row = rows.get(identifier)
            entry.methods.append(MethodCase(label, meshes.get(identifier), labelmap if labelmap.is_file() else None,
                                            record, _metrics_of(row) if row else {},
                                            row["status"] if row else "ok"))
    for entry in cases.values():
        entry.truth_mesh_path = truth_meshes.get(entry.case)
        entry.truth_mesh_space = space
        entry.truth_labelmap_path = truth_labelmaps.get(entry.case)
    return [cases[key] for key in sorted(cases)], labels, unpredicted, counts


def _metrics_of(row: dict) -> dict[str, float]:
    return {name: value for name, value in row.items() if name not in ("case", "status")}


@dataclass
class _Surfaces:
    """The case's surfaces in world LPS mm: (name, colour, mesh) per method, then the ground truth."""

    items: list[tuple[str, str, Mesh]]

    @classmethod
    def of(cls, case: ReportCase, labels: list[str]) -> "_Surfaces":
        from implicitseg.meshing.isosurface import labelmap_to_mesh

        items = []
        for method in case.methods:
            if method.mesh_path is not None:
                items.append((method.label, _color(method.label, labels),
                              read_mesh(method.mesh_path, space=predicted_space(method.mesh_path))))
        if case.truth_mesh_path is not None:
            items.append(("ground truth", TRUTH_COLOR, read_mesh(case.truth_mesh_path, space=case.truth_mesh_space)))
        elif case.truth_labelmap_path is not None:
            items.append(("ground truth", TRUTH_COLOR, labelmap_to_mesh(read_labelmap(case.truth_labelmap_path))))
        return cls(items)

    def center_and_half_width_mm(self) -> tuple[np.ndarray, float] | None:
        if not self.items:
            return None
        vertices = np.concatenate([mesh.vertices_world_mm for _, _, mesh in self.items])
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        return (low + high) / 2.0, max(float((high - low).max()) / 2.0 + 10.0, 25.0)


def _plane_grid(center: np.ndarray, half_width_mm: float, plane: str) -> tuple[np.ndarray, float]:
    """Index → world affine of a ``SLICE_PIXELS``² × 1 grid on a world plane through ``center``."""
    right, down = PLANES[plane]
    normal = np.cross(right, down)
    pixel_mm = 2.0 * half_width_mm / SLICE_PIXELS
    corner = center - half_width_mm * (right + down) + 0.5 * pixel_mm * (right + down)
    return affine_from_geometry(corner, np.array([pixel_mm, pixel_mm, 1.0]), np.stack([right, down, normal], 1)), \
        pixel_mm


def _mesh_section_segments(mesh: Mesh, center: np.ndarray, plane: str, affine: np.ndarray) -> np.ndarray:
    """Where ``mesh`` crosses the plane: segments (K, 2, 2) in pixel coordinates (column, row)."""
    import trimesh

    right, down = PLANES[plane]
    segments = trimesh.intersections.mesh_plane(trimesh.Trimesh(mesh.vertices_world_mm, mesh.faces, process=False),
                                                plane_normal=np.cross(right, down), plane_origin=center)
    if len(segments) == 0:
        return np.zeros((0, 2, 2))
    pixel_mm = float(np.linalg.norm(affine[:3, 0]))
    relative = segments - affine[:3, 3]
    return np.stack([relative @ right, relative @ down], axis=-1) / pixel_mm


def slice_figure_uri(case: ReportCase, labels: list[str], surfaces: _Surfaces) -> str | None:
    """JPEG (data URI) of the three planes with every contour, or None without an image or anything to show."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    placement = surfaces.center_and_half_width_mm()
    if case.image_path is None or not case.image_path.exists() or placement is None:
        return None
    center, half_width = placement
    image = read_image(case.image_path)
    labelmaps = [(_color(m.label, labels), read_labelmap(m.labelmap_path, allow_empty=True))
                 for m in case.methods if m.labelmap_path is not None]
    if case.truth_labelmap_path is not None and case.truth_mesh_path is None:
        labelmaps.append((TRUTH_COLOR, read_labelmap(case.truth_labelmap_path)))
    labelmap_colors = {color for color, _ in labelmaps}
    figure, axes = plt.subplots(1, 3, figsize=(9.0, 3.2))
    slices = {}
    for plane in PLANES:
        affine, _ = _plane_grid(center, half_width, plane)
        slices[plane] = (affine, resample_volume(image, (SLICE_PIXELS, SLICE_PIXELS, 1), affine,
                                                 default_value=float(image.array.min())).array[:, :, 0].T)
    values = np.concatenate([s.ravel() for _, s in slices.values()])
    low, high = np.percentile(values, [1.0, 99.5])
    for axis, (plane, (affine, section)) in zip(axes, slices.items()):
        axis.imshow(section, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
        for color, labelmap in labelmaps:
            on_plane = resample_volume(labelmap, (SLICE_PIXELS, SLICE_PIXELS, 1), affine,
                                       interpolation="nearest").array[:, :, 0].T
            for value, style in zip(sorted(v for v in np.unique(on_plane) if v > 0), ("solid", "dashed", "dotted")):
                axis.contour(on_plane == value, levels=[0.5], colors=[color], linewidths=1.2, linestyles=style)
        for name, color, mesh in surfaces.items:
            if color in labelmap_colors:
                continue  # this method's labelmap is drawn already
            segments = _mesh_section_segments(mesh, center, plane, affine)
            axis.add_collection(LineCollection(segments, colors=color, linewidths=1.2))
        axis.set_title(plane, fontsize=9)
        axis.set_xlim(-0.5, SLICE_PIXELS - 0.5)
        axis.set_ylim(SLICE_PIXELS - 0.5, -0.5)
        axis.axis("off")
    shown = [(m.label, _color(m.label, labels)) for m in case.methods]
    shown += [("ground truth", TRUTH_COLOR)] if case.truth_mesh_path or case.truth_labelmap_path else []
    legend = [Line2D([], [], color=color, label=name) for name, color in shown]
    figure.legend(handles=legend, loc="lower center", ncol=max(len(legend), 1), fontsize=8, frameon=False)
    uri = _data_uri_jpeg(figure)
    plt.close(figure)
    return uri


def _decimated(mesh: Mesh, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    if len(mesh.faces) <= n_faces:
        return mesh.vertices_world_mm, mesh.faces
    import pymeshlab

    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(mesh.vertices_world_mm, mesh.faces))
    meshes.meshing_decimation_quadric_edge_collapse(targetfacenum=int(n_faces), preservenormal=True)
    decimated = meshes.current_mesh()
    return decimated.vertex_matrix(), decimated.face_matrix()


def viewer_payload(surfaces: _Surfaces) -> dict | None:
    """The 3D view's JSON: every surface decimated to :data:`VIEW_FACES` faces, vertices centred on the object
    and stored as integers of 0.1 mm."""
    placement = surfaces.center_and_half_width_mm()
    if placement is None:
        return None
    center, _ = placement
    scale_mm = 0.1
    items = []
    for name, color, mesh in surfaces.items:
        vertices, faces = _decimated(mesh, VIEW_FACES)
        quantised = np.round((vertices - center) / scale_mm).astype(int)
        items.append({"name": name, "color": color, "vertices": quantised.ravel().tolist(),
                      "faces": np.asarray(faces, dtype=int).ravel().tolist()})
    return {"scale_mm": scale_mm, "surfaces": items}


def training_curves_uri(run_dirs: list[Path]) -> str | None:
    """JPEG (data URI) of the training and validation loss per epoch of each run (from ``RUN/logs/csv``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    curves = []
    for run in run_dirs:
        files = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"))
        if not files:
            raise InputError(f"{run}: no training log (logs/csv/version_*/metrics.csv); is it a run folder?")
        by_epoch: dict[str, dict[int, float]] = {"train_loss_epoch": {}, "val_loss": {}}
        for path in files:  # a resumed run logs into a new version folder
            with path.open() as handle:
                for row in csv.DictReader(handle):
                    for name, values in by_epoch.items():
                        if row.get(name) not in (None, "") and row.get("epoch") not in (None, ""):
                            values[int(row["epoch"])] = float(row[name])
        curves.append((run.name, by_epoch))
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(6.0, 3.0))
    for (name, by_epoch), color in zip(curves, METHOD_COLORS * 4):
        for metric, style in (("train_loss_epoch", "--"), ("val_loss", "-")):
            points = sorted(by_epoch[metric].items())
            if points:
                axis.plot(*zip(*points), style, color=color, label=f"{name} {metric.split('_')[0]}")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (log scale)")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    uri = _data_uri_jpeg(figure)
    plt.close(figure)
    return uri


def _worst_first_key(kind_metrics: dict[str, float], status: str = "ok") -> float:
    """Sort key, larger = worse: a case not scored (missing, empty, failed) first, then 1 − mean Dice for
    labelmaps, the symmetric Chamfer distance for surfaces."""
    if status != "ok":
        return math.inf
    dice = [v for k, v in kind_metrics.items() if k.startswith("dice") and not math.isnan(v)]
    if dice:
        return 1.0 - float(np.mean(dice))
    value = kind_metrics.get("chamfer_symmetric_mm", math.nan)
    return -math.inf if math.isnan(value) else float(value)


def _format(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 7px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.case { border-top: 2px solid #ddd; margin-top: 1.5em; padding-top: 0.5em; }
.views { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
canvas.viewer { border: 1px solid #ccc; cursor: grab; } .note { color: #666; font-size: 12px; }
"""


def build_report(pred_dirs: list[Path], out: Path, *, gt: Path | None = None, runs: list[Path] | None = None,
                 gt_space: str = "LPS", title: str = "implicitseg report") -> dict:
    """Write the report to ``out`` (atomically); returns ``{"path", "n_cases", "methods", "size_bytes"}``."""
    pred_dirs = [Path(p) for p in pred_dirs]
    cases, labels, unpredicted, counts = collect_cases(pred_dirs, None if gt is None else Path(gt), gt_space=gt_space)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>{len(cases)} case(s); methods: {html.escape(', '.join(labels))}; ground truth: "
             f"{html.escape(str(gt)) if gt else 'none given'}. Contours and surfaces are in world LPS mm. "
             f"Drag a 3D view to turn it, scroll to zoom.</p>"]

    metric_names = list(dict.fromkeys([name for case in cases for method in case.methods for name in method.metrics]
                                      + [name for row in unpredicted for name in row.metrics]))
    if metric_names:
        rows = [(case.case, True, method.label, method.status, method.metrics)
                for case in cases for method in case.methods]
        rows += [(row.case, False, row.label, row.status, row.metrics) for row in unpredicted]
        rows.sort(key=lambda row: -_worst_first_key(row[4], row[3]))
        parts.append("<h2>Metrics, worst case first</h2>")
        parts += [f"<p class='note'>{html.escape(label)}: {html.escape(counts_text(count))} (a case not scored "
                  f"counts as a failure: Dice, NSD, completion 0; no distance)</p>" for label, count in counts.items()]
        parts.append("<table><tr><th>case</th><th>method</th><th>status</th>"
                     + "".join(f"<th>{html.escape(n)}</th>" for n in metric_names) + "</tr>")
        for identifier, shown, label, status, metrics in rows:
            cells = "".join(f"<td class='num'>{_format(metrics.get(n, math.nan))}</td>" for n in metric_names)
            name = (f"<a href='#case-{html.escape(identifier)}'>{html.escape(identifier)}</a>" if shown
                    else html.escape(identifier))
            parts.append(f"<tr><td>{name}</td><td>{html.escape(label)}</td><td>{html.escape(status)}</td>{cells}</tr>")
        parts.append("</table>")
    if runs:
        curves = training_curves_uri([Path(r) for r in runs])
        if curves:
            parts.append(f"<h2>Training</h2><img alt='training curves' src='{curves}'>")

    for case in cases:
        surfaces = _Surfaces.of(case, labels)
        identifier = html.escape(case.case)
        parts.append(f"<section class='case' id='case-{identifier}'><h2>{identifier}</h2>")
        for method in case.methods:
            summary = ", ".join(f"{n} {_format(v)}" for n, v in method.metrics.items()) or "no metrics"
            if method.status != "ok":
                summary = f"{method.status}: {summary}"
            warning = method.record.get("warning")
            parts.append(f"<p class='note'><b>{html.escape(method.label)}</b>: {html.escape(summary)}"
                         + (f" — {html.escape(warning)}" if warning else "") + "</p>")
        parts.append("<div class='views'>")
        figure = slice_figure_uri(case, labels, surfaces)
        if figure:
            center, half_width = surfaces.center_and_half_width_mm()  # type: ignore[misc]
            parts.append(f"<figure><img class='slices' alt='{identifier}: slices with contours' loading='lazy' "
                         f"src='{figure}'><figcaption class='note'>world planes through "
                         f"({', '.join(f'{c:.1f}' for c in center)}) mm LPS, {2 * half_width:.0f} mm across"
                         + ("; labelmaps: solid label 1, dashed label 2, dotted label 3"
                            if any(m.labelmap_path for m in case.methods) else "") + "</figcaption></figure>")
        payload = viewer_payload(surfaces)
        if payload:
            mesh_id = f"mesh-{identifier}"
            toggles = "".join(f"<label><input type='checkbox' checked data-toggle='{mesh_id}' "
                              f"value='{html.escape(s['name'])}'> <span style='color:{s['color']}'>■</span> "
                              f"{html.escape(s['name'])}</label> " for s in payload["surfaces"])
            data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
            parts.append(f"<div><canvas class='viewer' width='340' height='300' data-mesh='{mesh_id}'></canvas>"
                         f"<div class='note'>{toggles}</div></div>"
                         f"<script type='application/json' id='{mesh_id}'>{data}</script>")
        parts.append("</div></section>")
    script = resources.files("implicitseg.evaluation").joinpath("report_viewer.js").read_text()
    parts.append(f"<script>{script}</script></body></html>")
    text = "\n".join(parts)
    out = Path(out)
    write_text(out, text)
    return {"path": str(out), "n_cases": len(cases), "methods": labels, "size_bytes": len(text.encode("utf-8"))}


