"""95 % bootstrap intervals over classes (percentile method, seeded), through `scipy.stats.bootstrap`.

Classes are the resampled unit: a system's scalar is a mean over its classes, and the question an interval
answers is "how much would it move with another draw of classes". Statistics that divide by the feature
scale s (normalised diversity, originality) re-estimate s on every resample (`ratio_of_means`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from drawgap.errors import InputError


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def ratio_of_means(numerator, denominator, axis=-1):
    """mean(numerator) / mean(denominator) over the resampled classes (both per class, paired)."""
    return np.mean(numerator, axis=axis) / np.mean(denominator, axis=axis)


def bootstrap_ci(*per_class, statistic=_mean, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> list[float] | None:
    """[low, high] percentile interval of `statistic` over resamples of classes, or None for < 2 classes.

    `per_class`: one or more arrays [C] (paired: resampled with the same class indices); `statistic(*arrays,
    axis)` must be vectorised over `axis` (numpy style), e.g. `ratio_of_means`. Default: the mean.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InputError(f"expected a positive number of resamples, got {n_resamples!r}", field="bootstrap")
    if not 0.0 < level < 1.0:
        raise InputError(f"expected a confidence level in (0, 1), got {level!r}", field="level")
    data = tuple(np.asarray(x, dtype=np.float64).ravel() for x in per_class)
    if not data or len({len(x) for x in data}) != 1:
        raise ValueError("expected one or more per-class arrays of the same length")
    if len(data[0]) < 2:
        return None
    if all(np.all(x == x[0]) for x in data):  # every class the same: no spread to resample
        value = float(statistic(*[x[None] for x in data], axis=-1)[0])
        return [value, value]
    result = stats.bootstrap(data, statistic, n_resamples=int(n_resamples), vectorized=True, paired=True,
                             axis=-1, confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return [float(low), float(high)]
