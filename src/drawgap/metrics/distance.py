"""How far a system is from humans (SPEC.md 4.4), and, beyond the papers, the gap between curves.

Distance to human (NeurIPS 2022 §4.3): z-score diversity and recognizability across all the systems
compared (humans included), then take the Euclidean distance from each system's (z-div, z-rec) to the
human point. z-scores use the population std (ddof = 0, as `scipy.stats.zscore`); a coordinate on which all
systems agree has z = 0. With only two systems each coordinate is +-1, so the distance is 2*sqrt(2) (or 2)
whatever the values: compare many systems at once (`drawgap compare`) for a meaningful number.

Curve gap: the mean over the originality range both curves cover of human_rec(x) - model_rec(x), with the
curves linearly interpolated between their points. Positive: the model is less recognizable than humans at
equal originality. The ranges each curve covers and their overlap are reported beside it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from drawgap.errors import InputError


def zscores(values) -> np.ndarray:
    """(x - mean) / std over the first axis (ddof = 0); 0 where every value is the same."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0)
    centred = values - values.mean(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def distance_to_human(points: Mapping[str, Sequence[float]], human: str) -> dict[str, float]:
    """{system: (diversity, recognizability)} -> {system: L2 distance to `human` in z-scored units}.

    >>> d = distance_to_human({"human": (1, 90), "a": (2, 80), "b": (3, 70)}, "human")
    >>> round(d["a"], 4), round(d["b"], 4)
    (1.7321, 3.4641)
    """
    if human not in points:
        raise InputError(f"expected the human system {human!r} among {sorted(points)}", field="human")
    names = list(points)
    z = zscores([tuple(points[n]) for n in names])
    h = z[names.index(human)]
    return {n: float(np.linalg.norm(z[i] - h)) for i, n in enumerate(names)}


def per_class_distance_to_human(per_class: Mapping[str, tuple], human: str) -> dict[str, np.ndarray]:
    """Per-class variant (NeurIPS Fig. 5b): {system: (diversity [C], recognizability [C])}, same classes in
    the same order for every system -> {system: distance [C]}.

    Each coordinate is z-scored over all (system, class) points pooled, so one unit means the same on every
    class; a class's distance is between the system's and the human's point for that class.
    """
    if human not in per_class:
        raise InputError(f"expected the human system {human!r} among {sorted(per_class)}", field="human")
    names = list(per_class)
    arrays = [np.stack([np.asarray(per_class[n][0], float), np.asarray(per_class[n][1], float)], axis=-1) for n in names]
    if len({a.shape for a in arrays}) != 1:
        raise InputError("expected the same classes for every system", field="per_class")
    stacked = np.stack(arrays)  # [systems, C, 2]
    z = zscores(stacked.reshape(-1, 2)).reshape(stacked.shape)
    h = z[names.index(human)]
    return {n: np.linalg.norm(z[i] - h, axis=-1) for i, n in enumerate(names)}


def _sorted_curve(curve: Mapping) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(curve["originality"], dtype=np.float64)
    y = np.asarray(curve["recognizability"], dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 1:
        raise InputError("expected originality and recognizability lists of the same length", field="generalization_curve")
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def curve_gap(model_curve: Mapping, human_curve: Mapping, n_grid: int = 201) -> dict:
    """Mean of human_rec(x) - model_rec(x) (percentage points) over the overlap of the originality ranges.

    Curves are {"originality": [...], "recognizability": [...]}. Returns {"gap" (None without overlap),
    "model_range", "human_range", "overlap" ([low, high] or None)}.
    """
    mx, my = _sorted_curve(model_curve)
    hx, hy = _sorted_curve(human_curve)
    low, high = max(mx[0], hx[0]), min(mx[-1], hx[-1])
    result = {"gap": None, "model_range": [float(mx[0]), float(mx[-1])],
              "human_range": [float(hx[0]), float(hx[-1])], "overlap": None}
    if low > high:
        return result
    # the mean of a difference of piecewise-linear curves: sampled densely (exact for a single point)
    grid = np.linspace(low, high, n_grid) if high > low else np.array([low])
    result["gap"] = float(np.mean(np.interp(grid, hx, hy) - np.interp(grid, mx, my)))
    result["overlap"] = [float(low), float(high)]
    return result
