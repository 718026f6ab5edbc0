"""NISF on the synthetic cine phantom: what a fitted code segments, where the images never looked.

    .venv/bin/python benchmarks/nisf_table.py --out bench_out/nisf --cases 24 --test-cases 4 --minutes 20

Runs synth (cardiac) → prepare (``--preset``) → train for ``--minutes`` (validation fitting picks the inference
steps) → for each held-out subject: fit its code to the whole stack (timed) and score
- Dice per class on the input grid (every frame) against the stored labelmaps;
- Dice in the gaps between slices: the labels half-way between neighbouring slices (voxel centres at k + 0.5),
  against the phantom, which is known there;
- Dice on held-out slices: the code fitted to every other slice only, scored on the slices left out;
- Dice on a long-axis plane through the LV (1 mm pixels, end-diastole), a plane the short-axis stack never
  acquired, against the phantom;
and the overfitting curve (mean foreground Dice on the input grid vs fitting step) as a PNG.
Prints the table (Dice mean ± sample std over the subjects) and writes ``OUT/nisf_table.json`` and
``OUT/fitting_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from paper_table import train_in_subprocess

CLASSES = {1: "LV pool", 2: "LV myocardium", 3: "RV pool"}


def dice_per_class(predicted, truth) -> dict[str, float]:
    """Dice of each class of :data:`CLASSES` (NaN when absent from both)."""
    scores = {}
    for value, name in CLASSES.items():
        a, b = predicted == value, truth == value
        total = int(a.sum() + b.sum())
        scores[name] = float("nan") if total == 0 else 2.0 * float((a & b).sum()) / total
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/nisf"))
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--preset", default="nisf-demo")
    parser.add_argument("--curve-steps", type=int, default=600)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import torch
    from matplotlib import pyplot as plt

    from implicitseg.data.nisf import normalised_frames
    from implicitseg.data.synthetic import write_synthetic_dataset
    from implicitseg.data.synthetic.cardiac import CardiacPhantom
    from implicitseg.fitting.latent import fit_latent
    from implicitseg.geometry.frames import image_center_world_mm, index_to_world, nisf_coordinates
    from implicitseg.io.images import VolumeSeries, read_image_series
    from implicitseg.methods import get_method, pipeline
    from implicitseg.methods.nisf import class_probabilities, fit_subject

    out = args.out
    dataset = out / "dataset"
    if not (dataset / "dataset.json").is_file():
        write_synthetic_dataset(dataset, kind="cardiac", n_cases=args.cases, n_test=args.test_cases, seed=args.seed)
    if not (out / "prep" / "manifest.json").is_file():
        pipeline.run_prepare(dataset, out / "prep", method="nisf", preset=args.preset, workers=2, show_progress=False)
    training = train_in_subprocess(out / "prep", out / "run", args.minutes)
    model, config = get_method("nisf").load(out / "run", "best", torch.device("cpu"))
    device = torch.device("cpu")

    def labels_on(network, latent, points_world, center, frame_time):
        return class_probabilities(network, latent, points_world, center, config, frame_time).argmax(axis=1)

    rows, curves = [], []
    for image_path in sorted((dataset / "imagesTs").iterdir()):
        case = image_path.name.split(".")[0]
        series = read_image_series(image_path)
        truth = read_image_series(dataset / "labelsTs" / image_path.name).frames.astype(np.uint8)
        phantom = CardiacPhantom.from_json((dataset / "phantoms" / f"{case}.json").read_text())
        n_frames, spatial = series.frames.shape[0], series.frames.shape[1:]
        center = image_center_world_mm(series.frames.shape, series.affine_lps)
        grid_world = index_to_world(np.indices(spatial).reshape(3, -1).T.astype(float), series.affine_lps)

        start = time.perf_counter()
        network, latent, counts = fit_subject(model, config, series, device=device)
        fit_s = time.perf_counter() - start
        predicted = np.stack([labels_on(network, latent, grid_world, center, f / n_frames).reshape(spatial)
                              for f in range(n_frames)])
        grid_dice = dice_per_class(predicted, truth)

        gap_index = np.indices((spatial[0], spatial[1], spatial[2] - 1)).reshape(3, -1).T.astype(float)
        gap_index[:, 2] += 0.5
        gap_world = index_to_world(gap_index, series.affine_lps)
        gap_dice = dice_per_class(np.concatenate([labels_on(network, latent, gap_world, center, f / n_frames)
                                                  for f in range(n_frames)]),
                                  np.concatenate([phantom.labels_at(gap_world, f / n_frames) for f in range(n_frames)]))

        every_other = series.affine_lps.copy()
        every_other[:3, 2] *= 2.0  # slices 0, 2, 4, …: twice the slice gap
        sparse_series = VolumeSeries(series.frames[..., ::2], every_other, series.time_step)
        sparse_network, sparse_latent, _ = fit_subject(model, config, sparse_series, device=device)
        held_out = np.indices((spatial[0], spatial[1], spatial[2])).reshape(3, -1).T
        held_out = held_out[held_out[:, 2] % 2 == 1]
        held_world = index_to_world(held_out.astype(float), series.affine_lps)
        # the sparse stack's own centre: the coordinates of the sparse fit are relative to it
        sparse_center = image_center_world_mm(sparse_series.frames.shape, sparse_series.affine_lps)
        held_dice = dice_per_class(
            np.concatenate([labels_on(sparse_network, sparse_latent, held_world, sparse_center, f / n_frames)
                            for f in range(n_frames)]),
            np.concatenate([truth[f][tuple(held_out.T)] for f in range(n_frames)]))

        axes = np.array(phantom.axes)
        u = np.arange(-80, 81, 1.0)
        plane_world = (np.array(phantom.center_mm)[None, None] + u[:, None, None] * axes[:, 0]
                       + (u[None, :, None] + 30.0) * axes[:, 2]).reshape(-1, 3)
        plane_dice = dice_per_class(labels_on(network, latent, plane_world, center, 0.0),
                                    phantom.labels_at(plane_world, 0.0))

        # the overfitting curve: mean foreground Dice on frames 0 and T/2 while the code is fitted
        intensity = normalised_frames(series.frames)
        index = np.indices(spatial).reshape(3, -1).T
        coordinates = np.concatenate([nisf_coordinates(index, series.affine_lps, center, config, f / n_frames)
                                      for f in range(n_frames)])
        curve = []

        def record(step, fitted, code):
            scores = []
            for f in (0, n_frames // 2):
                labels = labels_on(fitted, code, grid_world, center, f / n_frames).reshape(spatial)
                scores.append(np.nanmean(list(dice_per_class(labels, truth[f]).values())))
            curve.append((step, float(np.mean(scores))))

        fit_latent(model.network, torch.from_numpy(coordinates), torch.from_numpy(intensity.reshape(-1)),
                   config.fit, steps=args.curve_steps, latent_l2=config.train.latent_l2,
                   generator=torch.Generator().manual_seed(0), every=25, on_step=record)
        curves.append((case, curve))
        rows.append({"case": case, "fit_s": fit_s, "fit_steps": counts["fit_steps"], "grid": grid_dice,
                     "gaps": gap_dice, "held_out_slices": held_dice, "long_axis_plane": plane_dice})

    def summary(key):
        # sample standard deviation (ddof = 1), as everywhere in implicitseg (evaluation/stats.py)
        return {name: (statistics.mean(r[key][name] for r in rows), statistics.stdev(r[key][name] for r in rows))
                for name in CLASSES.values()}

    report = {"rows": rows, "summary": {key: summary(key) for key in ("grid", "gaps", "held_out_slices",
                                                                       "long_axis_plane")},
              "fit_s_mean": statistics.mean(r["fit_s"] for r in rows), "training": training,
              "inference_steps": int(model.inference_steps), "curves": curves, "preset": config.preset}
    (out / "nisf_table.json").write_text(json.dumps(report, indent=1))
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for case, curve in curves:
        axis.plot(*zip(*curve), label=case)
    axis.axvline(int(model.inference_steps), color="k", linestyle="--", label="validated steps")
    axis.set_xlabel("fitting step")
    axis.set_ylabel("mean foreground Dice")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.savefig(out / "fitting_curve.png", dpi=100, bbox_inches="tight")

    print(f"\n## NISF ({config.preset}, {training['epochs_completed']} epochs in {training['wall_s'] / 60:.1f} min), "
          f"{len(rows)} held-out cine stacks; inference steps {int(model.inference_steps)}")
    print("| where | " + " | ".join(CLASSES.values()) + " |")
    print("|---|" + "---|" * len(CLASSES))
    for key, title in (("grid", "input grid (all frames)"), ("gaps", "between slices (phantom)"),
                       ("held_out_slices", "held-out slices (fit on every other)"),
                       ("long_axis_plane", "long-axis plane (phantom, ED)")):
        values = report["summary"][key]
        print(f"| {title} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in values.values()) + " |")
    print(f"fitting time per subject (CPU): {report['fit_s_mean']:.1f} s; curve: {out / 'fitting_curve.png'}")


if __name__ == "__main__":
    main()
