"""One image through a trained run, in memory: what ``implicitseg predict`` writes per case and what the Python API
returns (``implicitseg.load_run(RUN).predict(image)``), by one code path.

:func:`check_options` reads the run's config and checks every prediction option and setting before the network is
loaded; :class:`Predictor` loads it and predicts one image at a time (:meth:`Predictor.predict`: mesh, points and
labelmap in world LPS mm, timings in s); :meth:`Predictor.write` writes a case's files and ``prediction.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from implicitseg.config import MethodConfig, Settings, config_from_dict
from implicitseg.data.prepare import checked_roi
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi
from implicitseg.inference.roi import detect_roi_center, label_center_world_mm, label_for_image, parse_center
from implicitseg.io.atomic import write_json
from implicitseg.io.configs import load_yaml
from implicitseg.io.dataset import case_id
from implicitseg.io.images import (
    Volume,
    VolumeSeries,
    grid_at_spacing,
    read_image,
    read_image_series,
    resample_onto_image,
    roi_volume,
    write_image,
    write_image_series,
)
from implicitseg.io.intensities import roi_image_of
from implicitseg.io.meshes import Mesh, write_mesh, write_point_cloud
from implicitseg.meshing.isosurface import probability_to_mesh
from implicitseg.methods import get_method
from implicitseg.methods.base import ImagePrediction, Method, RoiPrediction
from implicitseg.training.run import CHECKPOINTS, CONFIG_NAME
from implicitseg.versions import versions


@dataclass
class CasePrediction:
    """One image predicted by a run; everything in world LPS mm, timings in s (``total_s``: reading the image, if a
    path was given, and predicting)."""

    case: str
    image: Path | None
    """The image file, None for an image given in memory."""
    mesh: Mesh | None
    """The surface; None when nothing was found (``details["warning"]``) or the output is a plane."""
    points_world_mm: np.ndarray | None
    """(N, 3): the dense point cloud (surface methods) or the points worth showing (ISMM's trusted points)."""
    labelmap: Volume | VolumeSeries | None
    """A class per voxel (voxel and whole-image methods) on the image's grid or the asked one; a series for 3D+t."""
    timings: dict[str, float]
    counts: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    """What else prediction.json says: the ROI and its source, how the mesh was made, the output grid, notes."""


def parse_spacing(text: str | float | Sequence[float] | None) -> float | tuple[float, float, float] | None:
    """``--spacing``: one number (isotropic mm) or three ``SI,SJ,SK`` along the image's axes (text or numbers);
    None stays None."""
    if text is None:
        return None
    try:
        values = [float(part) for part in (str(text).split(",") if isinstance(text, (str, int, float)) else text)]
    except (TypeError, ValueError):
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


def _center_world_mm(center: str | Sequence[float]) -> np.ndarray:
    """A ROI centre ``"X,Y,Z"`` or three numbers (world LPS mm) → (3,) float64."""
    if isinstance(center, str):
        return parse_center(center)
    values = np.asarray(center, dtype=np.float64).ravel()
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise InputError(f"ROI centre {center!r}: expected three numbers X, Y, Z in world LPS mm")
    return values


def _select_device(device: str) -> torch.device:
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
ROI_SOURCES_HINT = ("exactly one of --roi-center X,Y,Z (world LPS mm), --roi-label LABELMAP or --roi-run ROI_RUN "
                    "(a trained ROI detector)")

RoiCenterSource = Callable[[Path, Volume], tuple[np.ndarray, str, dict]]
"""``(image_path, volume) -> (centre (3,) world LPS mm, source name, details for prediction.json)``."""


@dataclass(frozen=True)
class PredictOptions:
    """A run and how to predict with it, checked before its network is loaded (:func:`check_options`)."""

    run: Path
    method: Method
    settings: tuple[Settings, ...]
    """Applied in order over the run's config."""
    overrides: dict[str, Any]
    """The values ``settings`` set, by dotted key (for prediction.json)."""
    checkpoint: str
    device: torch.device
    roi_center_world_mm: np.ndarray | None
    roi_label: Path | None
    roi_run: Path | None
    output_spacing_mm: float | tuple[float, float, float] | None
    output_plane: tuple[tuple[int, int, int], np.ndarray] | None
    method_options: dict[str, Any]
    """The options the method declares (``Method.image_options``: ``frames``, ``initial``) that were given, as
    keywords of its ``predict_image``."""
    seed: int

    @property
    def needs_roi(self) -> bool:
        """The method predicts on a ROI (it needs a centre per image)."""
        return self.method.predicts == "roi"

    @property
    def roi_given(self) -> bool:
        """A ROI source was given (a centre, a labelmap or a detector run)."""
        return any(value is not None for value in (self.roi_center_world_mm, self.roi_label, self.roi_run))


def check_options(run: str | os.PathLike, *, settings: Sequence[Settings] = (), checkpoint: str = "best",
                  device: str = "auto", roi_center: str | Sequence[float] | None = None,
                  roi_label: str | os.PathLike | None = None, roi_run: str | os.PathLike | None = None,
                  spacing: str | float | Sequence[float] | None = None, plane: str | None = None,
                  frames: Sequence[int] | None = None, initial: str | os.PathLike | None = None,
                  seed: int = 0) -> PredictOptions:
    """Read ``RUN/config.yaml`` and check the prediction options against its method (what each means: see
    :func:`load_run`); anything that does not apply, or a setting that does not exist, has the wrong type or may not
    change for a trained run, raises :class:`InputError`. Nothing is loaded or written."""
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"--checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = Path(run)
    if not (run / CONFIG_NAME).is_file():
        raise InputError(f"{run}: not a run folder (no {CONFIG_NAME}); run `implicitseg train` first")
    run_config = load_yaml(run / CONFIG_NAME)
    method = get_method(str(run_config.get("method")))
    if method.predicts is None:
        raise InputError(f"{run}: a run of method {method.name!r}, which does not predict on its own; "
                         f"pass it to another method's prediction as --roi-run {run}")
    torch_device = _select_device(device)
    spacing_mm = parse_spacing(spacing)
    plane_grid = parse_plane(plane) if plane is not None else None
    if spacing_mm is not None and plane_grid is not None:
        raise InputError("give --spacing or --plane, not both")
    method_options = _method_options(method, frames, initial)
    given = [name for name, value in (("--roi-center", roi_center), ("--roi-label", roi_label),
                                      ("--roi-run", roi_run)) if value is not None]
    if method.predicts == "image" and given:
        raise InputError(f"{method.name} segments whole images: {', '.join(given)} does not apply")
    if method.predicts == "roi":
        if spacing_mm is not None or plane_grid is not None:
            raise InputError(f"--spacing and --plane apply to whole-image methods; {method.name} predicts on its ROI "
                             f"grid and writes the labelmap on the image's grid")
        if len(given) > 1:
            raise InputError(f"give {ROI_SOURCES_HINT}; got {', '.join(given)}")
    # the settings are checked on the run's config now, before the network loads, and applied to the loaded one
    _, overrides = configured(config_from_dict(method.config_class, run_config, where=str(run / CONFIG_NAME)),
                              settings)
    return PredictOptions(
        run=run, method=method, settings=tuple(settings), overrides=overrides, checkpoint=checkpoint,
        device=torch_device, roi_center_world_mm=None if roi_center is None else _center_world_mm(roi_center),
        roi_label=None if roi_label is None else Path(roi_label), roi_run=None if roi_run is None else Path(roi_run),
        output_spacing_mm=spacing_mm, output_plane=plane_grid, method_options=method_options, seed=int(seed))


def _method_options(method: Method, frames: Sequence[int] | None,
                    initial: str | os.PathLike | None) -> dict[str, Any]:
    """The keywords of ``method.predict_image`` from the options it declares (``Method.image_options``): ``frames``
    (3D+t methods), ``initial`` (refining methods: required there); an option it does not declare is refused."""
    takes = method.image_options
    method_options: dict[str, Any] = {}
    if frames:
        if "frames" not in takes:
            raise InputError(f"--frame applies to 3D+t methods (nisf); {method.name} segments 3D images")
        method_options["frames"] = [int(f) for f in frames]
    if initial is not None and "initial" not in takes:
        raise InputError(f"--initial applies to methods that refine a segmentation (ismm), not {method.name}")
    if "initial" in takes:
        if initial is None:
            raise InputError(f"{method.name} refines an initial segmentation: give --initial LABELMAP_OR_MESH (a "
                             f"file, or a folder of <case>.nii.gz / <case>.vtk)")
        if not Path(initial).exists():
            raise InputError(f"--initial {initial}: not found")
        method_options["initial"] = Path(initial)
    return method_options


def configured(config: MethodConfig, settings: Sequence[Settings]) -> tuple[Any, dict[str, Any]]:
    """A run's ``config`` with ``settings`` applied in order, and the values they set by dotted key. A setting
    outside the config's ``PREDICT_SECTIONS`` that changes a value raises :class:`InputError`."""
    changeable = config.sections_with("predict")
    reason = ("may not change for a trained run (it shapes the network, the data it learnt from or its training); "
              f"predict may change {', '.join(changeable) if changeable else 'no setting of this method'}")
    fixed = {f.name: reason for f in dataclasses.fields(config) if f.name not in changeable}
    overrides: dict[str, Any] = {}
    for source in settings:
        config, applied = source.apply(config, fixed)
        overrides.update(applied)
    return config, overrides


def _roi_center_source(options: PredictOptions) -> RoiCenterSource | None:
    """The ROI centre of each image from the one ROI source of ``options`` (loading the detector of ``roi_run``);
    None when none is given."""
    if options.roi_center_world_mm is not None:
        center = options.roi_center_world_mm
        return lambda image_path, volume: (center, "center", {})
    if options.roi_label is not None:
        roi_label = options.roi_label
        return lambda image_path, volume: (label_center_world_mm(label_for_image(roi_label, image_path)), "label", {})
    if options.roi_run is None:
        return None
    roi_run, device = options.roi_run, options.device
    detector, detector_config = get_method("roi").load(roi_run, "best", device)

    def detected(image_path: Path, volume: Volume) -> tuple[np.ndarray, str, dict]:
        found = detect_roi_center(detector, detector_config, volume, device=device, what=str(image_path))
        return found.center_world_mm, "detector", {"roi_run": str(roi_run), "detector_voxels": found.n_voxels,
                                                   "detector_max_probability": found.max_probability,
                                                   "detector_s": found.time_s}

    return detected


def _probability_on_image(prediction: RoiPrediction, roi: Roi, volume: Volume, what: str) -> tuple[Volume, Mesh]:
    """Voxel methods: the ROI probability trilinearly upsampled onto the image grid → the labelmap (the image's grid
    and geometry, 1 where probability > level) and the mesh at that level (world LPS mm)."""
    level = prediction.probability_level
    probability, low = resample_onto_image(roi_volume(prediction.probability_zyx, roi), volume,
                                           interpolation="linear", default_value=0.0)
    labelmap = np.zeros(volume.shape, dtype=np.uint8)
    high = low + np.array(probability.shape)
    labelmap[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = probability.array > level
    mesh = probability_to_mesh(probability.array, probability.affine_lps, level=level,
                               what=f"{what}: predicted probability")
    return Volume(labelmap, volume.affine_lps), mesh


def _image_mesh(prediction: ImagePrediction, what: str) -> tuple[Mesh | None, dict[str, Any]]:
    """Whole-image methods: the method's mesh, else the isosurface at 0.5 of the foreground probability (of the
    first frame of a series); none on a plane or when nothing was found. Returns it and what the record says."""
    labelmap = prediction.labelmap
    first = labelmap.frame(0) if isinstance(labelmap, VolumeSeries) else labelmap
    details: dict[str, Any] = {"output_shape": list(first.shape),
                               "output_spacing_mm": [float(v) for v in first.spacing]}
    if prediction.mesh is not None:
        return prediction.mesh, details
    if min(first.shape) < 2:
        return None, {**details, "note": "a plane: labelmap only"}
    if not np.any(first.array > 0):
        return None, {**details, "warning": "no foreground found: the labelmap is all background and no mesh is "
                                            "written"}
    mesh = probability_to_mesh(prediction.foreground_probability.array, first.affine_lps, level=0.5,
                               what=f"{what}: foreground probability")
    return mesh, {**details, **({"mesh_frame": 0} if isinstance(labelmap, VolumeSeries) else {})}


class Predictor:
    """A trained run ready to predict images (:func:`load_run`): its method, network (eval mode on
    ``options.device``) and ``config`` (the run's, with the prediction settings applied)."""

    def __init__(self, options: PredictOptions) -> None:
        self.options = options
        self.method = options.method
        self.model, loaded_config = self.method.load(options.run, options.checkpoint, options.device)
        self.config, _ = configured(loaded_config, options.settings)
        self._roi_center_of = _roi_center_source(options)

    def predict(self, image: str | os.PathLike | Volume | VolumeSeries, *, name: str | None = None,
                roi_center: str | Sequence[float] | None = None) -> CasePrediction:
        """Predict one image: a file (any format :func:`~implicitseg.io.images.read_image` reads, or a DICOM folder)
        or an image in memory (a :class:`Volume` with its index → world LPS affine; a :class:`VolumeSeries` for 3D+t
        methods). ``name``: the case id (default: the file name without extension, ``"image"`` in memory).
        ``roi_center`` (X, Y, Z world LPS mm, or ``"X,Y,Z"``): this image's ROI centre, instead of the run's ROI
        source (ROI methods). Raises :class:`InputError` for a damaged image, a ROI outside it, no surface found."""
        start = time.perf_counter()
        in_memory = isinstance(image, (Volume, VolumeSeries))
        path = Path(name or "image") if in_memory else Path(image)
        case = name or case_id(path)
        if in_memory:
            volume = self._method_input(image)
        else:
            volume = (read_image_series if self.method.input_series else read_image)(path)
        image_file = None if in_memory else path
        if self.method.predicts == "image":
            if roi_center is not None:
                raise InputError(f"{self.method.name} segments whole images: a ROI centre does not apply")
            prediction = self._predict_image(case, path, image_file, volume)
        else:
            prediction = self._predict_roi(case, path, image_file, volume, roi_center)
        prediction.timings["total_s"] = time.perf_counter() - start
        return prediction

    def _method_input(self, image: Volume | VolumeSeries) -> Volume | VolumeSeries:
        """An image in memory as the method reads its files: a 3D+t method takes a 3D image as one frame."""
        if isinstance(image, Volume) and self.method.input_series:
            return VolumeSeries(image.array[None], image.affine_lps)
        if isinstance(image, VolumeSeries) and not self.method.input_series:
            raise InputError(f"{self.method.name} segments 3D images; got a series of {len(image.frames)} frames")
        return image

    def _predict_roi(self, case: str, path: Path, image_file: Path | None, volume: Volume,
                     roi_center: str | Sequence[float] | None) -> CasePrediction:
        if roi_center is not None:
            center, source, roi_details = _center_world_mm(roi_center), "center", {}
        elif self._roi_center_of is not None:
            center, source, roi_details = self._roi_center_of(path, volume)
        else:
            raise InputError(f"{self.method.name} predicts on a ROI: give its centre (predict(image, roi_center=(X, "
                             f"Y, Z)) in world LPS mm) or a ROI source to load_run (roi_center, roi_label, roi_run)")
        roi = checked_roi(volume, center, self.config.roi, path, ROI_SOURCE_NAMES[source])
        roi_image = roi_image_of(volume, roi, self.config.intensity, path)
        prediction = self.method.predict_roi(self.model, self.config, roi, roi_image, device=self.options.device,
                                             seed=self.options.seed)
        timings, mesh, labelmap = dict(prediction.timings), prediction.mesh, None
        if prediction.probability_zyx is not None:
            start = time.perf_counter()
            labelmap, mesh = _probability_on_image(prediction, roi, volume, case)
            timings["upsample_and_mesh_s"] = time.perf_counter() - start
        details = {"roi": roi.to_json(), "roi_source": source, **roi_details,
                   **({"meshing": prediction.meshing} if prediction.meshing is not None else {})}
        counts = {**prediction.counts, "n_vertices": len(mesh.vertices_world_mm), "n_faces": len(mesh.faces)}
        return CasePrediction(case, image_file, mesh, prediction.points_world_mm, labelmap, timings, counts, details)

    def _predict_image(self, case: str, path: Path, image_file: Path | None,
                       volume: Volume | VolumeSeries) -> CasePrediction:
        geometry = volume.frame(0) if isinstance(volume, VolumeSeries) else volume
        spacing_mm, plane = self.options.output_spacing_mm, self.options.output_plane
        grid = plane or (grid_at_spacing(geometry, spacing_mm) if spacing_mm is not None
                         else (geometry.shape, geometry.affine_lps))
        prediction = self.method.predict_image(self.model, self.config, volume, path, device=self.options.device,
                                               output_grid=grid, seed=self.options.seed, **self.options.method_options)
        start = time.perf_counter()
        mesh, details = _image_mesh(prediction, case)
        timings = {**prediction.timings, "mesh_s": time.perf_counter() - start}
        counts = {**prediction.counts, **({"n_vertices": len(mesh.vertices_world_mm), "n_faces": len(mesh.faces)}
                                          if mesh is not None else {})}
        return CasePrediction(case, image_file, mesh, prediction.points_world_mm, prediction.labelmap, timings,
                              counts, details)

    def write(self, prediction: CasePrediction, case_dir: str | os.PathLike, *, mesh_format: str = "vtk",
              mesh_space: str = "LPS") -> dict[str, Any]:
        """Write what ``prediction`` holds into ``case_dir`` as ``implicitseg predict`` does: ``mesh.<mesh_format>``
        and ``points.ply`` in ``mesh_space`` (LPS or RAS), ``labelmap.nii.gz``, and ``prediction.json`` (ROI,
        timings, counts, the run, its settings, versions), each atomically. Returns the prediction.json record."""
        start = time.perf_counter()
        case_dir = Path(case_dir)
        files: dict[str, str | None] = {}
        if prediction.labelmap is not None:
            files["labelmap"] = str(case_dir / "labelmap.nii.gz")
            (write_image_series if isinstance(prediction.labelmap, VolumeSeries) else write_image)(
                files["labelmap"], prediction.labelmap)
        if prediction.points_world_mm is not None:
            files["points"] = str(case_dir / "points.ply")
            write_point_cloud(files["points"], prediction.points_world_mm, space=mesh_space)
        files["mesh"] = None if prediction.mesh is None else str(case_dir / f"mesh.{mesh_format}")
        if prediction.mesh is not None:
            write_mesh(files["mesh"], prediction.mesh, space=mesh_space)
        write_s = time.perf_counter() - start
        record = {
            "case": prediction.case, "image": None if prediction.image is None else str(prediction.image), **files,
            "mesh_space": mesh_space, **prediction.details, "method": self.config.method,
            "preset": self.config.preset, "run": str(self.options.run), "checkpoint": self.options.checkpoint,
            "device": str(self.options.device), "overrides": self.options.overrides,
            "timings": {**prediction.timings, "write_s": write_s, "total_s": prediction.timings["total_s"] + write_s},
            "counts": prediction.counts, "versions": versions(),
        }
        write_json(case_dir / "prediction.json", record)
        return record


def load_run(run: str | os.PathLike, *, overrides: dict[str, Any] | None = None, checkpoint: str = "best",
             device: str = "auto", roi_center: str | Sequence[float] | None = None,
             roi_label: str | os.PathLike | None = None, roi_run: str | os.PathLike | None = None,
             spacing: str | float | Sequence[float] | None = None, plane: str | None = None,
             frames: Sequence[int] | None = None, initial: str | os.PathLike | None = None,
             seed: int = 0) -> Predictor:
    """The trained run ``run`` (a ``train`` output folder) ready to predict images, as ``implicitseg predict`` does.

    ``overrides``: settings by dotted key or nested section over the run's config, in the sections a trained run
    may change (its config's ``PREDICT_SECTIONS``, e.g. ``{"meshing.method": "poisson", "point_cloud.n_dense":
    200_000}``);
    ``checkpoint``: ``best`` or ``last``; ``device``: ``auto``, ``cpu``, ``cuda:N``. ROI methods (nudf, unet): at most
    one ROI source, ``roi_center`` (X, Y, Z world LPS mm), ``roi_label`` (a labelmap, or a folder of them by case id:
    its centre of mass) or ``roi_run`` (a trained ROI detector), or a centre per image at :meth:`Predictor.predict`.
    Whole-image methods: the labelmap at ``spacing`` (mm, one number or three) or on a ``plane`` (:func:`parse_plane`)
    instead of the image's grid; ``frames`` of a 3D+t image (nisf); ``initial``: the segmentation to refine (ismm).
    ``seed``: of the method's random draws. Bad options raise :class:`InputError`.
    """
    settings = [Settings("overrides", overrides)] if overrides else []
    return Predictor(check_options(run, settings=settings, checkpoint=checkpoint, device=device, roi_center=roi_center,
                                   roi_label=roi_label, roi_run=roi_run, spacing=spacing, plane=plane, frames=frames,
                                   initial=initial, seed=seed))
