"""Metrics of machine (and human) drawings (SPEC.md 4): diversity, recognizability, per-sample originality
and generalization curves, distance to human, and, beyond the papers, the Vendi score, curve gaps and
bootstrap intervals.

Each metric is a plain function on critic features and a `Metric` object (`metrics/base.py`: `update` on
one batch of critic outputs, `compute`, `reset`, and `report`, its entries and intervals in metrics.json).
`evaluate` runs the list `METRICS` on a samples file, embedding every drawing once per critic; with several
critic pairs it adds each pair's scores and their per-class agreement (`critic_agreement`).
"""

from drawgap.metrics.agreement import critic_agreement
from drawgap.metrics.bootstrap import bootstrap_ci, ratio_of_means
from drawgap.metrics.comparison import compare, format_table
from drawgap.metrics.distance import curve_gap, distance_to_human, per_class_distance_to_human, zscores
from drawgap.metrics.diversity import Diversity, class_diversity, feature_scale, mean_diversity
from drawgap.metrics.base import CriticOutputs, Metric, Report
from drawgap.metrics.evaluate import METRICS, evaluate, resolve_critics
from drawgap.metrics.metrics_file import read_metrics, write_metrics
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
    "METRICS", "CriticOutputs", "Diversity", "Metric", "Originality", "Recognizability", "Report", "Vendi",
    "bin_edges", "binned_recognizability", "bootstrap_ci", "class_diversity", "compare", "curve_gap",
    "class_recognizability", "critic_agreement", "distance_to_human", "evaluate", "evaluation_tasks", "exemplar_distances", "feature_scale",
    "format_table", "generalization_curve", "mean_diversity", "per_class_distance_to_human", "ratio_of_means", "read_metrics",
    "resolve_critics", "sample_originality", "vendi_score", "write_metrics", "zscores",
]
