"""The study's figures beyond the comparison panels of `figures.py` (matplotlib, Agg, no pyplot state):

- `plot_originality` (ICML Fig. 3): (a) the density of per-sample originality of each system, a Gaussian
  KDE; (b) the generalization curves, humans in black (`figures.plot_generalization_curves`);
- `plot_guidance_sweep` (ICML Fig. 4): one generalization curve per guidance value, with the human curve;
- `plot_sweep`: the variants of one option sweep (`drawgap sweep`) on the plane, labelled and joined in
  value order;
- `plot_sample_grid`: for a few test exemplars, the exemplar and drawings of humans and of each system.

The diversity-recognizability plane (ICML Fig. 2) is `figures.plot_diversity_recognizability`.
Every function takes data and returns a `Figure`; `save_png_and_pdf` writes one as PNG and PDF.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import gaussian_kde

from drawgap.errors import InputError
from drawgap.report.figures import _axes, _colors, plot_diversity_recognizability, plot_generalization_curves, save_figure

# --------------------------------------------------------------------------------------------- saving


def save_png_and_pdf(fig: Figure, stem: str | os.PathLike, dpi: int = 150) -> list[Path]:
    """Write `stem.png` and `stem.pdf`, each atomically; return both paths."""
    stem = Path(stem)
    return [save_figure(fig, stem.with_name(f"{stem.name}.{ext}"), dpi=dpi) for ext in ("png", "pdf")]


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure rendered as PNG bytes (for embedding in the HTML report)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ originality KDE


def originality_sample(metrics: Mapping) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(values, weights or None, number of drawings) of a metrics dict's per-sample originality.

    Uses `originality_per_sample` ([C][S]) when the file carries it; otherwise the histogram
    `originality_density` ({"edges", "density"}), as its bin centres weighted by each bin's mass.
    """
    n = int(metrics.get("n_classes") or 0) * int(metrics.get("samples_per_class") or 0)
    per_sample = metrics.get("originality_per_sample")
    if per_sample is not None:
        values = np.asarray(per_sample, dtype=np.float64).ravel()
        return values, None, len(values)
    hist = metrics.get("originality_density")
    if not hist or len(hist.get("edges", [])) < 2:
        raise InputError("expected originality_per_sample or originality_density", field="originality_density")
    edges = np.asarray(hist["edges"], dtype=np.float64)
    mass = np.asarray(hist["density"], dtype=np.float64) * np.diff(edges)
    return (edges[:-1] + edges[1:]) / 2, mass, max(n, 2)


def originality_kde(values, weights=None, n_drawings: int | None = None, grid=None) -> tuple[np.ndarray, np.ndarray]:
    """(x, density) of a Gaussian KDE (scipy.stats.gaussian_kde) of per-sample originality.

    With weights (a histogram's bin centres and masses), Scott's bandwidth factor is taken for the real
    number of drawings `n_drawings` (n^-1/5), not for the handful of bins, so the curve is as smooth as
    the KDE of the drawings themselves would be. Degenerate data (one value) gives a spike of width 0.01.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    keep = np.ones_like(values, bool) if weights is None else np.asarray(weights, dtype=np.float64) > 0
    values = values[keep]
    weights = None if weights is None else np.asarray(weights, dtype=np.float64)[keep]
    if len(values) == 0:
        raise InputError("expected at least one originality value", field="originality")
    top = float(values.max())
    grid = np.linspace(0.0, 1.3 * top + 0.05, 400) if grid is None else np.asarray(grid, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        sd = 0.01
        return grid, np.exp(-0.5 * ((grid - values[0]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
    bw = None if weights is None or not n_drawings else float(n_drawings) ** -0.2
    return grid, gaussian_kde(values, bw_method=bw, weights=weights)(grid)


def plot_originality_density(systems: Sequence[Mapping], densities: Mapping[str, tuple], ax: Axes | None = None) -> Figure:
    """ICML Fig. 3a: one KDE line per system; `densities[name] = (values, weights, n_drawings)`."""
    fig, ax = _axes(ax)
    colors = _colors(systems)
    for s in systems:
        if s["name"] not in densities:
            continue
        x, y = originality_kde(*densities[s["name"]])
        human = s.get("is_human")
        ax.plot(x, y, color="black" if human else colors[s["name"]], linestyle="--" if human else "-",
                linewidth=2 if human else 1.5, label=s["name"])
        ax.fill_between(x, 0, y, color="black" if human else colors[s["name"]], alpha=0.08, linewidth=0)
    ax.set_xlabel("originality (per drawing)")
    ax.set_ylabel("density")
    ax.set_title("originality density")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_originality(systems: Sequence[Mapping], densities: Mapping[str, tuple]) -> Figure:
    """ICML Fig. 3: (a) originality densities, (b) generalization curves with the human curve."""
    fig = Figure(figsize=(10.5, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    plot_originality_density(systems, densities, ax=left)
    plot_generalization_curves(systems, ax=right)
    return fig


# ------------------------------------------------------------------------------------- guidance sweep


def plot_guidance_sweep(curves: Mapping[float, Mapping], human_curve: Mapping | None = None, generator: str = "CFGDM",
                        ax: Axes | None = None) -> Figure:
    """ICML Fig. 4: one generalization curve per guidance value (orange to dark blue with g), humans in black.

    curves: {guidance: {"originality": [...], "recognizability": [...]}}.
    """
    if not curves:
        raise InputError("expected at least one guidance value", field="guidance")
    fig, ax = _axes(ax, figsize=(5.6, 4.4))
    values = sorted(curves)
    cmap = colormaps["plasma"]
    for i, g in enumerate(values):
        c = curves[g]
        # plasma from orange (lowest g) to dark blue (highest): its yellow end is unreadable on white
        ax.plot(c["originality"], c["recognizability"], marker="o", markersize=3.5,
                color=cmap(0.75 * (1 - i / max(1, len(values) - 1))), label=f"{generator} g={g:g}")
    if human_curve:
        ax.plot(human_curve["originality"], human_curve["recognizability"], color="black", linestyle="--", marker="*",
                markersize=9, label="human")
    ax.set_xlabel("originality")
    ax.set_ylabel("recognizability (%)")
    ax.set_title(f"{generator}: guidance sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------- option sweeps


def plot_sweep(systems: Sequence[Mapping], order: Sequence[str], labels: Sequence[str], title: str = "sweep",
               ax: Axes | None = None) -> Figure:
    """The NeurIPS point clouds: the plane of `figures.plot_diversity_recognizability` (humans as the black
    star), the variants `order` (system names, in value order) joined by a grey line and each labelled with
    its value `labels`."""
    if len(order) != len(labels):
        raise InputError(f"expected one label per variant ({len(order)}), got {len(labels)}", field="labels")
    by_name = {s["name"]: s for s in systems}
    missing = [name for name in order if name not in by_name]
    if missing:
        raise InputError(f"expected the variants among the systems, missing {', '.join(missing)}", field="systems")
    fig, ax = _axes(ax, figsize=(5.6, 4.6))
    xs = [by_name[name]["diversity"] for name in order]
    ys = [by_name[name]["recognizability"] for name in order]
    ax.plot(xs, ys, color="0.6", linewidth=1, zorder=1)
    plot_diversity_recognizability(systems, ax=ax)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------- sample grids


def mosaic(drawings: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """[k, H, W] drawings in [0, 1] -> one image of ceil(k / columns) rows, separated by `gap` pixels of 0.5."""
    drawings = np.asarray(drawings, dtype=np.float32)
    k, h, w = drawings.shape
    rows = -(-k // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), 0.5, np.float32)
    for i, d in enumerate(drawings):
        r, c = divmod(i, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = d
    return out


def plot_sample_grid(classes: Sequence[str], exemplars: np.ndarray, sources: Mapping[str, np.ndarray],
                     columns: int = 3, panel: float = 1.6) -> Figure:
    """One row per test exemplar: the exemplar, then a mosaic of drawings from each source (humans, systems).

    exemplars [K, H, W] and sources[name] [K, k, H, W], all in [0, 1] (ink high; shown dark on white).
    """
    exemplars = np.asarray(exemplars, dtype=np.float32)
    K = len(classes)
    if K == 0 or exemplars.shape[0] != K:
        raise InputError(f"expected one exemplar per class ({K}), got {exemplars.shape[0]}", field="exemplars")
    for name, rows in sources.items():
        if np.shape(rows)[0] != K:
            raise InputError(f"expected drawings for {K} classes, got {np.shape(rows)[0]}", field=name)
    names = list(sources)
    fig = Figure(figsize=(panel * (0.5 + len(names)) + 0.6, panel * 0.75 * K + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(K, 1 + len(names), squeeze=False,
                                   gridspec_kw={"width_ratios": [0.5] + [1.0] * len(names)}))
    for r in range(K):
        axes[r, 0].imshow(exemplars[r], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(_short(classes[r]), fontsize=7)
        for j, name in enumerate(names, start=1):
            axes[r, j].imshow(mosaic(np.asarray(sources[name][r], dtype=np.float32), columns), cmap="gray_r",
                              vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title("exemplar", fontsize=8)
    for j, name in enumerate(names, start=1):
        axes[0, j].set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _short(name: str, width: int = 16) -> str:
    """A row label: alphabet and character on their own lines (the character alone repeats across alphabets)."""
    return "\n".join(p if len(p) <= width else p[: width - 1] + "…" for p in str(name).split("/")[-2:])
