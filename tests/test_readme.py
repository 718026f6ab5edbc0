"""The README's Python API example runs as written, on runs whose networks find and mesh a bright sphere."""

from pathlib import Path

import numpy as np

from helpers import AFFINE_CASES, BrightIsForeground, ImageLevelSetModel, blurred_sphere_hu, fake_runs
from implicitseg.geometry.frames import index_to_world
from implicitseg.io.configs import save_config
from implicitseg.io.images import Volume, write_image
from implicitseg.io.meshes import read_mesh
from implicitseg.methods import nudf, roi_detector

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_example() -> str:
    """The first ``python`` block of the README's "Python API" section."""
    section = README.read_text().split("\n## Python API\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_python_api_example_runs_and_meshes_the_object_in_world_mm(tmp_path, monkeypatch):
    affine = AFFINE_CASES["oblique"]
    sphere_center = index_to_world(np.array([[39.0, 29.0, 26.0]]), affine)[0]
    for case in ("laa_040", "laa_041"):
        write_image(tmp_path / "data" / "laa" / "imagesTs" / f"{case}.nii.gz",
                    Volume(blurred_sphere_hu(affine, (70, 64, 48), sphere_center, 12.0), affine))
    config = nudf.preset_config("nudf-demo")
    config.roi.size_mm, config.roi.res = 40.0, 48
    detector_config = roi_detector.preset_config("roi32")
    save_config(tmp_path / "runs" / "laa" / "config.yaml", config)
    save_config(tmp_path / "runs" / "roi" / "config.yaml", detector_config)
    fake_runs(monkeypatch, ("nudf", ImageLevelSetModel(), config), ("roi", BrightIsForeground(), detector_config))
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(python_api_example(), str(README), "exec"), namespace)

    for mesh in (read_mesh(tmp_path / "laa_040.vtk"), read_mesh(tmp_path / "pred" / "laa_041" / "mesh.vtk")):
        assert np.median(np.abs(np.linalg.norm(mesh.vertices_world_mm - sphere_center, axis=1) - 12.0)) < 0.1
    assert namespace["predictor"].config.meshing.band.cell_mm == 0.5
    assert (tmp_path / "pred" / "laa_041" / "prediction.json").is_file()
