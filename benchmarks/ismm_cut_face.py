"""Why ISMM does not regrow a missing part: the paper's trust rule against the same rule told where the cut face is.

    .venv/bin/python benchmarks/ismm_cut_face.py --out bench_out/ismm

Reads what ``benchmarks/ismm_table.py --out OUT`` left (the dataset and the trained prior ``OUT/run``), remakes
each held-out case's ``missing_part`` corruption exactly as that script does (same ``--seed``) and refines it
twice with the run's TIM settings: with the paper's rule, and with the same ranking after the
initial surface's points within ``--band-mm`` of the cutting plane are ranked last (an oracle: the corruption's own
plane, which no real refinement knows). A diagnostic, so it wraps the refinement's alignment step.
Prints per case and mean: Dice before / after each, the share of the removed voxels that came back, and the
share of the initial surface's points, and of the trusted ones under the paper's rule, that lie on the cut face;
writes ``OUT/cut_face.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import numpy as np

from ismm_table import corrupted, repairs


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/ismm"))
    parser.add_argument("--seed", type=int, default=5, help="ismm_table.py's --seed")
    parser.add_argument("--band-mm", type=float, default=2.0, help="distance to the cutting plane that marks a cut "
                                                                   "face point")
    args = parser.parse_args()

    import implicitseg.inference.refinement as refinement
    from implicitseg.data.ismm import labelmap_surface
    from implicitseg.io.atomic import write_json
    from implicitseg.io.images import Volume, read_labelmap
    from implicitseg.methods import ismm
    from implicitseg.training.run import load_model

    model, config = load_model(ismm.RECIPE, args.out / "run", "best")
    paper_scores = refinement.align_initial
    rows = []
    for label_path in sorted((args.out / "dataset" / "labelsTs").glob("*.nii.gz")):
        case = label_path.name.replace(".nii.gz", "")
        labels = read_labelmap(label_path)
        truth = Volume((labels.array > 0).astype(np.uint8), labels.affine_lps)
        corruption = corrupted(truth, args.seed, case, ("missing_part",))
        plane = corruption.applied["missing_part"]
        # remove_part cuts at `offset_mm` along `normal` from the centre of the labelled voxels
        center = truth.voxel_centers_world_mm(truth.array > 0).mean(axis=0)
        normal, offset_mm = np.array(plane["normal"]), float(plane["offset_mm"])

        seen: dict[str, float] = {}

        def scorer(tell_the_cut: bool):
            def scores(initial_points, template_points_mm, run_config, seed):
                alignment = paper_scores(initial_points, template_points_mm, run_config, seed)
                used, score = alignment.used, alignment.posterior_mass
                on_cut = np.abs((initial_points[used] - center) @ normal - offset_mm) < args.band_mm
                if tell_the_cut:
                    score = np.where(on_cut, -np.inf, score)
                n_trusted = max(4, int(round(run_config.tim.trusted_fraction * len(used))))
                seen["cut_share_of_surface"] = float(on_cut.mean())
                seen["cut_share_of_trusted"] = float(on_cut[np.argsort(-score, kind="stable")[:n_trusted]].mean())
                return dataclasses.replace(alignment, posterior_mass=score)
            return scores

        initial = corruption.labelmap
        surface = labelmap_surface(initial, 0, case)
        truth_mask, initial_mask = truth.array > 0, initial.array > 0
        row = {"case": case, "dice_before": dice(initial_mask, truth_mask)}
        for name, tell_the_cut in (("paper", False), ("told_the_cut", True)):
            refinement.align_initial = scorer(tell_the_cut)
            try:
                refined = refinement.refine_surface(model, config, surface, (truth.shape, truth.affine_lps), seed=0)
            finally:
                refinement.align_initial = paper_scores
            refined_mask = refined.labelmap.array > 0
            row[f"dice_{name}"] = dice(refined_mask, truth_mask)
            row[f"regrown_{name}"] = repairs(initial, refined.labelmap, truth)["regrown"]
            if name == "paper":
                row.update(seen)
        rows.append(row)
        print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{v}" for k, v in row.items()), flush=True)
    means = {key: statistics.mean(r[key] for r in rows) for key in rows[0] if key != "case"}
    spreads = {key: statistics.stdev(r[key] for r in rows) if len(rows) > 1 else 0.0 for key in means}
    print("mean ± std: " + ", ".join(f"{key} {means[key]:.3f} ± {spreads[key]:.3f}" for key in means))
    write_json(args.out / "cut_face.json", {"rows": rows, "mean": means, "std": spreads, "band_mm": args.band_mm})


if __name__ == "__main__":
    main()
