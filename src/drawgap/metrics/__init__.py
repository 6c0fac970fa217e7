"""Metrics of machine (and human) drawings (SPEC.md 4): diversity, recognizability, per-sample originality
and generalization curves, distance to human, and, beyond the papers, the Vendi score, curve gaps and
bootstrap intervals.

Each metric is a plain function on critic features and an accumulating object (`update(samples,
exemplars)` per batch of classes, `update_features(...)` for features already computed, `compute()`).
`evaluate` runs them all on a samples file, embedding every drawing once per critic.
"""

from drawgap.metrics.bootstrap import bootstrap_ci, ratio_of_means
from drawgap.metrics.comparison import compare, format_table
from drawgap.metrics.distance import curve_gap, distance_to_human, per_class_distance_to_human, zscores
from drawgap.metrics.diversity import Diversity, class_diversity, feature_scale, mean_diversity
from drawgap.metrics.evaluate import evaluate, read_metrics, resolve_critics, write_metrics
from drawgap.metrics.originality import (
    Originality,
    bin_edges,
    exemplar_distances,
    generalization_curve,
    sample_originality,
)
from drawgap.metrics.recognizability import (
    Recognizability,
    binned_recognizability,
    class_recognizability,
    evaluation_tasks,
)
from drawgap.metrics.vendi import Vendi, vendi_score

__all__ = [
    "Diversity", "Originality", "Recognizability", "Vendi",
    "bin_edges", "binned_recognizability", "bootstrap_ci", "class_diversity", "compare", "curve_gap",
    "class_recognizability", "distance_to_human", "evaluate", "evaluation_tasks", "exemplar_distances", "feature_scale",
    "format_table", "generalization_curve", "mean_diversity", "per_class_distance_to_human", "ratio_of_means", "read_metrics",
    "resolve_critics", "sample_originality", "vendi_score", "write_metrics", "zscores",
]
