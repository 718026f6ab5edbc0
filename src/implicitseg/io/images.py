"""Images with their physical space: read, write, resample into a ROI.

SimpleITK does the file formats (NIfTI, NRRD, MHA/MHD, DICOM series) and converts NIfTI's RAS to LPS on
read and back on write, so a :class:`Volume` is always in world LPS mm (see ``geometry/frames.py``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from implicitseg.errors import InputError, NonFiniteError
from implicitseg.geometry.frames import Roi, affine_from_geometry, geometry_from_affine, index_to_world, world_to_index
from implicitseg.io.atomic import atomic_path
from implicitseg.io.integrity import check_image_file

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Volume:
    """A 3D image: voxels ``array[i, j, k]`` (i along the first ITK axis) and the 4×4 index→world LPS mm affine.

    ``origin`` is the world position of the centre of voxel (0, 0, 0).
    """

    array: np.ndarray
    affine_lps: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume holds a 3D array, got shape {self.array.shape}")
        self.affine_lps = np.asarray(self.affine_lps, dtype=np.float64)
        if self.affine_lps.shape != (4, 4) or abs(np.linalg.det(self.affine_lps[:3, :3])) < 1e-12:
            raise ValueError("a Volume's affine must be an invertible 4×4 matrix")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def origin(self) -> np.ndarray:
        return geometry_from_affine(self.affine_lps)[0]

    @property
    def spacing(self) -> np.ndarray:
        return geometry_from_affine(self.affine_lps)[1]

    @property
    def direction(self) -> np.ndarray:
        return geometry_from_affine(self.affine_lps)[2]

    def to_sitk(self) -> sitk.Image:
        """SimpleITK image with the same voxels and geometry."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array.transpose(2, 1, 0)))
        origin, spacing, direction = geometry_from_affine(self.affine_lps)
        image.SetOrigin(tuple(origin))
        image.SetSpacing(tuple(spacing))
        image.SetDirection(tuple(direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Volume":
        """Volume from a 3D SimpleITK image."""
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        affine = affine_from_geometry(
            np.array(image.GetOrigin()), np.array(image.GetSpacing()), np.array(image.GetDirection()).reshape(3, 3)
        )
        return cls(array, affine)

    def voxel_centers_world_mm(self, mask: np.ndarray) -> np.ndarray:
        """(N, 3) world LPS mm of the voxels where ``mask`` (same shape as the array) is true."""
        return index_to_world(np.argwhere(mask).astype(np.float64), self.affine_lps)

    def world_bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box (min (3,), max (3,)) of the voxel centres."""
        corners = np.array([[i, j, k] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1) for k in (0, self.shape[2] - 1)])
        corners_world = index_to_world(corners, self.affine_lps)
        return corners_world.min(axis=0), corners_world.max(axis=0)


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def _read_sitk(path: Path, allow_nonfinite: bool) -> sitk.Image:
    """``path`` (an image file, or a folder holding one DICOM series) as SimpleITK reads it, after
    :func:`~implicitseg.io.integrity.check_image_file`. Raises :class:`InputError` naming the file when it is missing,
    truncated, damaged or unreadable."""
    if not path.exists():
        raise InputError(f"{path}: image file not found")
    try:
        if path.is_dir():
            if not _is_dicom_folder(path):
                raise InputError(f"{path}: folder holds no DICOM series")
            series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if len(series_ids) > 1:
                raise InputError(f"{path}: folder holds {len(series_ids)} DICOM series; give one series per folder")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series_ids[0]))
            return reader.Execute()
        check_image_file(path, allow_nonfinite=allow_nonfinite)
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reader error"
        raise InputError(f"{path}: cannot read image ({first_line[:200]})") from None


def _check_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise NonFiniteError(f"{path}: image holds NaN or infinite intensities")


def _volume_of(image: sitk.Image, path: Path, dtype: type, allow_nonfinite: bool) -> Volume:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: expected a 3D single-channel image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path}: invalid voxel spacing {tuple(spacing)}")
    volume = Volume.from_sitk(image)
    volume.array = volume.array.astype(dtype, copy=False)
    if not allow_nonfinite:
        _check_finite(volume.array, path)
    return volume


def read_image(path: str | os.PathLike, *, dtype: type = np.float32, allow_nonfinite: bool = False) -> Volume:
    """Read a 3D image (NIfTI, NRRD, MHA/MHD, or a folder holding one DICOM series) as a :class:`Volume`.

    Raises :class:`InputError` naming the file when it is missing, truncated, damaged, unreadable or not 3D, and
    :class:`~implicitseg.errors.NonFiniteError` when it holds NaN/inf, unless ``allow_nonfinite`` (SimpleITK reads
    those as 0 from NIfTI files).
    """
    path = Path(path)
    return _volume_of(_read_sitk(path, allow_nonfinite), path, dtype, allow_nonfinite)


def write_image(path: str | os.PathLike, volume: Volume) -> None:
    """Write a :class:`Volume` atomically; the format follows the suffix (``.nii.gz``, ``.nrrd``, ``.mha``...).

    Two-file formats (``.mhd`` + ``.zraw``, ``.nhdr`` + raw) are written into a temporary folder under their
    final names (the header names its data file), then moved into place data first, header last.
    """
    path = Path(path)
    if path.suffix.lower() in (".mhd", ".nhdr"):
        staging = path.parent / f".tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            sitk.WriteImage(volume.to_sitk(), str(staging / path.name), useCompression=True)
            data_files = [p for p in staging.iterdir() if p.name != path.name]
            for written in data_files + [staging / path.name]:
                os.replace(written, path.parent / written.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    with atomic_path(path) as temporary:
        sitk.WriteImage(volume.to_sitk(), str(temporary), useCompression=True)


@dataclass
class VolumeSeries:
    """A 3D+t image: ``frames`` (T, I, J, K) on one grid with the 4×4 index → world LPS mm affine of every frame,
    ``time_step`` between frames (the 4th spacing of a 4D file; units as written, e.g. ms or a cycle fraction)."""

    frames: np.ndarray
    affine_lps: np.ndarray
    time_step: float = 1.0

    def __post_init__(self) -> None:
        if self.frames.ndim != 4:
            raise ValueError(f"a VolumeSeries holds (T, I, J, K) frames, got shape {self.frames.shape}")
        self.affine_lps = np.asarray(self.affine_lps, dtype=np.float64)

    def frame(self, index: int) -> Volume:
        return Volume(self.frames[index], self.affine_lps)


def write_image_series(path: str | os.PathLike, series: VolumeSeries) -> None:
    """Write a 3D+t image atomically as one 4D file (NIfTI, NRRD, MHA): the 3D geometry of the frames and the
    time step as the 4th spacing."""
    joined = sitk.JoinSeries([series.frame(t).to_sitk() for t in range(len(series.frames))], 0.0,
                             float(series.time_step))
    with atomic_path(Path(path)) as temporary:
        sitk.WriteImage(joined, str(temporary), useCompression=True)


def read_image_series(path: str | os.PathLike, *, dtype: type = np.float32,
                      allow_nonfinite: bool = False) -> VolumeSeries:
    """Read a 3D+t image (a 4D file) or a 3D one (one frame); bad files raise :class:`InputError` as
    :func:`read_image` does."""
    path = Path(path)
    image = _read_sitk(path, allow_nonfinite)
    if image.GetDimension() == 3:
        volume = _volume_of(image, path, dtype, allow_nonfinite)
        return VolumeSeries(volume.array[None], volume.affine_lps)
    if image.GetDimension() != 4 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected a 3D or 4D single-channel image, got {image.GetDimension()}D")
    size = list(image.GetSize())
    frames = [Volume.from_sitk(sitk.Extract(image, size[:3] + [0], [0, 0, 0, t])) for t in range(size[3])]
    stacked = np.stack([f.array for f in frames]).astype(dtype, copy=False)
    if not allow_nonfinite:
        _check_finite(stacked, path)
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing[:3])) or np.any(spacing[:3] <= 0):
        raise InputError(f"{path}: invalid voxel spacing {tuple(spacing)}")
    return VolumeSeries(stacked, frames[0].affine_lps, float(spacing[3]))


def read_labelmap(path: str | os.PathLike, *, allow_empty: bool = False) -> Volume:
    """Read an integer labelmap; raises :class:`InputError` if it has no foreground voxel (unless
    ``allow_empty``: a prediction may be empty and still be scored)."""
    volume = read_image(path, dtype=np.float32)
    volume.array = _checked_labels(volume.array, path, allow_empty)
    return volume


def read_labelmap_series(path: str | os.PathLike, *, allow_empty: bool = False) -> VolumeSeries:
    """Read an integer labelmap of one or more frames (3D or 3D+t, as :func:`read_image_series`) as int16 frames;
    refuses non-integer values, and a labelmap with no voxel > 0 unless ``allow_empty``."""
    series = read_image_series(path, dtype=np.float32)
    series.frames = _checked_labels(series.frames, path, allow_empty)
    return series


def _checked_labels(values: np.ndarray, path: str | os.PathLike, allow_empty: bool) -> np.ndarray:
    """``values`` as int16 labels; non-integer values, or no voxel > 0 (unless ``allow_empty``), raise InputError."""
    if not np.all(values == np.round(values)):
        raise InputError(f"{path}: labelmap holds non-integer values")
    labels = values.astype(np.int16)
    if not allow_empty and not np.any(labels > 0):
        raise InputError(f"{path}: labelmap is empty (no voxel > 0)")
    return labels


def resample_to_roi(volume: Volume, roi: Roi, *, interpolation: str = "linear", default_value: float = 0.0) -> np.ndarray:
    """Resample ``volume`` onto the ROI grid; returns a ``(res, res, res)`` float32 array in ``(Z, Y, X)`` order.

    ``interpolation`` is ``"linear"`` (intensities) or ``"nearest"`` (labels); voxels outside the image get
    ``default_value``.
    """
    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {sorted(interpolators)}, got {interpolation!r}")
    reference = sitk.Image([roi.res] * 3, sitk.sitkFloat32)
    reference.SetOrigin(tuple(roi.origin_world_mm))
    reference.SetSpacing([roi.spacing_mm] * 3)
    reference.SetDirection(tuple(np.eye(3).ravel()))
    source = volume.to_sitk()
    if source.GetPixelID() != sitk.sitkFloat32:
        source = sitk.Cast(source, sitk.sitkFloat32)
    resampled = sitk.Resample(source, reference, sitk.Transform(), interpolators[interpolation], float(default_value))
    return sitk.GetArrayFromImage(resampled).astype(np.float32)  # (Z, Y, X)


def roi_overlaps_image(volume: Volume, roi: Roi) -> float:
    """Fraction of the ROI's voxel centres (sampled on a coarse 9³ lattice) that fall inside the image."""
    lattice = np.stack(np.meshgrid(*[np.linspace(-1, 1, 9)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    index = world_to_index(roi.unit_to_world(lattice), volume.affine_lps)
    inside = np.all((index >= -0.5) & (index <= np.array(volume.shape) - 0.5), axis=1)
    return float(inside.mean())


def roi_volume(values_zyx: np.ndarray, roi: Roi) -> Volume:
    """A ``(res, res, res)`` ROI array in (Z, Y, X) order (a network's input or output) as a :class:`Volume`."""
    values_zyx = np.asarray(values_zyx)
    if values_zyx.shape != (roi.res,) * 3:
        raise ValueError(f"expected a {(roi.res,) * 3} ROI array in (Z, Y, X) order, got {values_zyx.shape}")
    return Volume(np.ascontiguousarray(values_zyx.transpose(2, 1, 0)), roi.index_affine_lps)


def bounding_cube(volume: Volume, res: int, margin_mm: float = 0.0) -> Roi:
    """The world-axis cube around the image (centre of its world bounding box, side = largest extent +
    ``margin_mm``) on a ``res``³ grid: an isotropic, fixed-size view of a whole image of any shape or pose."""
    low, high = volume.world_bounds_mm()
    return Roi(tuple((low + high) / 2.0), float((high - low).max()) + float(margin_mm), int(res))


def resample_onto_image(source: Volume, image: Volume, *, interpolation: str = "linear",
                        default_value: float = 0.0) -> tuple[Volume, np.ndarray]:
    """Resample ``source`` onto the voxel grid of ``image``, restricted to the index box of the image that covers
    ``source`` (clipped to the image). Returns that crop as a :class:`Volume` (float32; outside ``source``:
    ``default_value``) and its first voxel's index (3,) int in ``image``. An empty box raises :class:`InputError`.
    """
    shape = np.array(source.shape)
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    corners_index = world_to_index(index_to_world(corners.astype(np.float64), source.affine_lps), image.affine_lps)
    low = np.maximum(np.floor(corners_index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(corners_index.max(axis=0)).astype(int) + 1, np.array(image.shape))
    if np.any(high <= low):
        raise InputError("the region to resample does not overlap the image")
    crop_affine = image.affine_lps.copy()
    crop_affine[:3, 3] = index_to_world(low[None].astype(np.float64), image.affine_lps)[0]
    crop_shape = tuple(int(n) for n in high - low)
    return resample_volume(source, crop_shape, crop_affine, interpolation=interpolation,  # type: ignore[arg-type]
                           default_value=default_value), low


def grid_at_spacing(volume: Volume, spacing_mm: float | tuple[float, float, float]) -> tuple[tuple[int, int, int],
                                                                                            np.ndarray]:
    """The grid along ``volume``'s own axes (same direction) that covers the same physical box — the outer faces
    of its first and last voxels — with voxels of ``spacing_mm`` (one number: isotropic). Returns its shape
    (i, j, k) and its index → world LPS mm affine (4, 4)."""
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"spacing must be positive mm, got {spacing_mm!r}")
    extent_mm = np.array(volume.shape) * volume.spacing
    shape = np.maximum(np.round(extent_mm / spacing).astype(int), 1)
    corner_world = index_to_world(np.full((1, 3), -0.5), volume.affine_lps)[0]
    origin = corner_world + volume.direction @ (0.5 * spacing)
    return tuple(int(n) for n in shape), affine_from_geometry(origin, spacing, volume.direction)  # type: ignore[return-value]


def resample_volume(source: Volume, shape: tuple[int, int, int], affine_lps: np.ndarray, *,
                    interpolation: str = "linear", default_value: float = 0.0) -> Volume:
    """``source`` resampled onto the grid ``shape`` (i, j, k) / ``affine_lps`` (float32; ``linear`` or ``nearest``;
    outside ``source``: ``default_value``)."""
    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {sorted(interpolators)}, got {interpolation!r}")
    reference = Volume(np.zeros(shape, np.float32), affine_lps).to_sitk()
    values = source.to_sitk()
    if values.GetPixelID() != sitk.sitkFloat32:
        values = sitk.Cast(values, sitk.sitkFloat32)
    resampled = sitk.Resample(values, reference, sitk.Transform(), interpolators[interpolation], float(default_value))
    return Volume(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0).astype(np.float32), affine_lps)
