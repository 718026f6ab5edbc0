"""Summary statistics of per-case metric values: counts, mean, sample standard deviation, median and a bootstrap
interval of the mean.

Conventions, the same everywhere in implicitseg (evaluation summaries, ``compare``, the benchmarks):
- the standard deviation is the **sample** standard deviation (ddof = 1; NaN with fewer than 2 values);
- intervals are **95 % percentile bootstrap** intervals of the mean: :data:`N_BOOTSTRAP` resamples of the cases
  with replacement, drawn from ``numpy.random.default_rng(seed)``, so a seed gives the same interval every time;
- NaN and infinite values (a distance with no surface to measure it to) are left out, and ``n`` says how many
  values remain.
"""

from __future__ import annotations

import math

import numpy as np

N_BOOTSTRAP = 10_000
"""Bootstrap resamples per interval."""

CONFIDENCE = 0.95
"""Coverage of the bootstrap intervals."""


def finite(values) -> np.ndarray:
    """(K,) float64: ``values`` without NaN or ±inf (MONAI's distance to an empty mask is inf: not a measurement)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def sample_std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof = 1) of (K,) values; NaN for K < 2."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def bootstrap_mean_interval(values: np.ndarray, *, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP,
                            confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of the mean of (K,) values; (NaN, NaN) for K = 0.

    ``n_bootstrap`` resamples of K values drawn with replacement (``numpy.random.default_rng(seed)``); the interval
    is the (1 − confidence)/2 and (1 + confidence)/2 quantiles of their means. With K = 1 it is the value itself.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_bootstrap, len(values)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def describe(values, *, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> dict[str, float | int | list[float]]:
    """``{"n", "mean", "std", "median", "ci95"}`` of the finite ``values``: ``std`` ddof = 1, ``ci95`` the
    bootstrap interval of the mean ``[low, high]`` (:func:`bootstrap_mean_interval`); NaN where undefined."""
    kept = finite(values)
    if len(kept) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan, "ci95": [math.nan, math.nan]}
    low, high = bootstrap_mean_interval(kept, seed=seed, n_bootstrap=n_bootstrap)
    return {"n": int(len(kept)), "mean": float(kept.mean()), "std": sample_std(kept),
            "median": float(np.median(kept)), "ci95": [low, high]}
