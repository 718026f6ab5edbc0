import locale

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import AFFINE_CASES, sphere_volume
from implicitseg.errors import InputError
from implicitseg.geometry.frames import Roi, index_to_world
from implicitseg.io.images import (Volume, read_image, read_image_series, read_labelmap, resample_to_roi,
                                   roi_overlaps_image, write_image)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("name", ["oblique", "flipped_oblique", "anisotropic"])
def test_image_round_trip_keeps_voxels_and_physical_space(tmp_path, suffix, name):
    rng = np.random.default_rng(1)
    volume = Volume(rng.normal(size=(7, 9, 5)).astype(np.float32), AFFINE_CASES[name])
    path = tmp_path / f"image{suffix}"
    write_image(path, volume)
    back = read_image(path)
    assert np.array_equal(back.array, volume.array)
    # NIfTI stores RAS and sform in float32: sub-micrometre, not bit, exactness
    assert np.abs(back.affine_lps - volume.affine_lps).max() < 1e-4
    assert not list(tmp_path.glob(".tmp-*"))


def test_nifti_on_disk_is_ras_and_reader_returns_lps(tmp_path):
    volume = Volume(np.zeros((4, 4, 4), np.float32), AFFINE_CASES["anisotropic"])
    path = tmp_path / "image.nii.gz"
    write_image(path, volume)
    import nibabel

    affine_ras = nibabel.load(str(path)).affine
    assert np.allclose(np.diag([-1, -1, 1, 1]) @ affine_ras, volume.affine_lps, atol=1e-4)


def _write_dicom_series(folder, volume: Volume) -> None:
    """One CT slice per file, with position/orientation tags, as a scanner writes them. GDCM's writer sets the process
    locale to "C" (text files would then open as ASCII in every later test of this worker): it is put back."""
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(folder, sitk.Cast(volume.to_sitk(), sitk.sitkInt16))
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_slices(folder, image: sitk.Image) -> None:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1"
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0037": "\\".join(f"{c:.6f}" for c in list(direction[:, 0]) + list(direction[:, 1])),
            "0020|0013": str(k + 1),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_folder_reads_with_physical_space(tmp_path):
    affine = AFFINE_CASES["oblique"]
    array = np.round(np.random.default_rng(2).uniform(-1000, 1000, size=(6, 5, 4))).astype(np.float32)
    volume = Volume(array, affine)
    folder = tmp_path / "series"
    folder.mkdir()
    _write_dicom_series(folder, volume)
    back = read_image(folder)
    assert np.array_equal(back.array, array)
    assert np.abs(back.affine_lps - affine).max() < 1e-4


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
def test_resample_to_roi_puts_an_object_where_it_is_in_the_world(name):
    affine = AFFINE_CASES[name]
    shape = (60, 70, 50)
    center_world = index_to_world(np.array([[30.0, 35.0, 25.0]]), affine)[0]
    sphere_world = center_world + np.array([8.0, -5.0, 3.0])  # off-centre, different per axis
    volume = Volume(sphere_volume(affine, shape, sphere_world, 6.0), affine)
    roi = Roi(tuple(center_world), 40.0, 41)
    roi_zyx = resample_to_roi(volume, roi, interpolation="linear")
    assert roi_zyx.shape == (41, 41, 41)
    z, y, x = np.argwhere(roi_zyx > 0.5).mean(axis=0)
    found_world = roi.roi_index_to_world(np.array([[x, y, z]]))[0]
    assert np.linalg.norm(found_world - sphere_world) < 0.5


def test_roi_overlap_fraction():
    affine = AFFINE_CASES["axis_aligned"]
    volume = Volume(np.zeros((50, 50, 50), np.float32), affine)
    assert roi_overlaps_image(volume, Roi((24.5, 24.5, 24.5), 30.0, 8)) == 1.0
    assert roi_overlaps_image(volume, Roi((500.0, 0.0, 0.0), 30.0, 8)) == 0.0


def test_bad_images_give_input_errors_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="broken.nii.gz: cannot read"):
        read_image(broken)
    nan_image = tmp_path / "nan.nrrd"
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    write_image(nan_image, Volume(array, np.eye(4)))
    with pytest.raises(InputError, match="NaN"):
        read_image(nan_image)
    empty_label = tmp_path / "empty.nii.gz"
    write_image(empty_label, Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)))
    with pytest.raises(InputError, match="empty"):
        read_labelmap(empty_label)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(InputError, match="no DICOM"):
        read_image(tmp_path / "empty_folder")


def test_image_series_round_trip_keeps_frames_geometry_and_time_step(tmp_path):
    import nibabel

    from implicitseg.io.images import VolumeSeries, read_image, read_image_series, write_image_series

    affine = AFFINE_CASES["flipped_oblique"]
    frames = np.random.default_rng(0).integers(0, 1000, size=(4, 5, 6, 7)).astype(np.int16)
    write_image_series(tmp_path / "cine.nii.gz", VolumeSeries(frames, affine, 0.25))
    series = read_image_series(tmp_path / "cine.nii.gz")
    assert np.array_equal(series.frames, frames) and series.time_step == 0.25
    assert np.allclose(series.affine_lps, affine, atol=1e-5)
    assert nibabel.load(tmp_path / "cine.nii.gz").shape == (5, 6, 7, 4)  # time last on disk, as NIfTI wants
    with pytest.raises(InputError, match="expected a 3D single-channel image, got 4D"):
        read_image(tmp_path / "cine.nii.gz")  # a 3D method is told, not crashed
    write_image_series(tmp_path / "one.nii.gz", VolumeSeries(frames[:1], affine))
    assert read_image_series(tmp_path / "one.nii.gz").frames.shape == (1, 5, 6, 7)


def _noise_image(path, shape=(24, 20, 16)):
    """A valid image that compresses poorly (noise), written by SimpleITK with compression: its bytes, (Z, Y, X)."""
    array = np.random.default_rng(3).normal(0.0, 300.0, size=shape[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 1.5))
    sitk.WriteImage(image, str(path), useCompression=True)
    return array


@pytest.mark.parametrize("suffix, data_suffix", [(".nii.gz", None), (".nrrd", None), (".mha", None),
                                                 (".mhd", ".zraw"), (".nhdr", ".raw.gz")])
@pytest.mark.parametrize("keep", ["3000 bytes", "half", "all but 5 bytes"])
def test_truncated_image_files_are_named_input_errors(tmp_path, capfd, suffix, data_suffix, keep):
    path = tmp_path / f"image{suffix}"
    _noise_image(path)
    cut = tmp_path / f"image{data_suffix}" if data_suffix else path
    data = cut.read_bytes()
    cut.write_bytes(data[:{"3000 bytes": 3000, "half": len(data) // 2, "all but 5 bytes": len(data) - 5}[keep]])
    with pytest.raises(InputError, match=rf"image{suffix}: truncated file"):
        read_image(path)
    with pytest.raises(InputError, match="truncated file"):
        read_image_series(path)
    assert "MetaImage" not in capfd.readouterr().err  # nothing but the one error line for the user


def test_uncompressed_nifti_shorter_than_its_header_says_is_refused(tmp_path):
    path = tmp_path / "image.nii"
    _noise_image(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=r"image.nii: truncated file: .*15,260 of the 15,360 bytes"):
        read_image(path)


def test_corrupt_gzip_stream_is_refused(tmp_path):
    path = tmp_path / "image.nii.gz"
    _noise_image(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="image.nii.gz: damaged file"):
        read_image(path)


def test_multi_member_gzip_and_trailing_padding_still_read(tmp_path):
    """Some tools (bgzip, pigz -i) write several gzip members; some pad files: both are valid images."""
    import gzip

    plain = tmp_path / "image.nii"
    array = _noise_image(plain)
    raw = plain.read_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]) + bytes(16))
    assert np.array_equal(read_image(path, dtype=np.int16).array.transpose(2, 1, 0), array)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nan_in_a_nifti_file_is_refused_though_simpleitk_reads_it_as_zero(tmp_path, suffix):
    array = np.ones((6, 5, 4), np.float32)
    array[1, 2, 3] = np.nan
    write_image(tmp_path / f"nan{suffix}", Volume(array, np.eye(4)))
    with pytest.raises(InputError, match=rf"nan{suffix}: image holds NaN or infinite intensities"):
        read_image(tmp_path / f"nan{suffix}")
    assert read_image(tmp_path / f"nan{suffix}", allow_nonfinite=True).shape == (6, 5, 4)
