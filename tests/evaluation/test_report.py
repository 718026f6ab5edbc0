"""``implicitseg report``: one self-contained HTML file with every case, its metrics worst first, slice overlays and
a 3D view that a real (headless) browser renders offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import trimesh

from helpers import AFFINE_CASES, blurred_sphere_hu, sphere_volume
from implicitseg.errors import InputError
from implicitseg.evaluation.report import build_report
from implicitseg.io.dataset import write_dataset_json
from implicitseg.io.images import Volume, write_image
from implicitseg.io.meshes import Mesh, write_mesh

SHAPE = (48, 44, 36)
RADIUS_MM = 10.0
VOID_ELEMENTS = {"meta", "img", "input", "br", "hr", "link"}


def _sphere_mesh(center: np.ndarray, radius: float) -> Mesh:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return Mesh(np.asarray(sphere.vertices) + center, np.asarray(sphere.faces))


def _write_dataset(root: Path, n_cases: int) -> list[str]:
    """Test images with a bright sphere (oblique grid), GT meshes and labelmaps, and two methods' predictions:
    ``pred_a`` a surface (sphere shifted by 0.2 mm more in each case, so that it shows beside the ground truth in
    every 3D view) and ``pred_b`` a labelmap + mesh."""
    affine = AFFINE_CASES["flipped_oblique"]
    ids = [f"case_{i:02d}" for i in range(n_cases)]
    for index, identifier in enumerate(ids):
        center = Volume(np.zeros(SHAPE), affine).voxel_centers_world_mm(np.ones(SHAPE, bool)).mean(axis=0)
        write_image(root / "ds" / "imagesTs" / f"{identifier}.nii.gz",
                    Volume(blurred_sphere_hu(affine, SHAPE, center, RADIUS_MM), affine))
        write_image(root / "ds" / "labelsTs" / f"{identifier}.nii.gz",
                    Volume(sphere_volume(affine, SHAPE, center, RADIUS_MM).astype(np.uint8), affine))
        write_mesh(root / "ds" / "meshesTs" / f"{identifier}.vtk", _sphere_mesh(center, RADIUS_MM))
        image = str(root / "ds" / "imagesTs" / f"{identifier}.nii.gz")
        shifted = _sphere_mesh(center + np.array([0.2 * (index + 1), 0.0, 0.0]), RADIUS_MM)
        write_mesh(root / "pred_a" / identifier / "mesh.vtk", shifted)
        (root / "pred_a" / identifier / "prediction.json").write_text(json.dumps(
            {"case": identifier, "image": image, "method": "nudf", "preset": "nudf-demo", "mesh_space": "LPS"}))
        write_mesh(root / "pred_b" / identifier / "mesh.vtk", _sphere_mesh(center, RADIUS_MM - 1.0))
        write_image(root / "pred_b" / identifier / "labelmap.nii.gz",
                    Volume(sphere_volume(affine, SHAPE, center, RADIUS_MM - 1.0).astype(np.uint8), affine))
        (root / "pred_b" / identifier / "prediction.json").write_text(json.dumps(
            {"case": identifier, "image": image, "method": "unet", "preset": "unet-demo", "mesh_space": "LPS"}))
    write_dataset_json(root / "ds", name="spheres", modality="CT", labels={"0": "background", "1": "sphere"},
                       training=[], test=[f"imagesTs/{i}.nii.gz" for i in ids])
    return ids


class _Structure(HTMLParser):
    """Checks that tags nest and close, and collects what a self-contained page must not have."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []
        self.ids: set[str] = set()
        self.canvases = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(f"{tag} {name}={value[:60]}")
        if tag == "link":
            self.external.append("link")
        self.canvases += tag == "canvas"
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
        else:
            self.open.pop()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    ids = _write_dataset(root, 3)
    run = root / "run" / "logs" / "csv" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train_loss_epoch,val_loss\n0,3,0.9,\n0,3,,0.8\n1,7,0.5,\n1,7,,0.45\n")
    written = build_report([root / "pred_a", root / "pred_b"], root / "report.html", gt=root / "ds",
                           runs=[root / "run"])
    return root, ids, written


def test_report_is_valid_self_contained_and_holds_every_case(report):
    root, ids, written = report
    text = (root / "report.html").read_text()
    parser = _Structure()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.open == []
    assert parser.external == []  # every image, script and style is inside the file
    assert "<script src" not in text and "http" not in text.split("<script")[0]
    assert {f"case-{i}" for i in ids} <= parser.ids and parser.canvases == len(ids)
    assert text.count("<img class='slices'") == len(ids) and "alt='training curves'" in text
    assert written["n_cases"] == 3 and written["methods"] == ["nudf (nudf-demo)", "unet (unet-demo)"]
    assert written["size_bytes"] == len(text.encode())


def test_metrics_table_lists_the_worst_case_first(report):
    root, ids, _ = report
    text = (root / "report.html").read_text()
    table = text[text.index("<h2>Metrics, worst case first</h2>"):text.index("</table>")]
    rows = re.findall(r"<tr><td><a href='#case-(case_\d+)'>[^<]*</a></td><td>([^<]*)</td>", table)
    assert len(rows) == 2 * len(ids)
    nudf_order = [case for case, method in rows if method.startswith("nudf")]
    assert nudf_order == ["case_02", "case_01", "case_00"]  # shifted furthest = worst Chamfer
    assert "<th>dice</th>" in table and "<th>chamfer_symmetric_mm</th>" in table and "<th>status</th>" in table


def test_a_ground_truth_case_without_a_prediction_is_a_row_counted_and_listed_first(report, tmp_path):
    root, ids, _ = report
    shutil.copytree(root / "ds", tmp_path / "ds")
    affine = AFFINE_CASES["flipped_oblique"]
    center = Volume(np.zeros(SHAPE), affine).voxel_centers_world_mm(np.ones(SHAPE, bool)).mean(axis=0)
    write_mesh(tmp_path / "ds" / "meshesTs" / "case_99.vtk", _sphere_mesh(center, RADIUS_MM))
    written = build_report([root / "pred_a"], tmp_path / "r.html", gt=tmp_path / "ds")
    text = (tmp_path / "r.html").read_text()
    table = text[text.index("<h2>Metrics, worst case first</h2>"):text.index("</table>")]
    assert "nudf (nudf-demo): 4 case(s): 3 scored, 1 missing" in table
    first_row = table[table.index("<tr><td>", table.index("<th>status</th>")):].split("</tr>")[0]
    assert first_row.startswith("<tr><td>case_99</td><td>nudf (nudf-demo)</td><td>missing</td>")
    assert written["n_cases"] == len(ids)  # no section for a case with nothing to show


def test_a_folder_without_predictions_or_a_run_without_logs_is_refused(tmp_path, report):
    root, _, _ = report
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a prediction folder"):
        build_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(InputError, match="no training log"):
        build_report([root / "pred_a"], tmp_path / "r.html", runs=[tmp_path / "empty"])
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    return found


OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]


def test_headless_chromium_renders_the_3d_view_and_the_overlays_offline(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (CI installs it)")
    root, _, _ = report
    url = (root / "report.html").as_uri()
    dom = subprocess.run([browser, *OFFLINE, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    painted = [int(v) for v in re.findall(r'data-painted="(\d+)"', dom)]
    assert painted and painted[0] > 2000  # the first case's view drew its surfaces (340 × 300 canvas)
    screenshot = tmp_path / "report.png"
    subprocess.run([browser, *OFFLINE, "--window-size=1200,2400", f"--screenshot={screenshot}", url],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot).convert("RGB")).reshape(-1, 3).astype(int)

    def count(hex_color: str, tolerance: int = 40) -> int:
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).max(axis=1) < tolerance).sum())

    # the first case's view is drawn at once; the others when the browser reports them in view, which a
    # screenshot may or may not wait for, so these counts must hold with the first view alone
    assert count("#27ae60") > 200  # ground-truth contours and surface
    assert count("#e4572e") > 200  # the first method's
    assert len(np.unique(pixels, axis=0)) > 50  # not a blank page
