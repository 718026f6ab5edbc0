"""How fast NUDF learns a clean surface: a surface metric on validation cases against training wall time, one
curve per training variant (sampling fractions, learning rate, ...), all on the same prepared data.

    .venv/bin/python benchmarks/nudf_learning.py --out bench_out/learning64 --preset nudf64 --cases 24 \\
        --minutes 12 --every 3 --variant default \\
        --variant "uniform20=train.sample_fractions=[0.4,0.4,0.2]" --variant "lr3e-4=train.learning_rate=3e-4"

Runs synth → prepare once → for each variant (``NAME`` or ``NAME=KEY=VALUE[;KEY=VALUE...]``, ``--set``
assignments of the ``train`` section), trains in segments of ``--every`` minutes up to ``--minutes`` (each segment
resumes the last; the time axis is the training time the runs report, not counting the measurements) and after
each segment predicts the prepared set's **validation** cases (ROI at each label's centre of mass, the preset's
default extractor; an image with no surface found is a failed row) and scores them against their meshes. Prints
per variant and point: training minutes, epochs, ``chamfer_symmetric_mm`` (mean over the scored cases),
``completion_at_2mm`` (mean over all, failures at 0), cases failed; writes OUT/learning.json (a finished point
is not measured again: re-running extends or completes the curves) and OUT/learning.png. The variants run one
after another; run nothing else on the machine meanwhile (the budgets are wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

METRICS = ("chamfer_symmetric_mm", "chamfer_pred_to_gt_mm", "completion_at_2mm", "hd95_mm")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME`` or ``NAME=KEY=VALUE[;KEY=VALUE...]`` → (name, ``--set`` assignments)."""
    name, _, assignments = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME or NAME=KEY=VALUE[;KEY=VALUE...]")
    return name, [item for item in assignments.split(";") if item]


def validation_set(prep: Path, dataset: Path, out: Path) -> tuple[list[Path], Path]:
    """The validation cases of ``prep``: their image files, and OUT/val_gt holding their meshes (a plain folder)."""
    manifest = json.loads((prep / "manifest.json").read_text())
    cases = manifest["splits"]["val"]
    entries = {Path(entry["image"]).name.split(".")[0]: entry
               for entry in json.loads((dataset / "dataset.json").read_text())["training"]}
    gt = out / "val_gt"
    gt.mkdir(parents=True, exist_ok=True)
    for case in cases:
        mesh = dataset / entries[case]["mesh"]
        target = gt / f"{case}{''.join(mesh.suffixes)}"
        if not target.is_file():
            shutil.copyfile(mesh, target)
    return [dataset / entries[case]["image"] for case in cases], gt


def measure_point(run: Path, images: list[Path], labels: Path, gt: Path, where: Path) -> dict:
    """Predict ``images`` with ``run`` (last checkpoint) and score them against ``gt``: mean metrics, failures."""
    from implicitseg.methods import pipeline

    start = time.perf_counter()
    results = pipeline.run_predict(run, images, where / "pred", roi_label=labels, checkpoint="last",
                                   keep_going=True, show_progress=False)
    pipeline.run_evaluate(where / "pred", gt, where / "metrics")
    summary = json.loads((where / "metrics.summary.json").read_text())
    return {"metrics": {name: summary["metrics"][name]["mean"] for name in METRICS},
            "n_cases": summary["n_cases"], "n_scored": summary["n_scored"],
            "n_failed": sum(1 for r in results if "error" in r), "measure_s": time.perf_counter() - start}


def train_segment(prep: Path, run: Path, assignments: list[str], minutes: float, resume: bool) -> dict:
    from implicitseg.config import Settings
    from implicitseg.methods import pipeline

    seconds = max(int(round(minutes * 60)), 10)
    settings = [Settings.from_assignments(assignments)] if assignments else []
    return pipeline.run_train(prep, run, settings=settings, resume=resume, show_progress=False,
                              max_time=f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in curves.items():
        minutes = [p["train_min"] for p in points]
        axes[0].plot(minutes, [p["metrics"]["chamfer_symmetric_mm"] for p in points], marker="o", label=name)
        axes[1].plot(minutes, [p["metrics"]["completion_at_2mm"] for p in points], marker="o", label=name)
    axes[0].set(xlabel="training time (min)", ylabel="chamfer_symmetric_mm (validation, mean)", yscale="log")
    axes[1].set(xlabel="training time (min)", ylabel="completion_at_2mm (validation, mean)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/learning64"))
    parser.add_argument("--preset", default="nudf64")
    parser.add_argument("--cases", type=int, default=24, help="synthetic training cases (a fifth are validation)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget of each variant (wall time)")
    parser.add_argument("--every", type=float, default=3.0, help="minutes of training between two measurements")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME or NAME=KEY=VALUE[;KEY=VALUE...] (repeatable; default: the preset as it is)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (args.every > 0 and args.minutes >= args.every):
        raise SystemExit("--every must be > 0 and at most --minutes")
    variants = [parse_variant(text) for text in (args.variant or ["default"])]

    from implicitseg.io.atomic import write_json
    from implicitseg.methods import pipeline

    out = args.out
    record_path = out / "learning.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"curves": {}, "variants": {}}
    for name, assignments in variants:  # before any synth or training: a clash is known at once
        if record["variants"].setdefault(name, assignments) != assignments:
            raise SystemExit(f"{record_path}: variant {name!r} was measured with {record['variants'][name]}, "
                             f"not {assignments}; choose another name or another --out")
    dataset, prep = out / "dataset", out / "prep"
    if not (dataset / "dataset.json").is_file():
        pipeline.run_synth(dataset, kind="laa", n_cases=args.cases, seed=args.seed)
    if not (prep / "manifest.json").is_file():
        pipeline.run_prepare(dataset, prep, method="nudf", preset=args.preset, workers=args.workers,
                             show_progress=False)
    images, gt = validation_set(prep, dataset, out)
    n_points = math.ceil(args.minutes / args.every - 1e-9)

    for name, assignments in variants:
        points = record["curves"].setdefault(name, [])
        run = out / name / "run"
        while len(points) < n_points:
            index = len(points)
            summary = train_segment(prep, run, assignments, args.every, resume=index > 0)
            train_s = (points[-1]["train_s"] if points else 0.0) + summary["time_s"]
            point = measure_point(run, images, dataset / "labelsTr", gt, out / name / f"point_{index}")
            points.append({"train_s": train_s, "train_min": train_s / 60, "epochs": summary["epochs_completed"],
                           "precision": summary["precision"], **point})
            write_json(record_path, record)
            print(f"{name}: {train_s / 60:.1f} min, {summary['epochs_completed']} epochs, chamfer_symmetric "
                  f"{point['metrics']['chamfer_symmetric_mm']:.3f} mm, completion "
                  f"{point['metrics']['completion_at_2mm']:.3f}, failed {point['n_failed']} of {point['n_cases']}",
                  flush=True)

    plot(record["curves"], out / "learning.png")
    print(f"\n## NUDF learning curves: preset {args.preset}, {len(images)} validation cases, a point every "
          f"{args.every:g} min")
    print("| variant | settings | training min | epochs | chamfer_symmetric_mm | chamfer_pred_to_gt_mm | "
          "completion_at_2mm | hd95_mm | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, points in record["curves"].items():
        settings = "; ".join(record["variants"][name]) or "preset"
        for point in points:
            values = " | ".join(f"{point['metrics'][m]:.3f}" for m in METRICS)
            print(f"| {name} | {settings} | {point['train_min']:.1f} | {point['epochs']} | {values} | "
                  f"{point['n_failed']} of {point['n_cases']} |")


if __name__ == "__main__":
    main()
