"""NUDF's surface extractors side by side on one trained model and the same held-out images.

    .venv/bin/python benchmarks/nudf_meshing.py --out bench_out/mesh64 --preset nudf64 --cases 24 --test-cases 8 --minutes 35
    .venv/bin/python benchmarks/nudf_meshing.py --out bench_out/mesh64 --run bench_out/mesh64/run   # a trained run

Trains once (synth → prepare → train for --minutes, skipped when OUT/run or --run holds a run), then predicts every
held-out image (ROI at its label's centre of mass: the NUDF part alone) with each extractor:

- ``paper``: the paper's recipe, 100k uniform seeds → 1M dense points by gradient projection → screened Poisson;
- ``band-poisson``: the same point count seeded in the field's narrow band (2 projection steps) → screened Poisson;
- ``udf-mc@C``: the surface straight from the narrow band of finest cell C mm (no Poisson); ``udf-mc@C:holes=D``
  closes holes smaller than D mm across instead of the run's ``meshing.close_holes_mm`` (0: none);
  ``udf-mc@C:snap=N`` sets ``meshing.band.snap_samples`` (each vertex moved to the field's minimum along its normal).

Prints per extractor the median time per stage, the decoder's point counts, the surface metrics (mean over the
cases, every case counted; an image an extractor finds no surface in is a failed row) and the share of cases
whose mesh has as many boundary loops as the ground truth (each mesh's loop lengths are in the summary); then
the paired comparison of each extractor against ``paper`` (``implicitseg compare``: B − A, 95 % bootstrap interval,
Wilcoxon p). Writes OUT/meshing_summary.json. An extractor already measured under OUT/extract is read back, not run
again, unless named in --redo. Run nothing else on the machine meanwhile: the times are wall times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from implicitseg.config import NudfConfig, config_from_dict, config_to_dict
from implicitseg.io.configs import load_yaml, save_config
from implicitseg.io.meshes import read_mesh
from implicitseg.meshing.components import boundary_loop_lengths, boundary_loops
from implicitseg.methods import pipeline

EXTRACTORS = ("paper", "band-poisson", "udf-mc@0.5", "udf-mc@1.0")


def configure(config: NudfConfig, extractor: str, dense: int) -> NudfConfig:
    """``config`` set up for one extractor (a fresh copy)."""
    config = config_from_dict(NudfConfig, config_to_dict(config))
    config.point_cloud.n_dense = dense
    extractor, *options = extractor.split(":")
    for option in options:
        key, _, value = option.partition("=")
        if key == "holes":
            config.meshing.close_holes_mm = float(value)
        elif key == "snap":
            config.meshing.band.snap_samples = int(value)
        else:
            raise SystemExit(f"unknown extractor option {option!r}; known: holes=MM, snap=SAMPLES")
    if extractor == "paper":
        config.meshing.method, config.point_cloud.seeding = "poisson", "uniform"
    elif extractor == "band-poisson":
        config.meshing.method, config.point_cloud.seeding = "poisson", "band"
    elif extractor.startswith("udf-mc@"):
        config.meshing.method = "udf-mc"
        config.meshing.band.cell_mm = float(extractor.split("@")[1])
    else:
        raise SystemExit(f"unknown extractor {extractor!r}; choose from {EXTRACTORS} or udf-mc@CELL_MM")
    return config


def train_once(args: argparse.Namespace) -> tuple[Path, Path]:
    """(dataset, run): the given run and its dataset, or a run trained here for ``--minutes``."""
    dataset = args.dataset or args.out / "dataset"
    if args.run is not None:
        return dataset, args.run
    prep, run = args.out / "prep", args.out / "run"
    if not (dataset / "dataset.json").is_file():
        pipeline.run_synth(dataset, kind="laa", n_cases=args.cases, seed=args.seed, n_test=args.test_cases)
    if not (prep / "manifest.json").is_file():
        pipeline.run_prepare(dataset, prep, method="nudf", preset=args.preset, workers=2)
    if not (run / "checkpoints" / "best.ckpt").is_file():
        seconds = int(args.minutes * 60)
        pipeline.run_train(prep, run, max_time=f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
                           show_progress=False)
    return dataset, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/mesh64"))
    parser.add_argument("--run", type=Path, help="a trained NUDF run (default: OUT/run, trained here if missing)")
    parser.add_argument("--dataset", type=Path, help="its dataset (default: OUT/dataset)")
    parser.add_argument("--preset", default="nudf64")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=35.0, help="training budget (wall time) when training here")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dense", type=int, default=1_000_000, help="dense points of the Poisson recipes")
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTORS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--redo", nargs="*", default=[], help="extractors to measure again (others already measured "
                        "under OUT/extract are read back)")
    args = parser.parse_args()

    dataset, run = train_once(args)
    trained = config_from_dict(NudfConfig, load_yaml(run / "config.yaml"))
    gt_meshes = {path.name.split(".")[0]: path for path in sorted((dataset / "meshesTs").glob("*"))}
    gt_loops = {case: boundary_loops(read_mesh(path).faces) for case, path in gt_meshes.items()}
    rows: dict[str, dict] = {}
    for extractor in args.extractors:
        name = extractor.replace("@", "_").replace(":", "_").replace("=", "")
        predictions, metrics = args.out / "extract" / name, args.out / "extract" / f"{name}_metrics"
        if Path(f"{metrics}.summary.json").is_file() and extractor not in args.redo:  # measured before: reuse
            results = [json.loads(path.read_text()) for path in sorted(predictions.glob("*/prediction.json"))]
            wall_s = sum(r["timings"]["total_s"] for r in results)
        else:
            config = configure(trained, extractor, args.dense)
            save_config(run / "config.yaml", config)
            start = time.perf_counter()
            try:
                results = pipeline.run_predict(run, [dataset / "imagesTs"], predictions, keep_going=True,
                                               roi_label=dataset / "labelsTs", device=args.device, show_progress=False)
            finally:
                save_config(run / "config.yaml", trained)
            wall_s = time.perf_counter() - start
            pipeline.run_evaluate(predictions, dataset, metrics)
        summary = json.loads(Path(f"{metrics}.summary.json").read_text())
        results = [r for r in results if "error" not in r]  # failed images: rows of the evaluation, no mesh
        meshes = {r["case"]: read_mesh(r["mesh"]) for r in results}
        loops = {case: boundary_loops(mesh.faces) for case, mesh in meshes.items()}
        stages = sorted({key for r in results for key in r["timings"]})
        counts = ("n_forward_points", "n_gradient_points", "n_faces")
        rows[extractor] = {
            "wall_s": wall_s,
            "median_s": {key: statistics.median(r["timings"].get(key, 0.0) for r in results) for key in stages},
            "median_counts": {key: int(statistics.median(r["counts"].get(key, 0) for r in results)) for key in counts},
            "metrics": {key: value for key, value in summary["metrics"].items()},
            "n_cases": summary.get("n_cases"), "n_scored": summary.get("n_scored"),
            "loops_match": float(np.mean([loops.get(case, -1) == gt_loops[case] for case in gt_loops])),
            "loops": loops, "gt_loops": gt_loops, "metrics_path": str(metrics),
            "loop_lengths_mm": {case: np.round(boundary_loop_lengths(mesh.vertices_world_mm, mesh.faces), 1).tolist()
                                for case, mesh in meshes.items()},
            "components_dropped": [r.get("meshing", {}).get("components", {}).get("n_dropped") for r in results],
        }

    print(f"\n## NUDF extractors: run {run} (preset {trained.preset}, {trained.roi.res}³ ROI of {trained.roi.size_mm} mm), "
          f"{len(gt_meshes)} held-out cases, device {args.device}")
    header = ["extractor", "total s", "encoder s", "cloud/band s", "meshing s", "fwd pts", "grad pts", "faces",
              "chamfer_sym mm", "chamfer_p2g mm", "completion 2mm", "hd95 mm", "loops = GT"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for extractor, row in rows.items():
        median, metrics_of = row["median_s"], row["metrics"]

        def metric(key: str) -> str:
            entry = metrics_of.get(key, {})
            return f"{entry.get('mean', float('nan')):.3f} ± {entry.get('std', float('nan')):.3f}"

        print(f"| {extractor} | {median.get('total_s', 0):.1f} | {median.get('encoder_s', 0):.2f} | "
              f"{median.get('point_cloud_s', median.get('band_s', 0)):.1f} | "
              f"{median.get('meshing_s', 0) - median.get('band_s', 0):.1f} | "
              f"{row['median_counts']['n_forward_points']:,} | {row['median_counts']['n_gradient_points']:,} | "
              f"{row['median_counts']['n_faces']:,} | {metric('chamfer_symmetric_mm')} | {metric('chamfer_pred_to_gt_mm')} | "
              f"{metric('completion_at_2mm')} | {metric('hd95_mm')} | {row['loops_match']:.0%} |")
    if "paper" in rows:
        for extractor, row in rows.items():
            if extractor != "paper":
                print(f"\n### {extractor} − paper (paired over the same cases)")
                print(pipeline.run_compare(Path(rows["paper"]["metrics_path"]), Path(row["metrics_path"])))
    (args.out / "meshing_summary.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
