"""ISMM on a synthetic anatomy: an initial segmentation before vs after refinement by the shape prior.

    .venv/bin/python benchmarks/ismm_table.py --out bench_out/ismm --cases 24 --test-cases 8 --minutes 10 --unet-minutes 5
    .venv/bin/python benchmarks/ismm_table.py --kind laa --out bench_out/ismm_laa --cases 30 --test-cases 10 \
        --epochs 400 --unet-minutes 5 --tune-cases 8

Runs synth (``--kind organ``: the shape is the organ with its lesion, label > 0; ``laa``: the left atrial appendage,
thin, curved and lobed) → prepare ISMM (``--preset``) → train for
``--minutes`` (or ``--epochs``, for a machine that is shared) → for every held-out case and every initial segmentation:
- the ground truth damaged by each corruption of ``data/corruption.py`` (holes, blobs, missing part, staircase)
  and by all four at once, and the ground truth itself (``truth``: what refinement costs a right segmentation);
- the prediction of a U-Net (``implicit-unet`` preset ``iunet-conv-demo``: the U-Net baseline on whole images,
  trained ``--unet-minutes``; 0 skips it), and with ``--short-unet-epochs N`` of the same U-Net trained only N
  epochs (``unet_short``: a CNN that still makes gross errors, the kind the paper's refinement repairs);
refine it (``predict --initial``, the CLI's path) and score before and after: DSC, NSD at 1 mm (sub-voxel
boundary weighting), HD95, ASSD (mm; MONAI, on the image grid, label > 0), and Chamfer and EMD
(``evaluation/shape.py``: 30k / 1k area-uniform points, normalised to the GT's unit sphere, and in mm) between
surfaces — every surface (initial, refined is its own mesh, GT) taken as ISMM takes a labelmap's: the 1 mm
Gaussian-smoothed isosurface; and, after refinement, the share of the voxels the initial segmentation missed that it
regrew (``regrown``) and of those it wrongly had that it removed (``removed``); per initial segmentation, what the
safeguard decided (``prediction.json``'s ``safeguard``: ``guarded``, ``initial`` or ``refined``) and the worst
per-case DSC change.
With ``--tune-cases K``, a fallback of the safeguard is first chosen without the held-out cases (``--tune-score``:
``overruled_fraction`` → ``tim.max_overruled_fraction``, ``trusted_share`` → ``tim.min_trusted_share``): K cases of
another seed (seen by neither the prior nor the table) get the same initial segmentations and are refined with the
fallbacks off; the loosest threshold under which none of their rows loses more than ``--max-dice-loss``
DSC (:func:`choose_fallback`) is then the setting the held-out cases are refined with (``tuning`` in the JSON,
every tuning row with its score and DSC change; per initial segmentation the median and worst DSC change,
``--tune-only`` stops there). ``--set tim.KEY=VALUE --tag NAME`` refines the tuning and held-out
cases with other settings (the same prior and U-Net), into OUT/variants/NAME/ and OUT/tune/variants/NAME/.
Prints mean ± sample std (and median) per initial segmentation, and per metric the paired after − before difference over the
same cases (mean, 95 % bootstrap interval, Wilcoxon p: ``evaluation/compare.py``) on which "repairs" or "costs"
rests; writes ``OUT/ismm_table.json``. Resumable: every finished step
(dataset, prepared shapes, trained runs, each initial segmentation's scored rows in ``OUT/rows/`` and
``OUT/tune/rows/``, while refined with the same settings) is kept and reused when the command is run again with the
same ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from paper_table import train_in_subprocess

VOLUME = ("dice", "nsd_at_1mm", "hd95_mm", "assd_mm")
SHAPE = ("chamfer_normalised", "emd_normalised", "chamfer_mm", "emd_mm")
REPAIRS = ("regrown", "removed")
CORRUPTIONS = {"holes": ("holes",), "blobs": ("blobs",), "missing_part": ("missing_part",),
               "staircase": ("staircase",), "all_four": ("holes", "blobs", "missing_part", "staircase"),
               "truth": ()}
"""Each initial segmentation made from the ground truth: the corruptions it goes through (``truth``: none, the
identity test: a refinement should leave a right segmentation as it is)."""


def scores(labelmap, surface, truth, truth_surface) -> dict[str, float]:
    from implicitseg.evaluation.shape import compute_shape_metrics
    from implicitseg.evaluation.volume import compute_volume_metrics
    from implicitseg.io.images import Volume

    binary = Volume((np.asarray(labelmap.array) > 0).astype(np.uint8), labelmap.affine_lps)
    return {**compute_volume_metrics(binary, truth), **compute_shape_metrics(surface, truth_surface)}


def corrupted(truth, seed: int, case: str, kinds: tuple[str, ...]):
    """The corruption (:class:`~implicitseg.data.corruption.Corruption`) of a held-out case's binary labelmap, the
    same for every run with the same ``--seed``."""
    from implicitseg.data.corruption import corrupt_labelmap

    return corrupt_labelmap(truth, np.random.default_rng([seed, int(case.split("_")[-1]), len(kinds)]), kinds)


def repairs(initial, refined, truth) -> dict[str, float]:
    """Of the voxels the initial segmentation missed, the share the refined one has (``regrown``); of those it had
    wrongly, the share the refined one dropped (``removed``); NaN where there were none. All on the image grid."""
    initial_mask, refined_mask, truth_mask = (np.asarray(v.array) > 0 for v in (initial, refined, truth))
    missed, extra = truth_mask & ~initial_mask, initial_mask & ~truth_mask
    return {"regrown": float((missed & refined_mask).sum() / missed.sum()) if missed.any() else math.nan,
            "removed": float((extra & ~refined_mask).sum() / extra.sum()) if extra.any() else math.nan}


def paired(chosen: list[dict], metric: str) -> dict:
    """The paired after − before comparison of ``metric`` over the rows of one initial segmentation."""
    from implicitseg.evaluation.compare import compare_rows

    before = {r["case"]: {metric: r["before"].get(metric, math.nan)} for r in chosen}
    after = {r["case"]: {metric: r["after"].get(metric, math.nan)} for r in chosen}
    return compare_rows(before, after)["metrics"][metric]


def summarise(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.3f} ± {spread:.3f} (median {statistics.median(finite):.3f})"


def initial_segmentations(dataset: Path, labels: Path, images: list[Path], root: Path, seed: int,
                          unet_runs: dict[str, Path]) -> tuple[dict[str, Path], dict]:
    """Write each initial segmentation of ``images`` (their ground truth in ``labels`` damaged by each corruption,
    and the prediction of each run of ``unet_runs``, by source name) under ROOT/<name>/<case>.nii.gz; returns the
    folders by name and the binary ground truth by case."""
    from implicitseg.io.images import Volume, read_labelmap, write_image
    from implicitseg.methods.pipeline import run_predict

    truth_of, folders = {}, {}
    for name, kinds in CORRUPTIONS.items():
        folder = root / name
        for image in images:
            case = image.name.replace(".nii.gz", "")
            truth = read_labelmap(labels / f"{case}.nii.gz")
            truth_of[case] = Volume((truth.array > 0).astype(np.uint8), truth.affine_lps)
            if not (folder / f"{case}.nii.gz").is_file():
                write_image(folder / f"{case}.nii.gz", corrupted(truth_of[case], seed, case, kinds).labelmap)
        folders[name] = folder
    for name, unet_run in unet_runs.items():
        predictions, folder = root / f"{name}_predictions", root / name
        missing = [image for image in images if not (folder / image.name).is_file()]
        if missing:  # a rerun keeps the predictions it made
            run_predict(unet_run, missing, predictions, show_progress=False)
        for image in missing:
            case = image.name.replace(".nii.gz", "")
            predicted = read_labelmap(predictions / case / "labelmap.nii.gz", allow_empty=True)
            write_image(folder / f"{case}.nii.gz", Volume((predicted.array > 0).astype(np.uint8), predicted.affine_lps))
        folders[name] = folder
    return folders, truth_of


def only(initial_dirs: dict[str, Path], names: list[str] | None) -> dict[str, Path]:
    """The initial segmentations among ``names`` (all of them for None)."""
    return {name: folder for name, folder in initial_dirs.items() if names is None or name in names}


def effective_tim(run: Path, settings: list) -> dict:
    """The refinement settings (``tim``) a prediction with ``run`` and ``settings`` uses: the run's config (the
    code's defaults for keys it lacks) with the settings applied. A row is reused only while they match (a default
    that changed since makes the rows again)."""
    import dataclasses

    from implicitseg.config import config_from_dict
    from implicitseg.io.configs import load_yaml
    from implicitseg.methods import ismm
    from implicitseg.methods.predict import configured

    config, _ = configured(config_from_dict(ismm.IsmmConfig, load_yaml(run / "config.yaml")), settings)
    return dataclasses.asdict(config.tim)


def refine_rows(run: Path, images: list[Path], initial_dirs: dict[str, Path], truth_of: dict, where: Path,
                assignments: list[str], timings: dict, timing_prefix: str) -> list[dict]:
    """Refine every initial segmentation of ``images`` with ``run`` (``--set`` ``assignments``) and score it before
    and after; one row per (initial, case), kept in WHERE/rows/<initial>.json and reused while the settings and the
    effective ``tim`` section (:func:`effective_tim`) match."""
    from implicitseg.config import Settings
    from implicitseg.data.ismm import labelmap_surface
    from implicitseg.io.atomic import write_json
    from implicitseg.io.images import read_labelmap
    from implicitseg.io.meshes import read_mesh
    from implicitseg.methods.pipeline import run_predict

    settings = [Settings.from_assignments(assignments)] if assignments else []
    tim = effective_tim(run, settings)
    rows = []
    for name, folder in initial_dirs.items():
        rows_file = where / "rows" / f"{name}.json"
        if rows_file.is_file():
            kept = json.loads(rows_file.read_text())
            if all(r.get("settings", []) == assignments and r.get("tim") == tim for r in kept):
                rows += kept
                continue
        started = time.perf_counter()
        records = run_predict(run, images, where / "refined" / name, initial=folder, settings=settings,
                              show_progress=False)
        elapsed = time.perf_counter() - started
        source_rows = []
        for record in records:
            case = record["case"]
            truth_surface = labelmap_surface(truth_of[case], 0, "truth")
            initial = read_labelmap(folder / f"{case}.nii.gz", allow_empty=True)
            refined = read_labelmap(Path(record["labelmap"]), allow_empty=True)
            before = scores(initial, labelmap_surface(initial, 0, "initial"), truth_of[case], truth_surface)
            after = {**scores(refined, read_mesh(record["mesh"]), truth_of[case], truth_surface),
                     **repairs(initial, refined, truth_of[case])}
            guard = record["counts"].get("safeguard", {})
            source_rows.append({"initial": name, "case": case, "before": before, "after": after,
                                "settings": assignments, "tim": tim, "safeguard": guard.get("decision", "none"),
                                # the scores a safeguard rule can use (no ground truth), kept per case to choose one
                                "consistency": {key: guard.get(key) for key in
                                                ("fit_residual_mm", *FALLBACKS)},
                                "refine_s": record["timings"]["total_s"]})
        timings[f"{timing_prefix}refine_{name}_s_per_case"] = elapsed / max(len(records), 1)
        write_json(rows_file, source_rows)
        rows += source_rows
    return rows


FALLBACKS = {"overruled_fraction": ("tim.max_overruled_fraction", "above", 1.0),
             "trusted_share": ("tim.min_trusted_share", "below", 0.0)}
"""The safeguard's fallbacks a tuning can choose: score → (setting, where a row falls back, the setting's off value)."""


def choose_fallback(rows: list[dict], score: str, max_dice_loss: float) -> dict:
    """The loosest threshold of the fallback on ``score`` (:data:`FALLBACKS`) under which no row of ``rows`` (refined
    with the fallback off) loses more than ``max_dice_loss`` DSC: a row whose score is beyond it keeps its initial
    segmentation (change 0). Candidates: the off value, every row's own score, then the strictest (0 for a maximum,
    1 for a minimum); ``safe`` is false where even that leaves a row losing more."""
    setting, falls_back_when, off = FALLBACKS[score]
    scored = [(row["consistency"][score], row["after"]["dice"] - row["before"]["dice"]) for row in rows]
    candidates = sorted({0.0, 1.0, *(value for value, _ in scored)}, reverse=falls_back_when == "above")
    for threshold in candidates:
        def falls_back(value: float) -> bool:
            return value > threshold if falls_back_when == "above" else value < threshold

        kept = [delta for value, delta in scored if not falls_back(value)]
        changes = [0.0 if falls_back(value) else delta for value, delta in scored]  # a fallback changes nothing
        result = {"score": score, "setting": setting, "threshold": threshold, "n_rows": len(rows),
                  "n_fall_back": len(rows) - len(kept), "worst_dice_change": min(changes, default=0.0),
                  "median_dice_change": statistics.median(changes),
                  "safe": not kept or min(kept) >= -max_dice_loss}
        if result["safe"]:
            break
    return result


def tuning_summary(rows: list[dict], max_dice_loss: float) -> dict[str, dict]:
    """Per initial segmentation of the tuning ``rows``: the median, worst and best DSC change, the median HD95
    change (mm) and how many rows lose more than ``max_dice_loss`` DSC (what a refinement setting is judged by
    before the held-out cases are refined)."""
    summary = {}
    for name in dict.fromkeys(row["initial"] for row in rows):
        chosen = [row for row in rows if row["initial"] == name]
        dice = [row["after"]["dice"] - row["before"]["dice"] for row in chosen]
        hd95 = [row["after"]["hd95_mm"] - row["before"]["hd95_mm"] for row in chosen]
        summary[name] = {"n": len(chosen), "median_dice_change": statistics.median(dice), "worst_dice_change": min(dice),
                         "best_dice_change": max(dice), "median_hd95_change_mm": statistics.median(hd95),
                         "n_worse": sum(delta < -max_dice_loss for delta in dice)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/ismm"))
    parser.add_argument("--cases", type=int, default=24, help="training shapes")
    parser.add_argument("--test-cases", type=int, default=None, help="held-out cases (default: cases // 5)")
    parser.add_argument("--tune-cases", type=int, default=0,
                        help="cases of another seed, seen by neither the prior nor the table, on which the "
                             "fallback of --tune-score is chosen (0: the preset's value)")
    parser.add_argument("--tune-score", choices=tuple(FALLBACKS), default="overruled_fraction",
                        help="the safeguard's score whose fallback threshold the tuning chooses")
    parser.add_argument("--max-dice-loss", type=float, default=0.01,
                        help="the DSC a tuning case may lose under the chosen threshold")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--kind", choices=("organ", "laa"), default="organ", help="the synthetic anatomy")
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--epochs", type=int, default=None, help="stop ISMM's training after this many epochs")
    parser.add_argument("--unet-minutes", type=float, default=6.0)
    parser.add_argument("--short-unet-epochs", type=int, default=0,
                        help="also refine the predictions of the same U-Net trained only this many epochs "
                             "(``unet_short``: a CNN that still makes gross errors; 0 skips it)")
    parser.add_argument("--preset", default="ismm-demo")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="a refinement setting (tim.*) for the tuning and held-out cases; needs --tag")
    parser.add_argument("--tag", default=None,
                        help="name of these settings: their rows and table go to OUT/variants/TAG, the trained "
                             "prior and U-Net are shared")
    parser.add_argument("--initials", nargs="+", choices=(*CORRUPTIONS, "unet", "unet_short"), default=None,
                        help="refine only these initial segmentations (default: every one)")
    parser.add_argument("--tune-only", action="store_true",
                        help="stop after the tuning cases (judge settings there, the held-out cases untouched)")
    args = parser.parse_args()
    if args.assignments and not args.tag:
        raise SystemExit("--set needs --tag NAME, so that the rows of the preset's settings are kept")
    if args.tune_only and args.tune_cases <= 0:
        raise SystemExit("--tune-only needs --tune-cases K")
    tuned = {setting for setting, _, _ in FALLBACKS.values()}
    if args.tune_cases > 0 and any(assignment.split("=")[0] in tuned for assignment in args.assignments):
        raise SystemExit(f"with --tune-cases the tuning chooses the fallback: do not --set {' or '.join(sorted(tuned))}")

    from implicitseg.io.atomic import write_json
    from implicitseg.io.dataset import load_dataset
    from implicitseg.methods.pipeline import run_prepare, run_synth

    out = args.out
    timings_file = out / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    if args.short_unet_epochs > 0 and timings.get("unet_short_epochs", args.short_unet_epochs) != args.short_unet_epochs:
        raise SystemExit(f"{out}: its short U-Net was trained {timings['unet_short_epochs']} epochs, not "
                         f"{args.short_unet_epochs}: use another --out")
    dataset = out / "dataset"
    if not (dataset / "dataset.json").is_file():
        run_synth(dataset, kind=args.kind, n_cases=args.cases, seed=args.seed, n_test=args.test_cases)
    prep, run = out / "prep", out / "run"
    if not (prep / "manifest.json").is_file():
        start = time.perf_counter()
        run_prepare(dataset, prep, method="ismm", preset=args.preset, workers=args.workers, show_progress=False)
        timings["prepare_s"] = time.perf_counter() - start
    if "train_s" not in timings:  # not trained, or stopped before the end: train_worker resumes from last.ckpt
        summary = train_in_subprocess(prep, run, args.minutes, max_epochs=args.epochs)
        timings.update(train_s=summary["time_s"], epochs=summary["epochs_completed"])
    write_json(timings_file, timings)
    unet_runs: dict[str, Path] = {}
    unet_prep = out / "prep_unet"
    if (args.unet_minutes > 0 or args.short_unet_epochs > 0) and not (unet_prep / "manifest.json").is_file():
        run_prepare(dataset, unet_prep, method="implicit-unet", preset="iunet-conv-demo", workers=args.workers,
                    show_progress=False)
    if args.unet_minutes > 0:
        unet_runs["unet"] = out / "run_unet"
        if "unet_train_s" not in timings:
            timings["unet_train_s"] = train_in_subprocess(unet_prep, unet_runs["unet"], args.unet_minutes)["time_s"]
            write_json(timings_file, timings)
    if args.short_unet_epochs > 0:
        unet_runs["unet_short"] = out / "run_unet_short"
        if "unet_short_train_s" not in timings:
            summary = train_in_subprocess(unet_prep, unet_runs["unet_short"], 60.0, max_epochs=args.short_unet_epochs)
            timings.update(unet_short_train_s=summary["time_s"], unet_short_epochs=summary["epochs_completed"])
            write_json(timings_file, timings)

    assignments, tuning = list(args.assignments), None
    variant = out / "variants" / args.tag if args.tag else out
    if args.tune_cases > 0:
        tune = out / "tune"
        if not (tune / "dataset" / "dataset.json").is_file():
            run_synth(tune / "dataset", kind=args.kind, n_cases=args.tune_cases, seed=args.seed + 1000, n_test=0)
        tune_images = sorted(case.image for case in load_dataset(tune / "dataset").training)
        tune_dirs, tune_truth = initial_segmentations(tune / "dataset", tune / "dataset" / "labelsTr", tune_images,
                                                      tune / "initial", args.seed, unet_runs)
        tune_rows = refine_rows(run, tune_images, only(tune_dirs, args.initials), tune_truth,
                                tune / "variants" / args.tag if args.tag else tune,
                                [*assignments, "tim.max_overruled_fraction=1"], timings,
                                f"{args.tag}_tune_" if args.tag else "tune_")
        tuning = {**choose_fallback(tune_rows, args.tune_score, args.max_dice_loss), "max_dice_loss": args.max_dice_loss,
                  "by_initial": tuning_summary(tune_rows, args.max_dice_loss),
                  "rows": [{"initial": r["initial"], "case": r["case"], **r["consistency"],
                            "dice_change": r["after"]["dice"] - r["before"]["dice"]} for r in tune_rows]}
        for name, line in tuning["by_initial"].items():
            print(f"tuning {name:14s} DSC change median {line['median_dice_change']:+.3f} worst "
                  f"{line['worst_dice_change']:+.3f} best {line['best_dice_change']:+.3f}; HD95 change median "
                  f"{line['median_hd95_change_mm']:+.2f} mm; {line['n_worse']} of {line['n']} worse by more than "
                  f"{args.max_dice_loss:g}", flush=True)
        if args.tune_only:
            write_json((tune / "variants" / args.tag if args.tag else tune) / "tuning.json",
                       {"tuning": tuning, "settings": assignments, "timings": timings})
            write_json(timings_file, timings)
            return
        assignments.append(f"{tuning['setting']}={tuning['threshold']:.6g}")
        print(f"tuning ({len(tune_images)} cases, {len(tune_rows)} rows): {tuning['setting']} "
              f"{tuning['threshold']:.3f} ({tuning['n_fall_back']} rows fall back; worst DSC change "
              f"of the rest {tuning['worst_dice_change']:+.3f})", flush=True)
        write_json(timings_file, timings)

    test_images = sorted(load_dataset(dataset).test)
    initial_dirs, truth_of = initial_segmentations(dataset, dataset / "labelsTs", test_images, out / "initial",
                                                   args.seed, unet_runs)
    initial_dirs = only(initial_dirs, args.initials)
    rows = refine_rows(run, test_images, initial_dirs, truth_of, variant, assignments, timings,
                       f"{args.tag}_" if args.tag else "")
    write_json(timings_file, timings)

    table = {}
    print(f"{'initial':14s} {'metric':20s} {'before':>34s} {'after':>34s} {'after - before [95 % CI]':>30s} "
          f"{'Wilcoxon p':>10s}")
    for name in initial_dirs:
        chosen = [r for r in rows if r["initial"] == name]
        table[name] = {}
        decisions = collections.Counter(r.get("safeguard", "none") for r in chosen)
        table[name]["safeguard"] = dict(decisions)
        worst = min(r["after"]["dice"] - r["before"]["dice"] for r in chosen)
        table[name]["worst_dice_change"] = worst
        print(f"{name:14s} safeguard {dict(decisions)}; worst per-case DSC change {worst:+.3f}")
        for metric in VOLUME + SHAPE + REPAIRS:
            before = summarise([r["before"].get(metric, math.nan) for r in chosen])
            after = summarise([r["after"][metric] for r in chosen])
            table[name][metric] = {"before": before, "after": after}
            if metric in REPAIRS:
                print(f"{name:14s} {metric:20s} {before:>34s} {after:>34s}")
                continue
            change = paired(chosen, metric)
            table[name][metric]["paired"] = change
            interval = (f"{change['mean_difference']:+.3f} [{change['ci95'][0]:+.3f}, {change['ci95'][1]:+.3f}]"
                        if change["n"] else "n/a")
            print(f"{name:14s} {metric:20s} {before:>34s} {after:>34s} {interval:>30s} {change['wilcoxon_p']:>10.3g}")
    print(json.dumps(timings, indent=1))
    write_json(variant / "ismm_table.json", {"table": table, "tuning": tuning, "rows": rows, "timings": timings,
                                         "args": {k: str(v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
