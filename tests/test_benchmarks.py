"""The GPU benchmark script runs end to end (on CPU, with its --smoke sizes), so a lent GPU's minutes are not spent
finding out that it does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_smoke_measures_every_row(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--smoke"],
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    nudf = json.loads((tmp_path / "nudf_steps.json").read_text())
    unet = json.loads((tmp_path / "unet_steps.json").read_text())
    assert [(row["preset"], row["precision"]) for row in nudf] == [("nudf-demo", "32"), ("nudf-demo", "bf16-mixed")]
    assert [(row["preset"], row["precision"]) for row in unet] == [("unet-demo", "32"), ("unet-demo", "bf16-mixed")]
    assert all(row["step_s_median"] > 0 and row["peak_mb"] >= 0 and "failed" not in row for row in nudf + unet)


def test_gpu_suite_refuses_an_unknown_option(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--fast"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr


@pytest.mark.slow
def test_learning_curves_measure_each_segment_and_resume_where_they_stopped(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "nudf_learning.py"), "--out", str(tmp_path), "--preset",
               "nudf-demo", "--cases", "5", "--every", "0.17"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([*command, "--minutes", "0.34"], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((tmp_path / "learning.json").read_text())
    points = record["curves"]["default"]
    assert len(points) == 2 and 0 < points[0]["train_s"] < points[1]["train_s"]
    assert 0 < points[0]["epochs"] < points[1]["epochs"]
    assert all(point["n_cases"] == 1 and point["n_scored"] + point["n_failed"] == 1 for point in points)
    assert (tmp_path / "learning.png").is_file() and "| default | preset | " in first.stdout

    again = subprocess.run([*command, "--minutes", "0.34"], capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and json.loads((tmp_path / "learning.json").read_text()) == record  # nothing redone
    other = subprocess.run([*command, "--minutes", "0.34", "--variant", "default=train.learning_rate=5e-4"],
                           capture_output=True, text=True, timeout=600, env=env)
    assert other.returncode != 0 and "was measured with [], not ['train.learning_rate=5e-4']" in other.stderr


def test_the_fallback_threshold_is_the_loosest_that_keeps_every_tuning_case_within_the_loss(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from ismm_table import choose_fallback

    def row(fraction: float, change: float) -> dict:
        return {"consistency": {"overruled_fraction": fraction, "trusted_share": 1.0 - fraction},
                "before": {"dice": 0.9}, "after": {"dice": 0.9 + change}}

    rows = [row(0.1, 0.02), row(0.3, -0.005), row(0.5, -0.05), row(0.7, 0.01)]
    chosen = choose_fallback(rows, "overruled_fraction", 0.01)
    assert chosen["setting"] == "tim.max_overruled_fraction" and chosen["threshold"] == 0.3
    assert chosen["n_fall_back"] == 2 and chosen["safe"] and chosen["worst_dice_change"] == pytest.approx(-0.005)
    assert choose_fallback(rows, "overruled_fraction", 0.1)["threshold"] == 1.0  # every loss allowed: off
    unsafe = choose_fallback([row(0.0, -0.2), row(0.4, 0.01)], "overruled_fraction", 0.01)
    assert unsafe["threshold"] == 0.0 and not unsafe["safe"]
    # a minimum: rows whose share is below it fall back; the same rows as above, mirrored
    chosen = choose_fallback(rows, "trusted_share", 0.01)
    assert chosen["setting"] == "tim.min_trusted_share" and chosen["threshold"] == pytest.approx(0.7)
    assert chosen["n_fall_back"] == 2 and chosen["safe"]
    assert choose_fallback(rows, "trusted_share", 0.1)["threshold"] == 0.0  # off


def test_the_tuning_summary_counts_every_row_that_loses_more_than_the_allowed_dice(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from ismm_table import tuning_summary

    def row(initial: str, change: float, hd95_change: float) -> dict:
        return {"initial": initial, "before": {"dice": 0.9, "hd95_mm": 4.0},
                "after": {"dice": 0.9 + change, "hd95_mm": 4.0 + hd95_change}}

    rows = [row("holes", -0.02, 1.0), row("blobs", 0.01, -5.0), row("holes", 0.005, 0.0), row("holes", -0.011, 2.0)]
    summary = tuning_summary(rows, 0.01)
    assert list(summary) == ["holes", "blobs"]
    assert summary["holes"]["n"] == 3 and summary["holes"]["n_worse"] == 2
    assert summary["holes"]["median_dice_change"] == pytest.approx(-0.011)
    assert summary["holes"]["worst_dice_change"] == pytest.approx(-0.02)
    assert summary["holes"]["median_hd95_change_mm"] == pytest.approx(1.0)
    assert summary["blobs"]["n_worse"] == 0 and summary["blobs"]["best_dice_change"] == pytest.approx(0.01)

def test_two_refinement_settings_are_paired_over_the_rows_both_hold(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from ismm_variants import compare, read_rows

    def write(folder: Path, changes: dict[tuple[str, str], float]) -> None:
        (folder / "rows").mkdir(parents=True)
        by_initial: dict[str, list] = {}
        for (initial, case), change in changes.items():
            by_initial.setdefault(initial, []).append(
                {"initial": initial, "case": case, "before": {"dice": 0.9, "hd95_mm": 3.0},
                 "after": {"dice": 0.9 + change, "hd95_mm": 3.0 - 10 * change}})
        for initial, rows in by_initial.items():
            (folder / "rows" / f"{initial}.json").write_text(json.dumps(rows))

    keys = [("holes", f"c{i}") for i in range(6)] + [("unet", f"c{i}") for i in range(6)]
    write(tmp_path / "a", {key: -0.02 for key in keys})
    write(tmp_path / "b", {**{key: 0.01 for key in keys[:-1]}, ("unet", "c9"): 0.0})
    result = compare(read_rows(tmp_path / "a"), read_rows(tmp_path / "b"), 0.01)
    assert result["only_in_a"] == [["unet", "c5"]] and result["only_in_b"] == [["unet", "c9"]]
    holes, every = result["by_initial"]["holes"], result["by_initial"]["all"]
    assert holes["n"] == 6 and every["n"] == 11
    assert holes["a"]["n_worse"] == 6 and holes["b"]["n_worse"] == 0
    assert holes["b_minus_a"]["dice"]["mean_difference"] == pytest.approx(0.03)
    assert every["b_minus_a"]["hd95_mm"]["mean_difference"] == pytest.approx(-0.3)
    assert every["b_minus_a"]["dice"]["wilcoxon_p"] < 0.01


def test_ismm_table_rows_are_keyed_by_the_refinement_settings_a_prediction_would_use(monkeypatch, tmp_path) -> None:
    # a run trained before a tim key existed (or before its default changed) refines with the code's default: rows
    # made under the old default must not be reused as if they were the new one's
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from ismm_table import effective_tim

    from implicitseg.config import Settings
    from implicitseg.io.configs import load_yaml, save_config
    from implicitseg.methods import ismm
    from implicitseg.methods.base import copy_preset

    save_config(tmp_path / "config.yaml", copy_preset(ismm.PRESETS, "ismm-demo"))
    run_config = load_yaml(tmp_path / "config.yaml")
    del run_config["tim"]["trim_rounds"]  # a run older than the key
    run_config["tim"]["fit_steps"] = 123
    save_config(tmp_path / "config.yaml", run_config)
    default = effective_tim(tmp_path, [])
    assert default["trim_rounds"] == ismm.TimConfig().trim_rounds and default["fit_steps"] == 123
    changed = effective_tim(tmp_path, [Settings.from_assignments(["tim.trim_rounds=0"])])
    assert changed["trim_rounds"] == 0 and {k: v for k, v in changed.items() if k != "trim_rounds"} == \
        {k: v for k, v in default.items() if k != "trim_rounds"}


def test_ismm_table_refuses_other_settings_without_a_tag_that_keeps_the_presets_rows(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ismm_table.py"), "--out", str(tmp_path),
                             "--set", "tim.trusted_fraction=0.5"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "--set needs --tag NAME" in result.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written
    tuned = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ismm_table.py"), "--out", str(tmp_path),
                            "--tune-cases", "2", "--set", "tim.min_trusted_share=0.5", "--tag", "t"],
                           capture_output=True, text=True, cwd=REPO)
    assert tuned.returncode != 0 and "the tuning chooses the fallback" in tuned.stderr
    assert not any(tmp_path.iterdir())


def test_ismm_table_refuses_a_short_unet_of_other_epochs_than_the_one_its_rows_came_from(tmp_path: Path) -> None:
    (tmp_path / "timings.json").write_text(json.dumps({"unet_short_epochs": 8, "unet_short_train_s": 120.0}))
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ismm_table.py"), "--out", str(tmp_path),
                             "--short-unet-epochs", "3"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "trained 8 epochs, not 3" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["timings.json"]  # refused before the dataset


def test_the_islands_removal_is_scored_on_saved_refinements_as_a_refinement_would_write_it(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from ismm_removal import removal_rows

    from implicitseg.io.images import Volume, write_image

    affine = np.diag([0.8, 0.8, 1.2, 1.0])
    truth = np.zeros((20, 20, 20), dtype=np.uint8)
    truth[5:15, 5:15, 5:15] = 1
    truth[15:18, 8:12, 8:12] = 1  # a lobe
    initial = truth.copy()
    initial[1:3, 1:3, 1:3] = 1  # a spurious island
    initial[9:11, 9:11, 9:11] = 0  # a cavity
    refined = np.zeros_like(truth)
    refined[5:15, 5:15, 5:15] = 1  # the fit filled the cavity, removed the island and carved the lobe away
    write_image(tmp_path / "out" / "dataset" / "labelsTs" / "c0.nii.gz", Volume(truth, affine))
    write_image(tmp_path / "out" / "initial" / "blobs" / "c0.nii.gz", Volume(initial, affine))
    write_image(tmp_path / "variant" / "refined" / "blobs" / "c0" / "labelmap.nii.gz", Volume(refined, affine))
    (row,) = removal_rows(tmp_path / "variant", tmp_path / "out")
    assert row["initial"] == "blobs" and row["case"] == "c0"
    assert row["before"] < 1.0 and row["refined"] < 1.0 and row["islands"] == pytest.approx(1.0)
    assert row["morphology"] == pytest.approx(1.0)  # no prior: the largest component, its cavity filled
    assert row["removed_right"] == 3 * 4 * 4 and row["added_wrong"] == 0
    with pytest.raises(SystemExit, match="no refined"):
        removal_rows(tmp_path / "out")
