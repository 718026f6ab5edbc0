"""NUDF quality and prediction time on held-out synthetic LAA cases after a stated training budget.

    .venv/bin/python benchmarks/nudf_quality.py --out bench_out/quality --preset nudf-demo --cases 24 --minutes 20

Runs synth → prepare → train (for --minutes) → predict (--mesher: udf-mc, or poisson with a dense cloud of --dense
points per case) → evaluate through the same pipeline functions as the CLI, and prints: prepare time per case,
training epochs, predict time per stage, and median and mean surface metrics (mm).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from implicitseg.config import NudfConfig, config_from_dict
from implicitseg.io.configs import load_yaml, save_config
from implicitseg.methods import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/quality"))
    parser.add_argument("--preset", default="nudf-demo")
    parser.add_argument("--cases", type=int, default=24, help="training cases (test cases: cases // 5)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (wall time)")
    parser.add_argument("--dense", type=int, default=1_000_000, help="dense point cloud size at prediction (poisson)")
    parser.add_argument("--mesher", default="udf-mc", choices=["udf-mc", "poisson"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    out = args.out
    dataset, prep, run, predictions = out / "dataset", out / "prep", out / "run", out / "predictions"
    if not (dataset / "dataset.json").is_file():
        pipeline.run_synth(dataset, kind="laa", n_cases=args.cases, seed=args.seed)

    start = time.perf_counter()
    if not (prep / "manifest.json").is_file():
        pipeline.run_prepare(dataset, prep, method="nudf", preset=args.preset, workers=args.workers)
    manifest = json.loads((prep / "manifest.json").read_text())
    prepare_wall_s = time.perf_counter() - start

    start = time.perf_counter()
    seconds = int(args.minutes * 60)
    summary = pipeline.run_train(prep, run, max_time=f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
                                 resume=(run / "checkpoints" / "last.ckpt").is_file(), show_progress=False)
    train_wall_s = time.perf_counter() - start

    # prediction with the run's extractor (--mesher) and, for poisson, the benchmark's dense-cloud size (the paper's 1M)
    config = config_from_dict(NudfConfig, load_yaml(run / "config.yaml"))
    config.point_cloud.n_dense = args.dense
    config.meshing.method = args.mesher
    save_config(run / "config.yaml", config)
    results = pipeline.run_predict(run, [dataset], predictions, roi_label=dataset / "labelsTs", device=args.device,
                                   show_progress=False)
    table = pipeline.run_evaluate(predictions, dataset, out / "metrics")
    summary_metrics = json.loads((out / "metrics.summary.json").read_text())

    def stat(key: str) -> str:
        values = [r["timings"][key] for r in results]
        return f"{statistics.median(values):.2f} s (median of {len(values)})"

    print(f"\n## NUDF quality benchmark: preset {args.preset}, {manifest['res']}³ ROI of {manifest['roi_mm']} mm")
    print(f"training cases {len(manifest['splits']['train'])}, validation {len(manifest['splits']['val'])}, "
          f"held-out test {len(results)}")
    print(f"prepare: {prepare_wall_s / max(len(manifest['cases']), 1):.2f} s per case (wall, {args.workers} workers)")
    print(f"train: {train_wall_s / 60:.1f} min wall, {summary['epochs_completed']} epochs, best val loss {summary.get('best_val_loss')}")
    stages = [key for key in results[0]["timings"] if key.endswith("_s")]
    print(f"predict ({config.meshing.method}; {args.dense} dense points for poisson): "
          + ", ".join(f"{key[:-2]} {stat(key)}" for key in stages))
    print(f"points kept: median {int(np.median([r['counts']['n_points'] for r in results]))}")
    print(table)
    print(json.dumps(summary_metrics, indent=1))


if __name__ == "__main__":
    main()
