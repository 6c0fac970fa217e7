import numpy as np
import pytest

from drawgap.errors import InputError
from drawgap.metrics import bootstrap_ci, ratio_of_means


def test_interval_contains_the_estimate_and_is_seeded():
    values = np.random.default_rng(0).normal(50.0, 10.0, 60)
    lo, hi = bootstrap_ci(values, n_resamples=500, seed=1)
    assert lo < values.mean() < hi
    assert bootstrap_ci(values, n_resamples=500, seed=1) == [lo, hi]
    assert bootstrap_ci(values, n_resamples=500, seed=2) != [lo, hi]


def test_interval_shrinks_with_more_classes():
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.0, 1.0, 20), rng.normal(0.0, 1.0, 2000)
    width = lambda x: np.diff(bootstrap_ci(x, n_resamples=400, seed=0))[0]  # noqa: E731
    # the width goes as 1/sqrt(C): 10x fewer classes -> about 10x wider
    assert width(many) < width(few) / 5


def test_ratio_of_means_resamples_numerator_and_denominator_together():
    num, den = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    assert bootstrap_ci(num, den, statistic=ratio_of_means, n_resamples=200) == pytest.approx([0.5, 0.5])


def test_degenerate_cases():
    assert bootstrap_ci([5.0]) is None
    assert bootstrap_ci([2.0, 2.0, 2.0]) == [2.0, 2.0]
    with pytest.raises(InputError, match="resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
