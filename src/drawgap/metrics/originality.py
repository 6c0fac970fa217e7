"""Per-sample originality and generalization curves (SPEC.md 4.3, ICML 2023; code [LM] lines 175-245).

For each class: sort the samples by their raw SimCLR distance to the exemplar and cut the sorted list into
`n_bins` bins. A sample's originality is its RMS distance to the exemplar in s-normalised feature space
(s: the feature scale of `diversity.feature_scale`), i.e. raw distance / (s * sqrt(D)). Each bin gets a
recognizability (the task list run with queries drawn from that bin), and the generalization curve is,
per bin, (mean originality over the bin's samples, averaged over classes; mean accuracy over classes).

Bin rule: bin b holds the sorted positions floor(b*S/B) .. floor((b+1)*S/B) - 1. When S is a multiple of
B (the papers' 20 and 500 with B = 10) every bin holds S/B samples, as in [LM]; otherwise bin sizes differ
by at most one. With fewer samples than bins, B drops to S (with a warning).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from drawgap.metrics._checks import (
    as_class_features,
    as_exemplar_features,
    check_critic,
    check_positive_int,
    check_sample_images,
    embed_classes,
)
from drawgap.metrics.base import CriticOutputs, Metric, Protocol, Report
from drawgap.metrics.bootstrap import ratio_of_means
from drawgap.metrics.diversity import sample_spread
from drawgap.metrics.recognizability import binned_recognizability


def exemplar_distances(features, exemplar_features) -> torch.Tensor:
    """Raw Euclidean distance of each sample to its class's exemplar: [C, S, D], [C, D] -> [C, S]."""
    features = as_class_features(features)
    exemplar_features = as_exemplar_features(exemplar_features, features.shape[0])
    return (features.double() - exemplar_features.double().unsqueeze(1)).pow(2).sum(-1).sqrt()


def sample_originality(features, exemplar_features, scale) -> torch.Tensor:
    """Per-sample originality [C, S]: sqrt(mean_d ((f_d(v) - f_d(x)) / s)^2), the RMS distance in the
    s-normalised space ([LM] `originality_d`)."""
    features = as_class_features(features)
    return exemplar_distances(features, exemplar_features) / (float(scale) * math.sqrt(features.shape[-1]))


def bin_edges(n_samples: int, n_bins: int = 10) -> torch.Tensor:
    """LongTensor [B + 1] of sorted positions where each bin starts (see the module's bin rule)."""
    n_samples = check_positive_int(n_samples, "n_samples")
    n_bins = check_positive_int(n_bins, "bins")
    if n_bins > n_samples:
        raise ValueError(f"expected at most {n_samples} bins for {n_samples} samples per class, got {n_bins}")
    return torch.tensor([b * n_samples // n_bins for b in range(n_bins + 1)])


def sort_by_distance(distances: torch.Tensor) -> torch.Tensor:
    """order [C, S]: each class's sample indices from the closest to the exemplar to the farthest (stable)."""
    return torch.sort(distances, dim=1, stable=True).indices


def bin_means(values: torch.Tensor, order: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample `values` [C, S] over each bin of each class -> [C, B]."""
    ranked = values.gather(1, order)
    return torch.stack([ranked[:, lo:hi].mean(1) for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist())], dim=1)


def generalization_curve(originality: torch.Tensor, order: torch.Tensor, edges: torch.Tensor,
                         accuracy: torch.Tensor) -> dict:
    """The curve's points: originality [C, S], order [C, S], edges [B + 1], per-bin accuracy [C, B] in
    [0, 1] -> {"originality": [B], "recognizability": [B] in %}, bin 1 (least original) first."""
    x = bin_means(originality.double(), order, edges).mean(0)
    y = 100.0 * accuracy.double().mean(0)
    return {"originality": x.tolist(), "recognizability": y.tolist()}


def density(values: np.ndarray, width: float = 0.05) -> dict:
    """Histogram density of per-sample originality (ICML Fig. 3a) on bins of `width` from 0."""
    values = np.asarray(values, dtype=np.float64).ravel()
    top = max(width, math.ceil(float(values.max(initial=0.0)) / width + 1e-9) * width)
    edges = np.arange(0.0, top + width / 2, width)
    hist, edges = np.histogram(values, bins=edges, density=True)
    return {"edges": edges.round(6).tolist(), "density": hist.tolist()}


class Originality(Metric):
    """Accumulates what originality and the generalization curve need, over batches of classes.

    Built with both critics: the SimCLR features decide distances, originality and bins; the ProtoNet
    embeddings decide each bin's recognizability. State per class: raw distances [S], per-sample spread
    (for the scale s), per-bin raw diversity [B], and the ProtoNet embeddings (the episodes mix classes,
    so the per-bin task lists run in `compute()`).
    """

    scalars = ("originality",)

    def __init__(self, simclr=None, protonet=None, *, n_bins: int = 10, nb_test: int = 500, ways: int = 20,
                 seed: int = 44):
        self.simclr = None if simclr is None else check_critic(simclr, "features", "SimCLR")
        self.protonet = None if protonet is None else check_critic(protonet, "embed", "ProtoNet")
        self.n_bins = check_positive_int(n_bins, "bins")
        self.nb_test = check_positive_int(nb_test, "nb_test")
        self.ways = check_positive_int(ways, "ways", 2)
        self.seed = int(seed)
        self.reset()

    @classmethod
    def for_protocol(cls, protocol: Protocol) -> "Originality":
        return cls(n_bins=protocol.bins, nb_test=protocol.queries, ways=protocol.ways, seed=protocol.seed)

    def reset(self) -> None:
        self.distances: list[torch.Tensor] = []
        self.spread: list[torch.Tensor] = []
        self.bin_diversity_raw: list[torch.Tensor] = []
        self.sample_emb: list[torch.Tensor] = []
        self.exemplar_emb: list[torch.Tensor] = []
        self.feature_dim: int | None = None
        self._edges: torch.Tensor | None = None

    def update_outputs(self, outputs: CriticOutputs) -> None:
        self.update_features(outputs.features, outputs.exemplar_features, outputs.embeddings, outputs.exemplar_embeddings)

    def update_images(self, samples, exemplars) -> None:
        if self.simclr is None or self.protonet is None:
            raise TypeError("Originality was built without critics: call update_features() instead")
        samples, exemplars = check_sample_images(samples, exemplars)
        self.update_features(
            embed_classes(self.simclr.features, samples), self.simclr.features(exemplars),
            embed_classes(self.protonet.embed, samples), self.protonet.embed(exemplars),
        )

    def update_features(self, features, exemplar_features, sample_emb, exemplar_emb) -> None:
        """SimCLR features [C, S, D] and [C, D]; ProtoNet embeddings [C, S, E] and [C, E]."""
        features = as_class_features(features)
        exemplar_features = as_exemplar_features(exemplar_features, features.shape[0])
        c, s, d = features.shape
        if self._edges is None:
            if s < self.n_bins:
                warnings.warn(f"{s} samples per class: {s} originality bins instead of {self.n_bins}", stacklevel=2)
                self.n_bins = s
            self._edges = bin_edges(s, self.n_bins)
            self.feature_dim = d
        elif s != int(self._edges[-1]) or d != self.feature_dim:
            raise ValueError(f"expected features [*, {int(self._edges[-1])}, {self.feature_dim}] like the previous "
                             f"updates, got {list(features.shape)}")
        distances = exemplar_distances(features, exemplar_features)
        order = sort_by_distance(distances)
        self.distances.append(distances)
        self.spread.append(sample_spread(features).mean(1))
        if int(self._edges.diff().min()) >= 2:  # a bin's diversity needs two samples
            ranked = features.double().gather(1, order.unsqueeze(-1).expand(-1, -1, d))
            bounds = zip(self._edges[:-1].tolist(), self._edges[1:].tolist())
            per_bin = [ranked[:, lo:hi].std(1, unbiased=True).mean(-1) for lo, hi in bounds]
            self.bin_diversity_raw.append(torch.stack(per_bin, dim=1))
        self.sample_emb.append(as_class_features(sample_emb, "sample embeddings"))
        self.exemplar_emb.append(as_exemplar_features(exemplar_emb, c, "exemplar embeddings"))

    def compute(self) -> dict:
        if not self.distances:
            raise RuntimeError("Originality.compute() called before any update()")
        distances = torch.cat(self.distances)
        scale = torch.cat(self.spread).mean()
        originality = distances / (scale * math.sqrt(self.feature_dim))
        order = sort_by_distance(distances)
        accuracy = binned_recognizability(torch.cat(self.sample_emb), torch.cat(self.exemplar_emb), order, self._edges,
                                          nb_test=self.nb_test, ways=self.ways, seed=self.seed)
        curve = generalization_curve(originality, order, self._edges, accuracy)
        if self.bin_diversity_raw:
            curve["diversity"] = (torch.cat(self.bin_diversity_raw) / scale).mean(0).tolist()
        return {
            "originality": float(originality.mean()),
            "feature_scale": float(scale),
            "per_sample": originality.numpy(),
            "per_class": originality.mean(1).numpy(),
            # raw mean distance and spread per class: a bootstrap can re-estimate s on each resample
            "per_class_distance_raw": (distances.mean(1) / math.sqrt(self.feature_dim)).numpy(),
            "per_class_spread": torch.cat(self.spread).numpy(),
            "per_class_curve_originality": bin_means(originality, order, self._edges).numpy(),
            "per_class_curve_recognizability": 100.0 * accuracy.numpy(),
            "generalization_curve": curve,
            "bin_edges": self._edges.tolist(),
            "density": density(originality.numpy()),
        }

    def report(self, result: dict, ci) -> Report:
        # normalised values re-estimate the scale s on each resample of classes (bootstrap.ratio_of_means)
        spread = result["per_class_spread"]
        curve_raw = result["per_class_curve_originality"] * result["feature_scale"]
        return Report(
            values={"originality": result["originality"], "originality_density": result["density"],
                    "generalization_curve": result["generalization_curve"]},
            per_class={"originality": result["per_class"], "curve_originality": result["per_class_curve_originality"],
                       "curve_recognizability": result["per_class_curve_recognizability"]},
            ci95={"originality": ci(result["per_class_distance_raw"], spread, statistic=ratio_of_means),
                  "generalization_curve": {
                      "originality": [ci(column, spread, statistic=ratio_of_means) for column in curve_raw.T],
                      "recognizability": [ci(column) for column in result["per_class_curve_recognizability"].T]}},
            protocol={"bins": len(result["bin_edges"]) - 1, "bin_edges": result["bin_edges"],
                      "bin_rule": "samples sorted by raw SimCLR distance to the exemplar; "
                                  "bin b = sorted positions floor(b*S/B) .. floor((b+1)*S/B)-1"},
        )
