"""How much two critic pairs agree on a system: Pearson and Spearman correlation of their per-class scores.

The NeurIPS 2022 paper's robustness check (SPEC.md 3.1/3.2): the same drawings scored with independently
trained critics should rank the classes alike ("Pearson 0.86 / Spearman 0.85"). `evaluate` with several
critic pairs writes this as the `agreement` section of metrics.json, one entry per pair of critic pairs.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from scipy import stats

# The per-class scores compared (keys of metrics.json's per_class); diversity is the normalised one.
AGREEMENT_SCORES = ("diversity", "recognizability", "originality")


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def correlation(a, b) -> dict:
    """Pearson and Spearman correlation (with two-sided p-values) of two per-class score arrays; None
    where undefined (fewer than 3 classes, or one array constant: every class scored alike)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two per-class arrays of one length, got shapes {a.shape} and {b.shape}")
    out = {"n": int(a.size), "pearson": None, "pearson_p": None, "spearman": None, "spearman_p": None}
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    with warnings.catch_warnings():  # near-constant input: scipy warns and may return NaN, recorded as None
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson, spearman = stats.pearsonr(a, b), stats.spearmanr(a, b)
    out.update(pearson=_finite_or_none(pearson.statistic), pearson_p=_finite_or_none(pearson.pvalue),
               spearman=_finite_or_none(spearman.statistic), spearman_p=_finite_or_none(spearman.pvalue))
    return out


def critic_agreement(by_critics: dict[str, dict], scores: tuple[str, ...] = AGREEMENT_SCORES) -> list[dict]:
    """One entry per pair of critic pairs (in the order given): {"critics": [a, b], score: correlation}.
    `by_critics[name]["per_class"]` holds each critic pair's per-class scores over the same classes."""
    out = []
    for a, b in itertools.combinations(by_critics, 2):
        pa, pb = by_critics[a]["per_class"], by_critics[b]["per_class"]
        out.append({"critics": [a, b], **{k: correlation(pa[k], pb[k]) for k in scores}})
    return out
