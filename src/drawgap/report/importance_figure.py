"""Feature-importance figure in the manner of ICML Fig. 5: for each category, its exemplar drawing, the
human importance map and the maps of the models, side by side.

`importance_figure` takes arrays and returns a matplotlib Figure (Agg; nothing is shown or saved here);
`figure_data` gathers those arrays from maps files, one per category.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from drawgap.errors import InputError


def importance_figure(categories, exemplars: np.ndarray | None, human: np.ndarray | None, models: dict[str, np.ndarray],
                      scores: dict[str, list[float]] | None = None, cmap: str = "inferno", panel: float = 1.2,
                      drawing_label: str = "exemplar", outlines: dict[str, np.ndarray] | None = None) -> Figure:
    """One column per category; rows: the drawing (if given; `drawing_label` names it: the exemplar for
    diffusion and human maps, "drawing" for critic maps of other drawings), the human map (if given), then
    one row per model.

    exemplars [C, h, w] in [0, 1]; human and each model [C, H, W] >= 0 (each panel is scaled to its own
    maximum); the ink of the drawing each map is about is outlined on it: `outlines[name]` [C, h, w] where
    given (e.g. a critic's maps explain drawings other than the exemplar), else the exemplar.
    `scores[name][c]` (e.g. Spearman rho with the human map) is printed under a model's panel.
    """
    rows: list[tuple[str, np.ndarray | None]] = []
    if human is not None:
        rows.append(("human", human))
    rows += list(models.items())
    n_cat = len(categories)
    if n_cat == 0 or not rows:
        raise InputError("expected at least one category and one map source", field="maps")
    for name, maps in rows:
        if len(maps) != n_cat:
            raise InputError(f"expected {n_cat} maps (one per category), got {len(maps)}", field=name)
    n_rows = len(rows) + (exemplars is not None)
    fig = Figure(figsize=(panel * n_cat + 1.0, panel * n_rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cat, squeeze=False))
    r0 = 0
    if exemplars is not None:
        for c in range(n_cat):
            axes[0, c].imshow(exemplars[c], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            axes[0, c].set_title(_short(categories[c]), fontsize=7)
        axes[0, 0].set_ylabel(drawing_label, fontsize=8)
        r0 = 1
    for r, (name, maps) in enumerate(rows, start=r0):
        for c in range(n_cat):
            ax = axes[r, c]
            m = np.asarray(maps[c], dtype=np.float64)
            top = m.max()
            ax.imshow(m / top if top > 0 else m, cmap=cmap, vmin=0, vmax=1, interpolation="bilinear")
            drawing = (outlines or {}).get(name, exemplars)
            if drawing is not None:
                ink = _resize_nearest(drawing[c], m.shape[-1])
                if ink.max() > 0.5:
                    ax.contour(ink, levels=[0.5], colors="cyan", linewidths=0.4)
            if scores and name in scores and scores[name][c] is not None and np.isfinite(scores[name][c]):
                ax.set_xlabel(f"rho {scores[name][c]:.2f}", fontsize=6, labelpad=1)
            if r == 0:
                ax.set_title(_short(categories[c]), fontsize=7)
        # long source names ("CFGDM g=1 implicit classifier") on two or three lines, not over the panel above
        label = textwrap.fill(name, 18, break_on_hyphens=False, break_long_words=False)
        own = (outlines or {}).get(name)
        if own is not None and (exemplars is None or not np.array_equal(np.asarray(own), np.asarray(exemplars))):
            label += "\n(on another drawing,\noutlined)"  # a critic explains a test drawing, not the top row's
        axes[r, 0].set_ylabel(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def figure_data(human, models: dict, resolution: int = 48, categories=None, max_categories: int = 10):
    """(categories, drawings or None, human maps or None, {name: maps}, drawing label) per category from
    ImportanceMaps, ready for `importance_figure`.

    Each source's maps are averaged per category (after unit-mass normalisation); a category's drawing is
    the image stored with the first source that has one ("exemplar", or "drawing" for critic maps, which
    explain drawings other than the exemplar). Categories: those given, else the ones all sources share
    (first `max_categories`, sorted).
    """
    from drawgap.importance.compare import per_category

    sources = ([human] if human is not None else []) + list(models.values())
    if not sources:
        raise InputError("expected at least one maps file", field="maps")
    tables = [per_category(m, resolution) for m in sources]
    shared = sorted(set.intersection(*(set(t[0]) for t in tables)))
    cats = list(categories) if categories else shared[:max_categories]
    missing = [c for c in cats if c not in shared]
    if not cats or missing:
        raise InputError(f"categories not in every maps file: {', '.join(missing) or '(none shared)'}", field="categories")
    per_source = [t[1][[list(t[0]).index(c) for c in cats]] for t in tables]

    exemplars, label = None, "exemplar"
    for m in sources:
        if m.images is not None:
            first = [int(np.flatnonzero(m.categories == c)[0]) for c in cats]
            exemplars = m.images[first]
            label = "drawing" if m.method.startswith("critic") else "exemplar"  # critics explain other drawings
            break
    human_maps = per_source.pop(0) if human is not None else None
    return cats, exemplars, human_maps, dict(zip(models, per_source)), label


def drawings_per_category(sources: dict, categories) -> dict[str, np.ndarray]:
    """{name: [C, h, w]} the drawing of the first map of each category, for the sources (ImportanceMaps)
    that store their images: what `importance_figure`'s `outlines` takes."""
    out = {}
    for name, m in sources.items():
        if m.images is not None and all((m.categories == c).any() for c in categories):
            out[name] = m.images[[int(np.flatnonzero(m.categories == c)[0]) for c in categories]]
    return out


def _resize_nearest(image: np.ndarray, size: int) -> np.ndarray:
    h = image.shape[-1]
    idx = (np.arange(size) * h / size).astype(int)
    return image[np.ix_(idx, idx)]


def _short(name: str, width: int = 14) -> str:
    """A column title: each "/"-separated part on its own line (alphabet, character), cut to `width`."""
    return "\n".join(p if len(p) <= width else p[: width - 1] + "…" for p in str(name).split("/")[-2:])
