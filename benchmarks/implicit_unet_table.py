"""The Implicit U-Net paper's comparison, side by side: the Implicit U-Net and the U-Net with the same encoder
(its convolutional decoder), the same prepared data and the same training budget (``--epochs``: the same number
of optimiser steps on the same patches; a count, not a wall time, so that other load on a shared machine cannot
favour one network), on the synthetic organ + lesion phantom.

    .venv/bin/python benchmarks/implicit_unet_table.py --out bench_out/iunet --cases 24 --epochs 40

Runs synth (organ) → prepare once (``--preset``, both networks train from it) → train each network in its own
process for ``--epochs`` → predict every held-out image on its own grid → ``evaluate --kind volume``, through
the same pipeline functions as the CLI. Also: the Implicit U-Net once more with a dense pass (every voxel) to
check the sparse inference against it, and ``train_step.py`` for both presets (step time and peak memory with
the same batch). Prints per network: Dice per class (mean ± sample std over held-out cases, and how many were
scored), parameters, training epochs, step time, peak training memory, inference time per image, decoder points
per image; the ratios next to the paper's claims; and the paired comparison implicit − U-Net over the same cases
(``implicitseg compare``: mean difference, 95 % bootstrap interval, Wilcoxon p), on which a claim that the two
Dice are "equal" or one "better" rests. Writes ``OUT/implicit_unet_table.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from paper_table import train_in_subprocess

PAPER = {"parameters": 0.6, "train_time": 41.7 / 58.2, "train_memory": 11.7 / 16.1, "inference_time": 25.2 / 36.7}
"""The paper's claims, implicit / U-Net: ~40 % fewer parameters; training 41.7 vs 58.2 s and 11.7 vs 16.1 GB per
100 steps; inference 25.2 vs 36.7 s for 10 images (MSD Lung, GPU)."""


def _dice_columns(summary: dict) -> dict[str, tuple[float, float]]:
    return {name: (values["mean"], values["std"]) for name, values in summary["metrics"].items()
            if name.startswith("dice_")}


def _agreement(sparse_labels, dense_labels) -> dict:
    """Share of voxels with the same label, and Dice of each foreground class between the two labelmaps."""
    dice = {}
    for value in range(1, int(max(sparse_labels.max(), dense_labels.max())) + 1):
        a, b = sparse_labels == value, dense_labels == value
        total = int(a.sum() + b.sum())
        dice[f"dice_label{value}"] = 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total
    return {"same_label_fraction": float((sparse_labels == dense_labels).mean()), **dice}


def sparse_versus_dense(run: Path, images: list[Path]) -> list[dict]:
    """Predict each image sparsely and densely with the run's model: label agreement, times, points."""
    import dataclasses

    import torch

    from implicitseg.io.images import read_image
    from implicitseg.methods import get_method

    method = get_method("implicit-unet")
    model, config = method.load(run, "best", torch.device("cpu"))
    dense_config = dataclasses.replace(config, inference=dataclasses.replace(config.inference, dense=True))
    rows = []
    for path in images:
        volume = read_image(path)
        sparse = method.predict_image(model, config, volume, path, device=torch.device("cpu"))
        dense = method.predict_image(model, dense_config, volume, path, device=torch.device("cpu"))
        rows.append({"case": path.name, **_agreement(sparse.labelmap.array, dense.labelmap.array),
                     "sparse_s": sparse.timings["network_s"], "dense_s": dense.timings["network_s"],
                     "sparse_points": sparse.counts["n_query_points"], "dense_points": dense.counts["n_query_points"],
                     "sparse_evaluations": sparse.counts["n_decoder_evaluations"],
                     "dense_evaluations": dense.counts["n_decoder_evaluations"]})
    return rows


def train_steps(presets: list[str], batch: int, steps: int) -> dict[str, dict]:
    """``train_step.py`` rows for ``presets`` (each in its own process)."""
    script = Path(__file__).with_name("train_step.py")
    json_path = Path(f"/tmp/implicit_unet_steps_{int(time.time())}.json")
    command = [sys.executable, str(script), "--presets", *presets, "--devices", "cpu", "--batch", str(batch),
               "--steps", str(steps), "--json", str(json_path)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return {row["preset"]: row for row in json.loads(json_path.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/iunet"))
    parser.add_argument("--cases", type=int, default=24, help="synthetic training cases")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out synthetic cases")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40, help="training budget of each network (epochs)")
    parser.add_argument("--preset", default="iunet-demo", help="the Implicit U-Net preset (prepare uses it)")
    parser.add_argument("--conv-preset", default="iunet-conv-demo", help="the same encoder's U-Net preset")
    parser.add_argument("--step-batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from implicitseg.data.synthetic import write_synthetic_dataset
    from implicitseg.evaluation.compare import compare_evaluations, format_comparison
    from implicitseg.io.dataset import list_images
    from implicitseg.methods import get_method, pipeline
    from implicitseg.models import count_parameters

    out = args.out
    dataset = out / "dataset"
    if not (dataset / "dataset.json").is_file():
        write_synthetic_dataset(dataset, kind="organ", n_cases=args.cases, n_test=args.test_cases, seed=args.seed)
    prep = out / "prep"
    if not (prep / "manifest.json").is_file():
        pipeline.run_prepare(dataset, prep, method="implicit-unet", preset=args.preset, workers=args.workers,
                             show_progress=False)
    networks = {"implicit": args.preset, "unet": args.conv_preset}
    rows = {}
    for name, preset in networks.items():
        training = train_in_subprocess(prep, out / f"run_{name}", 24 * 60.0, preset, args.epochs)
        predictions = out / f"predictions_{name}"
        results = pipeline.run_predict(out / f"run_{name}", [dataset], predictions, show_progress=False)
        pipeline.run_evaluate(predictions, dataset, out / f"metrics_{name}", kind="volume")
        summary = json.loads((out / f"metrics_{name}.summary.json").read_text())
        model, _ = get_method("implicit-unet").load(out / f"run_{name}", "best", "cpu")
        rows[name] = {
            "preset": preset, "dice": _dice_columns(summary), "n_test": len(results),
            "n_scored": summary["n_scored"], "n_cases": summary["n_cases"],
            "parameters": count_parameters(model), "epochs": training["epochs_completed"],
            "train_min": training["wall_s"] / 60, "train_peak_mb": training["peak_mb"],
            "inference_s_mean": statistics.mean(r["timings"]["network_s"] for r in results),
            "output_voxels_mean": statistics.mean(r["counts"]["n_output_voxels"] for r in results),
            "query_points_mean": statistics.mean(r["counts"].get("n_query_points", r["counts"]["n_output_voxels"])
                                                 for r in results),
            "decoder_evaluations_mean": statistics.mean(r["counts"].get("n_decoder_evaluations", 0) for r in results),
        }
    steps = train_steps(list(networks.values()), args.step_batch, steps=5)
    for name, preset in networks.items():
        rows[name]["step_s"] = steps[preset]["step_s_median"]
        rows[name]["step_peak_mb"] = steps[preset]["peak_mb"]
    checks = sparse_versus_dense(out / "run_implicit", list_images([dataset]))

    implicit, unet = rows["implicit"], rows["unet"]
    ratios = {"parameters": implicit["parameters"] / unet["parameters"],
              "train_step_time": implicit["step_s"] / unet["step_s"],
              "train_step_memory": implicit["step_peak_mb"] / unet["step_peak_mb"],
              "inference_time": implicit["inference_s_mean"] / unet["inference_s_mean"]}
    paired = compare_evaluations(out / "metrics_unet", out / "metrics_implicit")  # B - A = implicit - U-Net
    report = {"rows": rows, "ratios": ratios, "paper_ratios": PAPER, "sparse_vs_dense": checks, "paired": paired,
              "budget_epochs": args.epochs, "dataset": str(dataset), "step_batch": args.step_batch}
    (out / "implicit_unet_table.json").write_text(json.dumps(report, indent=1))

    classes = sorted(implicit["dice"])
    print(f"\n## Implicit U-Net vs the U-Net with the same encoder: same data, {args.epochs} epochs of training each, "
          f"{implicit['n_test']} held-out images (scored: implicit {implicit['n_scored']} of {implicit['n_cases']}, "
          f"U-Net {unet['n_scored']} of {unet['n_cases']}); Dice mean ± sample std")
    print(f"| network | preset | {' | '.join(classes)} | parameters | train min | step s (batch {args.step_batch}) | "
          f"step peak MB | inference s/image | decoder points/image (voxels) |")
    print("|" + "---|" * (len(classes) + 8))
    for name, row in rows.items():
        dice = " | ".join(f"{row['dice'][c][0]:.3f} ± {row['dice'][c][1]:.3f}" for c in classes)
        points = (f"{row['query_points_mean']:,.0f} ({row['output_voxels_mean']:,.0f})" if name == "implicit"
                  else f"- ({row['output_voxels_mean']:,.0f})")
        print(f"| {name} | {row['preset']} | {dice} | {row['parameters']:,} | {row['train_min']:.1f} | "
              f"{row['step_s']:.3f} | {row['step_peak_mb']:.0f} | {row['inference_s_mean']:.2f} | {points} |")
    print("\nimplicit / U-Net: " + ", ".join(f"{k} {v:.2f} (paper {PAPER[k.replace('_step', '')]:.2f})"
                                          if k.replace("_step", "") in PAPER else f"{k} {v:.2f}"
                                          for k, v in ratios.items()))
    agreement = [c["same_label_fraction"] for c in checks]
    print(f"sparse vs dense pass: same label on {min(agreement):.4%} – {max(agreement):.4%} of voxels; points "
          f"{statistics.mean(c['sparse_points'] / c['dense_points'] for c in checks):.1%} of a dense pass; time "
          f"{statistics.mean(c['sparse_s'] for c in checks):.2f} vs "
          f"{statistics.mean(c['dense_s'] for c in checks):.2f} s")
    print("\nPaired, A = U-Net (same encoder), B = Implicit U-Net:\n" + format_comparison(paired))


if __name__ == "__main__":
    main()
