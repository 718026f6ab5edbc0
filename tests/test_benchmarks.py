"""The GPU benchmark script runs end to end (on CPU, with its --smoke sizes), so a lent GPU's minutes are not spent
finding out that it does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert [row["preset"] for row in unet] == ["unet-demo"]
    assert all(row["step_s_median"] > 0 and row["peak_mb"] >= 0 and "failed" not in row for row in nudf + unet)


def test_gpu_suite_refuses_an_unknown_option(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(tmp_path), "--fast"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr
