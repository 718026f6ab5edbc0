"""Summary statistics: sample standard deviation, a seeded bootstrap interval of the mean, NaN left out and counted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from implicitseg.evaluation.stats import bootstrap_mean_interval, describe, sample_std


def test_describe_uses_the_sample_std_and_counts_only_finite_values():
    stats = describe([1.0, 2.0, 3.0, 4.0, math.nan, math.inf])
    assert stats["n"] == 4 and stats["mean"] == 2.5 and stats["median"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))  # ddof = 1; the population std would be 1.118
    assert sample_std(np.array([7.0])) != sample_std(np.array([7.0]))  # NaN with one value
    empty = describe([math.nan])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and all(math.isnan(v) for v in empty["ci95"])


def test_bootstrap_interval_of_the_mean_is_seeded_and_covers_it():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=40)
    low, high = bootstrap_mean_interval(values, seed=3)
    assert (low, high) == bootstrap_mean_interval(values, seed=3)
    assert (low, high) != bootstrap_mean_interval(values, seed=4)
    assert low < values.mean() < high
    # the percentile interval's width is close to the normal approximation's, 2 × 1.96 × s / √n
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / math.sqrt(len(values)), rel=0.15)
    assert bootstrap_mean_interval(np.array([0.3]), seed=0) == (0.3, 0.3)
