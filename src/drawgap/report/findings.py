"""The report's heading: the study's findings stated in numbers, each read from the results' metrics files.

Three findings, as in the papers:
- which system is closest to humans in the diversity-recognizability plane, and by how much (distance
  to human, z-scored over every system of the run: NeurIPS 2022 §4.3);
- whether the human generalization curve lies above each model's at high originality (ICML Fig. 3b): the
  mean of human minus model recognizability over the top third of the originality range both curves
  cover (curves linearly interpolated between their bins);
- what guidance does (ICML Fig. 4): recognizability, diversity and the originality reach (the mean
  originality of the most original bin, where the curve ends) at the lowest and highest guidance;
- where the run holds ink reports of importance maps (ICML §5): which source of maps is most concentrated
  on the ink (highest ink enrichment: mass on ink / ink area, so drawings of different ink areas compare),
  which the least, and which is the most localized (fewest pixels holding half the mass).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from drawgap.report.results import Results

HIGH_FRACTION = 1 / 3  # "high originality": the top third of the originality range two curves share
HIGH_PART = "top third"  # the same, in words


def closest_to_human(results: Results) -> list[tuple[str, float]]:
    """[(system, distance to human)] of the models, closest first; [] without a human reference."""
    rows = [r for r in results.systems if not r["is_human"] and r.get("distance_to_human") is not None]
    return sorted(((r["name"], float(r["distance_to_human"])) for r in rows), key=lambda t: t[1])


def high_originality_gap(model_curve: Mapping, human_curve: Mapping, fraction: float = HIGH_FRACTION,
                         n_grid: int = 101) -> dict:
    """{"gap": mean human - model recognizability (pp) over the top `fraction` of the shared originality
    range, or None without overlap; "range": [low, high] of that top part, or None}."""
    def sorted_curve(c):
        x, y = np.asarray(c["originality"], float), np.asarray(c["recognizability"], float)
        order = np.argsort(x, kind="stable")
        return x[order], y[order]

    mx, my = sorted_curve(model_curve)
    hx, hy = sorted_curve(human_curve)
    low, high = max(mx[0], hx[0]), min(mx[-1], hx[-1])
    if len(mx) == 0 or len(hx) == 0 or low >= high:
        return {"gap": None, "range": None}
    start = high - fraction * (high - low)
    grid = np.linspace(start, high, n_grid)
    return {"gap": float(np.mean(np.interp(grid, hx, hy) - np.interp(grid, mx, my))), "range": [float(start), float(high)]}


def curve_gaps_at_high_originality(results: Results) -> dict[str, dict]:
    """{model: high_originality_gap(...)} against the human curve; {} without a human reference."""
    if results.human is None:
        return {}
    human = results.metrics[results.human]["generalization_curve"]
    return {r["name"]: high_originality_gap(r["generalization_curve"], human)
            for r in results.systems if not r["is_human"] and r.get("generalization_curve")}


def originality_reach(curve: Mapping) -> float:
    """Where a generalization curve ends: the largest bin originality."""
    return float(max(curve["originality"]))


def guidance_sweeps(results: Results) -> dict[str, list[dict]]:
    """{generator label: [{"name", "guidance", "recognizability", "diversity", "reach"}] by guidance} for
    every generator sampled at two or more guidance values."""
    from drawgap.models.naming import display_name

    groups: dict[str, list[dict]] = {}
    for r in results.systems:
        g = None if r["is_human"] else results.guidance(r["name"])
        if g is None:
            continue
        gen = results.generator(r["name"]) or "generator"
        groups.setdefault(display_name(gen) or gen, []).append({
            "name": r["name"], "guidance": g, "recognizability": float(r["recognizability"]),
            "diversity": float(r["diversity"]), "reach": originality_reach(r["generalization_curve"]),
            "curve": r["generalization_curve"]})
    return {gen: sorted(points, key=lambda p: p["guidance"]) for gen, points in groups.items()
            if len({p["guidance"] for p in points}) >= 2}


# ------------------------------------------------------------------------------------------- sentences


def _change(what: str, before: float, after: float, spec: str, unit: str = "") -> str:
    """'raises its X from a to b', 'lowers ...', or 'leaves its X at a' when both print the same."""
    a, b = f"{before:{spec}}{unit}", f"{after:{spec}}{unit}"
    if a == b:
        return f"leaves its {what} at {a}"
    return f"{'raises' if after > before else 'lowers'} its {what} from {a} to {b}"


def _distance_sentence(results: Results) -> str:
    ranking = closest_to_human(results)
    if results.human is None:
        return "These results hold no human reference, so no system's distance to humans is known."
    if not ranking:
        return "These results hold the human reference only: no model to compare with it."
    best, d = ranking[0]
    others = ", ".join(f"{n} {v:.2f}" for n, v in ranking[1:])
    n = len(results.comparison["zscored_over"])
    return (f"{best} is closest to humans: distance {d:.2f}" + (f" ({others})" if others else "")
            + f", in diversity and recognizability z-scored over the {n} systems of this run.")


def _curve_sentence(results: Results) -> str | None:
    gaps = curve_gaps_at_high_originality(results)
    if not gaps:
        return None
    above = {n: g["gap"] for n, g in gaps.items() if g["gap"] is not None and g["gap"] > 0}
    below = {n: g["gap"] for n, g in gaps.items() if g["gap"] is not None and g["gap"] <= 0}
    apart = [n for n, g in gaps.items() if g["gap"] is None]
    tail = f", averaged over the {HIGH_PART} of the originality range each model shares with humans"
    parts = []
    if above and not below:
        lo, hi = min(above.values()), max(above.values())
        by = f"by {lo:.1f}" if len(above) == 1 else f"by {lo:.1f} to {hi:.1f}"
        who = "every model" if not apart else "each overlapping model"
        parts.append(f"At high originality the human curve lies above {who}'s, {by} percentage points of recognizability{tail}")
    elif below and not above:
        listed = ", ".join(f"{n} {v:+.1f} pp" for n, v in below.items())
        parts.append(f"At high originality the human curve does not lie above the models': {listed}{tail}")
    elif above:
        ups = ", ".join(f"{n} ({v:+.1f} pp)" for n, v in above.items())
        downs = ", ".join(f"{n} ({v:+.1f} pp)" for n, v in below.items())
        parts.append(f"At high originality the human curve lies above that of {ups} but not above that of {downs}{tail}")
    if apart:
        parts.append(f"{', '.join(apart)} share{'s' if len(apart) == 1 else ''} no originality range with the human curve")
    return "; ".join(parts) + "."


def _guidance_sentences(results: Results) -> list[str]:
    sentences = []
    for gen, points in guidance_sweeps(results).items():
        first, last = points[0], points[-1]
        rec = _change("recognizability", first["recognizability"], last["recognizability"], ".1f", " %")
        div = _change("diversity", first["diversity"], last["diversity"], ".3f")
        reach = _change("originality reach (the most original bin)", first["reach"], last["reach"], ".2f")
        sentences.append(f"Raising {gen}'s guidance from {first['guidance']:g} to {last['guidance']:g} {rec}, {div} and {reach}.")
    return sentences


def ink_means(results: Results) -> list[tuple[str, dict]]:
    """[(source, mean measures)] of the ink reports whose mass on ink, enrichment and 50 % pixels are known."""
    keys = ("mass_on_ink", "ink_area", "ink_enrichment", "pixels_50")
    rows = [(s.name, s.report.get("mean") or {}) for s in results.ink]
    return [(n, m) for n, m in rows if all(m.get(k) is not None for k in keys)]


def source_reliability(report: dict) -> dict:
    """The reliability record of the maps an ink report measured ({} for maps written before it was kept)."""
    return (report.get("maps_meta") or {}).get("reliability") or {}


def noise_sources(results: Results) -> list[tuple[str, float]]:
    """[(source, reliability)] of the sources whose maps are at noise level (`importance.reliability`)."""
    return [(s.name, source_reliability(s.report)["spearman"]) for s in results.ink
            if source_reliability(s.report).get("noise_level")]


def ink_sentence(results: Results) -> str | None:
    """Where the importance maps put their mass, in one sentence; None without ink reports. Sources at noise
    level are named as such, not ranked: their measures describe noise."""
    noise = noise_sources(results)
    flagged = {name for name, _ in noise}
    note = "" if not noise else (" " + "; ".join(f"{name} is at noise level (reliability {r:.2f})" for name, r in noise)
                                 + ": not ranked.")
    rows = [(n, m) for n, m in ink_means(results) if n not in flagged]
    if not rows:
        return note.strip() and f"Importance:{note}"

    def on_ink(m: dict) -> str:
        return (f"{100 * m['mass_on_ink']:.0f} % of its mass on the {100 * m['ink_area']:.0f} % of the pixels that "
                f"are ink ({m['ink_enrichment']:.1f}x a uniform map)")

    if len(rows) == 1:
        name, m = rows[0]
        return f"Importance: {name} puts {on_ink(m)}, half of it on {100 * m['pixels_50']:.1f} % of the pixels.{note}"
    by_ink = sorted(rows, key=lambda r: r[1]["ink_enrichment"], reverse=True)
    (top, mt), (low, ml) = by_ink[0], by_ink[-1]
    local, mp = min(rows, key=lambda r: r[1]["pixels_50"])
    return (f"Importance: of {len(rows)} sources of maps, {top} is the most concentrated on the ink, with {on_ink(mt)}, "
            f"and {low} the least ({100 * ml['mass_on_ink']:.0f} % on {100 * ml['ink_area']:.0f} %, "
            f"{ml['ink_enrichment']:.1f}x); {local} is the most localized, half its mass on "
            f"{100 * mp['pixels_50']:.1f} % of the pixels.{note}")


def heading_sentences(results: Results) -> list[str]:
    """The findings, one sentence each; every number formatted from the results' metrics and ink reports."""
    sentences = [_distance_sentence(results)]
    curve = _curve_sentence(results)
    if curve:
        sentences.append(curve)
    ink = ink_sentence(results)
    return sentences + _guidance_sentences(results) + ([ink] if ink else [])
