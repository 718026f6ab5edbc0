"""``compare``: paired differences of two evaluations with known answers (mean, bootstrap interval, Wilcoxon p),
cases on one side only reported, unusable input refused with exit 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from implicitseg.cli import main
from implicitseg.errors import InputError
from implicitseg.evaluation.compare import compare_evaluations, compare_rows, format_comparison
from implicitseg.evaluation.tables import rows_to_csv

CASES = [f"c{i}" for i in range(8)]
A_DICE = np.array([0.90, 0.85, 0.88, 0.92, 0.80, 0.87, 0.91, 0.86])
SHIFT = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08])  # B - A, every one positive


def _write(path, rows: list[dict], kind: str = "volume") -> None:
    path.with_suffix(".csv").write_text(rows_to_csv(rows))
    path.with_name(path.name + ".summary.json").write_text(json.dumps({"kind": kind}))


def _rows(dice, hd95) -> list[dict]:
    return [{"case": case, "status": "ok", "dice": float(d), "hd95_mm": float(h)}
            for case, d, h in zip(CASES, dice, hd95)]


def test_known_paired_differences(tmp_path):
    _write(tmp_path / "a", _rows(A_DICE, np.full(8, 2.0)))
    hd95_b = np.full(8, 2.0) + np.array([0.5, -0.5, 0.25, -0.25, 1.0, -1.0, 0.1, -0.1])  # differences symmetric about 0
    hd95_b[3] = math.nan  # no distance for c3 in B: one pair fewer
    _write(tmp_path / "b", _rows(A_DICE + SHIFT, hd95_b))
    result = compare_evaluations(tmp_path / "a", tmp_path / "b.csv", out=tmp_path / "cmp.json")
    assert json.loads((tmp_path / "cmp.json").read_text()) == json.loads(json.dumps(result))
    dice = result["metrics"]["dice"]
    assert dice["n"] == 8 and dice["mean_difference"] == pytest.approx(SHIFT.mean())
    assert dice["mean_a"] == pytest.approx(A_DICE.mean()) and dice["mean_b"] == pytest.approx((A_DICE + SHIFT).mean())
    assert SHIFT.min() <= dice["ci95"][0] < SHIFT.mean() < dice["ci95"][1] <= SHIFT.max()
    assert dice["wilcoxon_p"] == pytest.approx(2 / 2**8)  # exact: all 8 signs positive, two-sided
    hd95 = result["metrics"]["hd95_mm"]
    assert hd95["n"] == 7 and hd95["ci95"][0] < 0 < hd95["ci95"][1] and hd95["wilcoxon_p"] > 0.5
    assert result["cases_paired"] == CASES and result["only_in_a"] == result["only_in_b"] == []
    assert result["kind"] == "volume" and result["difference"] == "B - A"
    again = compare_evaluations(tmp_path / "a.summary.json", tmp_path / "b")
    assert again["metrics"]["dice"]["ci95"] == dice["ci95"]  # seeded


def test_identical_evaluations_differ_by_nothing_and_unpaired_cases_are_listed():
    rows = {case: {"dice": float(d)} for case, d in zip(CASES, A_DICE)}
    other = {**{case: dict(values) for case, values in rows.items() if case != "c0"}, "extra": {"dice": 0.5}}
    result = compare_rows(rows, other)
    assert result["only_in_a"] == ["c0"] and result["only_in_b"] == ["extra"]
    assert result["metrics"]["dice"] == {"n": 7, "mean_a": pytest.approx(A_DICE[1:].mean()),
                                         "mean_b": pytest.approx(A_DICE[1:].mean()), "mean_difference": 0.0,
                                         "ci95": [0.0, 0.0], "wilcoxon_p": 1.0}
    text = format_comparison({"a": "A", "b": "B", **result})
    assert "only in A (not compared): c0" in text and "only in B (not compared): extra" in text
    with pytest.raises(InputError, match="no case in common"):
        compare_rows(rows, {"z": {"dice": 1.0}})
    with pytest.raises(InputError, match="no metric in common"):
        compare_rows(rows, {"c1": {"hd95_mm": 1.0}})


def _cli(*arguments):
    return subprocess.run([sys.executable, "-m", "implicitseg.cli", "compare", *map(str, arguments)],
                          capture_output=True, text=True, timeout=300)


def test_compare_command_prints_the_table_and_refuses_unusable_input_with_exit_2(tmp_path, monkeypatch, capsys):
    _write(tmp_path / "a", _rows(A_DICE, np.full(8, 2.0)))
    _write(tmp_path / "b", _rows(A_DICE + SHIFT, np.full(8, 2.0)))
    _write(tmp_path / "surface", _rows(A_DICE, np.full(8, 2.0)), kind="surface")
    (tmp_path / "bad.csv").write_text("case,dice\nc0,high\n")
    result = _cli(tmp_path / "a", tmp_path / "b")
    assert result.returncode == 0, result.stderr
    dice_line = next(line for line in result.stdout.splitlines() if line.startswith("dice"))
    assert dice_line.split()[1:5] == ["8", f"{A_DICE.mean():.4f}", f"{(A_DICE + SHIFT).mean():.4f}", "0.0450"]
    assert dice_line.split()[-1] == "0.00781"
    for arguments, fragment in (((tmp_path / "a", tmp_path / "nothing"), "nothing"),
                                ((tmp_path / "a", tmp_path / "bad.csv"), "'high' is not a number"),
                                ((tmp_path / "a", tmp_path / "surface"), "volume metrics")):
        monkeypatch.setattr(sys, "argv", ["implicitseg", "compare", *map(str, arguments)])
        with pytest.raises(SystemExit) as exited:  # the console entry point, in this process
            main()
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exited.value.code == 2 and len(lines) == 1 and fragment in lines[0], lines
