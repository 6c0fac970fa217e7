import math

import numpy as np
import pytest

from drawgap.errors import InputError
from drawgap.metrics import curve_gap, distance_to_human, per_class_distance_to_human, zscores


def test_zscore_distance_golden_value():
    # diversity 1, 2, 3 -> z = -1.2247, 0, 1.2247; recognizability 90, 80, 70 -> z = 1.2247, 0, -1.2247
    d = distance_to_human({"human": (1.0, 90.0), "a": (2.0, 80.0), "b": (3.0, 70.0)}, "human")
    assert d["human"] == 0.0
    assert d["a"] == pytest.approx(math.sqrt(3))  # sqrt(2 * 1.5)
    assert d["b"] == pytest.approx(2 * math.sqrt(3))


def test_two_systems_give_the_trivial_distance():
    assert distance_to_human({"h": (0.3, 97.0), "m": (0.5, 90.0)}, "h")["m"] == pytest.approx(2 * math.sqrt(2))
    assert distance_to_human({"h": (0.3, 97.0), "m": (0.3, 90.0)}, "h")["m"] == pytest.approx(2.0)


def test_zscores_of_constant_column_are_zero():
    assert zscores([[1.0, 5.0], [3.0, 5.0]]).tolist() == [[-1.0, 0.0], [1.0, 0.0]]


def test_per_class_distance_pools_systems_and_classes():
    per_class = {"human": ([0.0, 0.0], [0.0, 0.0]), "m": ([1.0, 0.0], [0.0, 0.0])}
    # diversity values 0, 0, 1, 0: mean .25, std sqrt(3)/4; recognizability constant -> z = 0
    d = per_class_distance_to_human(per_class, "human")
    assert d["m"].tolist() == pytest.approx([1.0 / (math.sqrt(3) / 4), 0.0])
    with pytest.raises(InputError, match="same classes"):
        per_class_distance_to_human({"human": ([0.0], [0.0]), "m": ([1.0, 2.0], [0.0, 0.0])}, "human")


def test_curve_gap_over_the_overlap():
    human = {"originality": [0.0, 1.0], "recognizability": [100.0, 90.0]}
    model = {"originality": [0.5, 2.0], "recognizability": [85.0, 70.0]}  # 10 points under human at equal x
    gap = curve_gap(model, human)
    assert gap["gap"] == pytest.approx(10.0)
    assert gap["overlap"] == [0.5, 1.0]
    assert gap["model_range"] == [0.5, 2.0] and gap["human_range"] == [0.0, 1.0]


def test_curve_gap_without_overlap_and_unsorted_points():
    human = {"originality": [1.0, 0.0], "recognizability": [90.0, 100.0]}
    assert curve_gap({"originality": [2.0, 3.0], "recognizability": [1.0, 2.0]}, human)["gap"] is None
    assert curve_gap(human, human)["gap"] == pytest.approx(0.0)


def test_unknown_human():
    with pytest.raises(InputError, match="human system 'x'"):
        distance_to_human({"a": (1, 2)}, "x")
    assert np.isfinite(distance_to_human({"a": (1, 2)}, "a")["a"])
