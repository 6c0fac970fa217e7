"""SimCLR critic (SPEC.md 3.1): the feature extractor f behind diversity, originality and exemplar choice.

The 256-d output of the first fully connected layer after the convolutions is the feature every metric
uses; the projection head (256 -> 128) only serves the contrastive loss during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from drawgap.critics.backbones import simclr_backbone
from drawgap.critics.base import Critic


class SimCLRCritic(Critic):
    """SimCLRCritic(arch="omniglot"|"quickdraw", image_size=None (50 / 48), threshold=0.5)."""

    kind = "simclr"

    def __init__(self, arch: str = "omniglot", image_size: int | None = None, threshold: float = 0.5,
                 feature_dim: int = 256, proj_dim: int = 128):
        super().__init__(arch, image_size, threshold, feature_dim=int(feature_dim), proj_dim=int(proj_dim))
        self.encoder = simclr_backbone(arch, self.image_size, feature_dim)
        self.head = nn.Linear(feature_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared images [N, 1, S, S] -> features [N, feature_dim], with gradients."""
        return self.encoder(x)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> projections [N, proj_dim] for the contrastive loss."""
        return self.head(features)

    def features(self, images, batch_size: int = 1024) -> torch.Tensor:
        """Any drawings -> float32 features [N, feature_dim] (prepared, eval mode, no gradients)."""
        return self._infer(self.encoder, images, batch_size)

    def _out_dim(self) -> int:
        return self.config["feature_dim"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent loss of two views [N, D] of the same N images (row i of z1 and of z2 are a positive pair).

    Projections are L2-normalised; each of the 2N samples is classified against all 2N - 1 others (its
    positive included) by cosine similarity / temperature; the loss is the mean cross-entropy.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positives)
