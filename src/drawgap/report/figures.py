"""Figures (matplotlib, Agg): each function takes data and returns a `matplotlib.figure.Figure`.

Figures are built on `matplotlib.figure.Figure` directly, not through pyplot: nothing global is touched,
no window opens, and saving renders with the Agg canvas whatever backend the caller's session uses.

`systems` below are the rows of `drawgap.metrics.compare(...)["systems"]`: dicts with `name`, `is_human`,
`diversity`, `recognizability`, `ci95` ({scalar: [low, high] or None}), `generalization_curve`
({"originality": [...], "recognizability": [...]}) and optionally `curve_ci95`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from drawgap.errors import InputError
from drawgap.io import atomic_path

HUMAN_STYLE = {"color": "black", "marker": "*", "markersize": 16}


def _colors(systems) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    models = [s["name"] for s in systems if not s.get("is_human")]
    return {name: palette[i % len(palette)] for i, name in enumerate(models)}


def _axes(ax: Axes | None, figsize=(5.0, 4.2)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _error(value: float, ci) -> list[list[float]] | None:
    if not ci or ci[0] is None:
        return None
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def plot_diversity_recognizability(systems, ax: Axes | None = None, paper: dict | None = None) -> Figure:
    """The diversity-recognizability plane (ICML Fig. 2): one point per system, 95 % intervals as error
    bars, humans as a black star; `paper` ({name: (diversity, recognizability)}, `report.paper_points`) adds the
    paper's points as hollow grey markers, each labelled."""
    fig, ax = _axes(ax)
    colors = _colors(systems)
    for name, (x, y) in (paper or {}).items():
        ax.plot(x, y, linestyle="none", marker="*" if name == "human" else "D", markersize=9 if name == "human" else 6,
                markerfacecolor="none", markeredgecolor="0.45", zorder=1)
    if paper:
        ax.plot([], [], linestyle="none", marker="D", markerfacecolor="none", markeredgecolor="0.45", label="the paper's points")
    for s in systems:
        x, y, ci = s["diversity"], s["recognizability"], s.get("ci95") or {}
        style = HUMAN_STYLE if s.get("is_human") else {"color": colors[s["name"]], "marker": "o", "markersize": 7}
        ax.errorbar(x, y, xerr=_error(x, ci.get("diversity")), yerr=_error(y, ci.get("recognizability")),
                    linestyle="none", capsize=3, label=s["name"], **style)
    ax.set_xlabel("diversity (normalised)")
    ax.set_ylabel("recognizability (%)")
    ax.set_title("diversity vs recognizability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if paper:  # labelled last: the axes' limits are final, so the labels can be kept apart
        points = [(x, y) for x, y in paper.values()] + [(s["diversity"], s["recognizability"]) for s in systems]
        _label_apart(ax, [(f"paper {name}", x, y) for name, (x, y) in paper.items()], points, fontsize=6, color="0.4")
    return fig


# Offsets (points) and alignment tried for a label, in order of preference: below right of its point first.
_LABEL_SPOTS = [(4, -10, "left"), (4, 3, "left"), (-4, 3, "right"), (-4, -10, "right"),
                (4, -18, "left"), (4, 11, "left"), (-4, -18, "right"), (-4, 11, "right")]


def _label_apart(ax: Axes, labels: list[tuple[str, float, float]], points: list[tuple[float, float]],
                 fontsize: float, color: str) -> None:
    """Annotate each (text, x, y) at the first of `_LABEL_SPOTS` whose text box overlaps no label placed
    before it and no marker of `points` (else the spot that overlaps least). Boxes are estimated in points
    from the axes' size and limits and the text's length, which is enough for a few short labels; matplotlib
    has no label placement of its own, and adjustText would be a dependency for these few labels."""
    width_in, height_in = ax.figure.get_size_inches() * ax.get_position().size
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()

    def to_points(x, y):
        return (x - x0) / (x1 - x0) * width_in * 72, (y - y0) / (y1 - y0) * height_in * 72

    def overlap(a, b):
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    markers = [(px - 3, py - 3, px + 3, py + 3) for px, py in (to_points(x, y) for x, y in points)]
    placed: list[tuple[float, float, float, float]] = []
    for text, x, y in labels:
        px, py = to_points(x, y)
        w, h = 0.55 * fontsize * len(text), 1.1 * fontsize

        def box(spot):
            dx, dy, ha = spot
            left = px + dx if ha == "left" else px + dx - w
            return left, py + dy, left + w, py + dy + h

        cost = [sum(overlap(box(spot), other) for other in placed + markers) for spot in _LABEL_SPOTS]
        spot = _LABEL_SPOTS[cost.index(min(cost))]  # the first of the least overlapping
        placed.append(box(spot))
        ax.annotate(text, (x, y), xytext=spot[:2], textcoords="offset points", ha=spot[2], va="bottom",
                    fontsize=fontsize, color=color)


def plot_generalization_curves(systems, ax: Axes | None = None) -> Figure:
    """Recognizability as a function of originality (ICML Figs. 3b/4), one curve per system, with the 95 %
    band of each bin's recognizability where given; humans in black."""
    fig, ax = _axes(ax)
    colors = _colors(systems)
    for s in systems:
        curve = s.get("generalization_curve")
        if not curve:
            continue
        x, y = np.asarray(curve["originality"], float), np.asarray(curve["recognizability"], float)
        human = s.get("is_human")
        color = "black" if human else colors[s["name"]]
        ax.plot(x, y, color=color, marker="*" if human else "o", markersize=9 if human else 4,
                linestyle="--" if human else "-", label=s["name"])
        band = (s.get("curve_ci95") or {}).get("recognizability")
        if band and all(b is not None for b in band):
            lo, hi = np.asarray(band, float).T
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("originality")
    ax.set_ylabel("recognizability (%)")
    ax.set_title("generalization curves")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no system with a curve: no empty legend
        ax.legend(fontsize="small")
    return fig


def plot_comparison(systems, paper: dict | None = None) -> Figure:
    """Both panels side by side: the diversity-recognizability plane and the generalization curves."""
    fig = Figure(figsize=(10.5, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    plot_diversity_recognizability(systems, ax=left, paper=paper)
    plot_generalization_curves(systems, ax=right)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write the figure (format from the extension: png, pdf, svg) atomically."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise InputError(f"expected a figure file ending in one of {', '.join('.' + f for f in sorted(supported))}",
                         path=path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path
