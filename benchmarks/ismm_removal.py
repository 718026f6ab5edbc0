"""What ``tim.removal islands`` would have made of refinements already run by ``ismm_table.py`` (DSC only).

    .venv/bin/python benchmarks/ismm_removal.py bench_out/ismm_laa_e1000/tune

FOLDER is an ``ismm_table.py`` OUT/tune (or OUT) refined with ``tim.removal anywhere``: it holds
``initial/<initial>/<case>.nii.gz``, ``refined/<initial>/<case>/labelmap.nii.gz`` and the ground truth in
``dataset/labelsTr`` (tuning) or ``dataset/labelsTs`` (held-out). The islands rule is a last step of the safeguard
on the initial and the safeguard's labelmap (:func:`~implicitseg.inference.refinement.restrict_removal`), so
applying it to the saved labelmaps gives exactly the labelmap a refinement with ``--set tim.removal=islands`` writes;
per initial segmentation and case this prints the DSC change of both rules (what chooses a rule on tuning cases
without refining them again; the other metrics need ``ismm_table.py --set tim.removal=islands``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def removal_rows(folder: Path) -> list[dict]:
    """One row per (initial, case) refined in ``folder``: DSC of the initial, of the refinement (``anywhere``) and
    of the same with only whole islands removed (``islands``)."""
    from implicitseg.inference.refinement import restrict_removal
    from implicitseg.io.images import read_labelmap, resample_volume

    labels = next((folder / "dataset" / name for name in ("labelsTs", "labelsTr")
                   if (folder / "dataset" / name).is_dir()), None)
    if labels is None or not (folder / "refined").is_dir():
        raise SystemExit(f"{folder}: no dataset/labelsTs|labelsTr or refined/ (an ismm_table.py OUT or OUT/tune?)")
    rows = []
    for source in sorted(p for p in (folder / "refined").iterdir() if p.is_dir()):
        for refined_file in sorted(source.glob("*/labelmap.nii.gz")):
            case = refined_file.parent.name
            refined = read_labelmap(refined_file, allow_empty=True)
            initial = read_labelmap(folder / "initial" / source.name / f"{case}.nii.gz", allow_empty=True)
            truth = read_labelmap(labels / f"{case}.nii.gz")
            if initial.shape != refined.shape or not np.allclose(initial.affine_lps, refined.affine_lps, atol=1e-4):
                initial = resample_volume(initial, refined.shape, refined.affine_lps, interpolation="nearest")
            initial_mask, refined_mask, truth_mask = (np.asarray(v.array) > 0 for v in (initial, refined, truth))
            islands, _ = restrict_removal(initial_mask, refined_mask, "islands")
            rows.append({"initial": source.name, "case": case, "before": dice(initial_mask, truth_mask),
                         "anywhere": dice(refined_mask, truth_mask), "islands": dice(islands, truth_mask)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--max-dice-loss", type=float, default=0.01)
    args = parser.parse_args()
    rows = removal_rows(args.folder)
    print("| initial | n | anywhere: ΔDSC median / worst / rows worse by > "
          f"{args.max_dice_loss:g} | islands: ΔDSC median / worst / rows worse | per case islands ΔDSC |")
    print("|---|---|---|---|---|")
    for source in sorted({row["initial"] for row in rows}) + ["all"]:
        chosen = [row for row in rows if source in ("all", row["initial"])]
        cells = []
        for rule in ("anywhere", "islands"):
            changes = [row[rule] - row["before"] for row in chosen]
            cells.append(f"{statistics.median(changes):+.3f} / {min(changes):+.3f} / "
                         f"{sum(change < -args.max_dice_loss for change in changes)}")
        per_case = ("" if source == "all" else
                    "; ".join(f"{row['case']} {row['islands'] - row['before']:+.3f}" for row in chosen))
        print(f"| {source} | {len(chosen)} | {cells[0]} | {cells[1]} | {per_case} |")


if __name__ == "__main__":
    main()
