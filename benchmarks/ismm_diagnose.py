"""Why ISMM refinement helps or hurts, stage by stage, each stage's error in mm (ISMM issue 19, item 1).

    .venv/bin/python benchmarks/ismm_diagnose.py --out bench_out/ismm_laa --initial all_four

Reads what ``benchmarks/ismm_table.py --out OUT`` left (``OUT/dataset``, ``OUT/prep``, the trained prior ``OUT/run``
and the initial segmentations ``OUT/initial/<name>/``) and measures, with the run's TIM settings:

- **prior capacity on the training shapes**: the zero level set of each training shape's own fitted codes against
  that shape's prepared surface points (anchor mm: canonical / global scale): symmetric mean and 95th-percentile
  nearest-point distance;
- **alignment**: PICCT of each held-out case's ground-truth surface and of its initial segmentation onto the
  template; ``align_shift_mm``: how far the ground-truth surface's points land apart under the two alignments
  (anchor mm; 0 = the damage did not move the alignment), ``align_rotation_deg`` between them (> 90: a flip), and
  ``truth_to_template_mm``: the aligned ground truth's mean distance to the template (the shape variation the
  deformations must carry);
- **prior capacity on held-out shapes** (``oracle_fit``): the prior fitted to the ground-truth surface itself (its
  own alignment, every point trusted): the best a refinement of this case can do;
- **trust rule**: the share of the initial surface's points that are wrong (> ``--wrong-mm`` from the ground
  truth) and of the trusted fitting points that are; the share of the ground truth within 2 mm of a trusted point
  (``truth_covered``);
- **fit**: the refinement as run (``paper``; ``guarded``: its labelmap after the safeguard of
  :func:`~implicitseg.inference.refinement.safeguard`) and with the trusted points replaced by the initial points that are
  right (``oracle_trust``: the same alignment, an oracle no real refinement has).

Each fit is scored against the ground truth: Dice on the image grid and the surface's symmetric mean distance (mm).
Prints one row per case and the medians; writes ``OUT/diagnose_<initial>_<alignment start>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree


def symmetric_mm(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, 95th percentile) of the nearest-point distances of two clouds (N, 3), (M, 3), both ways."""
    d = np.concatenate([cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]])
    return float(d.mean()), float(np.percentile(d, 95))


def rotation_degrees(a: np.ndarray, b: np.ndarray) -> float:
    cosine = (np.trace(a @ b.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/ismm_laa"))
    parser.add_argument("--initial", default="all_four", help="which OUT/initial/<name>/ to diagnose")
    parser.add_argument("--training-shapes", type=int, default=8, help="training shapes whose fit is measured")
    parser.add_argument("--cases", type=int, default=None, help="held-out cases (default: all)")
    parser.add_argument("--wrong-mm", type=float, default=1.0, help="an initial point this far from the truth is "
                                                                    "wrong")
    parser.add_argument("--points", type=int, default=6000, help="points per surface for the distances")
    parser.add_argument("--start", default=None, help="tim.alignment_start (default: the run's)")
    args = parser.parse_args()

    import torch

    from implicitseg.data.ismm import labelmap_surface
    from implicitseg.geometry.sampling import surface_samples
    from implicitseg.inference import refinement as tim
    from implicitseg.io.atomic import write_json
    from implicitseg.io.images import Volume, read_labelmap
    from implicitseg.methods import ismm
    from implicitseg.training.run import load_model

    torch.set_grad_enabled(True)
    model, config = load_model(ismm.RECIPE, args.out / "run", "best")
    scale = config.shapes.global_scale
    if args.start is not None:
        config.tim.alignment_start = args.start
    rng = np.random.default_rng(0)

    def cloud(mesh, n: int = args.points) -> np.ndarray:
        return surface_samples(mesh.vertices_world_mm, mesh.faces, n, rng)[0]

    def reseed(name: str) -> None:  # each row draws the same points whichever rows run before it
        nonlocal rng
        rng = np.random.default_rng(zlib.crc32(name.encode()))

    # prior capacity on the training shapes: each shape's own codes
    manifest = json.loads((args.out / "prep" / "manifest.json").read_text())
    code_rows = manifest["code_rows"]
    training = []
    for name in sorted(code_rows)[: args.training_shapes]:
        reseed(name)
        row = torch.tensor([code_rows[name]])
        with torch.no_grad():
            hyper, instance = model.hyper_codes(row), model.instance_codes(row)
        mesh = tim.zero_level_mesh(model, config.tim.mesh_resolution, hyper, instance)
        with np.load(args.out / "prep" / name / "samples.npz") as samples:
            truth_mm = samples["surface_points"][: args.points] / scale
        points_mm = surface_samples(mesh.vertices_canonical, mesh.faces, args.points, rng)[0] / scale
        mean_mm, p95_mm = symmetric_mm(points_mm, truth_mm)
        training.append({"case": name, "mean_mm": mean_mm, "p95_mm": p95_mm})
        print(f"training shape {name}: codes' surface to the shape {mean_mm:.2f} mm mean, {p95_mm:.2f} mm p95",
              flush=True)

    reseed("template")
    template_mm = tim.template_points_mm(model, config, rng)
    template_tree = cKDTree(template_mm)
    rows = []
    label_paths = sorted((args.out / "dataset" / "labelsTs").glob("*.nii.gz"))[: args.cases]
    for label_path in label_paths:
        case = label_path.name.replace(".nii.gz", "")
        reseed(case)
        start = time.perf_counter()
        labels = read_labelmap(label_path)
        truth = Volume((labels.array > 0).astype(np.uint8), labels.affine_lps)
        grid = (truth.shape, truth.affine_lps)
        initial = read_labelmap(args.out / "initial" / args.initial / f"{case}.nii.gz", allow_empty=True)
        truth_surface = labelmap_surface(truth, 0, "truth")
        truth_points = cloud(truth_surface)
        truth_tree = cKDTree(truth_points)
        row: dict[str, object] = {"case": case, "dice_initial": dice(initial.array > 0, truth.array > 0)}
        initial_surface = labelmap_surface(initial, 0, "initial")
        row["initial_mean_mm"] = symmetric_mm(cloud(initial_surface), truth_points)[0]

        truth_alignment = tim.align_initial(cloud(truth_surface, config.tim.initial_points), template_mm, config, 0)
        initial_points = cloud(initial_surface, config.tim.initial_points)
        alignment = tim.align_initial(initial_points, template_mm, config, 0)
        truth_picct, picct = truth_alignment.picct, alignment.picct
        row["align_shift_mm"] = float(np.linalg.norm(truth_picct.similarity.apply(truth_points)
                                                     - picct.similarity.apply(truth_points), axis=1).mean())
        row["align_rotation_deg"] = rotation_degrees(truth_picct.similarity.rotation, picct.similarity.rotation)
        row["align_scale_ratio"] = picct.similarity.scale / truth_picct.similarity.scale
        row["truth_to_template_mm"] = float(template_tree.query(truth_picct.similarity.apply(truth_points))[0].mean())

        def scored(alignment_used, trusted, tag: str) -> tim.Refinement:
            fitted = tim.fit_shape(model, config, alignment_used.picct, trusted, 0)
            mesh = tim.fitted_mesh_world_mm(fitted, config, alignment_used.picct, trusted)
            labelmap = tim.fitted_labelmap(fitted, alignment_used.picct, mesh, grid, 1)
            row[f"dice_{tag}"] = dice(labelmap.array > 0, truth.array > 0)
            row[f"mean_mm_{tag}"] = symmetric_mm(cloud(mesh), truth_points)[0]
            row[f"fit_residual_mm_{tag}"] = float(cKDTree(cloud(mesh)).query(trusted.points_world_mm)[0].mean())
            return tim.Refinement(mesh, labelmap, alignment_used.picct, trusted.points_world_mm, {}, {})

        dense, normals = surface_samples(truth_surface.vertices_world_mm, truth_surface.faces,
                                         int(config.tim.fitting_points) // 4, rng)
        scored(truth_alignment, tim.TrustedPoints(dense, normals, len(dense)), "oracle_fit")

        trusted = tim.trusted_points(surface_samples(initial_surface.vertices_world_mm, initial_surface.faces,
                                                     int(config.tim.fitting_points), rng), alignment, config)
        wrong_trusted = truth_tree.query(trusted.points_world_mm)[0] > args.wrong_mm
        wrong_initial = truth_tree.query(initial_points)[0] > args.wrong_mm
        row["wrong_share_initial"] = float(wrong_initial.mean())
        row["wrong_share_trusted"] = float(wrong_trusted.mean())
        row["truth_covered"] = float((cKDTree(trusted.points_world_mm).query(truth_points)[0] < 2.0).mean())
        paper = scored(alignment, trusted, "paper")
        guard = tim.safeguard(paper, initial, config)
        row["dice_guarded"] = dice(guard.labelmap.array > 0, truth.array > 0)
        row["guard"] = guard.decision

        # the oracle trusts as many fitting points as the paper's rule, drawn among those that are right
        dense, normals = surface_samples(initial_surface.vertices_world_mm, initial_surface.faces,
                                         int(config.tim.fitting_points), rng)
        right = rng.permutation(np.flatnonzero(truth_tree.query(dense)[0] <= args.wrong_mm))
        chosen = right[: max(len(trusted.points_world_mm), 4)]
        scored(alignment, tim.TrustedPoints(dense[chosen], normals[chosen], len(chosen)), "oracle_trust")
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)

    keys = [k for k in rows[0] if k not in ("case", "guard")]
    medians = {k: statistics.median(float(r[k]) for r in rows) for k in keys}
    print("median over", len(rows), "cases:")
    for k, v in medians.items():
        print(f"  {k:24s} {v:8.3f}")
    if training:
        print("training shapes: codes' surface to the shape, median of means",
              f"{statistics.median(t['mean_mm'] for t in training):.3f} mm, of p95",
              f"{statistics.median(t['p95_mm'] for t in training):.3f} mm")
    write_json(args.out / f"diagnose_{args.initial}_{config.tim.alignment_start}.json", {"training_shapes": training, "rows": rows,
                                                             "medians": medians, "args": {k: str(v) for k, v in
                                                                                          vars(args).items()}})


if __name__ == "__main__":
    main()
