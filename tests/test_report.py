"""The study's figures (data drawn, not pixels), the HTML report built from a results directory, and
`drawgap report`.

The results directories are real: tiny samples files evaluated by `drawgap.metrics.evaluate` with small
untrained critics, so the metrics files have the real format; tests then set chosen values in them.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest
import torch

from drawgap.critics import ProtoNetCritic, SimCLRCritic
from drawgap.data.formats import Samples, write_samples
from drawgap.errors import InputError
from drawgap.metrics import compare, evaluate, write_metrics
from drawgap.report.findings import heading_sentences, high_originality_gap
from drawgap.report.html import build_report, sample_grid_data, report_figures
from drawgap.report.plots import (
    mosaic,
    originality_kde,
    plot_guidance_sweep,
    plot_originality,
    plot_sample_grid,
    save_png_and_pdf,
)
from drawgap.report.results import load_results, system_label

SIZE, C, S = 16, 6, 10
FAST = dict(queries=20, bootstrap=50)
SYSTEMS = {  # file stem: (generator, guidance, share of flipped pixels)
    "human": ("human", None, 0.05),
    "ddpm": ("ddpm", None, 0.2),
    "cfgdm_g0": ("cfgdm", 0.0, 0.15),
    "cfgdm_g1": ("cfgdm", 1.0, 0.1),
    "cfgdm_g2": ("cfgdm", 2.0, 0.07),
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A results directory like the demo's: samples/*.npz and metrics/*.json of five systems."""
    torch.manual_seed(0)
    simclr, protonet = SimCLRCritic("omniglot", image_size=SIZE), ProtoNetCritic("omniglot", image_size=SIZE)
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    exemplars = (rng.random((C, SIZE, SIZE)) > 0.7).astype(np.uint8) * 255
    human_metrics = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 6-way episodes instead of 20
        for stem, (generator, g, flip) in SYSTEMS.items():
            mask = rng.random((C, S, SIZE, SIZE)) < flip
            rows = np.where(mask, 255 - exemplars[:, None], exemplars[:, None]).astype(np.uint8)
            meta = {"generator": generator, "params": {} if generator == "human" else {"guidance": g, "sampler": "dpm++"}}
            path = write_samples(Samples(rows, exemplars, np.array([f"alpha/c{c}" for c in range(C)]), meta),
                                 root / "samples" / f"{stem}.npz")
            m = evaluate(path, simclr=simclr, protonet=protonet, human=human_metrics,
                         name="human" if generator == "human" else None, **FAST)
            human_metrics = human_metrics or m
            write_metrics(m, root / "metrics" / f"{stem}.json")
    return root


@pytest.fixture
def results(results_dir, tmp_path):
    """A private copy the test may change."""
    return shutil.copytree(results_dir, tmp_path / "run")


def edit(root, stem, **values):
    """Set top-level values of a metrics file; `curve=(x, y)` sets the generalization curve and its bands."""
    path = root / "metrics" / f"{stem}.json"
    m = json.loads(path.read_text())
    curve = values.pop("curve", None)
    if curve is not None:
        x, y = map(list, curve)
        m["generalization_curve"] = {"originality": x, "recognizability": y}
        m["ci95"]["generalization_curve"] = {"originality": [[v, v] for v in x], "recognizability": [[v - 1, v + 1] for v in y]}
    for key, v in values.items():
        m[key] = v
        if key in m["ci95"]:
            m["ci95"][key] = [v * 0.9, v * 1.1]
    path.write_text(json.dumps(m))


def keep(root, *stems):
    for path in (root / "metrics").glob("*.json"):
        if path.stem not in stems:
            path.unlink()


def heading(report_html: str) -> list[str]:
    section = re.search(r'<section id="findings">(.*?)</section>', report_html, re.S).group(1)
    import html

    return [html.unescape(s) for s in re.findall(r'<p class="finding">(.*?)</p>', section, re.S)]


# ------------------------------------------------------------------------------------------ the loader


def test_labels_order_and_samples_found(results):
    r = load_results(results)
    assert [s["name"] for s in r.systems] == ["human", "CFGDM g=0", "CFGDM g=1", "CFGDM g=2", "DDPM"]
    assert r.human == "human" and r.guidance("CFGDM g=2") == 2.0 and r.generator("DDPM") == "ddpm"
    assert {n: p.name for n, p in r.samples_paths.items()}["CFGDM g=1"] == "cfgdm_g1.npz"
    assert system_label({"system": "my model", "samples_meta": {"generator": "cfgdm"}}) == "my model"
    with pytest.raises(InputError, match="expected metrics files"):
        load_results(results / "samples")


# ------------------------------------------------------------------------------------------- findings


def test_heading_golden_values(results):
    """Three systems: distances z-scored by hand, curve gaps by hand (linear curves)."""
    keep(results, "human", "ddpm", "cfgdm_g1")
    edit(results, "human", diversity=0.4, recognizability=90.0, curve=([0.2, 0.4, 0.6, 0.8, 1.0], [100, 98, 96, 94, 92]))
    edit(results, "ddpm", diversity=0.6, recognizability=70.0, curve=([0.2, 0.4, 0.6, 0.8], [100, 99, 98, 97]))
    edit(results, "cfgdm_g1", diversity=0.5, recognizability=80.0, curve=([0.2, 0.4, 0.6, 0.8], [100, 95, 90, 85]))
    # z(div) = (-1.2247, 1.2247, 0), z(rec) = (1.2247, -1.2247, 0): DDPM sqrt(2) * 2.4495 = 3.4641, CFGDM 1.7321.
    # Top third of the shared range [0.2, 0.8] is [0.6, 0.8]; human 102 - 10x, CFGDM 105 - 25x: gap -3 + 15x
    # averages +7.5 there; DDPM 101 - 5x: gap 1 - 5x averages -2.5.
    text = heading_sentences(load_results(results))
    assert text == [
        "CFGDM g=1 is closest to humans: distance 1.73 (DDPM 3.46), in diversity and recognizability z-scored "
        "over the 3 systems of this run.",
        "At high originality the human curve lies above that of CFGDM g=1 (+7.5 pp) but not above that of DDPM "
        "(-2.5 pp), averaged over the top third of the originality range each model shares with humans.",
    ]


def test_heading_guidance_sentence_golden(results):
    edit(results, "cfgdm_g0", recognizability=60.0, diversity=0.5, curve=([0.3, 0.6, 0.9], [99, 90, 80]))
    edit(results, "cfgdm_g1", recognizability=70.0, diversity=0.4, curve=([0.3, 0.6, 0.8], [99, 92, 85]))
    edit(results, "cfgdm_g2", recognizability=85.0, diversity=0.3, curve=([0.25, 0.5, 0.7], [100, 95, 90]))
    text = heading_sentences(load_results(results))
    assert text[-1] == ("Raising CFGDM's guidance from 0 to 2 raises its recognizability from 60.0 % to 85.0 %, "
                        "lowers its diversity from 0.500 to 0.300 and lowers its originality reach (the most "
                        "original bin) from 0.90 to 0.70.")


def test_every_number_in_the_heading_comes_from_the_files(results):
    r = load_results(results)
    metrics = {n: json.loads(p.read_text()) for n, p in r.metrics_paths.items()}
    table = compare(list(metrics.values()), names=list(metrics), human="human")
    human_curve = metrics["human"]["generalization_curve"]
    allowed = {str(len(metrics))}
    for row in table["systems"]:
        m = metrics[row["name"]]
        g = m["samples_meta"]["params"].get("guidance")
        allowed |= {f"{row['distance_to_human']:.2f}", f"{m['recognizability']:.1f}", f"{m['diversity']:.3f}",
                    f"{max(m['generalization_curve']['originality']):.2f}"}
        if g is not None:
            allowed.add(f"{g:g}")
        if row["name"] != "human":
            gap = high_originality_gap(m["generalization_curve"], human_curve)["gap"]
            if gap is not None:
                allowed.add(f"{abs(gap):.1f}")
    text = " ".join(heading_sentences(r))
    numbers = re.findall(r"\d+(?:\.\d+)?", text)
    assert numbers and set(numbers) <= allowed, set(numbers) - allowed


def test_changing_a_metrics_file_changes_the_report(results):
    before = build_report(results)
    edit(results, "ddpm", recognizability=12.3456, diversity=0.9876)
    after = build_report(results)
    assert before != after and heading(before) != heading(after)
    row = re.search(r'<tr class="system" data-system="DDPM">(.*?)</tr>', after, re.S).group(1)
    assert "12.3" in row and "0.988" in row and "[11.1, 13.6]" in row  # value and its interval


def test_a_system_on_fewer_drawings_than_the_human_reference_is_marked(results):
    edit(results, "ddpm", samples_per_class=3)
    with pytest.warns(UserWarning, match="DDPM was evaluated on 3 drawings per class against the human reference's"):
        text = build_report(results)
    row = re.search(r'<tr class="system" data-system="DDPM">(.*?)</tr>', text, re.S).group(1)
    assert '<strong class="note"' in row and f'<p class="note">! DDPM: evaluated on 3 drawings per class against the human reference&#x27;s {S}' in text


def test_high_originality_gap_without_overlap():
    assert high_originality_gap({"originality": [0.1, 0.2], "recognizability": [90, 80]},
                                {"originality": [0.5, 0.9], "recognizability": [99, 95]}) == {"gap": None, "range": None}


# ---------------------------------------------------------------------------------------------- report


def test_report_is_self_contained_and_escaped(results):
    edit(results, "ddpm", system="<b>evil & co</b>")
    text = build_report(results)
    assert "&lt;b&gt;evil &amp; co&lt;/b&gt;" in text and "<b>evil" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)  # plane, fig 3, 4, grid
    assert "<script" not in text and "<link" not in text and "url(" not in text
    rows = re.findall(r'<tr class="system[^"]*" data-system="([^"]*)"', text)
    assert rows == ["human", "CFGDM g=0", "CFGDM g=1", "CFGDM g=2", "&lt;b&gt;evil &amp; co&lt;/b&gt;"]
    assert "Package versions" in text and "evaluated by" in text
    assert f"Settings: {C} classes x {S} drawings per system; drawn with dpm++." in text  # what the numbers depend on


def test_cli_report_writes_html_and_figures(cli, results, tmp_path):
    out = tmp_path / "report.html"
    r = cli("report", results, "--out", out)
    assert r.code == 0, r
    assert out.read_text().startswith("<!DOCTYPE html>")
    for stem in ("plane", "originality", "guidance_cfgdm", "samples"):
        assert (results / "figures" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (results / "figures" / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    bad = cli("report", tmp_path / "nothing", "--out", tmp_path / "x.html")
    assert bad.code == 2 and "expected a results directory" in bad.err and not (tmp_path / "x.html").exists()


# --------------------------------------------------------------------------------------------- figures


def test_plane_draws_each_system_with_its_interval(results):
    r = load_results(results)
    figs, notes = report_figures(r)
    assert [f.stem for f in figs] == ["plane", "originality", "guidance_cfgdm", "samples"] and not notes
    ax = figs[0].figure.axes[0]
    for row, container in zip(r.systems, ax.containers):
        line, caps, (xbars, ybars) = container.lines[0], container.lines[1], container.lines[2]
        assert line.get_xdata()[0] == pytest.approx(row["diversity"]) and line.get_ydata()[0] == pytest.approx(row["recognizability"])
        lo, hi = row["ci95"]["recognizability"]
        assert ybars.get_segments()[0][:, 1] == pytest.approx([lo, hi])


def test_the_paper_labels_do_not_overlap_on_the_rendered_plane():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from drawgap.report.figures import plot_comparison
    from drawgap.report.paper_points import paper_points

    # the Omniglot points (humans and CFGDM 0.025 apart) on the axes of the baselines' plane, a system beside them
    systems = [{"name": name, "is_human": False, "diversity": x, "recognizability": y, "ci95": {}}
               for name, x, y in (("ours", 0.42, 97.2), ("a GAN", 0.04, 60.0), ("an FSDM", 0.90, 9.0))]
    fig = plot_comparison(systems, paper=paper_points("omniglot"))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_text().startswith("paper ")]
    assert len(texts) == len(paper_points("omniglot"))
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlapping = [(texts[i].get_text(), texts[j].get_text()) for i in range(len(boxes)) for j in range(i)
                   if boxes[i].overlaps(boxes[j])]
    assert overlapping == []


def test_originality_figure_draws_densities_and_curves(results):
    r = load_results(results)
    fig = plot_originality(r.systems, {n: (np.array([0.3, 0.5, 0.5, 0.7]), None, 4) for n in ("human", "DDPM")})
    density_ax, curve_ax = fig.axes
    lines = {l.get_label(): l for l in density_ax.lines}
    assert set(lines) == {"human", "DDPM"} and lines["human"].get_color() == "black"
    x, y = lines["DDPM"].get_xydata().T
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.02) and x[np.argmax(y)] == pytest.approx(0.5, abs=0.02)
    curves = {l.get_label(): l for l in curve_ax.lines}
    for row in r.systems:
        assert list(curves[row["name"]].get_xdata()) == pytest.approx(row["generalization_curve"]["originality"])
        assert list(curves[row["name"]].get_ydata()) == pytest.approx(row["generalization_curve"]["recognizability"])


def test_kde_from_histogram_matches_kde_from_drawings():
    from drawgap.metrics.originality import density

    values = np.random.default_rng(0).normal(0.6, 0.12, 1200).clip(0)
    x, from_values = originality_kde(values)
    hist = density(values)
    edges = np.asarray(hist["edges"])
    _, from_hist = originality_kde((edges[:-1] + edges[1:]) / 2, np.asarray(hist["density"]) * np.diff(edges), 1200, grid=x)
    assert np.trapezoid(from_values, x) == pytest.approx(1.0, abs=0.01)
    assert x[np.argmax(from_values)] == pytest.approx(0.6, abs=0.05)
    assert np.abs(from_hist - from_values).max() < 0.1 * from_values.max()


def test_guidance_sweep_one_curve_per_value_and_humans():
    curves = {2.0: {"originality": [0.2, 0.5], "recognizability": [99, 95]},
              0.0: {"originality": [0.4, 1.1], "recognizability": [98, 70]}}
    fig = plot_guidance_sweep(curves, {"originality": [0.3, 0.9], "recognizability": [99, 94]})
    lines = fig.axes[0].lines
    assert [l.get_label() for l in lines] == ["CFGDM g=0", "CFGDM g=2", "human"]
    assert list(lines[0].get_ydata()) == [98, 70] and list(lines[1].get_xdata()) == [0.2, 0.5]
    assert lines[0].get_color() != lines[1].get_color() and lines[2].get_color() == "black"
    for line in lines[:2]:  # readable on white: no colour lighter than plasma's orange (luminance < 0.65)
        r, g, b, _ = line.get_color()
        assert 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.65
    with pytest.raises(InputError):
        plot_guidance_sweep({})


def test_mosaic_and_sample_grid():
    d = np.array([[[1.0]], [[0.0]], [[1.0]]])  # three 1x1 drawings, two columns
    assert mosaic(d, columns=2).tolist() == [[1.0, 0.5, 0.0], [0.5, 0.5, 0.5], [1.0, 0.5, 0.5]]
    ex = np.random.default_rng(0).random((2, 4, 4), dtype=np.float32)
    src = {"human": np.random.default_rng(1).random((2, 3, 4, 4), dtype=np.float32),
           "DDPM": np.random.default_rng(2).random((2, 3, 4, 4), dtype=np.float32)}
    fig = plot_sample_grid(["a/x", "a/y"], ex, src)
    axes = np.asarray(fig.axes).reshape(2, 3)
    assert np.array_equal(axes[1, 0].images[0].get_array(), ex[1])
    assert np.array_equal(axes[1, 2].images[0].get_array(), mosaic(src["DDPM"][1], 3))
    assert [a.get_title() for a in axes[0]] == ["exemplar", "human", "DDPM"]
    with pytest.raises(InputError):
        plot_sample_grid(["a"], ex, src)


def test_sample_grid_data_from_the_run(results):
    classes, exemplars, sources = sample_grid_data(load_results(results))
    assert classes == ["alpha/c0", "alpha/c1", "alpha/c3", "alpha/c5"]  # spread over the 6 classes
    assert list(sources) == ["human", "CFGDM g=0", "CFGDM g=1", "CFGDM g=2", "DDPM"]
    assert sources["DDPM"].shape == (4, 6, SIZE, SIZE) and exemplars.shape == (4, SIZE, SIZE)
    # humans' rows never repeat the exemplar itself
    assert not any(np.array_equal(d, exemplars[0]) for d in sources["human"][0])


def test_save_png_and_pdf(tmp_path):
    fig = plot_guidance_sweep({1.0: {"originality": [0.1, 0.2], "recognizability": [90, 80]}})
    png, pdf = save_png_and_pdf(fig, tmp_path / "figs" / "sweep")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["sweep.pdf", "sweep.png"]


def test_heading_without_a_human_reference(results):
    keep(results, "ddpm", "cfgdm_g1")
    r = load_results(results)
    assert r.human is None
    assert heading_sentences(r) == ["These results hold no human reference, so no system's distance to humans is known."]


def test_importance_maps_in_the_run_are_drawn(results):
    """Maps files under the results directory add the importance figure (exemplar, human row, model rows)."""
    from drawgap.importance.maps_file import ImportanceMaps, make_meta, write_maps

    rng = np.random.default_rng(0)
    cats = np.array(["alpha/c0", "alpha/c1"])
    images = rng.random((2, 8, 8), dtype=np.float32)
    for method in ("human-box", "diffusion-guided-score"):
        write_maps(ImportanceMaps(rng.random((2, 8, 8), dtype=np.float32), cats, cats, make_meta(method, {}, 0), images),
                   results / "importance" / f"{method}.npz")
    figs, notes = report_figures(load_results(results))
    fig = next(f for f in figs if f.stem == "importance").figure
    axes = np.asarray(fig.axes).reshape(3, 2)  # exemplar, human, model rows x 2 categories
    assert [a.get_ylabel() for a in axes[:, 0]] == ["exemplar", "human", "diffusion-guided-score"]
    assert np.array_equal(axes[0, 1].images[0].get_array(), images[1])


def test_guidance_sentence_says_when_nothing_changes(results):
    edit(results, "cfgdm_g0", recognizability=70.01, diversity=0.5, curve=([0.3, 0.9], [99, 80]))
    edit(results, "cfgdm_g2", recognizability=70.04, diversity=0.3, curve=([0.3, 0.9], [99, 90]))
    assert heading_sentences(load_results(results))[-1] == (
        "Raising CFGDM's guidance from 0 to 2 leaves its recognizability at 70.0 %, lowers its diversity from 0.500 "
        "to 0.300 and leaves its originality reach (the most original bin) at 0.90.")


# ------------------------------------------------------------------------------------------ importance

INK_SOURCES = {  # file stem: (method, options, model meta)
    "cfgdm.guided": ("diffusion-guided", {"guidance": 1.0, "n_trajectories": 4}, {"generator": {"name": "cfgdm"}}),
    "protonet": ("critic-saliency", {}, {"critic": {"name": "strokes-protonet", "kind": "protonet"}}),
    "simclr": ("critic-saliency", {}, {"critic": {"name": "strokes-simclr", "kind": "simclr"}}),
}


def _write_ink_reports(root):
    """Maps files and their ink reports (what the demo's importance stage writes) under root/importance."""
    from drawgap.importance.compare import ink_report
    from drawgap.importance.maps_file import ImportanceMaps, make_meta, write_maps
    from drawgap.io import write_json_atomic

    rng = np.random.default_rng(0)
    cats = np.array(["alpha/c0", "alpha/c1"])
    for stem, (method, options, extra) in INK_SOURCES.items():
        m = ImportanceMaps(rng.random((2, 8, 8), dtype=np.float32), np.array(["0", "1"]), cats,
                           make_meta(method, options, 0, **extra), images=(rng.random((2, 8, 8)) > 0.6).astype(np.float32))
        write_maps(m, root / "importance" / f"{stem}.npz")
        strokes = [rng.random((2, 8, 8)) > 0.5, rng.random((3, 8, 8)) > 0.5]
        write_json_atomic(root / "importance" / f"{stem}_ink.json", ink_report(m, 8, stroke_masks=strokes))


def edit_ink(root, stem, per_stroke=None, **means):
    path = root / "importance" / f"{stem}_ink.json"
    r = json.loads(path.read_text())
    r["mean"].update(means)
    if per_stroke is not None:
        r["per_map"]["mass_per_stroke"] = per_stroke
    path.write_text(json.dumps(r))


def ink_rows(report_html: str) -> dict[str, list[str]]:
    rows = re.findall(r'<tr class="source(?: noise)?" data-source="([^"]*)">(.*?)</tr>', report_html, re.S)
    return {name: re.findall(r"<td>(.*?)</td>", cells) for name, cells in rows}


def test_maps_source_labels():
    from drawgap.report.results import maps_source_label

    assert maps_source_label({"method": "diffusion-implicit", "options": {"guidance": 0.5},
                              "generator": {"name": "cfgdm"}}) == "CFGDM g=0.5 implicit classifier"
    assert maps_source_label({"method": "critic-integrated_gradients", "critic": {"name": None, "kind": "protonet"}}) \
        == "protonet integrated gradients"
    assert maps_source_label({"method": "human-box"}) == "human"
    assert maps_source_label({"method": "diffusion-guided"}) == "diffusion-guided"  # no model recorded


def test_importance_section_golden(results):
    keep(results, "human", "cfgdm_g1")
    _write_ink_reports(results)
    edit_ink(results, "cfgdm.guided", mass_on_ink=0.30, ink_area=0.15, ink_enrichment=2.0, pixels_50=0.20,
             pixels_90=0.7, entropy=3.21, regions=4.0)
    edit_ink(results, "protonet", mass_on_ink=0.60, ink_area=0.20, ink_enrichment=3.0, pixels_50=0.05,
             per_stroke=[[0.6, 0.2], [0.3, 0.3, 0.3]])
    edit_ink(results, "simclr", mass_on_ink=0.10, ink_area=0.20, ink_enrichment=0.5, pixels_50=0.40)
    r = load_results(results)
    assert [s.name for s in r.ink] == ["CFGDM g=1 guided score", "strokes-protonet saliency", "strokes-simclr saliency"]
    sentence = ("Importance: of 3 sources of maps, strokes-protonet saliency is the most concentrated on the ink, with "
                "60 % of its mass on the 20 % of the pixels that are ink (3.0x a uniform map), and strokes-simclr "
                "saliency the least (10 % on 20 %, 0.5x); strokes-protonet saliency is the most localized, half its "
                "mass on 5.0 % of the pixels.")
    assert heading_sentences(r)[-1] == sentence
    text = build_report(results)
    section = text[text.index('<section id="importance">'):]
    assert sentence in section.replace("&#x27;", "'") and 'id="fig-importance"' in section
    rows = ink_rows(text)
    # source, maps, reliability (none recorded in these maps), mass on ink %, ink area %, enrichment, entropy, 50 %,
    # 90 %, regions, heaviest stroke, equal strokes
    assert rows["CFGDM g=1 guided score"][:10] == ["CFGDM g=1 guided score", "2 × 4 trajectories", "-", "30.0", "15.0", "2.00",
                                                  "3.21", "20.0", "70.0", "4.0"]
    # heaviest stroke: 0.6 / 0.8 = 75 % and 0.3 / 0.9 = 33.3 %, mean 54.2 %; equal weights: (1/2 + 1/3) / 2 = 41.7 %
    assert rows["strokes-protonet saliency"][1] == "2" and rows["strokes-protonet saliency"][-2:] == ["54.2", "41.7"]
    # the importance figure sits in its section, not among the figures above
    assert text.index('id="fig-importance"') > text.index('<section id="importance">')


def test_a_source_at_noise_level_is_flagged_not_ranked(results):
    from drawgap.importance import reliability

    keep(results, "human", "cfgdm_g1")
    INK_SOURCES_WITH_RELIABILITY = {  # the guided map at noise level, protonet deterministic, simclr reliable enough
        "cfgdm.guided": reliability.summary("split-half over trajectories (even vs odd)", [0.02, 0.0]),
        "protonet": reliability.deterministic(2, "saliency has no randomness"),
        "simclr": reliability.summary("seed-to-seed (seeds s and s + 1)", [0.7, 0.5]),
    }
    for stem, (method, options, extra) in list(INK_SOURCES.items()):
        INK_SOURCES[stem] = (method, options, {**extra, "reliability": INK_SOURCES_WITH_RELIABILITY[stem]})
    try:
        _write_ink_reports(results)
    finally:
        for stem, (method, options, extra) in list(INK_SOURCES.items()):
            INK_SOURCES[stem] = (method, options, {k: v for k, v in extra.items() if k != "reliability"})
    edit_ink(results, "cfgdm.guided", mass_on_ink=0.05, ink_area=0.15, ink_enrichment=0.33, pixels_50=0.45)
    edit_ink(results, "protonet", mass_on_ink=0.60, ink_area=0.20, ink_enrichment=3.0, pixels_50=0.05)
    edit_ink(results, "simclr", mass_on_ink=0.10, ink_area=0.20, ink_enrichment=0.5, pixels_50=0.40)
    r = load_results(results)
    sentence = heading_sentences(r)[-1]
    assert sentence == ("Importance: of 2 sources of maps, strokes-protonet saliency is the most concentrated on the ink, with "
                        "60 % of its mass on the 20 % of the pixels that are ink (3.0x a uniform map), and strokes-simclr "
                        "saliency the least (10 % on 20 %, 0.5x); strokes-protonet saliency is the most localized, half its "
                        "mass on 5.0 % of the pixels. CFGDM g=1 guided score is at noise level (reliability 0.01): not ranked.")
    text = build_report(results)
    rows = ink_rows(text)
    assert rows["CFGDM g=1 guided score"][2].startswith("0.01 ") and "noise level" in rows["CFGDM g=1 guided score"][2]
    assert rows["strokes-protonet saliency"][2].startswith("1.00 ") and "deterministic" in rows["strokes-protonet saliency"][2]
    assert rows["strokes-simclr saliency"][2].startswith("0.60 ") and "noise level" not in rows["strokes-simclr saliency"][2]
    assert '<tr class="source noise" data-source="CFGDM g=1 guided score">' in text


def test_changing_an_ink_file_changes_the_report(results):
    keep(results, "human", "cfgdm_g1")  # fewer figures to draw: the metrics are not what this test is about
    _write_ink_reports(results)
    before = build_report(results)
    edit_ink(results, "simclr", mass_on_ink=0.987, ink_enrichment=9.87)
    after = build_report(results)
    row_before, row_after = ink_rows(before)["strokes-simclr saliency"], ink_rows(after)["strokes-simclr saliency"]
    assert row_before[3] != "98.7" and row_before[5] != "9.87"
    assert row_after[3] == "98.7" and row_after[5] == "9.87"  # mass on ink (%), ink enrichment
    assert "strokes-simclr saliency is the most concentrated on the ink" in heading(after)[-1]


def test_importance_figure_outlines_the_drawing_each_map_explains():
    from drawgap.report.importance_figure import drawings_per_category, importance_figure
    from drawgap.importance.maps_file import ImportanceMaps, make_meta

    exemplars = np.zeros((2, 8, 8), np.float32)
    exemplars[:, 2:6, 2:6] = 1  # both exemplars have ink
    critic_drawings = np.zeros((2, 8, 8), np.float32)  # the critic's maps: of class b (no ink), then of a (ink)
    critic_drawings[1, 1:4, 1:4] = 1
    critic = ImportanceMaps(np.ones((2, 8, 8), np.float32), np.array(["3", "7"]), np.array(["b", "a"]),
                            make_meta("critic-saliency", {}, 0), images=critic_drawings)
    outlines = drawings_per_category({"critic": critic, "no images": critic.subset(np.arange(2))}, ["a", "b"])
    assert list(outlines) == ["critic", "no images"] and np.array_equal(outlines["critic"], critic_drawings[::-1])
    fig = importance_figure(["a", "b"], exemplars, None, {"diffusion": np.ones((2, 8, 8)), "critic": np.ones((2, 8, 8))},
                            outlines={"critic": outlines["critic"]})
    axes = np.asarray(fig.axes).reshape(3, 2)
    contours = [[len(ax.collections) for ax in row] for row in axes[1:]]
    assert contours == [[1, 1], [1, 0]]  # the diffusion row outlines the exemplars, the critic row its drawings
    labels = [row[0].get_ylabel() for row in axes[1:]]  # and says so: its drawings are not the top row's
    assert "another drawing" not in labels[0] and "another drawing" in labels[1]
