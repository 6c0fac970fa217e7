"""Diversity (SPEC.md 4.1): how much the drawings made from one exemplar vary, in SimCLR feature space.

- Raw, NeurIPS 2022 Eq. 2: per class, the Bessel-corrected std of each feature dimension over the class's
  samples, averaged over the dimensions; the system's value is the mean over classes.
- Normalised, ICML 2023: the same, after dividing every feature by the system's feature scale
  s = mean over all its samples of the (Bessel) std over the feature dimensions of that sample. Because the
  std is linear in the scale, normalised diversity = raw diversity / s; s is a property of the evaluated
  system (model or humans), so systems are compared on their own scale (the 0-1 axis of ICML Fig. 2).
"""

from __future__ import annotations

import torch

from drawgap.metrics._checks import as_class_features
from drawgap.metrics.base import FeatureMetric, Report
from drawgap.metrics.bootstrap import ratio_of_means


def class_diversity(features: torch.Tensor) -> torch.Tensor:
    """Raw diversity of each class: features [C, S, D] (or one class [S, D]) -> [C] (or a scalar).

    std over the S samples (Bessel-corrected) of each dimension, averaged over the D dimensions.
    """
    features = torch.as_tensor(features)
    if features.shape[-2] < 2:
        raise ValueError(f"diversity needs at least 2 samples per class, got {features.shape[-2]}")
    return features.double().std(dim=-2, unbiased=True).mean(dim=-1)


def sample_spread(features: torch.Tensor) -> torch.Tensor:
    """Per-sample std over the feature dimensions (Bessel-corrected): [..., D] -> [...]."""
    return torch.as_tensor(features).double().std(dim=-1, unbiased=True)


def feature_scale(features: torch.Tensor) -> torch.Tensor:
    """s: the mean over all samples of the std over the feature dimensions ([LM] std normalisation).

    `features` is [N, D] or [C, S, D]; exemplar features are not part of it (as in the reference code).
    """
    return sample_spread(features).mean()


def mean_diversity(features: torch.Tensor, normalized: bool = True) -> float:
    """The system's diversity from its sample features [C, S, D]: mean over classes, raw or s-normalised."""
    features = as_class_features(features)
    per_class = class_diversity(features)
    if normalized:
        per_class = per_class / feature_scale(features)
    return float(per_class.mean())


DIVERSITY_DEFINITION = ("diversity = diversity_normalized: ICML 2023, per-class mean over dims of the Bessel std "
                        "of SimCLR features divided by the system's feature scale s; diversity_raw: NeurIPS 2022 Eq. 2")


class Diversity(FeatureMetric):
    """Accumulates raw and normalised diversity over batches of classes (torchmetrics style).

    >>> metric = Diversity(simclr)                                   # doctest: +SKIP
    >>> for rows, exemplars in batches: metric.update(rows, exemplars)   # doctest: +SKIP
    >>> metric.compute()["diversity"]                                # doctest: +SKIP

    `update(samples [C,S,H,W], exemplars [C,H,W])` embeds with the critic; `update_features(features
    [C,S,D])` takes features already computed (the evaluation pipeline embeds each image once and feeds
    every metric). `compute()` returns per-class raw and normalised values, their means and the scale s.
    """

    scalars = ("diversity", "diversity_raw")

    def reset(self) -> None:
        self.per_class_raw: list[torch.Tensor] = []
        self.per_class_spread: list[torch.Tensor] = []
        self.samples_per_class: int | None = None

    def update_features(self, features: torch.Tensor, exemplar_features: torch.Tensor | None = None) -> None:
        features = as_class_features(features)
        if self.per_class_raw and features.shape[1] != self.samples_per_class:
            raise ValueError(f"expected {self.samples_per_class} samples per class like the previous updates, got {features.shape[1]}")
        self.samples_per_class = features.shape[1]
        self.per_class_raw.append(class_diversity(features))
        self.per_class_spread.append(sample_spread(features).mean(dim=1))

    def compute(self) -> dict:
        if not self.per_class_raw:
            raise RuntimeError("Diversity.compute() called before any update()")
        raw = torch.cat(self.per_class_raw)
        spread = torch.cat(self.per_class_spread)
        # every class has the same number of samples, so the mean of the per-class means is s
        scale = spread.mean()
        normalized = raw / scale
        return {
            "diversity_raw": float(raw.mean()),
            "diversity_normalized": float(normalized.mean()),
            "feature_scale": float(scale),
            "per_class_raw": raw.numpy(),
            "per_class_normalized": normalized.numpy(),
            # per-class mean of the per-sample spread: with the raw values, enough for a bootstrap that
            # re-estimates s on each resample of classes
            "per_class_spread": spread.numpy(),
        }

    def report(self, result: dict, ci) -> Report:
        # the normalised value re-estimates the scale s on each resample of classes (bootstrap.ratio_of_means)
        return Report(
            values={"diversity": result["diversity_normalized"], "diversity_normalized": result["diversity_normalized"],
                    "diversity_raw": result["diversity_raw"], "diversity_definition": DIVERSITY_DEFINITION,
                    "feature_scale": result["feature_scale"]},
            per_class={"diversity": result["per_class_normalized"], "diversity_raw": result["per_class_raw"]},
            ci95={"diversity": ci(result["per_class_raw"], result["per_class_spread"], statistic=ratio_of_means),
                  "diversity_raw": ci(result["per_class_raw"])},
        )
