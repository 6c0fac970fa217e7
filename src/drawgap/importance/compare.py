"""How maps compare (SPEC.md 5.2, "comparison measures"): agreement of a model's maps with human maps,
and how localized each map is.

Agreement, per category, at one resolution (48 by default, the ICML comparison size):
- Spearman rho between the model's map and the human map (scipy.stats; ties get average ranks);
- rho as a fraction of the human ceiling (the split-half reliability of the human maps);
- a null: the mean rho between the model's map and the human maps of the *other* categories, i.e. what a
  map that knows nothing about the drawing gets from generic structure (centre bias, ink density).

Localization ("humans rely on fewer and more localized features"), on each map normalised to unit mass:
- entropy (nats; a uniform map has log(H*W)) and entropy / log(H*W);
- the fraction of pixels holding 50 % and 90 % of the mass (smallest such set);
- the number of 8-connected regions above `threshold` x the map's maximum (scipy.ndimage.label).

Paired tests across categories between two sources: Wilcoxon signed-rank (scipy.stats.wilcoxon).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi
import scipy.stats as st
import torch

from drawgap.errors import InputError
from drawgap.importance.maps_file import ImportanceMaps

LOCALIZATION_MEASURES = ("entropy", "normalized_entropy", "pixels_50", "pixels_90", "regions")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ------------------------------------------------------------------------------------------ single maps


def unit_mass(m: np.ndarray) -> np.ndarray:
    """The map divided by its sum (maps [..., H, W]); an all-zero map stays zero."""
    m = np.asarray(m, dtype=np.float64)
    total = m.sum(axis=(-2, -1), keepdims=True)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0)


def entropy(m: np.ndarray) -> float:
    """Shannon entropy (nats) of the map as a distribution over pixels; NaN for an all-zero map."""
    p = unit_mass(m).ravel()
    if p.sum() == 0:
        return float("nan")
    return float(st.entropy(p))


def mass_fraction(m: np.ndarray, q: float) -> float:
    """Fraction of pixels in the smallest set holding a fraction `q` of the map's mass; NaN if all zero."""
    if not 0 < q <= 1:
        raise InputError(f"expected a mass fraction in (0, 1], got {q}", field="q")
    p = np.sort(unit_mass(m).ravel())[::-1]
    if p.sum() == 0:
        return float("nan")
    # The tolerance keeps 0.9 of a mass that sums to 1 - 1e-16 from needing one pixel more.
    k = int(np.searchsorted(np.cumsum(p), q - 1e-9)) + 1
    return min(k, p.size) / p.size


def count_regions(m: np.ndarray, threshold: float = 0.5) -> int:
    """Number of 8-connected regions where the map is >= threshold x its maximum (0 for an all-zero map)."""
    m = np.asarray(m, dtype=np.float64)
    top = m.max()
    if top <= 0:
        return 0
    _, n = ndi.label(m >= threshold * top, structure=EIGHT_CONNECTED)
    return int(n)


def localization(m: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All localization measures of one map [H, W]."""
    h, w = np.shape(m)
    e = entropy(m)
    return {
        "entropy": e,
        "normalized_entropy": e / math.log(h * w),
        "pixels_50": mass_fraction(m, 0.5),
        "pixels_90": mass_fraction(m, 0.9),
        "regions": float(count_regions(m, threshold)),
    }


def ink_mass(m: np.ndarray, ink: np.ndarray, dilate: int = 1) -> dict[str, float]:
    """Where a map [H, W] puts its mass relative to the drawing's ink.

    `ink` is a boolean mask at the map's resolution (see `ink_mask`); it is dilated by `dilate` pixels so
    that mass on a stroke's edge counts as on the stroke. Returns the mass on ink, the ink's share of the
    pixels (what a uniform map would get) and their ratio (> 1: the map prefers the ink).
    """
    ink = np.asarray(ink, dtype=bool)
    if dilate > 0:
        ink = ndi.binary_dilation(ink, structure=EIGHT_CONNECTED, iterations=int(dilate))
    p = unit_mass(m)
    on_ink = float(p[ink].sum()) if p.sum() > 0 else float("nan")
    area = float(ink.mean())
    return {"mass_on_ink": on_ink, "ink_area": area, "ink_enrichment": on_ink / area if area > 0 else float("nan")}


def ink_mask(image: np.ndarray, size: int, threshold: float = 0.5) -> np.ndarray:
    """Boolean ink mask [size, size] of a drawing [h, w] in [0, 1]: a map pixel is ink when any ink pixel of
    the drawing falls in its footprint (max-pooling keeps thin strokes that averaging would lose)."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) > threshold, dtype=torch.float32)[None, None]
    return torch.nn.functional.adaptive_max_pool2d(x, size)[0, 0].numpy() > 0


def mass_on_masks(m: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fraction of the map's mass [H, W] on each of K masks [K, H, W] (e.g. one per stroke)."""
    p = unit_mass(m)
    return np.array([p[np.asarray(k, dtype=bool)].sum() for k in masks])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over pixels; NaN when either map is constant."""
    a, b = np.ravel(a), np.ravel(b)
    if a.size != b.size:
        raise InputError(f"expected maps of the same size, got {a.size} and {b.size} pixels", field="maps")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(st.spearmanr(a, b).statistic)


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, B] Spearman rho between every map of a [A, H, W] and of b [B, H, W] (Pearson of average ranks)."""
    ra = standardized_ranks(a)
    rb = standardized_ranks(b)
    return ra @ rb.T / ra.shape[1]


def standardized_ranks(x: np.ndarray) -> np.ndarray:
    r = st.rankdata(np.reshape(x, (len(x), -1)), axis=1)
    r = r - r.mean(axis=1, keepdims=True)
    sd = r.std(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, r / sd, np.nan)


def spearman_brown(r):
    """Reliability of the full set from the correlation r between two halves: 2r / (1 + r)."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * r / (1 + r)


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Maps [N, H, W] -> [N, size, size], antialiased bilinear (mass-preserving up to edges when shrinking)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    x = torch.from_numpy(np.ascontiguousarray(maps))[:, None]
    out = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[:, 0].clamp_min(0).numpy()


# ------------------------------------------------------------------------------------------ tests


def paired_test(a, b) -> dict:
    """Wilcoxon signed-rank test of paired values a[i] vs b[i] (pairs with a NaN are dropped)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {"n": int(a.size), "median_a": _median(a), "median_b": _median(b),
           "median_difference": _median(a - b), "statistic": None, "pvalue": None}
    if a.size == 0 or np.all(a == b):
        return out  # no evidence either way: the test is undefined
    res = st.wilcoxon(a, b)
    out.update(statistic=float(res.statistic), pvalue=float(res.pvalue))
    return out


def _median(x) -> float | None:
    return float(np.median(x)) if np.size(x) else None


# ------------------------------------------------------------------------------------------ files


def per_category(m: ImportanceMaps, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories [C] sorted, maps [C, size, size], ceiling [C]) with each category's maps averaged after
    normalising each to unit mass (so every image counts the same); ceiling = mean over its images."""
    cats = np.unique(m.categories)
    maps = unit_mass(resize_maps(m.maps, size))
    ceiling = np.full(len(m), np.nan) if m.ceiling is None else m.ceiling.astype(np.float64)
    avg = np.stack([maps[m.categories == c].mean(axis=0) for c in cats]).astype(np.float32)
    ceil = np.array([_nanmean(ceiling[m.categories == c]) for c in cats])
    return cats, avg, ceil


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def localization_table(maps: np.ndarray, threshold: float = 0.5) -> dict[str, list[float]]:
    """{measure: [value per map]} for maps [N, H, W]."""
    rows = [localization(m, threshold) for m in maps]
    return {k: [r[k] for r in rows] for k in LOCALIZATION_MEASURES}


def compare_to_human(human: ImportanceMaps, model: ImportanceMaps, resolution: int = 48, threshold: float = 0.5) -> dict:
    """Per-category agreement of `model` with `human` and the localization of both (see the module doc).

    Categories present in both files are compared; maps are averaged per category at `resolution`.
    """
    h_cats, h_maps, h_ceil = per_category(human, resolution)
    m_cats, m_maps, _ = per_category(model, resolution)
    shared = np.intersect1d(h_cats, m_cats)
    if shared.size == 0:
        raise InputError(f"no category in common between the human maps ({', '.join(h_cats[:3])}, ...) "
                         f"and the model maps ({', '.join(m_cats[:3])}, ...)", field="categories")
    hi = np.searchsorted(h_cats, shared)
    mi = np.searchsorted(m_cats, shared)
    h, m, ceil = h_maps[hi], m_maps[mi], h_ceil[hi]

    rho_all = spearman_matrix(m, h)  # [model category, human category]
    rho = np.diag(rho_all).copy()
    off = ~np.eye(len(shared), dtype=bool)
    null = np.array([_nanmean(rho_all[i][off[i]]) for i in range(len(shared))]) if len(shared) > 1 else np.full(1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = rho / ceil

    loc_h = localization_table(h, threshold)
    loc_m = localization_table(m, threshold)
    return {
        "categories": shared.tolist(),
        "per_category": {
            "spearman": rho.tolist(),
            "null_spearman": null.tolist(),
            "ceiling": ceil.tolist(),
            "fraction_of_ceiling": frac.tolist(),
        },
        "summary": {
            "spearman_mean": _nanmean(rho),
            "null_spearman_mean": _nanmean(null),
            "ceiling_mean": _nanmean(ceil),
            "fraction_of_ceiling_mean": _nanmean(frac),
            "spearman_vs_null": paired_test(rho, null),
        },
        "localization": {
            "human": loc_h,
            "model": loc_m,
            "human_mean": {k: _nanmean(v) for k, v in loc_h.items()},
            "model_mean": {k: _nanmean(v) for k, v in loc_m.items()},
            "human_vs_model": {k: paired_test(loc_h[k], loc_m[k]) for k in LOCALIZATION_MEASURES},
        },
    }


def compare_models(a: dict, b: dict) -> dict:
    """Paired tests across the categories two `compare_to_human` results share: Spearman and localization."""
    cats = np.intersect1d(a["categories"], b["categories"])
    ia = [a["categories"].index(c) for c in cats]
    ib = [b["categories"].index(c) for c in cats]
    out = {"categories": cats.tolist(),
           "spearman": paired_test(_at(a["per_category"]["spearman"], ia), _at(b["per_category"]["spearman"], ib))}
    for k in LOCALIZATION_MEASURES:
        out[k] = paired_test(_at(a["localization"]["model"][k], ia), _at(b["localization"]["model"][k], ib))
    return out


def _at(values: list, idx: list[int]) -> list:
    return [values[i] for i in idx]


def json_clean(obj):
    """NaN and inf -> None (strict JSON), recursively."""
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


COMPARISON_FORMAT = "drawgap.importance_comparison/1"


def compare_sources(human: ImportanceMaps, models: dict[str, ImportanceMaps], resolution: int = 48,
                    threshold: float = 0.5) -> dict:
    """The comparison file's content: each model against the human maps, and paired tests between models.

    {"format", "resolution", "threshold", "human": {method, n_maps}, "models": {name: compare_to_human(...)
    plus method}, "between_models": {"a vs b": compare_models(...)}, "meta": provenance}.
    """
    from drawgap.provenance import provenance

    if resolution < 2:
        raise InputError(f"expected a resolution of at least 2, got {resolution}", field="resolution")
    if not 0 < threshold <= 1:
        raise InputError(f"expected a threshold in (0, 1] (a fraction of each map's maximum), got {threshold}", field="threshold")
    results = {name: {"method": m.method, "n_maps": len(m), **compare_to_human(human, m, resolution, threshold)}
               for name, m in models.items()}
    names = list(results)
    between = {f"{a} vs {b}": compare_models(results[a], results[b])
               for i, a in enumerate(names) for b in names[i + 1:]}
    config = {"resolution": resolution, "threshold": threshold}
    return json_clean({
        "format": COMPARISON_FORMAT,
        **config,
        "human": {"method": human.method, "n_maps": len(human), "options": human.meta.get("options")},
        "models": results,
        "between_models": between,
        "meta": provenance(config, None),
    })


# ------------------------------------------------------------------------------------------ ink

INK_FORMAT = "drawgap.importance_ink/1"


def ink_report(m: ImportanceMaps, resolution: int = 48, threshold: float = 0.5, dilate: int = 1,
               stroke_masks: list[np.ndarray] | None = None) -> dict:
    """How each map places its mass on the ink of the drawing it is about (`m.images`), and how localized
    it is: per map and averaged. With `stroke_masks` ([K, h, w] per map, e.g. from `strokes_masks`), also
    the share of the mass on each stroke (undilated; mass off every stroke is the remainder)."""
    if m.images is None:
        raise InputError("the maps file holds no images, so there is no ink to compare with", field="images")
    maps = resize_maps(m.maps, resolution)
    rows = []
    for i, mp in enumerate(maps):
        row = {**ink_mass(mp, ink_mask(m.images[i], resolution), dilate), **localization(mp, threshold)}
        if stroke_masks is not None:
            masks = [ink_mask(k.astype(np.float32), resolution) for k in stroke_masks[i]]
            row["mass_per_stroke"] = mass_on_masks(mp, masks).tolist()
        rows.append(row)
    from drawgap.provenance import provenance

    keys = [k for k in rows[0] if k != "mass_per_stroke"] if rows else []
    config = {"resolution": resolution, "dilate": dilate, "threshold": threshold}
    return json_clean({
        "format": INK_FORMAT, "method": m.method, **config, "maps_meta": m.meta, "meta": provenance(config, None),
        "mean": {k: _nanmean([r[k] for r in rows]) for k in keys},
        "per_map": {"image_ids": m.image_ids.tolist(), "categories": m.categories.tolist(),
                    **{k: [r.get(k) for r in rows] for k in (keys + (["mass_per_stroke"] if stroke_masks is not None else []))}},
    })


def strokes_masks(dataset, indices, path=None) -> list[np.ndarray]:
    """Per-stroke ink masks bool [K, H, W] of drawings of the built-in `strokes` dataset (by index into the
    dataset file: ints, or image ids that are such ints), regenerated from the config in the file's meta."""
    from drawgap.data.strokes import StrokesConfig, split_drawings

    try:
        indices = np.asarray(indices).astype(np.int64)
    except ValueError:
        raise InputError("image ids are not dataset indices, so strokes cannot be matched", path=path, field="image_ids") from None
    if len(indices) and (indices.min() < 0 or indices.max() >= len(dataset.images)):
        raise InputError(f"expected dataset indices in 0..{len(dataset.images) - 1}", path=path, field="image_ids")

    config, split = dataset.meta.get("config"), dataset.meta.get("split")
    if dataset.meta.get("name") != "strokes" or not isinstance(config, dict):
        raise InputError("expected a dataset file of the built-in strokes dataset (meta.name 'strokes' with its config)",
                         field="meta")
    drawings = split_drawings(StrokesConfig(**config), split)
    if len(drawings) != len(dataset.images):
        raise InputError(f"the recorded config makes {len(drawings)} drawings, the file holds {len(dataset.images)}", field="meta.config")
    return [drawings[int(i)].render(per_stroke=True, supersample=config.get("supersample", 4)) > 0 for i in indices]
