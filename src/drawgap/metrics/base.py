"""The metric interface (torchmetrics style): state, `update` on one batch of critic outputs, `compute`,
`reset`, and the metric's own place in `metrics.json` (`report`: values, per-class values, 95 % intervals).

`evaluate` embeds every drawing once per critic and feeds each batch of whole classes, as `CriticOutputs`,
to every metric of its list (`metrics.evaluate.METRICS`); a new metric is one subclass added to that list
(or passed to `evaluate(metrics=...)`), and `evaluate` names none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from drawgap.metrics._checks import check_critic, check_sample_images, embed_classes


@dataclass
class CriticOutputs:
    """One batch of whole classes through both critics."""

    features: torch.Tensor  # SimCLR features of the samples [C, S, D]
    exemplar_features: torch.Tensor  # [C, D]
    embeddings: torch.Tensor  # ProtoNet embeddings of the samples [C, S, E]
    exemplar_embeddings: torch.Tensor  # [C, E]


@dataclass
class Protocol:
    """The evaluation settings a metric may be built with (`Metric.for_protocol`)."""

    queries: int = 500  # queries per class (nb_test)
    ways: int = 20  # classes per episode, as used (at most the number of classes)
    seed: int = 44
    bins: int = 10


@dataclass
class Report:
    """A metric's entries in metrics.json: top-level values, `per_class` lists, `ci95` intervals and
    `protocol` settings."""

    values: dict = field(default_factory=dict)
    per_class: dict = field(default_factory=dict)
    ci95: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)


class Metric(ABC):
    """A metric of one system's drawings (see the module docstring)."""

    #: its single-number results, by key in metrics.json (the ones `drawgap compare` tabulates)
    scalars: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def for_protocol(cls, protocol: Protocol) -> "Metric":
        """The metric as `evaluate` builds it (default: no settings)."""
        return cls()

    def update(self, batch, exemplars=None) -> None:
        """Add one batch: `CriticOutputs`, or drawings [C, S, H, W] and their exemplars [C, H, W] for a metric
        built with its critics (`update_images`)."""
        if isinstance(batch, CriticOutputs):
            self.update_outputs(batch)
        else:
            self.update_images(batch, exemplars)

    @abstractmethod
    def update_outputs(self, outputs: CriticOutputs) -> None:
        """Add one batch of critic outputs to the state."""

    def update_images(self, samples, exemplars) -> None:
        raise TypeError(f"{type(self).__name__} takes critic outputs only")

    @abstractmethod
    def compute(self) -> dict:
        """The results so far (arrays per class included)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every update."""

    @abstractmethod
    def report(self, result: dict, ci: Callable[..., list[float] | None]) -> Report:
        """Its entries in metrics.json from `compute()`'s result; `ci(per_class, ..., statistic=)` is the
        bootstrap over classes that `evaluate` uses for every interval."""


class FeatureMetric(Metric):
    """A metric of the samples' SimCLR features alone (diversity, Vendi): built with the SimCLR critic, it
    also takes drawings (`update_images`); subclasses implement `update_features(features [C, S, D])`."""

    def __init__(self, critic=None):
        self.critic = None if critic is None else check_critic(critic, "features", "SimCLR")
        self.reset()

    @abstractmethod
    def update_features(self, features: torch.Tensor, exemplar_features: torch.Tensor | None = None) -> None:
        """Add the SimCLR features [C, S, D] of one batch of classes."""

    def update_outputs(self, outputs: CriticOutputs) -> None:
        self.update_features(outputs.features)

    def update_images(self, samples, exemplars=None) -> None:
        if self.critic is None:
            raise TypeError(f"{type(self).__name__} was built without a critic: call update_features(features) instead")
        samples, _ = check_sample_images(samples, exemplars)
        self.update_features(embed_classes(self.critic.features, samples))
