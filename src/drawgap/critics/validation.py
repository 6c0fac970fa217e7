"""How good a critic is, on a dataset file of real drawings (the acceptance numbers of the critics).

- SimCLR: leave-one-out 1-nearest-neighbour class retrieval among all drawings: the share of drawings whose
  nearest other drawing (cosine similarity, or L2 distance, of the 256-d features) has the same class.
- ProtoNet: W-way 1-shot accuracy over seeded episodes, support = the exemplars, queries = real drawings
  other than the exemplar (SPEC.md 3.2, the reference's test protocol).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drawgap.critics.protonet import squared_distances
from drawgap.data.episodes import ExemplarEpisodes


def nearest_neighbour_accuracy(features: torch.Tensor, labels, metric: str = "cosine", chunk: int = 2048) -> float:
    """Share (0..1) of rows whose nearest other row, by `metric` ("cosine" or "l2"), has the same label."""
    labels = torch.as_tensor(np.asarray(labels))
    x = features.float()
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    elif metric != "l2":
        raise ValueError(f"expected metric 'cosine' or 'l2', got {metric!r}")
    hits = 0
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk]
        score = rows @ x.T if metric == "cosine" else -torch.cdist(rows, x)
        idx = torch.arange(start, start + len(rows))
        score[torch.arange(len(rows)), idx] = float("-inf")  # leave the drawing itself out
        hits += int((labels[score.argmax(dim=1)] == labels[idx]).sum())
    return hits / len(x)


def one_shot_accuracy(embeddings: torch.Tensor, labels, exemplars, ways: int = 20, episodes: int = 1000,
                      queries: int = 1, seed: int = 0) -> float:
    """Share (0..1) of queries whose nearest exemplar (squared L2 of the metric embeddings) is their class's."""
    sampler = ExemplarEpisodes(labels, exemplars, ways=ways, queries=queries, seed=seed)
    eps = list(sampler.episodes(episodes))
    support = embeddings[torch.as_tensor(np.stack([e.support for e in eps]))]  # [E, W, D]
    query = embeddings[torch.as_tensor(np.stack([e.queries for e in eps]))]  # [E, W*Q, D]
    targets = torch.as_tensor(np.stack([e.targets for e in eps]))
    predicted = squared_distances(query, support).argmin(dim=-1)
    return float((predicted == targets).float().mean())


def acceptance_metrics(critic, ds, ways: int = 20, episodes: int = 1000, seed: int = 0) -> dict:
    """A critic's numbers on a dataset of real drawings, in percent: SimCLR 1-NN retrieval (cosine and L2),
    ProtoNet `ways`-way 1-shot accuracy (at most the dataset's number of classes) over seeded episodes."""
    if critic.kind == "simclr":
        feats = critic.features(ds.images)
        return {
            "nn_accuracy_cosine": 100 * nearest_neighbour_accuracy(feats, ds.labels, "cosine"),
            "nn_accuracy_l2": 100 * nearest_neighbour_accuracy(feats, ds.labels, "l2"),
            "n_drawings": int(len(ds.images)),
        }
    ways = min(ways, ds.n_classes)
    acc = one_shot_accuracy(critic.embed(ds.images), ds.labels, ds.exemplars, ways=ways, episodes=episodes, seed=seed)
    return {f"{ways}way_1shot_accuracy": 100 * acc, "episodes": episodes, "seed": seed, "n_classes": ds.n_classes}


def summary(metrics: dict) -> str:
    """One line of `acceptance_metrics`' numbers, e.g. "1-NN class retrieval 90.37 % (cosine), 91.37 % (L2)"."""
    if "nn_accuracy_l2" in metrics:
        return (f"1-NN class retrieval {metrics['nn_accuracy_cosine']:.2f} % (cosine), "
                f"{metrics['nn_accuracy_l2']:.2f} % (L2) among {metrics['n_drawings']} drawings")
    key = next(k for k in metrics if k.endswith("way_1shot_accuracy"))
    return f"{key.split('way')[0]}-way 1-shot accuracy {metrics[key]:.2f} % over {metrics['episodes']} episodes"
