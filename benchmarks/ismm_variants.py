"""Two refinement settings of ``ismm_table.py`` side by side, paired over the same rows (case × initial segmentation).

    .venv/bin/python benchmarks/ismm_variants.py bench_out/ismm_laa/tune/variants/trim2 \
        bench_out/ismm_laa/tune/variants/align_template --out bench_out/ismm_laa/tune/align_template_vs_trim2.json

Each argument is a folder with ``rows/<initial>.json`` (``ismm_table.py``'s OUT, OUT/variants/TAG, OUT/tune or
OUT/tune/variants/TAG). Per initial segmentation and over every row both hold: each setting's DSC change (median,
worst, rows worse by more than ``--max-dice-loss``), then B − A of the refined DSC and HD95 (mean, 95 % bootstrap
interval, Wilcoxon p: ``evaluation/compare.py``). A row is what the user gets, a safeguard's fallback included; a
row that only one setting has is named, not dropped silently.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("dice", "hd95_mm")


def read_rows(folder: Path) -> dict[tuple[str, str], dict]:
    """(initial, case) → row of every ``rows/*.json`` under ``folder``."""
    files = sorted((folder / "rows").glob("*.json"))
    if not files:
        raise SystemExit(f"{folder}: no rows/*.json (an ismm_table.py output folder?)")
    return {(row["initial"], row["case"]): row for file in files for row in json.loads(file.read_text())}


def dice_changes(rows: list[dict]) -> list[float]:
    return [row["after"]["dice"] - row["before"]["dice"] for row in rows]


def compare(rows_a: dict, rows_b: dict, max_dice_loss: float) -> dict:
    """Per initial segmentation (and ``all``) of the rows both settings hold: each setting's DSC-change summary and
    the paired B − A of the refined metrics."""
    from implicitseg.evaluation.compare import compare_rows

    common = sorted(set(rows_a) & set(rows_b))
    if not common:
        raise SystemExit("the two settings have no row in common")
    groups = {name: [key for key in common if key[0] == name] for name in dict.fromkeys(key[0] for key in common)}
    groups["all"] = common
    result = {"only_in_a": [list(key) for key in sorted(set(rows_a) - set(rows_b))],
              "only_in_b": [list(key) for key in sorted(set(rows_b) - set(rows_a))], "by_initial": {}}
    for name, keys in groups.items():
        line = {"n": len(keys)}
        for label, rows in (("a", rows_a), ("b", rows_b)):
            changes = dice_changes([rows[key] for key in keys])
            line[label] = {"median_dice_change": statistics.median(changes), "worst_dice_change": min(changes),
                           "n_worse": sum(change < -max_dice_loss for change in changes)}
        after = {label: {"/".join(key): {metric: rows[key]["after"][metric] for metric in METRICS} for key in keys}
                 for label, rows in (("a", rows_a), ("b", rows_b))}
        line["b_minus_a"] = compare_rows(after["a"], after["b"])["metrics"]
        result["by_initial"][name] = line
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="the first setting's folder (with rows/)")
    parser.add_argument("b", type=Path, help="the second setting's folder")
    parser.add_argument("--max-dice-loss", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON")
    args = parser.parse_args()
    result = compare(read_rows(args.a), read_rows(args.b), args.max_dice_loss)
    result.update(a=str(args.a), b=str(args.b), max_dice_loss=args.max_dice_loss)
    print(f"A = {args.a}\nB = {args.b}")
    print("| initial | n | A: ΔDSC median / worst / worse | B: ΔDSC median / worst / worse | B − A DSC [95 % CI], p "
          "| B − A HD95 mm [95 % CI], p |\n|---|---|---|---|---|---|")
    for name, line in result["by_initial"].items():
        cells = [f"{line[label]['median_dice_change']:+.3f} / {line[label]['worst_dice_change']:+.3f} / "
                 f"{line[label]['n_worse']}" for label in ("a", "b")]
        for metric in METRICS:
            change = line["b_minus_a"][metric]
            cells.append(f"{change['mean_difference']:+.3f} [{change['ci95'][0]:+.3f}, {change['ci95'][1]:+.3f}], "
                         f"{change['wilcoxon_p']:.2g}")
        print(f"| {name} | {line['n']} | " + " | ".join(cells) + " |")
    for side in ("only_in_a", "only_in_b"):
        if result[side]:
            print(f"{side}: {', '.join('/'.join(key) for key in result[side])}")
    if args.out:
        from implicitseg.io.atomic import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
