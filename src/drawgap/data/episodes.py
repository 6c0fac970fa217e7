"""Few-shot episodes whose support is each class's exemplar (SPEC.md 3.2 and pitfall 9).

An episode picks `ways` distinct classes; its support is the exemplar of each (1 shot) and its queries are
`queries` other drawings of each class. Episode i depends only on (seed, i), so a resumed run replays
exactly the episodes a straight run would have seen, with no sampler state to save.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drawgap.errors import InputError


@dataclass
class Episode:
    classes: np.ndarray  # [W] class indices
    support: np.ndarray  # [W] indices into the images: the exemplar of each class
    queries: np.ndarray  # [W * Q] indices into the images, class by class
    targets: np.ndarray  # [W * Q] position in `support` of each query's class


class ExemplarEpisodes:
    """Seeded W-way 1-shot Q-query episodes over a dataset's labels and exemplars.

    >>> labels = np.repeat(np.arange(3), 4); exemplars = np.array([0, 4, 8])
    >>> e = ExemplarEpisodes(labels, exemplars, ways=2, queries=3, seed=0).episode(0)
    >>> bool(np.all(labels[e.support] == e.classes)), e.queries.shape
    (True, (6,))
    """

    def __init__(self, labels: np.ndarray, exemplars: np.ndarray, ways: int, queries: int, seed: int = 0):
        labels, exemplars = np.asarray(labels), np.asarray(exemplars)
        self.ways, self.n_queries, self.seed = int(ways), int(queries), int(seed)
        if self.ways < 2 or self.n_queries < 1:
            raise InputError(f"expected ways >= 2 and queries >= 1, got {ways} and {queries}", field="ways")
        self.exemplars = exemplars
        # The drawings of each class other than its exemplar: the query pool.
        is_exemplar = np.zeros(len(labels), bool)
        is_exemplar[exemplars] = True
        order = np.argsort(labels, kind="stable")
        pools = np.split(order, np.searchsorted(labels[order], np.arange(1, len(exemplars))))
        self.pools = [p[~is_exemplar[p]] for p in pools]
        self.eligible = np.array([c for c, p in enumerate(self.pools) if len(p) >= self.n_queries])
        if len(self.eligible) < self.ways:
            raise InputError(
                f"expected at least {self.ways} classes with {self.n_queries} drawings besides the exemplar, "
                f"found {len(self.eligible)}",
                field="labels",
            )

    def episode(self, i: int) -> Episode:
        rng = np.random.default_rng([self.seed, int(i)])
        classes = rng.choice(self.eligible, self.ways, replace=False)
        queries = np.concatenate([rng.choice(self.pools[c], self.n_queries, replace=False) for c in classes])
        targets = np.repeat(np.arange(self.ways), self.n_queries)
        return Episode(classes, self.exemplars[classes], queries, targets)

    def episodes(self, n: int, start: int = 0):
        return (self.episode(i) for i in range(start, start + n))
