"""What ``tim.removal islands`` would have made of refinements already run by ``ismm_table.py`` (DSC only).

    .venv/bin/python benchmarks/ismm_removal.py bench_out/ismm_laa_e1000/tune
    .venv/bin/python benchmarks/ismm_removal.py bench_out/ismm_laa_e1000/variants/islands --data bench_out/ismm_laa_e1000

FOLDER is an ``ismm_table.py`` OUT/tune or OUT (or their variants/TAG): it holds
``refined/<initial>/<case>/labelmap.nii.gz``; ``--data`` (default FOLDER) holds ``initial/<initial>/<case>.nii.gz``
and the ground truth in ``dataset/labelsTr`` (tuning) or ``dataset/labelsTs`` (held-out). The islands rule is the
safeguard's last step on the initial and the safeguard's labelmap
(:func:`~implicitseg.inference.refinement.restrict_removal`), so applied to the saved labelmaps it gives exactly
the labelmap a refinement with ``--set tim.removal=islands`` writes. Per initial segmentation and case this prints
the DSC change of the refinement as run (``refined``), with the islands rule (to choose a rule on tuning cases
without refining them again; the other metrics need ``ismm_table.py --set tim.removal=islands``), and of a repair
without any prior (``morphology``: the initial's largest 26-connected component, its enclosed cavities filled).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def removal_rows(folder: Path, data: Path | None = None) -> list[dict]:
    """One row per (initial, case) refined in ``folder`` (initial segmentations and ground truth in ``data``,
    default ``folder``): DSC of the initial, of the refinement as run (``refined``), of
    the same with only whole islands removed (``islands``) and of the initial's largest component with its cavities
    filled (``morphology``)."""
    from scipy import ndimage

    from implicitseg.inference.refinement import restrict_removal
    from implicitseg.io.images import read_labelmap, resample_volume

    data = folder if data is None else data
    labels = next((data / "dataset" / name for name in ("labelsTs", "labelsTr")
                   if (data / "dataset" / name).is_dir()), None)
    if labels is None or not (folder / "refined").is_dir():
        raise SystemExit(f"{folder}: no refined/, or {data}: no dataset/labelsTs|labelsTr (an ismm_table.py OUT?)")
    rows = []
    for source in sorted(p for p in (folder / "refined").iterdir() if p.is_dir()):
        for refined_file in sorted(source.glob("*/labelmap.nii.gz")):
            case = refined_file.parent.name
            refined = read_labelmap(refined_file, allow_empty=True)
            initial = read_labelmap(data / "initial" / source.name / f"{case}.nii.gz", allow_empty=True)
            truth = read_labelmap(labels / f"{case}.nii.gz")
            if initial.shape != refined.shape or not np.allclose(initial.affine_lps, refined.affine_lps, atol=1e-4):
                initial = resample_volume(initial, refined.shape, refined.affine_lps, interpolation="nearest")
            initial_mask, refined_mask, truth_mask = (np.asarray(v.array) > 0 for v in (initial, refined, truth))
            islands, _ = restrict_removal(initial_mask, refined_mask, "islands")
            components, n_components = ndimage.label(initial_mask, structure=np.ones((3, 3, 3), dtype=bool))
            largest = (components == 1 + int(np.argmax(np.bincount(components.ravel())[1:])) if n_components
                       else initial_mask)
            rows.append({"initial": source.name, "case": case, "before": dice(initial_mask, truth_mask),
                         "refined": dice(refined_mask, truth_mask), "islands": dice(islands, truth_mask),
                         "morphology": dice(ndimage.binary_fill_holes(largest), truth_mask),
                         # the refinement's wrong changes: right voxels of the initial it removed, wrong ones it added
                         "removed_right": int((initial_mask & ~refined_mask & truth_mask).sum()),
                         "added_wrong": int((refined_mask & ~initial_mask & ~truth_mask).sum())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="the folder with initial/ and dataset/")
    parser.add_argument("--max-dice-loss", type=float, default=0.01)
    args = parser.parse_args()
    rows = removal_rows(args.folder, args.data)
    print("| initial | n | refined as run: ΔDSC median / worst / rows worse by > "
          f"{args.max_dice_loss:g} | islands: the same | morphology (no prior): the same | per case islands ΔDSC |")
    print("|---|---|---|---|---|---|")
    for source in sorted({row["initial"] for row in rows}) + ["all"]:
        chosen = [row for row in rows if source in ("all", row["initial"])]
        cells = []
        for rule in ("refined", "islands", "morphology"):
            changes = [row[rule] - row["before"] for row in chosen]
            cells.append(f"{statistics.median(changes):+.3f} / {min(changes):+.3f} / "
                         f"{sum(change < -args.max_dice_loss for change in changes)}")
        per_case = ("" if source == "all" else
                    "; ".join(f"{row['case']} {row['islands'] - row['before']:+.3f}" for row in chosen))
        print(f"| {source} | {len(chosen)} | {' | '.join(cells)} | {per_case} |")
    worse = [row for row in rows if row["refined"] - row["before"] < -args.max_dice_loss]
    wrong = sum(row["removed_right"] + row["added_wrong"] for row in worse)
    print(f"\nRows the refinement as run made worse by more than {args.max_dice_loss:g}: {len(worse)}; of their wrongly "
          f"changed voxels, {sum(row['removed_right'] for row in worse) / max(wrong, 1):.0%} are right voxels of the "
          f"initial it removed ({', '.join(row['initial'] + ' ' + row['case'] for row in worse) or 'none'}).")


if __name__ == "__main__":
    main()
