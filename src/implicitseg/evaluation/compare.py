"""``implicitseg compare``: two evaluations of the same cases, compared pair by pair (DESIGN §2).

For each metric both evaluations hold, over the cases both scored with a finite value (``n`` pairs): the mean of
A, the mean of B, the mean of the paired differences **B − A**, its 95 % percentile bootstrap interval (cases
resampled with replacement, seeded; :mod:`~implicitseg.evaluation.stats`) and the two-sided Wilcoxon signed-rank
p-value of the differences (``scipy.stats.wilcoxon``: zero differences dropped, the exact distribution for small
``n`` without ties; 1.0 when every difference is 0). Cases present on one side only are listed, not dropped in
silence; a case's failure rows (``missing``, ``empty``, ``failed``) are paired like any other where the metric
scores them (Dice 0), and leave a distance pair out (``n`` says how many remain).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from implicitseg.errors import InputError
from implicitseg.evaluation.stats import CONFIDENCE, N_BOOTSTRAP, bootstrap_mean_interval
from implicitseg.evaluation.tables import metrics_paths
from implicitseg.io.atomic import read_json_object, write_json

TEXT_COLUMNS = ("case", "status")
"""CSV columns that are not metrics."""


def metrics_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(CSV, summary JSON) of an ``evaluate --out`` argument: ``m``, ``m.csv`` or ``m.summary.json``."""
    path = Path(path)
    if path.name.endswith(".summary.json"):
        path = path.with_name(path.name[: -len(".summary.json")])
    return metrics_paths(path)


def read_metrics(path: str | os.PathLike) -> tuple[dict[str, dict[str, float]], dict | None]:
    """(case → metric → value, the summary JSON or None) of an evaluation; raises :class:`InputError` naming the
    file for a missing or unreadable CSV, no ``case`` column, a repeated case or a value that is not a number."""
    csv_path, summary_path = metrics_files(path)
    if not csv_path.is_file():
        raise InputError(f"{path}: no metrics CSV ({csv_path} not found; give the METRICS of `evaluate --out`)")
    try:
        with open(csv_path, newline="") as handle:
            records = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{csv_path}: cannot read metrics CSV ({type(error).__name__}: {error})") from None
    if not records or "case" not in records[0]:
        raise InputError(f"{csv_path}: no rows with a 'case' column")
    rows: dict[str, dict[str, float]] = {}
    for record in records:
        case = record["case"]
        if case in rows:
            raise InputError(f"{csv_path}: case {case!r} appears twice")
        values = {}
        for name, text in record.items():
            if name in TEXT_COLUMNS:
                continue
            try:
                values[name] = float(text)
            except (TypeError, ValueError):
                raise InputError(f"{csv_path}: case {case!r}, {name}: {text!r} is not a number") from None
        rows[case] = values
    summary = None
    if summary_path.is_file():
        summary = read_json_object(summary_path)
    return rows, summary


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of (n,) paired differences; 1.0 when all are 0, NaN for n = 0."""
    if len(differences) == 0:
        return math.nan
    if not np.any(differences != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(differences).pvalue)


def compare_rows(rows_a: dict[str, dict[str, float]], rows_b: dict[str, dict[str, float]], *, seed: int = 0,
                 n_bootstrap: int = N_BOOTSTRAP) -> dict:
    """Paired comparison of two evaluations' rows (case → metric → value); see the module docstring.

    Returns ``{"difference": "B - A", "cases_paired", "only_in_a", "only_in_b", "metrics_only_in_a",
    "metrics_only_in_b", "metrics"}`` with ``metrics``: name → ``{"n", "mean_a", "mean_b", "mean_difference",
    "ci95", "wilcoxon_p"}``. Raises :class:`InputError` when no case or no metric is common to both.
    """
    paired = sorted(set(rows_a) & set(rows_b))
    if not paired:
        raise InputError("compare: the two evaluations have no case in common")
    names_a = list(dict.fromkeys(name for row in rows_a.values() for name in row))
    names_b = list(dict.fromkeys(name for row in rows_b.values() for name in row))
    common = [name for name in names_a if name in names_b]
    if not common:
        raise InputError("compare: the two evaluations have no metric in common "
                         f"({', '.join(names_a) or 'none'} vs {', '.join(names_b) or 'none'})")
    metrics = {}
    for name in common:
        a = np.array([rows_a[case].get(name, math.nan) for case in paired])
        b = np.array([rows_b[case].get(name, math.nan) for case in paired])
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        differences = b - a
        low, high = bootstrap_mean_interval(differences, seed=seed, n_bootstrap=n_bootstrap)
        metrics[name] = {"n": int(keep.sum()),
                         "mean_a": float(a.mean()) if len(a) else math.nan,
                         "mean_b": float(b.mean()) if len(b) else math.nan,
                         "mean_difference": float(differences.mean()) if len(differences) else math.nan,
                         "ci95": [low, high], "wilcoxon_p": wilcoxon_p(differences)}
    return {"difference": "B - A", "confidence": CONFIDENCE, "n_bootstrap": n_bootstrap, "seed": seed,
            "cases_paired": paired,
            "only_in_a": sorted(set(rows_a) - set(rows_b)), "only_in_b": sorted(set(rows_b) - set(rows_a)),
            "metrics_only_in_a": [n for n in names_a if n not in names_b],
            "metrics_only_in_b": [n for n in names_b if n not in names_a], "metrics": metrics}


def compare_evaluations(metrics_a: str | os.PathLike, metrics_b: str | os.PathLike, *,
                        out: str | os.PathLike | None = None, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> dict:
    """:func:`compare_rows` of two ``evaluate`` outputs, with ``a``, ``b`` (paths) and ``kind``; written to
    ``out`` (JSON, atomically) when given. Raises :class:`InputError` when their summaries name different kinds."""
    rows_a, summary_a = read_metrics(metrics_a)
    rows_b, summary_b = read_metrics(metrics_b)
    kind_a, kind_b = ((s or {}).get("kind") for s in (summary_a, summary_b))
    if kind_a and kind_b and kind_a != kind_b:
        raise InputError(f"compare: {metrics_a} holds {kind_a} metrics and {metrics_b} {kind_b} metrics")
    result = {"a": str(metrics_a), "b": str(metrics_b), "kind": kind_a or kind_b,
              **compare_rows(rows_a, rows_b, seed=seed, n_bootstrap=n_bootstrap)}
    if out is not None:
        write_json(Path(out), result)
    return result


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def _p_value(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3g}"


def format_comparison(result: dict) -> str:
    """Plain-text table of :func:`compare_evaluations`: metric | n | mean A | mean B | B − A | 95 % CI | p, then
    the cases on one side only."""
    header = ["metric", "n", "mean A", "mean B", "B - A", "ci95 of B - A", "wilcoxon p"]
    body = [[name, str(m["n"]), _number(m["mean_a"]), _number(m["mean_b"]), _number(m["mean_difference"]),
             f"[{_number(m['ci95'][0])}, {_number(m['ci95'][1])}]", _p_value(m["wilcoxon_p"])]
            for name, m in result["metrics"].items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [f"A: {result['a']}\nB: {result['b']}\n{len(result['cases_paired'])} case(s) in both; paired "
             f"differences B - A, {result['confidence']:.0%} bootstrap interval, Wilcoxon signed-rank (two-sided)",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
              for line in body]
    for side in ("a", "b"):
        if result[f"only_in_{side}"]:
            lines.append(f"only in {side.upper()} (not compared): {', '.join(result[f'only_in_{side}'])}")
        if result[f"metrics_only_in_{side}"]:
            lines.append(f"metrics only in {side.upper()}: {', '.join(result[f'metrics_only_in_{side}'])}")
    return "\n".join(lines)
