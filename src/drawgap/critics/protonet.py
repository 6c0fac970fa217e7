"""Prototypical-network critic (SPEC.md 3.2): the one-shot classifier behind recognizability.

Drawings are embedded in a 128-d metric space (the metric layer after the 256-d features); a query is
scored against each class's support (here one exemplar, so the prototype is that exemplar's embedding)
by the negative squared Euclidean distance, and p(y | q) = softmax(-d).
"""

from __future__ import annotations

import torch
from torch import nn

from drawgap.critics.backbones import protonet_backbone
from drawgap.critics.base import Critic


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., Q, D] and [..., W, D] -> [..., Q, W] squared Euclidean distances, computed exactly (no
    |a|^2 + |b|^2 - 2ab shortcut, whose cancellation loses precision for near neighbours)."""
    return (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)


class ProtoNetCritic(Critic):
    """ProtoNetCritic(arch="omniglot"|"quickdraw", image_size=None (50 / 48), threshold=0.5)."""

    kind = "protonet"

    def __init__(self, arch: str = "omniglot", image_size: int | None = None, threshold: float = 0.5,
                 feature_dim: int = 256, metric_dim: int = 128):
        super().__init__(arch, image_size, threshold, feature_dim=int(feature_dim), metric_dim=int(metric_dim))
        self.encoder = protonet_backbone(arch, self.image_size, feature_dim)
        self.metric = nn.Linear(feature_dim, metric_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared images [N, 1, S, S] -> metric embeddings [N, metric_dim], with gradients."""
        return self.metric(self.encoder(x))

    def embed(self, images, batch_size: int = 1024) -> torch.Tensor:
        """Any drawings -> float32 metric embeddings [N, metric_dim] (prepared, eval mode, no gradients)."""
        return self._infer(self.forward, images, batch_size)

    @staticmethod
    def logits(query_emb: torch.Tensor, support_emb: torch.Tensor) -> torch.Tensor:
        """[Q, D] queries and [W, D] class prototypes -> [Q, W] logits = -squared Euclidean distance."""
        return -squared_distances(query_emb, support_emb)

    def classify(self, queries, support_images) -> torch.Tensor:
        """Index into `support_images` (one drawing per class) of the class predicted for each query."""
        return self.logits(self.embed(queries), self.embed(support_images)).argmax(dim=1)

    def _out_dim(self) -> int:
        return self.config["metric_dim"]
