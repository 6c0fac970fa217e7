import math

import numpy as np
import pytest
import torch

from drawgap.metrics import Diversity, class_diversity, feature_scale, mean_diversity

# one class, 3 samples x 2 dims: dim 0 = 1, 3, 5 (std 2), dim 1 = 2, 8, 5 (std 3)
THREE_BY_TWO = torch.tensor([[1.0, 2.0], [3.0, 8.0], [5.0, 5.0]])


def test_identical_samples_have_zero_diversity():
    features = torch.randn(1, 256).repeat(7, 1)
    assert float(class_diversity(features)) == 0.0
    assert mean_diversity(features.unsqueeze(0)) == 0.0


def test_hand_computed_three_by_two():
    # Bessel std per dim: 2 and 3 -> mean 2.5
    assert float(class_diversity(THREE_BY_TWO)) == pytest.approx(2.5)
    # s = mean over samples of std over dims: |1-2|/sqrt2, |3-8|/sqrt2, 0 -> 6/(3 sqrt2) = sqrt2
    assert float(feature_scale(THREE_BY_TWO)) == pytest.approx(math.sqrt(2))
    assert mean_diversity(THREE_BY_TWO, normalized=False) == pytest.approx(2.5)
    assert mean_diversity(THREE_BY_TWO) == pytest.approx(2.5 / math.sqrt(2))


def test_accumulator_over_batches_equals_whole():
    features = torch.randn(6, 5, 16, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 2, 6)[:, None, None]
    metric = Diversity()
    metric.update_features(features[:2])
    metric.update_features(features[2:])
    out = metric.compute()
    assert out["diversity_raw"] == pytest.approx(mean_diversity(features, normalized=False))
    assert out["diversity_normalized"] == pytest.approx(mean_diversity(features))
    assert out["feature_scale"] == pytest.approx(float(feature_scale(features)))
    np.testing.assert_allclose(out["per_class_raw"], class_diversity(features).numpy())


def test_normalized_diversity_ignores_feature_scale():
    features = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    assert mean_diversity(features * 7.0) == pytest.approx(mean_diversity(features))
    assert mean_diversity(features * 7.0, normalized=False) == pytest.approx(7.0 * mean_diversity(features, normalized=False))


class _ConstantFeatures:
    """A SimCLR-like critic whose features are the mean ink of each image, repeated over 4 dims."""

    def features(self, images, batch_size=1024):
        x = torch.as_tensor(images).float().flatten(1).mean(1, keepdim=True) / 255.0
        return x * torch.tensor([1.0, 2.0, 3.0, 4.0])


def test_update_with_images_embeds_through_the_critic():
    samples = np.zeros((2, 3, 8, 8), np.uint8)
    samples[:, 1] = 255  # one full-ink sample per class: features (1, 2, 3, 4) vs 0 for the others
    metric = Diversity(_ConstantFeatures())
    metric.update(samples, samples[:, 0])
    # per dim d (value k = d + 1): std of (0, k, 0) = k / sqrt(3); mean over dims = 2.5 / sqrt(3)
    assert metric.compute()["diversity_raw"] == pytest.approx(2.5 / math.sqrt(3))


def test_errors():
    with pytest.raises(ValueError, match="at least 2 samples"):
        class_diversity(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="SimCLR critic"):
        Diversity(object())
    with pytest.raises(RuntimeError, match="before any update"):
        Diversity().compute()
    metric = Diversity()
    metric.update_features(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="3 samples per class"):
        metric.update_features(torch.randn(2, 5, 4))
