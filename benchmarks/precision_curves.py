"""Does bf16-mixed learn what float32 learns? NUDF trained side by side in both precisions over the same steps.

    .venv/bin/python benchmarks/precision_curves.py --out bench_out/precision --preset nudf64 --cases 14 --epochs 20

synth (LAA) → prepare once → for each seed, `train` in ``32-true`` and in ``bf16-mixed`` for ``--epochs`` epochs (same
cases, same seed: same initial weights, data order and samples; only the arithmetic differs). Each run's training
loss per step and validation loss per epoch are read from its CSV log. Two float32 runs with different seeds give
the run-to-run spread the bf16 difference is measured against: for every step, |bf16(seed s) − fp32(seed s)| and
|fp32(seed a) − fp32(seed b)|, summarised over the last half of the steps (where learning, not the first steps'
shared start, decides). Prints a table and writes ``curves.png`` and ``curves.json`` beside the runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from implicitseg.config import Settings
from implicitseg.methods import pipeline

PRECISIONS = ("32-true", "bf16-mixed")


def read_curves(run: Path) -> tuple[list[float], list[float]]:
    """(training loss per step, validation loss per epoch) from the run's CSV log (the last version written)."""
    logs = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        raise FileNotFoundError(f"{run}: no CSV log under logs/csv")
    steps, vals = [], []
    with logs[-1].open() as handle:
        for row in csv.DictReader(handle):
            if row.get("train_loss_step"):
                steps.append(float(row["train_loss_step"]))
            if row.get("val_loss"):
                vals.append(float(row["val_loss"]))
    return steps, vals


def smoothed(values: list[float], window: int) -> np.ndarray:
    """Moving mean over ``window`` steps (the loss of one step of 4 cases is noisy)."""
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/precision"))
    parser.add_argument("--preset", default="nudf64")
    parser.add_argument("--cases", type=int, default=14, help="synthetic LAA cases (train + validation)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--window", type=int, default=5, help="moving mean over this many steps for the comparison")
    parser.add_argument("--synth-seed", type=int, default=7)
    args = parser.parse_args()

    dataset, prep = args.out / "dataset", args.out / "prep"
    if not (dataset / "dataset.json").is_file():
        pipeline.run_synth(dataset, kind="laa", n_cases=args.cases, seed=args.synth_seed, n_test=0)
    if not (prep / "manifest.json").is_file():
        pipeline.run_prepare(dataset, prep, method="nudf", preset=args.preset, workers=2)

    runs: dict[str, dict] = {}
    for seed in args.seeds:
        for precision in PRECISIONS:
            name = f"{precision}_seed{seed}"
            run = args.out / name
            if not (run / "checkpoints" / "last.ckpt").is_file():
                start = time.perf_counter()
                summary = pipeline.run_train(
                    prep, run, max_epochs=args.epochs, show_progress=False,
                    settings=[Settings("precision_curves", {"train.precision": precision, "train.seed": seed})])
                (run / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - start,
                                                           "epochs": summary["epochs_completed"]}))
            steps, vals = read_curves(run)
            runs[name] = {"precision": precision, "seed": seed, "train_loss": steps, "val_loss": vals,
                          **json.loads((run / "wall.json").read_text())}

    n_steps = min(len(r["train_loss"]) for r in runs.values())
    tail = slice(n_steps // 2, n_steps)

    def curve(name: str) -> np.ndarray:
        return smoothed(runs[name]["train_loss"][:n_steps], args.window)

    print(f"\n## {args.preset}: float32 vs bf16-mixed over the same {n_steps} steps ({args.epochs} epochs), "
          f"training loss as a moving mean of {args.window} steps, compared over the last half")
    print("| run | wall s | s per epoch | final train loss (mean of last 5 steps) | val loss per epoch (last) |")
    print("|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['wall_s']:.0f} | {r['wall_s'] / max(r['epochs'], 1):.1f} | "
              f"{np.mean(r['train_loss'][n_steps - 5:n_steps]):.5f} | {r['val_loss'][-1] if r['val_loss'] else float('nan'):.5f} |")
    rows = []
    for seed in args.seeds:
        diff = np.abs(curve(f"bf16-mixed_seed{seed}") - curve(f"32-true_seed{seed}"))
        rows.append((f"|bf16 − fp32|, seed {seed}", diff))
    fp32 = [f"32-true_seed{seed}" for seed in args.seeds]
    for a, b in zip(fp32[:-1], fp32[1:]):
        rows.append((f"|fp32 {a.split('_')[1]} − fp32 {b.split('_')[1]}| (run-to-run)", np.abs(curve(a) - curve(b))))
    print("\n| difference of smoothed training loss | mean over last half | max over last half |")
    print("|---|---|---|")
    for label, diff in rows:
        part = diff[tail.start:] if len(diff) > tail.start else diff
        print(f"| {label} | {part.mean():.5f} | {part.max():.5f} |")
    for seed in args.seeds:
        a, b = runs[f"bf16-mixed_seed{seed}"]["val_loss"], runs[f"32-true_seed{seed}"]["val_loss"]
        n = min(len(a), len(b))
        print(f"val loss per epoch, seed {seed}: bf16 − fp32 = "
              + " ".join(f"{x - y:+.4f}" for x, y in zip(a[:n], b[:n])))

    (args.out / "curves.json").write_text(json.dumps(runs))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in runs.items():
        style = "-" if r["precision"] == "32-true" else "--"
        left.plot(smoothed(r["train_loss"][:n_steps], args.window), style, label=name)
        right.plot(range(1, len(r["val_loss"]) + 1), r["val_loss"], style, marker="o", label=name)
    left.set(xlabel="step", ylabel=f"training loss (moving mean of {args.window})", yscale="log")
    right.set(xlabel="epoch", ylabel="validation loss", yscale="log")
    left.legend()
    figure.suptitle(f"{args.preset}: float32 (solid) vs bf16-mixed (dashed)")
    figure.tight_layout()
    figure.savefig(args.out / "curves.png", dpi=110)
    print(f"curves: {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
