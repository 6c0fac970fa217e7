"""The HTML report of a results directory: `drawgap report RESULTS_DIR --out report.html`.

One self-contained file (figures embedded as base64 PNG, styles inline, no script, nothing fetched): a
heading that states the findings in numbers, the figures (ICML Figs. 2-4, sample grids), a table of every
metric with its 95 % interval and each system's distance to humans, an importance section where the run
has importance maps (ICML Fig. 5-like figure, and a table of how each source's maps place their mass on
the ink and how localized they are), and the commands, configurations and package versions that produced
them. Every number is read from the run's metrics files and ink reports (`results.load_results`); all
text is escaped with `html.escape`.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from drawgap.errors import InputError
from drawgap.io import write_bytes_atomic
from drawgap.metrics.comparison import format_agreement
from drawgap.report.figures import plot_diversity_recognizability
from drawgap.report.findings import (
    HIGH_PART,
    curve_gaps_at_high_originality,
    guidance_sweeps,
    heading_sentences,
    ink_sentence,
    source_reliability,
)
from drawgap.report.plots import (
    figure_png,
    originality_sample,
    plot_guidance_sweep,
    plot_originality,
    plot_sample_grid,
    save_png_and_pdf,
)
from drawgap.report.results import Results, load_results, maps_source_label

GRID_CLASSES = 4  # test exemplars shown in the sample grid
GRID_DRAWINGS = 6  # drawings per source and exemplar


@dataclass
class ReportFigure:
    stem: str  # file name of its PNG / PDF
    title: str
    caption: str
    figure: Figure


# ------------------------------------------------------------------------------------------- figures


def _densities(results: Results) -> dict[str, tuple]:
    out = {}
    for r in results.systems:
        try:
            out[r["name"]] = originality_sample(results.metrics[r["name"]])
        except InputError:
            continue  # a metrics file without per-sample originality: no density line for it
    return out


def sample_grid_data(results: Results, n_classes: int = GRID_CLASSES, per_source: int = GRID_DRAWINGS):
    """(classes, exemplars [K, H, W], {source: [K, k, H, W]}) in [0, 1] from the run's samples files, humans
    first; classes spread evenly over those every source has. None when no samples file is found."""
    from drawgap.data.formats import read_samples

    loaded = {name: read_samples(results.samples_paths[name]) for name in
              [r["name"] for r in results.systems] if name in results.samples_paths}
    if not loaded:
        return None
    first = next(iter(loaded.values()))
    shared = [c for c in first.classes.tolist() if all(c in s.classes.tolist() for s in loaded.values())]
    if not shared:
        return None
    picked = [shared[i] for i in sorted(set(np.linspace(0, len(shared) - 1, min(n_classes, len(shared))).astype(int)))]
    exemplars = np.stack([first.as_float()[1][first.classes.tolist().index(c)] for c in picked])
    sources = {}
    for name, s in loaded.items():
        drawings, _ = s.as_float()
        rows = []
        for c, exemplar in zip(picked, exemplars):
            row = drawings[s.classes.tolist().index(c)]
            # humans' rows hold the exemplar itself among the drawings: show the others
            others = [d for d in row if not np.array_equal(d, exemplar)] or list(row)
            picked_row = others[:per_source]
            picked_row += [np.zeros_like(exemplar)] * (per_source - len(picked_row))
            rows.append(np.stack(picked_row))
        sources[name] = np.stack(rows)
    return picked, exemplars, sources


def _importance_figure(results: Results) -> ReportFigure | None:
    """The importance figure of the run's maps files: a row per source (named as in the ink table), the
    human maps first where there are some, each map with the ink of the drawing it is about outlined."""
    from drawgap.importance.maps_file import read_maps
    from drawgap.report.importance_figure import drawings_per_category, figure_data, importance_figure

    maps = [read_maps(p) for p in results.importance_paths]
    human = next((m for m in maps if m.method.startswith("human")), None)
    models = {}
    for path, m in zip(results.importance_paths, maps):
        if m is not human:
            name = maps_source_label(m.meta)
            name = name if name not in models else f"{name} ({path.stem})"
            r = m.meta.get("reliability") or {}
            if r.get("spearman") is not None:  # beside the source, as in the ink table
                name += " — NOISE LEVEL" if r.get("noise_level") else f" (reliability {r['spearman']:.2f})"
                if r.get("noise_level"):
                    name += f" {r['spearman']:.2f}"
            models[name] = m
    if not models:
        return None
    cats, drawings, human_maps, model_maps, label = figure_data(human, models)
    outlines = drawings_per_category(models, cats)
    fig = importance_figure(cats, drawings, human_maps, model_maps, drawing_label=label, outlines=outlines)
    human_part = "the human map, " if human is not None else ""
    caption = (f"Per category: the {label}, {human_part}then each source's map (averaged over the category's maps, "
               "brighter = more important), with the ink of the drawing it is about outlined in cyan: the exemplar for "
               "diffusion maps, the explained drawing for critic maps."
               + ("" if human is not None else " This run holds no human maps."))
    return ReportFigure("importance", "Importance maps (ICML Fig. 5)", caption, fig)


def report_figures(results: Results) -> tuple[list[ReportFigure], list[str]]:
    """The report's figures, and notes on the ones that could not be drawn from these results."""
    systems, notes = results.systems, []
    figs = [ReportFigure("plane", "Diversity vs recognizability (ICML Fig. 2)",
                         "Each system's mean over classes with its 95 % bootstrap interval (over classes); humans: black star.",
                         plot_diversity_recognizability(systems))]
    densities = _densities(results)
    if len(densities) < len(systems):
        notes.append("Originality densities are missing for: "
                     + ", ".join(r["name"] for r in systems if r["name"] not in densities) + ".")
    figs.append(ReportFigure("originality", "Originality and generalization (ICML Fig. 3)",
                             "(a) Density of per-drawing originality (Gaussian KDE). (b) Recognizability of the drawings "
                             "of each originality bin against the bin's mean originality, with 95 % bands.",
                             plot_originality(systems, densities)))
    human_curve = results.metrics[results.human]["generalization_curve"] if results.human else None
    for gen, points in guidance_sweeps(results).items():
        figs.append(ReportFigure(f"guidance_{gen.lower()}", f"{gen}: guidance sweep (ICML Fig. 4)",
                                 "One generalization curve per guidance value; humans dashed.",
                                 plot_guidance_sweep({p["guidance"]: p["curve"] for p in points}, human_curve, gen)))
    grid = sample_grid_data(results)
    if grid is None:
        notes.append("No samples file of these metrics was found under the results directory: no sample grid.")
    else:
        figs.append(ReportFigure("samples", "Drawings from the same exemplars",
                                 "Each row: a test exemplar, then drawings of humans and of each system made from it.",
                                 plot_sample_grid(*grid)))
    if results.importance_paths:
        try:
            fig = _importance_figure(results)
        except InputError as exc:
            notes.append(f"Importance maps not drawn: {exc}")
        else:
            if fig is not None:
                figs.append(fig)
    return figs, notes


# ---------------------------------------------------------------------------------------------- HTML

_e = html.escape

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
.finding { font-size: 1.1rem; background: #f3f6fb; border-left: 4px solid #2d6cdf; padding: .7rem 1rem; margin: .3rem 0; }
.sub { color: #555; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #444; font-size: .92rem; }
table { border-collapse: collapse; font-size: .9rem; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .55rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
tr.human td { font-weight: 600; background: #fafafa; }
.ci { color: #777; font-size: .82rem; white-space: nowrap; }
code, pre { font: 12.5px/1.35 ui-monospace, "SFMono-Regular", Menlo, monospace; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
.note { color: #8a4b00; }
"""

METRIC_COLUMNS = [  # (key, heading, format)
    ("diversity", "diversity", ".3f"),
    ("diversity_raw", "diversity (raw, NeurIPS)", ".3f"),
    ("recognizability", "recognizability (%)", ".1f"),
    ("originality", "originality", ".3f"),
    ("vendi", "Vendi score", ".2f"),
]


def _num(value, spec: str) -> str:
    return "–" if value is None else _e(format(value, spec))


def _cell(value, ci, spec: str) -> str:
    text = _num(value, spec)
    if value is not None and ci and ci[0] is not None:
        text += f' <span class="ci">[{_num(ci[0], spec)}, {_num(ci[1], spec)}]</span>'
    return f"<td>{text}</td>"


def metrics_table(results: Results) -> str:
    gaps = curve_gaps_at_high_originality(results)
    head = ["system", "classes × drawings", *[h for _, h, _ in METRIC_COLUMNS], "distance to human",
            "per-class distance (median)", "curve gap (pp)", "gap at high originality (pp)"]
    rows = []
    for r in results.systems:
        mismatch = r.get("reference_mismatch")
        flag = f' <strong class="note" title="evaluated on {_e(mismatch)}">!</strong>' if mismatch else ""
        cells = [f"<td>{_e(r['name'])}{' (reference)' if r['is_human'] else ''}</td>",
                 f"<td>{_e(str(r.get('n_classes')))} × {_e(str(r.get('samples_per_class')))}{flag}</td>"]
        cells += [_cell(r.get(k), (r.get("ci95") or {}).get(k), spec) for k, _, spec in METRIC_COLUMNS]
        cells.append(f"<td>{_num(r.get('distance_to_human'), '.2f')}</td>")
        cells.append(f"<td>{_num(r.get('per_class_distance_median'), '.2f')}</td>")
        cells.append(f"<td>{_num(None if r['is_human'] else r.get('curve_gap'), '+.1f')}</td>")
        cells.append(f"<td>{_num((gaps.get(r['name']) or {}).get('gap'), '+.1f')}</td>")
        cls = "system human" if r["is_human"] else "system"
        rows.append(f'<tr class="{cls}" data-system="{_e(r["name"])}">' + "".join(cells) + "</tr>")
        for pair, p in (r.get("by_critics") or {}).items():  # the same drawings scored by each critic pair
            cells = [f"<td>&nbsp;&nbsp;critics {_e(pair)}</td>", "<td></td>"]
            cells += [_cell(p.get(k), (p.get("ci95") or {}).get(k), spec) for k, _, spec in METRIC_COLUMNS]
            cells += ["<td>–</td>", "<td>–</td>", f"<td>{_num(None if r['is_human'] else p.get('curve_gap'), '+.1f')}</td>",
                      "<td>–</td>"]
            rows.append(f'<tr class="critics" data-of="{_e(r["name"])}" data-critics="{_e(pair)}">' + "".join(cells) + "</tr>")
    notes = "".join(f'<p class="note">! {_e(r["name"])}: evaluated on {_e(r["reference_mismatch"])}; its distance to '
                    "human and curve gap compare different sets.</p>" for r in results.systems if r.get("reference_mismatch"))
    if any(r.get("by_critics") for r in results.systems):
        notes += ('<p class="note">critics PAIR: the system\'s drawings scored by that critic pair (the system\'s row is '
                  "the first pair's); curve gap against the human reference evaluated with the same pair.</p>")
        notes += "".join(f'<p class="note agreement">Critic agreement of {_e(r["name"])}, per-class {_e(format_agreement(a))}.</p>'
                         for r in results.systems for a in r.get("agreement") or [])
    return ('<table id="metrics"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table>" + notes)


INK_COLUMNS = [  # (key in the ink report's "mean", heading, scale, format)
    ("mass_on_ink", "mass on ink (%)", 100, ".1f"),
    ("ink_area", "ink area (% of pixels)", 100, ".1f"),
    ("ink_enrichment", "ink enrichment (×)", 1, ".2f"),
    ("entropy", "entropy (nats)", 1, ".2f"),
    ("pixels_50", "pixels holding 50 % of the mass (%)", 100, ".1f"),
    ("pixels_90", "pixels holding 90 % of the mass (%)", 100, ".1f"),
    ("regions", "connected regions", 1, ".1f"),
]


def _scaled(value, scale: float):
    return None if value is None else value * scale


def stroke_shares(report: dict) -> tuple[float | None, float | None]:
    """(mean share of the mass on strokes that the heaviest stroke holds, the same if every stroke weighed
    the same: mean of 1 / strokes) over the maps of an ink report with `mass_per_stroke`; else (None, None)."""
    per_stroke = [s for s in (report.get("per_map") or {}).get("mass_per_stroke") or [] if s and sum(s) > 0]
    if not per_stroke:
        return None, None
    return float(np.mean([max(s) / sum(s) for s in per_stroke])), float(np.mean([1 / len(s) for s in per_stroke]))


def reliability_cell(report: dict) -> str:
    """A source's reliability as a table cell: the value and how it was measured; flagged at noise level."""
    r = source_reliability(report)
    if r.get("spearman") is None:
        return "-" if not r else f'<span title="{_e(r.get("method", ""))}">-</span>'
    how = str(r.get("method", "")).split(",")[0]
    text = f"{r['spearman']:.2f} <span class=\"ci\">{_e(how)}</span>"
    if r.get("noise_level"):
        text += (f' <strong class="note">noise level</strong> <span class="ci">(below {r.get("noise_threshold", 0):g}: '
                 "its measures describe noise, not ranked)</span>")
    return text


def ink_table(results: Results) -> str:
    """A row per source of importance maps: the means of its ink report."""
    with_strokes = any(stroke_shares(s.report)[0] is not None for s in results.ink)
    head = ["source", "maps", "reliability (Spearman)", *[h for _, h, _, _ in INK_COLUMNS]]
    if with_strokes:
        head += ["heaviest stroke (% of the mass on strokes)", "same if the strokes weighed the same (%)"]
    rows = []
    for source in results.ink:
        mean = source.report.get("mean") or {}
        n = len((source.report.get("per_map") or {}).get("image_ids") or [])
        trajectories = ((source.report.get("maps_meta") or {}).get("options") or {}).get("n_trajectories")
        maps = f"{n}" + ("" if trajectories is None else f" × {_e(str(trajectories))} trajectories")
        cells = [f"<td>{_e(source.name)}</td>", f"<td>{maps}</td>", f"<td>{reliability_cell(source.report)}</td>"]
        cells += [f"<td>{_num(_scaled(mean.get(k), scale), spec)}</td>" for k, _, scale, spec in INK_COLUMNS]
        if with_strokes:
            share, equal = stroke_shares(source.report)
            cells += [f"<td>{_num(_scaled(share, 100), '.1f')}</td>", f"<td>{_num(_scaled(equal, 100), '.1f')}</td>"]
        noise = ' noise' if source_reliability(source.report).get("noise_level") else ""
        rows.append(f'<tr class="source{noise}" data-source="{_e(source.name)}">' + "".join(cells) + "</tr>")
    return ('<table id="importance-ink"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table>")


def _ink_settings(results: Results) -> str:
    """The measures' settings as recorded in the ink reports (one phrase per distinct setting)."""
    settings = sorted({(r.report.get("resolution"), r.report.get("dilate"), r.report.get("threshold")) for r in results.ink},
                      key=str)
    return "; ".join(f"at {res} px, ink dilated by {d} px, regions above {t:g} of the map's maximum"
                     if t is not None else f"at {res} px, ink dilated by {d} px" for res, d, t in settings)


def importance_html(results: Results, figure: ReportFigure | None) -> str:
    """The importance section: its finding, the figure and the ink table; empty when the run has neither."""
    if figure is None and not results.ink:
        return ""
    parts = ['<section id="importance"><h2>Importance</h2>']
    sentence = ink_sentence(results)
    if sentence:
        parts.append(f'<p class="finding">{_e(sentence)}</p>')
    if figure is not None:
        parts.append(_figure_html(figure))
    if results.ink:
        parts.append(
            '<p class="sub">Where each source of importance maps puts its mass: the mean over its maps (one per exemplar '
            "for diffusion maps, one per explained drawing for critic maps) of the share of the map's mass on the ink "
            "of the drawing it is about (the exemplar for diffusion maps: the guided-score and implicit-classifier maps "
            "live in the space of the drawings made from it, the loss gradient in the exemplar's), the ink's share of "
            "the pixels (what a uniform map gets) and their ratio, the enrichment (1: no preference for the ink); then "
            "how localized the maps are: entropy (nats) of the map as a distribution over pixels, the smallest share "
            "of pixels that holds 50 % and 90 % of the mass, and the number of 8-connected regions"
            + (f" ({_e(_ink_settings(results))})" if _ink_settings(results) else "")
            + ". Where the drawings' strokes are known (the built-in dataset): the heaviest stroke's share of the mass "
            "on strokes, next to what it would be if every stroke of the drawing weighed the same. Reliability: how "
            "consistently a source ranks the pixels of a map (Spearman over pixels, mean over maps): split-half over "
            "sampling trajectories for diffusion maps (Spearman-Brown corrected), split-half over participants for "
            "human maps, seed to seed for random critic methods, 1 for deterministic ones; a source below the noise "
            "threshold is flagged and left out of the ranking above. A diffusion map is "
            "averaged over sampling trajectories (their number is given with the maps): averaged over few, its mass "
            "on the ink is already stable, but it is noisier, with more regions, than the paper's 25-trajectory maps."
            "</p>")
        parts.append(ink_table(results))
    parts.append("</section>")
    return "\n".join(parts)


def _figure_html(f: ReportFigure) -> str:
    data = base64.b64encode(figure_png(f.figure)).decode("ascii")
    return (f'<figure id="fig-{_e(f.stem)}"><img alt="{_e(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}</figcaption></figure>")


def _provenance_html(results: Results) -> str:
    parts = []
    demo_commands = (results.demo or {}).get("commands") or []
    if demo_commands:
        parts.append("<h3>Commands that re-run each stage</h3><pre>"
                     + _e("\n".join(c if isinstance(c, str) else " ".join(map(str, c)) for c in demo_commands)) + "</pre>")
    lines = []
    for r in results.systems:
        m = results.metrics[r["name"]]
        sampled = ((m.get("samples_meta") or {}).get("provenance") or {}).get("command")
        evaluated = (m.get("provenance") or {}).get("command")
        if sampled:
            lines.append(f"# {r['name']}: sampled by\n{sampled}")
        if evaluated:
            lines.append(f"# {r['name']}: evaluated by\n{evaluated}")
    if lines:
        parts.append("<h3>Commands recorded in the files</h3><pre>" + _e("\n".join(lines)) + "</pre>")

    parts.append("<h3>Configurations</h3>")
    for r in results.systems:
        m = results.metrics[r["name"]]
        meta = m.get("samples_meta") or {}
        config = {
            "metrics file": str(results.metrics_paths[r["name"]].relative_to(results.root)),
            "evaluation": (m.get("provenance") or {}).get("config"),
            "seed": (m.get("provenance") or {}).get("seed"),
            "critics": {k: {f: (v or {}).get(f) for f in ("name", "weights_hash")} for k, v in (m.get("critics") or {}).items()},
            "protocol": {k: v for k, v in (m.get("protocol") or {}).items() if k not in ("bin_edges",)},
            "samples": {"generator": meta.get("generator"), "params": meta.get("params"), "dataset": meta.get("dataset")},
            "generator run": (meta.get("run") or {}).get("config"),
            "training": (meta.get("run") or {}).get("training"),
        }
        parts.append(f"<details><summary>{_e(r['name'])}</summary><pre>"
                     + _e(json.dumps(config, indent=2, default=str)) + "</pre></details>")

    versions: dict[str, list[str]] = {}
    for r in results.systems:
        v = (results.metrics[r["name"]].get("provenance") or {}).get("versions") or {}
        versions.setdefault(json.dumps(v, sort_keys=True), []).append(r["name"])
    parts.append("<h3>Package versions</h3>")
    for key, names in versions.items():
        v = json.loads(key)
        who = "all systems" if len(versions) == 1 else ", ".join(names)
        parts.append(f"<p>{_e(who)}:</p><table class=\"versions\"><tbody>"
                     + "".join(f"<tr><td>{_e(k)}</td><td>{_e(str(x))}</td></tr>" for k, x in v.items())
                     + "</tbody></table>")
    return "\n".join(parts)


def _subtitle(results: Results) -> str:
    first = results.metrics[results.systems[0]["name"]]
    critics = ", ".join(f"{k} {(c or {}).get('name') or 'unnamed (from a directory)'}"
                        for k, c in (first.get("critics") or {}).items())
    dataset = ((first.get("samples_meta") or {}).get("dataset") or {})
    data = " ".join(str(dataset.get(k)) for k in ("name", "split") if dataset.get(k))
    return (f"{len(results.systems)} systems" + (f" on {data}" if data else "")
            + f", evaluated with the critics {critics}. {run_settings(results)} Results directory: {results.root}")


def run_settings(results: Results) -> str:
    """The settings the numbers depend on, in one sentence: classes and drawings per class of each system,
    the sampler and its steps, and whether the human reference holds the exemplars."""
    sizes, samplers, human = {}, {}, ""
    for r in results.systems:
        m = results.metrics[r["name"]]
        meta = m.get("samples_meta") or {}
        sizes.setdefault(f"{m.get('n_classes')} classes x {m.get('samples_per_class')} drawings", []).append(r["name"])
        params = meta.get("params") or {}
        if params.get("sampler"):
            how = params["sampler"] + ("" if params.get("steps") is None else f", {params['steps']} steps")
            samplers.setdefault(how + ("" if params.get("seed") is None else f", seed {params['seed']}"), []).append(r["name"])
        if r["is_human"] and "exemplar_included" in meta:
            rows = meta.get("exemplar_rows")
            human = (" The human reference holds each class's exemplar among its drawings (the papers' protocol)."
                     if meta["exemplar_included"] else " The human reference leaves each class's exemplar out." if not rows
                     else f" The human reference holds the exemplar among the drawings of {rows} of its {m.get('n_classes')} classes.")
    def phrase(groups: dict) -> str:
        if len(groups) == 1:
            return next(iter(groups))
        return "; ".join(f"{k} ({', '.join(v)})" for k, v in groups.items())
    text = f"Settings: {phrase(sizes)} per system" if sizes else ""
    if samplers:
        text += f"; drawn with {phrase(samplers)}"
    return (text + "." if text else "") + human


def build_report(results_dir: str | os.PathLike, figures_dir: str | os.PathLike | None = None) -> str:
    """The report of a results directory as one HTML string; with `figures_dir`, each figure is also
    written there as PNG and PDF."""
    results = load_results(results_dir)
    figs, notes = report_figures(results)
    if figures_dir is not None:
        for f in figs:
            save_png_and_pdf(f.figure, Path(figures_dir) / f.stem)
    findings = "".join(f'<p class="finding">{_e(s)}</p>' for s in heading_sentences(results))
    body = [
        "<h1>How human-like are these drawings?</h1>",
        f'<section id="findings">{findings}</section>',
        f'<p class="sub">{_e(_subtitle(results))}</p>',
        "<h2>Figures</h2>",
        *(_figure_html(f) for f in figs if f.stem != "importance"),
        *(f'<p class="note">{_e(n)}</p>' for n in notes),
        "<h2>Metrics</h2>",
        '<p class="sub">Mean over classes with its 95 % bootstrap interval (percentile, resampling classes). Distance to '
        "human: Euclidean distance to the human point after z-scoring diversity and recognizability over every system "
        "in this table (NeurIPS 2022 §4.3). Curve gap: mean human minus system recognizability over the originality "
        f"range both curves share; at high originality: over its {HIGH_PART}.</p>",
        metrics_table(results),
        importance_html(results, next((f for f in figs if f.stem == "importance"), None)),
        '<h2 id="provenance">How these numbers were made</h2>',
        _provenance_html(results),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>drawgap report: {_e(results.root.name)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(results_dir: str | os.PathLike, out: str | os.PathLike,
                 figures_dir: str | os.PathLike | None = None) -> Path:
    """Build the report and write it to `out` atomically; return the path."""
    text = build_report(results_dir, figures_dir)
    write_bytes_atomic(out, text.encode("utf-8"))
    return Path(out)
