"""Vendi score (Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning",
TMLR 2023), per class, in SimCLR feature space: beyond the papers, a diversity that counts "effective
number of distinct drawings" (1 when all are the same, n when all n are orthogonal).

VS = exp(-sum_i l_i log l_i), with l_i the eigenvalues of K / n and K the cosine-similarity kernel
K_ij = <x_i, x_j> / (|x_i| |x_j|). K = X X^T for the row-normalised X [n, D], whose nonzero eigenvalues
are those of X^T X [D, D]: the smaller of the two is decomposed (500 samples, 256 dims -> 256 x 256).
Written here because the reference package (`vendi_score`) pulls in torchvision and scikit-learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drawgap.metrics._checks import as_class_features
from drawgap.metrics.base import FeatureMetric, Report


def vendi_score(features) -> torch.Tensor:
    """Vendi score of each class: features [C, n, D] (or one set [n, D]) -> float64 [C] (or a scalar)."""
    single = torch.as_tensor(features).dim() == 2
    x = F.normalize(as_class_features(features).double(), dim=-1)
    n, d = x.shape[-2:]
    gram = x @ x.transpose(-1, -2) if n <= d else x.transpose(-1, -2) @ x
    eig = torch.linalg.eigvalsh(gram / n).clamp_min(0.0)
    # 0 log 0 = 0; eigenvalues at round-off level contribute nothing either
    entropy = -torch.where(eig > 1e-12, eig * eig.log(), torch.zeros_like(eig)).sum(-1)
    score = entropy.exp()
    return score[0] if single else score


class Vendi(FeatureMetric):
    """Accumulates per-class Vendi scores over batches of classes (torchmetrics style)."""

    scalars = ("vendi",)

    def reset(self) -> None:
        self.per_class: list[torch.Tensor] = []

    def update_features(self, features, exemplar_features=None) -> None:
        self.per_class.append(vendi_score(as_class_features(features)))

    def compute(self) -> dict:
        if not self.per_class:
            raise RuntimeError("Vendi.compute() called before any update()")
        per_class = torch.cat(self.per_class)
        return {"vendi": float(per_class.mean()), "per_class": per_class.numpy()}

    def report(self, result: dict, ci) -> Report:
        return Report(values={"vendi": result["vendi"]}, per_class={"vendi": result["per_class"]},
                      ci95={"vendi": ci(result["per_class"])})
