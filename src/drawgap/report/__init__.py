"""Reports: figures of metrics (matplotlib on the Agg canvas, no pyplot state)."""

from drawgap.report.figures import (
    plot_comparison,
    plot_diversity_recognizability,
    plot_generalization_curves,
    save_figure,
)

__all__ = ["plot_comparison", "plot_diversity_recognizability", "plot_generalization_curves", "save_figure"]
