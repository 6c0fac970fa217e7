"""Recognizability (SPEC.md 4.2): how often a one-shot classifier tells which exemplar a drawing came from.

The seeded task list of the reference code ([DVR]/[LM] `generate_evaluation_task`) fixes the episodes: every
class is a query exactly `nb_test` times, in `ways`-way episodes of distinct classes. In each episode the
support is the `ways` classes' exemplars (one shot), each class's query is one of its samples drawn at
random, and the prediction is the nearest exemplar in the ProtoNet metric space (squared Euclidean
distance). A class's recognizability is its fraction of correct queries; the system's is the mean, in %.

Every sample is embedded once; episodes are then index operations on the embeddings, all at once.
"""

from __future__ import annotations

import math
import warnings

import torch

from drawgap.errors import InputError
from drawgap.metrics._checks import (
    as_class_features,
    as_exemplar_features,
    check_critic,
    check_positive_int,
    check_sample_images,
    embed_classes,
)
from drawgap.metrics.base import CriticOutputs, Metric, Protocol, Report

PAD = -1  # class id of an empty slot in a short last episode


def effective_ways(n_classes: int, ways: int) -> int:
    """`ways`, or the number of classes when there are fewer (with a warning: the task gets easier)."""
    if n_classes < 2:
        raise InputError(f"expected at least 2 classes for a classification episode, got {n_classes}", field="samples")
    if n_classes < ways:
        warnings.warn(f"only {n_classes} classes: episodes are {n_classes}-way instead of {ways}-way", stacklevel=3)
        return n_classes
    return ways


def evaluation_tasks(n_classes: int, nb_test: int = 500, ways: int = 20, seed: int = 44,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The seeded task list: LongTensor [episodes, ways] of class ids, each class exactly `nb_test` times.

    As [DVR] `generate_evaluation_task`: seed 44; labels = arange(C) repeated nb_test times; consecutive
    chunks of (C // ways) * ways labels (the last chunk takes the rest), each shuffled by randperm and cut
    into `ways`-way episodes. A chunk never holds a class twice. The reference stops when the last chunk
    is not a multiple of `ways`; here its last episode is shorter instead, padded with PAD (-1).
    With a `generator`, its state is used and advanced (the episodes' queries are drawn from it next);
    otherwise a fresh generator seeded with `seed` gives the same list as the reference's
    `torch.manual_seed(seed)` without touching the global random state.
    """
    n_classes = check_positive_int(n_classes, "n_classes", 2)
    nb_test = check_positive_int(nb_test, "nb_test")
    ways = check_positive_int(ways, "ways", 2)
    if ways > n_classes:
        raise InputError(f"expected ways <= number of classes ({n_classes}), got {ways}", field="ways")
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat(nb_test)
    chunk = (n_classes // ways) * ways
    episodes = []
    for start in range(0, len(labels), chunk):
        part = labels[start : start + chunk]
        part = part[torch.randperm(len(part), generator=g)]
        short = (-len(part)) % ways
        if short:
            part = torch.cat([part, torch.full((short,), PAD, dtype=part.dtype)])
        episodes.append(part.view(-1, ways))
    return torch.cat(episodes)


def correct_counts(sample_emb: torch.Tensor, exemplar_emb: torch.Tensor, tasks: torch.Tensor,
                   query_idx: torch.Tensor) -> torch.Tensor:
    """Correct answers per class over all episodes at once.

    sample_emb [C, S, D], exemplar_emb [C, D], tasks [E, W] (PAD allowed), query_idx [E, W]: which sample of
    its class each slot asks about. Returns float64 [C]: how many of each class's queries were classified
    as their own exemplar (nearest support by Euclidean distance, first index on ties).
    """
    valid = tasks != PAD
    cls = tasks.clamp_min(0)
    queries = sample_emb[cls, query_idx]  # [E, W, D]
    support = exemplar_emb[cls]  # [E, W, D]
    # exact differences, not the |a|^2 + |b|^2 - 2ab shortcut: a query equal to its exemplar is at 0
    dist = torch.cdist(queries.float(), support.float(), compute_mode="donot_use_mm_for_euclid_dist")
    dist = dist.masked_fill(~valid.unsqueeze(1), math.inf)  # empty support slots never win
    correct = (dist.argmin(dim=-1) == torch.arange(tasks.shape[1])) & valid
    return torch.zeros(sample_emb.shape[0], dtype=torch.float64).index_add_(0, cls[valid], correct[valid].double())


def class_recognizability(sample_emb, exemplar_emb, *, nb_test: int = 500, ways: int = 20, seed: int = 44) -> torch.Tensor:
    """Per-class recognizability in [0, 1]: sample_emb [C, S, D] (ProtoNet metric space), exemplar_emb [C, D].

    Queries are drawn uniformly, with replacement, from each class's S samples by the task list's
    generator, after the task list.
    """
    sample_emb = as_class_features(sample_emb, "sample embeddings")
    exemplar_emb = as_exemplar_features(exemplar_emb, sample_emb.shape[0], "exemplar embeddings")
    ways = effective_ways(sample_emb.shape[0], ways)
    g = torch.Generator().manual_seed(seed)
    tasks = evaluation_tasks(sample_emb.shape[0], nb_test, ways, generator=g)
    query_idx = torch.randint(sample_emb.shape[1], tasks.shape, generator=g)
    return correct_counts(sample_emb, exemplar_emb, tasks, query_idx) / nb_test


def binned_recognizability(sample_emb, exemplar_emb, order: torch.Tensor, edges: torch.Tensor, *,
                           nb_test: int = 500, ways: int = 20, seed: int = 44) -> torch.Tensor:
    """Per-class, per-bin recognizability [C, B] in [0, 1] (SPEC.md 4.3 step 7).

    order [C, S]: each class's samples sorted (e.g. by distance to the exemplar); edges [B + 1]: bin b holds
    sorted positions edges[b] .. edges[b+1]-1. For each bin the same task list is run with each query drawn
    uniformly from that class's bin. One generator makes the task list, then the draws of bin 1 to bin B:
    the same stream as [LM] (global seed 44, task list, then `randint(bin_size)` per block of episodes), so
    with the same sorted samples the queries are the reference's.
    """
    sample_emb = as_class_features(sample_emb, "sample embeddings")
    exemplar_emb = as_exemplar_features(exemplar_emb, sample_emb.shape[0], "exemplar embeddings")
    ways = effective_ways(sample_emb.shape[0], ways)
    g = torch.Generator().manual_seed(seed)
    tasks = evaluation_tasks(sample_emb.shape[0], nb_test, ways, generator=g)
    cls = tasks.clamp_min(0)
    per_bin = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        position = lo + torch.randint(hi - lo, tasks.shape, generator=g)
        per_bin.append(correct_counts(sample_emb, exemplar_emb, tasks, order[cls, position]) / nb_test)
    return torch.stack(per_bin, dim=1)


class Recognizability(Metric):
    """Accumulates ProtoNet embeddings over batches of classes; `compute()` runs the task list on them.

    The task list mixes all classes, so episodes run at the end; the state is the embeddings
    (C x S x 128 floats: 29 MB for 115 classes x 500 samples).
    """

    scalars = ("recognizability",)

    def __init__(self, critic=None, *, nb_test: int = 500, ways: int = 20, seed: int = 44):
        self.critic = None if critic is None else check_critic(critic, "embed", "ProtoNet")
        self.nb_test = check_positive_int(nb_test, "nb_test")
        self.ways = check_positive_int(ways, "ways", 2)
        self.seed = int(seed)
        self.reset()

    @classmethod
    def for_protocol(cls, protocol: Protocol) -> "Recognizability":
        return cls(nb_test=protocol.queries, ways=protocol.ways, seed=protocol.seed)

    def reset(self) -> None:
        self.sample_emb: list[torch.Tensor] = []
        self.exemplar_emb: list[torch.Tensor] = []

    def update_outputs(self, outputs: CriticOutputs) -> None:
        self.update_features(outputs.embeddings, outputs.exemplar_embeddings)

    def update_images(self, samples, exemplars) -> None:
        if self.critic is None:
            raise TypeError("Recognizability was built without a critic: call update_features() instead")
        samples, exemplars = check_sample_images(samples, exemplars)
        self.update_features(embed_classes(self.critic.embed, samples), self.critic.embed(exemplars))

    def update_features(self, sample_emb: torch.Tensor, exemplar_emb: torch.Tensor) -> None:
        sample_emb = as_class_features(sample_emb, "sample embeddings")
        if self.sample_emb and sample_emb.shape[1:] != self.sample_emb[0].shape[1:]:
            raise ValueError(f"expected embeddings [*, {', '.join(map(str, self.sample_emb[0].shape[1:]))}] like the "
                             f"previous updates, got {list(sample_emb.shape)}")
        self.sample_emb.append(sample_emb)
        self.exemplar_emb.append(as_exemplar_features(exemplar_emb, sample_emb.shape[0], "exemplar embeddings"))

    def compute(self) -> dict:
        if not self.sample_emb:
            raise RuntimeError("Recognizability.compute() called before any update()")
        per_class = class_recognizability(torch.cat(self.sample_emb), torch.cat(self.exemplar_emb),
                                    nb_test=self.nb_test, ways=self.ways, seed=self.seed)
        return {"recognizability": 100.0 * float(per_class.mean()), "per_class": 100.0 * per_class.numpy()}

    def report(self, result: dict, ci) -> Report:
        return Report(values={"recognizability": result["recognizability"]},
                      per_class={"recognizability": result["per_class"]}, ci95={"recognizability": ci(result["per_class"])})
