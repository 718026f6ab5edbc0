"""Render a predicted mesh beside its ground truth and over its image, as a PNG (the README's picture).

    .venv/bin/python benchmarks/render_mesh.py demo_out/predictions/laa_012 demo_out/dataset --out docs/demo_mesh.png

Left: the predicted surface in 3D, coloured by its distance to the ground-truth surface (mm). Right: the image
on the world axial plane through the ROI centre, with the predicted (red) and ground-truth (green) surfaces'
points that lie within 0.4 mm of that plane: both are in world LPS mm, so they fall on the image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from implicitseg.evaluation.surface import point_to_mesh_distance_mm, sample_surface
from implicitseg.geometry.frames import Roi
from implicitseg.io.atomic import atomic_path
from implicitseg.io.images import read_image, resample_to_roi
from implicitseg.io.meshes import read_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case_dir", type=Path, help="PRED/<case> folder (mesh.vtk, prediction.json)")
    parser.add_argument("dataset", type=Path, help="dataset folder with imagesTs/ and meshesTs/")
    parser.add_argument("--out", type=Path, default=Path("docs/demo_mesh.png"))
    args = parser.parse_args()

    record = json.loads((args.case_dir / "prediction.json").read_text())
    case = record["case"]
    pred = read_mesh(args.case_dir / f"mesh.{Path(record['mesh']).suffix[1:]}", space=record["mesh_space"])
    gt = read_mesh(args.dataset / "meshesTs" / f"{case}.vtk")
    roi = Roi.from_json(record["roi"])
    distance_mm = point_to_mesh_distance_mm(pred.vertices_world_mm[pred.faces].mean(axis=1), gt)

    figure = plt.figure(figsize=(12, 5.5))
    axes_3d = figure.add_subplot(1, 2, 1, projection="3d")
    colours = plt.cm.viridis(np.clip(distance_mm / 2.0, 0, 1))
    axes_3d.add_collection3d(Poly3DCollection(pred.vertices_world_mm[pred.faces], facecolors=colours, linewidths=0))
    low, high = pred.vertices_world_mm.min(axis=0), pred.vertices_world_mm.max(axis=0)
    middle, half = (low + high) / 2, (high - low).max() / 2
    for setter, m in zip((axes_3d.set_xlim, axes_3d.set_ylim, axes_3d.set_zlim), middle):
        setter(m - half, m + half)
    axes_3d.set_xlabel("x (L, mm)")
    axes_3d.set_ylabel("y (P, mm)")
    axes_3d.set_zlabel("z (S, mm)")
    axes_3d.set_title(f"{case}: prediction, colour = distance to GT (0–2 mm)")
    axes_3d.view_init(elev=20, azim=-60)

    image = read_image(next((args.dataset / "imagesTs").glob(f"{case}.*")))
    fine = Roi(roi.center_world_mm, roi.size_mm, 256)
    plane_zyx = resample_to_roi(image, fine, default_value=float(image.array.min()))
    axes_2d = figure.add_subplot(1, 2, 2)
    extent = [fine.origin_world_mm[0], fine.origin_world_mm[0] + fine.size_mm,
              fine.origin_world_mm[1] + fine.size_mm, fine.origin_world_mm[1]]
    axes_2d.imshow(plane_zyx[128], cmap="gray", vmin=-200, vmax=600, extent=extent)
    z_plane = fine.center_world_mm[2]
    for mesh, colour, label in ((gt, "lime", "ground truth"), (pred, "red", "prediction")):
        points = sample_surface(mesh, 200_000, seed=0)
        near = np.abs(points[:, 2] - z_plane) < 0.4
        axes_2d.scatter(points[near, 0], points[near, 1], s=0.5, c=colour, label=label)
    axes_2d.set_xlabel("x (L, mm)")
    axes_2d.set_ylabel("y (P, mm)")
    axes_2d.set_title(f"image on the world plane z = {z_plane:.1f} mm (LPS)")
    axes_2d.legend(loc="lower right", markerscale=10)
    figure.tight_layout()
    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
