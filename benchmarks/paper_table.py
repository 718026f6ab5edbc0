"""The NUDF paper's table, side by side: NUDF and the U-Net baseline trained with the same budget on the same
synthetic LAA set, both predicting held-out images through the same ROI detector.

    .venv/bin/python benchmarks/paper_table.py --out bench_out/paper --cases 24 --minutes 10 --roi-minutes 3

Runs synth → prepare (nudf, unet, roi) → train (each in its own process, for its wall-time budget, so its peak
memory is its own) → predict the test images with ``--roi-run`` (no label, no hint) → evaluate, through the
same pipeline functions as the CLI. Prints, per method: chamfer_pred_to_gt_mm (the paper's "Chamfer"),
chamfer_symmetric_mm, accuracy_90_mm, completion_at_2mm, hd95_mm (mean over the test cases, with how many were
scored), training time and epochs, training peak memory, prediction time per image; the ROI detector's centre
error (mm) against each test label's centre of mass; the NUDF / U-Net ratios next to the paper's; and the paired
comparison NUDF − U-Net over the same test cases (``implicitseg compare``: mean difference, 95 % bootstrap
interval, Wilcoxon p), on which a claim of "lower" rests. Writes ``OUT/paper_table.json``. A method trained before
(``OUT/training_<method>.json``) is not trained again: a re-run predicts and scores with the code of the day.

The U-Net's surface is the isosurface of a CLOSED labelmap (the appendage lumen closed at the ostium), while
the ground truth is the OPEN appendage wall: the cap over the ostium counts as error in its predicted→GT
distances. completion_at_2mm (GT→prediction) is unaffected by that cap; the paper reports the same caveat.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from implicitseg.config.sections import PRECISIONS

PAPER = {"chamfer_ratio": 0.425 / 0.877, "completion_nudf": 0.9816, "completion_unet": 0.9471}
"""The NUDF paper's LAA table (20 test CTs, input 64³): NUDF 0.425 mm vs U-Net 0.877 mm; completion 98.16 % vs 94.71 %."""

METRICS = ("chamfer_pred_to_gt_mm", "chamfer_symmetric_mm", "accuracy_90_mm", "completion_at_2mm", "hd95_mm")


def _hms(minutes: float) -> str:
    seconds = max(int(minutes * 60), 10)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_worker(prep: Path, run: Path, minutes: float, preset: str | None = None,
                 max_epochs: int | None = None, precision: str | None = None) -> dict:
    """Train one prepared folder in this process (with ``preset``, default the one it was prepared with; in
    ``precision``, default the preset's ``train.precision``) for ``minutes`` or ``max_epochs``, whichever ends
    first; returns the summary with wall time and peak memory."""
    import torch

    from implicitseg.config import Settings
    from implicitseg.methods import pipeline

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    settings = [Settings("--precision", {"train.precision": precision})] if precision else []
    summary = pipeline.run_train(prep, run, preset=preset, settings=settings, max_time=_hms(minutes),
                                 max_epochs=max_epochs, resume=(run / "checkpoints" / "last.ckpt").is_file(),
                                 show_progress=False)
    summary["wall_s"] = time.perf_counter() - start
    summary["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024
    summary["memory_method"] = "ru_maxrss increase (CPU)"
    if torch.cuda.is_available():
        summary["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        summary["memory_method"] = "torch.cuda.max_memory_allocated"
    return summary


def train_in_subprocess(prep: Path, run: Path, minutes: float, preset: str | None = None,
                        max_epochs: int | None = None, precision: str | None = None) -> dict:
    """:func:`train_worker` in a fresh process (its peak memory is its own); returns the summary."""
    command = [sys.executable, __file__, "--train-worker", str(prep), str(run), str(minutes)]
    command += ["--train-preset", preset] if preset else []
    command += ["--train-epochs", str(max_epochs)] if max_epochs else []
    command += ["--train-precision", precision] if precision else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training {prep} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/paper"))
    parser.add_argument("--dataset", type=Path, default=None, help="an existing LAA dataset (default: synthesise one)")
    parser.add_argument("--cases", type=int, default=24, help="synthetic training cases (test cases: cases // 5)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of NUDF and of the U-Net each")
    parser.add_argument("--roi-minutes", type=float, default=3.0, help="training budget of the ROI detector")
    parser.add_argument("--nudf-preset", default="nudf-demo")
    parser.add_argument("--unet-preset", default="unet-demo")
    parser.add_argument("--roi-preset", default="roi32")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="arithmetic of both trainings (default auto: bf16-mixed for both where the device runs "
                             "it natively), so that neither method gets a faster arithmetic than the other")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-worker", nargs=3, metavar=("PREP", "RUN", "MINUTES"), help=argparse.SUPPRESS)
    parser.add_argument("--train-preset", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-epochs", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-precision", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker:
        prep, run, minutes = args.train_worker
        print(json.dumps(train_worker(Path(prep), Path(run), float(minutes), args.train_preset, args.train_epochs,
                                      args.train_precision)))
        return

    import numpy as np

    from implicitseg.evaluation.compare import compare_evaluations, format_comparison
    from implicitseg.inference.roi import label_center_world_mm, label_for_image
    from implicitseg.io.atomic import write_json
    from implicitseg.methods import pipeline

    out = args.out
    dataset = args.dataset or out / "dataset"
    if not (dataset / "dataset.json").is_file():
        pipeline.run_synth(dataset, kind="laa", n_cases=args.cases, seed=args.seed)
    presets = {"nudf": args.nudf_preset, "unet": args.unet_preset, "roi": args.roi_preset}
    prepare_s = {}
    for method, preset in presets.items():
        start = time.perf_counter()
        if not (out / f"prep_{method}" / "manifest.json").is_file():
            pipeline.run_prepare(dataset, out / f"prep_{method}", method=method, preset=preset, workers=args.workers,
                                 show_progress=False)
        prepare_s[method] = time.perf_counter() - start

    training = {}
    for method, minutes, precision in (("roi", args.roi_minutes, None), ("nudf", args.minutes, args.precision),
                                       ("unet", args.minutes, args.precision)):
        record = out / f"training_{method}.json"  # a finished training is not run again (delete it to retrain)
        if not record.is_file():
            write_json(record, train_in_subprocess(out / f"prep_{method}", out / f"run_{method}", minutes,
                                                   precision=precision))
        training[method] = json.loads(record.read_text())

    rows = {}
    for method in ("nudf", "unet"):
        predictions = out / f"predictions_{method}"
        # an image the model finds no surface in is a failed row of the evaluation, not a crash of the table
        results = pipeline.run_predict(out / f"run_{method}", [dataset], predictions, roi_run=out / "run_roi",
                                       keep_going=True, show_progress=False)
        failed = {r["case"]: r["error"] for r in results if "error" in r}
        predicted = [r for r in results if "error" not in r]
        pipeline.run_evaluate(predictions, dataset, out / f"metrics_{method}")
        summary = json.loads((out / f"metrics_{method}.summary.json").read_text())
        roi_errors = {r["case"]: float(np.linalg.norm(np.array(r["roi"]["center_world_mm"]) - label_center_world_mm(
            label_for_image(dataset / "labelsTs", Path(r["image"]))))) for r in predicted}
        rows[method] = {
            "preset": presets[method],
            "metrics_mean": {m: summary["metrics"][m]["mean"] for m in METRICS},
            "metrics_median": {m: summary["metrics"][m]["median"] for m in METRICS},
            "n_test": len(results), "n_scored": summary["n_scored"], "n_cases": summary["n_cases"],
            "train_min": training[method]["wall_s"] / 60, "epochs": training[method]["epochs_completed"],
            "precision": training[method].get("precision"),
            "train_peak_mb": training[method]["peak_mb"], "memory_method": training[method]["memory_method"],
            "predict_s_median": statistics.median(r["timings"]["total_s"] for r in predicted) if predicted else None,
            "failed": failed,
            "roi_center_error_mm": roi_errors,
        }

    nudf, unet = rows["nudf"]["metrics_mean"], rows["unet"]["metrics_mean"]
    paired = compare_evaluations(out / "metrics_unet", out / "metrics_nudf")  # B - A = NUDF - U-Net, per case
    chamfer = paired["metrics"]["chamfer_pred_to_gt_mm"]
    comparison = {
        "chamfer_ratio_nudf_over_unet": nudf["chamfer_pred_to_gt_mm"] / unet["chamfer_pred_to_gt_mm"],
        "chamfer_ratio_paper": PAPER["chamfer_ratio"],
        "completion_nudf": nudf["completion_at_2mm"], "completion_unet": unet["completion_at_2mm"],
        "completion_paper": [PAPER["completion_nudf"], PAPER["completion_unet"]],
        "chamfer_lower_for_nudf": bool(chamfer["ci95"][1] < 0),  # the whole 95 % interval of NUDF - U-Net below 0
        "chamfer_paired": chamfer,
        "completion_order": ("nudf higher" if nudf["completion_at_2mm"] > unet["completion_at_2mm"] else
                             "tie" if nudf["completion_at_2mm"] == unet["completion_at_2mm"] else "unet higher"),
        "paired_nudf_minus_unet": paired,
    }
    detector = {"preset": presets["roi"], "train_min": training["roi"]["wall_s"] / 60,
                "epochs": training["roi"]["epochs_completed"],
                # the same detector centres both methods' ROIs: its error on every image either method predicted
                "center_error_mm": {**rows["unet"]["roi_center_error_mm"], **rows["nudf"]["roi_center_error_mm"]}}
    report = {"rows": rows, "comparison": comparison, "detector": detector, "prepare_s": prepare_s,
              "budget_minutes": args.minutes, "dataset": str(dataset)}
    (out / "paper_table.json").write_text(json.dumps(report, indent=1))

    print(f"\n## NUDF vs U-Net, same data, same {args.minutes:g}-minute training budget, ROI by the detector")
    print(f"| method | preset | precision | scored | {' | '.join(METRICS)} | train min (epochs) | train peak MB | "
          f"predict s/image |")
    print("|" + "---|" * (len(METRICS) + 7))
    for method, row in rows.items():
        values = " | ".join(f"{row['metrics_mean'][m]:.3f}" for m in METRICS)
        print(f"| {method} | {row['preset']} | {row['precision']} | {row['n_scored']} of {row['n_cases']} | {values} | "
              f"{row['train_min']:.1f} ({row['epochs']}) | {row['train_peak_mb']:.0f} | "
              f"{'-' if row['predict_s_median'] is None else format(row['predict_s_median'], '.1f')} |")
        for case, error in row["failed"].items():
            print(f"  {method} {case}: no prediction ({error})")
    errors = list(detector["center_error_mm"].values())
    print(f"\nROI detector ({detector['preset']}, {detector['train_min']:.1f} min, {detector['epochs']} epochs): centre "
          f"error mean {np.mean(errors):.1f} mm, max {np.max(errors):.1f} mm over {len(errors)} test images")
    print(f"Chamfer (pred→GT) NUDF / U-Net: {comparison['chamfer_ratio_nudf_over_unet']:.2f} "
          f"(paper {comparison['chamfer_ratio_paper']:.2f}); completion_at_2mm NUDF {nudf['completion_at_2mm']:.3f} vs "
          f"U-Net {unet['completion_at_2mm']:.3f} (paper 0.982 vs 0.947); NUDF's Chamfer lower (as in the paper; "
          f"paired 95 % interval of NUDF - U-Net below 0): {comparison['chamfer_lower_for_nudf']}; completion: "
          f"{comparison['completion_order']} (paper: nudf higher)")
    print("\nPaired, A = U-Net, B = NUDF:\n" + format_comparison(paired))


if __name__ == "__main__":
    main()
