import math

import numpy as np
import pytest
import torch

from drawgap.metrics import Originality, bin_edges, exemplar_distances, generalization_curve, sample_originality
from drawgap.metrics.originality import bin_means, density, sort_by_distance


def test_the_exemplar_itself_has_zero_originality():
    exemplar = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    features = torch.stack([exemplar, exemplar + 1.0], dim=1)  # sample 0 is the exemplar, sample 1 is not
    o = sample_originality(features, exemplar, scale=0.7)
    assert o[:, 0].tolist() == [0.0, 0.0, 0.0]
    # RMS of a difference of 1 in every dim, divided by s
    assert o[:, 1].tolist() == pytest.approx([1 / 0.7] * 3)


def test_hand_computed_originality():
    features = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    exemplar = torch.zeros(1, 2)
    assert exemplar_distances(features, exemplar).tolist() == [[5.0, 0.0]]
    # sqrt(mean((3/2)^2, (4/2)^2)) = sqrt((2.25 + 4) / 2)
    assert sample_originality(features, exemplar, scale=2.0)[0, 0].item() == pytest.approx(math.sqrt(6.25 / 2))


@pytest.mark.parametrize("n, size", [(20, 2), (500, 50), (10, 1)])
def test_bins_hold_equal_counts(n, size):
    assert bin_edges(n, 10).diff().tolist() == [size] * 10


def test_bin_rule_when_not_divisible():
    # floor(b * 23 / 10): sizes differ by at most one
    assert bin_edges(23, 10).tolist() == [0, 2, 4, 6, 9, 11, 13, 16, 18, 20, 23]
    with pytest.raises(ValueError, match="at most 5 bins"):
        bin_edges(5, 10)


def test_curve_points_average_bins_then_classes():
    originality = torch.tensor([[0.4, 0.1, 0.3, 0.2], [1.0, 2.0, 3.0, 4.0]])
    order = sort_by_distance(originality)
    edges = torch.tensor([0, 2, 4])
    np.testing.assert_allclose(bin_means(originality, order, edges).numpy(), [[0.15, 0.35], [1.5, 3.5]], rtol=1e-6)
    curve = generalization_curve(originality, order, edges, torch.tensor([[1.0, 0.5], [0.5, 0.0]]))
    assert curve["originality"] == pytest.approx([0.825, 1.925])
    assert curve["recognizability"] == pytest.approx([75.0, 25.0])


def _drifting_classes(n_classes=24, n_samples=20, dim=16, seed=0):
    """Sample i of each class = exemplar + noise growing with i: later samples are more original."""
    g = torch.Generator().manual_seed(seed)
    exemplar = torch.randn(n_classes, dim, generator=g)
    noise = torch.randn(n_classes, n_samples, dim, generator=g) * torch.linspace(0.0, 3.0, n_samples)[None, :, None]
    return exemplar.unsqueeze(1) + noise, exemplar


def test_accumulator_curve_rises_in_originality_and_falls_in_recognizability():
    features, exemplar = _drifting_classes()
    metric = Originality(n_bins=10, nb_test=50, ways=20, seed=44)
    metric.update_features(features[:10], exemplar[:10], features[:10], exemplar[:10])
    metric.update_features(features[10:], exemplar[10:], features[10:], exemplar[10:])
    out = metric.compute()
    x, y = out["generalization_curve"]["originality"], out["generalization_curve"]["recognizability"]
    assert len(x) == len(y) == 10 == len(out["generalization_curve"]["diversity"])
    assert all(a < b for a, b in zip(x, x[1:]))
    assert y[0] == 100.0 and y[-1] < 50.0
    # the scalar is the mean per-sample originality with s over all samples
    s = features.double().std(dim=-1).mean()
    expected = exemplar_distances(features, exemplar) / (s * math.sqrt(16))
    assert out["originality"] == pytest.approx(float(expected.mean()))
    assert out["feature_scale"] == pytest.approx(float(s))
    assert out["bin_edges"] == list(range(0, 21, 2))


def test_fewer_samples_than_bins_warns():
    features, exemplar = _drifting_classes(n_samples=4)
    metric = Originality(n_bins=10, nb_test=4)
    with pytest.warns(UserWarning, match="4 originality bins instead of 10"):
        metric.update_features(features, exemplar, features, exemplar)
    out = metric.compute()
    assert len(out["generalization_curve"]["originality"]) == 4
    assert "diversity" not in out["generalization_curve"]  # bins of one sample have no spread


def test_density_integrates_to_one():
    values = np.array([0.01, 0.2, 0.21, 0.9])
    d = density(values, width=0.05)
    widths = np.diff(d["edges"])
    assert np.sum(np.asarray(d["density"]) * widths) == pytest.approx(1.0)
    assert d["edges"][0] == 0.0 and d["edges"][-1] >= 0.9


def test_errors():
    with pytest.raises(TypeError, match="SimCLR critic"):
        Originality(simclr=object())
    with pytest.raises(RuntimeError, match="before any update"):
        Originality().compute()
    with pytest.raises(TypeError, match="without critics"):
        Originality().update(np.zeros((2, 3, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8))
