"""The `drawgap` command line: thin Typer verbs over the Python API (DESIGN.md). No logic lives here.

Errors: an `InputError` (bad file, field or option) prints one line `drawgap: error: ...` and exits 2;
Ctrl-C exits 130 after the running step has left its last checkpoint in place.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from drawgap.errors import InputError

app = typer.Typer(
    name="drawgap",
    help="How human-like are machine drawings? Data, critics, generators, metrics and reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build dataset files (.npz): built-in strokes, Omniglot, Quick, Draw!, QuickDraw-FS.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _writable_file(value: Optional[Path]) -> Optional[Path]:
    """--out callback: refuse an output that cannot be written before the verb's work starts."""
    from drawgap.io import check_writable

    return None if value is None else check_writable(value)


def _writable_folder(value: Optional[Path]) -> Optional[Path]:
    from drawgap.io import check_writable

    return None if value is None else check_writable(value, folder=True)


def _echo_written(kind: str, path: Path, summary: str) -> None:
    typer.echo(f"wrote {kind} {path}  ({summary})")


def _dataset_summary(ds) -> str:
    return f"{ds.n_classes} classes, {len(ds.images)} drawings, {ds.image_size}x{ds.image_size}"


def _samples_summary(s) -> str:
    return f"{s.n_classes} classes x {s.per_class} drawings, {s.image_size}x{s.image_size}"


def _write_splits(splits: dict, out: Path, as_samples: bool, exclude_exemplar: bool = False) -> None:
    """Write each split as a dataset file, or as a samples file (the human reference) with --as-samples."""
    from drawgap.data.formats import write_dataset, write_samples

    if exclude_exemplar and not as_samples:
        raise InputError("--exclude-exemplar applies to the human reference; add --as-samples", field="--exclude-exemplar")
    for split, ds in splits.items():
        if as_samples:
            s = ds.to_samples(exclude_exemplar=exclude_exemplar)
            path = write_samples(s, out / f"{split}_samples.npz")
            _echo_written("samples", path, _samples_summary(s) + (", exemplar excluded" if exclude_exemplar
                                                                   else ", exemplar included (the papers' protocol)"))
        else:
            path = write_dataset(ds, out / f"{split}.npz")
            _echo_written("dataset", path, _dataset_summary(ds))


# -------------------------------------------------------------------------------------------------- data

_EXCLUDE_HELP = ("With --as-samples: leave each class's exemplar out of its human drawings (default: included, the "
                 "papers' protocol, SPEC.md 1.1/4.2; the exemplar then scores originality 0 and is recognized by construction).")


@data_app.command("validate")
def data_validate(
    files: list[Path] = typer.Argument(..., help="Dataset or samples files to check."),
) -> None:
    """Check dataset or samples files against the formats of DESIGN.md; print each one's content hash.
    Every file is checked: each bad one gets an error line, and the exit code is 2 if any was bad."""
    from drawgap.data.formats import Samples, check_not_empty, read_drawings

    bad = 0
    for f in files:
        try:
            drawings = read_drawings(f)
            check_not_empty(drawings, f)
            kind, summary = ("samples", _samples_summary(drawings)) if isinstance(drawings, Samples) else ("dataset", _dataset_summary(drawings))
            typer.echo(f"ok {kind} {f}  ({summary}; content sha256 {drawings.content_sha256()})")
        except InputError as exc:
            bad += 1
            typer.echo(f"drawgap: error: {exc}", err=True)
    if bad:
        raise typer.Exit(2)


# ------------------------------------------------------------------------------------------ data strokes


@data_app.command("strokes")
def data_strokes(
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="Folder for train.npz and test.npz (or *_samples.npz)."),
    classes: int = typer.Option(300, "--classes", help="Number of characters (classes), train and test together."),
    per_class: int = typer.Option(20, "--per-class", help="Drawings per class."),
    size: int = typer.Option(48, "--size", help="Image size in pixels (square)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Fraction of each alphabet's characters held out as test classes."),
    alphabets: Optional[int] = typer.Option(None, "--alphabets", help="Number of alphabets (default: one per 20 characters)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same images."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write samples files (the human reference) instead."),
    exclude_exemplar: bool = typer.Option(False, "--exclude-exemplar", help=_EXCLUDE_HELP),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a PNG grid: 10 train classes x 10 drawings, exemplar first."),
) -> None:
    """Build the built-in procedural dataset: alphabets of 1-4 stroke characters drawn with motor noise."""
    from drawgap.data.strokes import StrokesConfig, build_strokes, write_preview

    config = StrokesConfig(
        n_classes=classes, per_class=per_class, image_size=size, n_alphabets=alphabets,
        test_fraction=test_fraction, seed=seed,
    )
    splits = build_strokes(config, progress=True)
    _write_splits(splits, out, as_samples, exclude_exemplar)
    if preview is not None:
        path = write_preview(splits["train"], preview)
        _echo_written("preview", path, "10 train classes x 10 drawings, exemplar first")


# ---------------------------------------------------------------------------- data omniglot / exemplars


@contextlib.contextmanager
def _warnings_to_stderr():
    """Show checksum warnings at once, as one `drawgap: warning: ...` line each."""
    import warnings

    from drawgap.data.download import ChecksumWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", ChecksumWarning)
        warnings.showwarning = lambda message, *_a, **_k: typer.echo(f"drawgap: warning: {message}", err=True)
        yield


@data_app.command("omniglot")
def data_omniglot(
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="Folder for the split files (train.npz/test.npz, background.npz, evaluation.npz)."),
    source: Optional[list[Path]] = typer.Option(
        None, "--source", help="Local copy: a folder holding images_background.zip / images_evaluation.zip (or the extracted "
        "folders), or the zip files (repeat the option). Default: download the official archives into the cache."
    ),
    split: str = typer.Option("weak", "--split", help="weak (train/test: character01-03 of every alphabet are test), background, evaluation, or official (both)."),
    size: int = typer.Option(50, "--size", help="Image size: 48 for the diffusion models, 50 for the VAEs, GANs and critics."),
    threshold: float = typer.Option(0.5, "--threshold", help="Binarization threshold after resizing (ink is above it)."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features choose the exemplars (Eq. 1); default: blurred pixels."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write samples files (the human reference) instead."),
    exclude_exemplar: bool = typer.Option(False, "--exclude-exemplar", help=_EXCLUDE_HELP),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check local zips against the official size and MD5 (a mismatch only warns)."),
    workers: int = typer.Option(2, "--workers", help="Threads decoding the PNGs."),
) -> None:
    """Build Omniglot dataset files from the official archives (SPEC.md 1.1)."""
    from drawgap.data.exemplars import load_feature_critic
    from drawgap.data.omniglot import build_omniglot

    model = None if critic is None else load_feature_critic(critic)
    with _warnings_to_stderr():
        splits = build_omniglot(
            source or None, split=split, size=size, threshold=threshold, verify=verify,
            critic=model, critic_name=critic, workers=workers, progress=sys.stderr.isatty(),
        )
    _write_splits(splits, out, as_samples, exclude_exemplar)


@data_app.command("exemplars")
def data_exemplars(
    dataset: Path = typer.Argument(..., help="Dataset file whose exemplars to recompute."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features choose the exemplars (Eq. 1); default: blurred pixels."),
    out: Optional[Path] = typer.Option(None, "--out", callback=_writable_file, help="Write here instead of replacing DATASET (which is replaced atomically)."),
) -> None:
    """Recompute each class's exemplar with Eq. 1 and record the method and critic in the file's meta."""
    from drawgap.data.exemplars import recompute_exemplars
    from drawgap.io import check_writable

    if out is None:
        check_writable(dataset, field="dataset")  # replaced in place
    path, ds = recompute_exemplars(dataset, critic, out)
    _echo_written("dataset", path, f"{_dataset_summary(ds)}, exemplars by {ds.meta['exemplars']['method']}")


# ----------------------------------------------------------------------- data quickdraw / quickdraw-fs


@contextlib.contextmanager
def _quickdraw_warnings():
    """Show skipped-line and checksum warnings as one `drawgap: warning: ...` line each."""
    import warnings

    from drawgap.data.download import ChecksumWarning
    from drawgap.data.quickdraw import MalformedLineWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", MalformedLineWarning)
        warnings.simplefilter("always", ChecksumWarning)
        warnings.showwarning = lambda message, *_a, **_k: typer.echo(f"drawgap: warning: {message}", err=True)
        yield


def _on_error_option(value: str) -> str:
    if value not in ("skip", "stop"):
        raise InputError(f"expected skip or stop, got {value!r}", field="--on-error")
    return value


@data_app.command("quickdraw")
def data_quickdraw(
    categories: list[str] = typer.Argument(..., help="Quick, Draw! categories, e.g. cat 'alarm clock'."),
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="Folder for quickdraw.npz (one class per category)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Local folder of <category>.ndjson (or .npy with --bitmaps) files; default: download into the cache."),
    size: int = typer.Option(48, "--size", help="Image size of the rendered drawings."),
    max_per_category: Optional[int] = typer.Option(None, "--max-per-category", help="Keep the first K drawings of each category (reading stops there)."),
    recognized_only: bool = typer.Option(False, "--recognized-only", help="Keep only drawings the game recognized."),
    on_error: str = typer.Option("skip", "--on-error", help="Malformed ndjson line: skip (count and warn) or stop (error naming file and line)."),
    bitmaps: bool = typer.Option(False, "--bitmaps", help="Use the official 28x28 numpy_bitmap renderings instead of rendering the strokes."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features choose the exemplars (Eq. 1); default: blurred pixels."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write a samples file (the human reference) instead; needs the same count per category."),
    exclude_exemplar: bool = typer.Option(False, "--exclude-exemplar", help=_EXCLUDE_HELP),
    workers: int = typer.Option(2, "--workers", help="Processes rendering categories (the files do not depend on it)."),
) -> None:
    """Build a dataset file from Quick, Draw! categories (one class per category)."""
    from drawgap.data.exemplars import load_feature_critic
    from drawgap.data.quickdraw import load_quickdraw

    model = None if critic is None else load_feature_critic(critic)
    with _quickdraw_warnings():
        ds = load_quickdraw(
            categories, source=source, size=size, max_per_category=max_per_category, recognized_only=recognized_only,
            on_error=_on_error_option(on_error), bitmaps=bitmaps, critic=model, critic_name=critic, progress=sys.stderr.isatty(),
            workers=workers,
        )
    _write_splits({"quickdraw": ds}, out, as_samples, exclude_exemplar)


def _category_list(categories: str, source: Optional[Path]) -> list[str]:
    """--categories: comma-separated names, or `all` (every category file in --source)."""
    if categories.strip() == "all":
        if source is None:
            raise InputError("'all' means every category file in --source; add --source FOLDER", field="--categories")
        from drawgap.data.quickdraw import categories_in

        return categories_in(source)
    return [c.strip() for c in categories.split(",") if c.strip()]


@data_app.command("quickdraw-fs")
def data_quickdraw_fs(
    categories: str = typer.Option(..., "--categories", help="Comma-separated Quick, Draw! categories to split into sub-categories, or 'all': every category file in --source."),
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="Folder for train.npz and test.npz (or *_samples.npz with --as-samples)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Local folder of <category>.ndjson files; default: download into the cache."),
    min_cluster: int = typer.Option(500, "--min-cluster", help="N: keep clusters of at least N drawings, and take N of each."),
    clusters_per_category: Optional[int] = typer.Option(None, "--clusters-per-category", help="k of k-means; default floor(drawings / N)."),
    selection: str = typer.Option("closest", "--selection", help="Which N drawings of a cluster: closest (to its centre) or random."),
    test_fraction: float = typer.Option(115 / 665, "--test-fraction", help="Fraction of sub-categories in the test split (default 115/665, as in the paper)."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means, random selection and the class shuffle."),
    size: int = typer.Option(48, "--size", help="Image size."),
    max_per_category: Optional[int] = typer.Option(None, "--max-per-category", help="Read at most K drawings of each category."),
    recognized_only: bool = typer.Option(False, "--recognized-only", help="Keep only drawings the game recognized."),
    on_error: str = typer.Option("skip", "--on-error", help="Malformed ndjson line: skip or stop."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features cluster and choose exemplars; default: blurred-pixel PCA / blurred pixels."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write samples files (the human reference) instead."),
    exclude_exemplar: bool = typer.Option(False, "--exclude-exemplar", help=_EXCLUDE_HELP),
    workers: int = typer.Option(2, "--workers", help="Processes rendering categories while one clusters (the files do not depend on it)."),
    preview: Optional[Path] = typer.Option(None, "--preview", callback=_writable_file, help="Also write a PNG of the sub-categories of the --preview-category categories."),
    preview_category: Optional[list[str]] = typer.Option(None, "--preview-category", help="A category whose sub-categories --preview shows (repeatable)."),
) -> None:
    """Rebuild QuickDraw-FS (SPEC.md 1.2, a documented reconstruction): sub-categories by clustering."""
    from drawgap.data.exemplars import load_feature_critic
    from drawgap.data.quickdraw_fs import build_quickdraw_fs, quickdraw_fs_config

    config = quickdraw_fs_config(
        _category_list(categories, source), image_size=size, min_cluster=min_cluster,
        clusters_per_category=clusters_per_category, selection=selection, test_fraction=test_fraction, seed=seed,
        max_per_category=max_per_category, recognized_only=recognized_only, on_error=_on_error_option(on_error), critic=critic,
    )
    if preview is not None and not preview_category:
        raise InputError("--preview needs at least one --preview-category", field="--preview")
    unknown = sorted(set(preview_category or ()) - set(config.categories))
    if unknown:
        raise InputError(f"expected categories being built, got {unknown}", field="--preview-category")
    model = None if critic is None else load_feature_critic(critic)
    with _quickdraw_warnings():
        splits = build_quickdraw_fs(config, source=source, critic=model, progress=sys.stderr.isatty(), workers=workers)
    _write_splits(splits, out, as_samples, exclude_exemplar)
    if preview is not None:
        from drawgap.data.quickdraw_fs import write_sub_category_preview

        path = write_sub_category_preview(splits, preview_category, preview)
        _echo_written("preview", path, f"the sub-categories of {', '.join(preview_category)}, exemplar first")


@data_app.command("quickdraw-fs-split")
def data_quickdraw_fs_split(
    test: Path = typer.Argument(..., help="The test.npz of a `drawgap data quickdraw-fs` build."),
    source: Path = typer.Option(..., "--source", help="The folder of <category>.ndjson files it was built from."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Split record to write (.json)."),
) -> None:
    """Record a QuickDraw-FS build's split: its settings, which sub-categories are test classes, the SHA-256 of each
    source file holding one and of each test class, so that the test split can be rebuilt from those files alone
    (what `drawgap demo --data quickdraw` does with the record of the shipped models' split)."""
    from drawgap.data.formats import read_dataset
    from drawgap.data.quickdraw_fs import split_record
    from drawgap.io import write_json_atomic

    record = split_record(read_dataset(test), source)
    write_json_atomic(out, record)
    _echo_written("split record", out, f"{len(record['test_classes'])} test classes from {len(record['files'])} of "
                  f"{len(record['config']['categories'])} categories")


# --------------------------------------------------------------------------------- evaluate / compare


@contextlib.contextmanager
def _metric_warnings_to_stderr():
    """Show the metrics' warnings (fewer ways, fewer bins) as one `drawgap: warning: ...` line each."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_a, **_k: typer.echo(f"drawgap: warning: {message}", err=True)
        yield


@app.command("evaluate")
def evaluate_cmd(
    samples: Path = typer.Argument(..., help="Samples file (.npz) to evaluate: a model's drawings, or humans'."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Metrics file to write (metrics.json)."),
    critics: Optional[str] = typer.Option(None, "--critics", help="Critic pair by prefix: omniglot = omniglot-simclr + omniglot-protonet (also: strokes); several, comma-separated (omniglot,omniglot-b), add each pair's scores (by_critics) and their per-class agreement."),
    simclr: Optional[str] = typer.Option(None, "--simclr", help="SimCLR critic (name or directory), instead of --critics."),
    protonet: Optional[str] = typer.Option(None, "--protonet", help="ProtoNet critic (name or directory), instead of --critics."),
    human: Optional[Path] = typer.Option(None, "--human", help="Human reference: samples file (.npz) or its metrics (.json); adds distance_to_human and curve_gap."),
    queries: int = typer.Option(500, "--queries", help="Queries per class (nb_test) in the recognizability task list."),
    ways: int = typer.Option(20, "--ways", help="Classes per episode."),
    bins: int = typer.Option(10, "--bins", help="Originality bins of the generalization curve."),
    seed: int = typer.Option(44, "--seed", help="Seed of the task list, the queries and the bootstrap."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples (over classes) for the 95% intervals."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 (critics under bfloat16 autocast: faster, ~3 significant digits)."),
    name: Optional[str] = typer.Option(None, "--name", help="System name in the metrics (default: the samples' generator)."),
) -> None:
    """Diversity, recognizability, originality, generalization curve, Vendi score and 95% intervals of a samples file."""
    from drawgap.metrics.evaluate import evaluate
    from drawgap.metrics.metrics_file import write_metrics

    with _metric_warnings_to_stderr():
        metrics = evaluate(samples, critics=critics, simclr=simclr, protonet=protonet, human=human, queries=queries,
                           ways=ways, bins=bins, seed=seed, bootstrap=bootstrap, precision=precision, name=name,
                           progress=sys.stderr.isatty())
    path = write_metrics(metrics, out)
    def headline(m: dict) -> str:
        text = (f"diversity {m['diversity']:.3f} (raw {m['diversity_raw']:.3f}), recognizability "
                f"{m['recognizability']:.1f}%, originality {m['originality']:.3f}, vendi {m['vendi']:.2f}")
        if "curve_gap" in m:
            gap = m["curve_gap"]["gap"]
            text += f", curve gap to human {'-' if gap is None else format(gap, '+.2f')} pp"
        return text

    if "by_critics" not in metrics:
        _echo_written("metrics", path, headline(metrics))
        return
    from drawgap.metrics.comparison import format_agreement

    summary = "; ".join([*(f"{pair}: {headline(m)}" for pair, m in metrics["by_critics"].items()),
                         *(f"agreement {format_agreement(a)}" for a in metrics["agreement"])])
    _echo_written("metrics", path, summary)


@app.command("compare")
def compare_cmd(
    metrics: list[Path] = typer.Argument(..., help="Metrics files (metrics.json) of the systems to compare, humans included."),
    out: Optional[Path] = typer.Option(None, "--out", callback=_writable_file, help="Figure to write (.png, .pdf, .svg): diversity-recognizability plane and generalization curves."),
    human: Optional[str] = typer.Option(None, "--human", help="Name of the human reference (default: the system whose generator is 'human')."),
    names: Optional[str] = typer.Option(None, "--names", help="Comma-separated display names, one per file (default: each file's system)."),
    paper: Optional[str] = typer.Option(None, "--paper", help="Also draw the paper's points (ICML Fig. 2) of this dataset on the plane: omniglot or quickdraw."),
) -> None:
    """Table of all systems with distance to human z-scored over them, and the comparison figure."""
    from drawgap.metrics.comparison import compare, format_table
    from drawgap.metrics.metrics_file import read_metrics

    from drawgap.report.paper_points import paper_points

    reference = None if paper is None else paper_points(paper)  # checked before any file is read
    if paper is not None and out is None:
        raise InputError("the paper's points are drawn on the figure; add --out FILE", field="--paper")
    loaded = [read_metrics(p) for p in metrics]
    with _metric_warnings_to_stderr():
        result = compare(loaded, names=None if names is None else [n.strip() for n in names.split(",")], human=human)
    typer.echo(format_table(result))
    if out is not None:
        from drawgap.report.figures import plot_comparison, save_figure

        path = save_figure(plot_comparison(result["systems"], paper=reference), out)
        _echo_written("figure", path, f"{len(loaded)} systems" + ("" if paper is None else f", with the paper's {paper} points"))


# ----------------------------------------------------------------------------------------------- clickme

clickme_app = typer.Typer(help="ClickMe, the online game that collects human importance maps (SPEC.md 5.1).", no_args_is_help=True)
app.add_typer(clickme_app, name="clickme")
_DB_HELP = "Database URL (sqlite:///file.db, postgresql+psycopg://user@host:port/db) or a SQLite file path."
# What the `clickme` extra of pyproject.toml installs, as top-level modules (psycopg[binary] is psycopg).
_CLICKME_EXTRA_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "httpx")


def _require_clickme_extra() -> None:
    """The server's verbs need the `clickme` extra: say so in one line (exit 2) instead of failing on an import."""
    from importlib.util import find_spec

    missing = [m for m in _CLICKME_EXTRA_MODULES if find_spec(m) is None]
    if missing:
        raise InputError(f"ClickMe's server needs the clickme extra (not installed: {', '.join(missing)}): "
                         "pip install 'drawgap[clickme]'")


@clickme_app.command("stimuli")
def clickme_stimuli(
    dataset: Optional[Path] = typer.Argument(None, help="Dataset file (.npz) holding the drawings (or give --source)."),
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="New folder for the stimuli (PNGs, manifest.json, partner/)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Instead of DATASET: a folder of Quick, Draw! <category>.ndjson files, one class per category rendered at 48 px (kept as OUT/drawings.npz)."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated class names, or 'clickme': the paper's 25 ClickMe-QuickDraw categories (default: the first 25 classes; with --source, clickme)."),
    per_category: int = typer.Option(10, "--per-category", help="Drawings per category, the exemplar first."),
    practice: int = typer.Option(1, "--practice", help="Extra drawings for practice trials."),
    critic: Optional[str] = typer.Option(None, "--critic", help="ProtoNet critic (name or folder): the AI partner (default strokes-protonet; with --source, quickdraw-protonet)."),
    size: int = typer.Option(256, "--size", help="Canvas size in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the drawings' choice."),
    on_error: str = typer.Option("skip", "--on-error", help="With --source, a malformed ndjson line: skip (count and warn) or stop."),
    workers: int = typer.Option(2, "--workers", help="With --source, processes rendering categories (the stimuli do not depend on it)."),
) -> None:
    """Prepare stimuli and the partner classifier (the critic with the exemplars as support)."""
    from drawgap.clickme.stimuli import CLICKME_CATEGORIES, load_stimuli, prepare_stimuli, quickdraw_stimuli_dataset

    if (dataset is None) == (source is None):
        raise InputError("expected either a DATASET file or --source FOLDER of ndjson files, not both or neither",
                         field="--source")
    if categories is not None and categories.strip() == "clickme":
        names = list(CLICKME_CATEGORIES)
    elif categories:
        names = [c.strip() for c in categories.split(",") if c.strip()]
    else:
        names = list(CLICKME_CATEGORIES) if source is not None else None
    partner = critic or ("quickdraw-protonet" if source is not None else "strokes-protonet")
    if source is not None:
        from drawgap.critics.registry import critic_dir

        critic_dir(partner)  # an unknown or uninstalled partner stops here, before the drawings are rendered
        with _quickdraw_warnings():
            dataset = quickdraw_stimuli_dataset(source, names, progress=sys.stderr.isatty(), workers=workers,
                                                on_error=_on_error_option(on_error))
    path = prepare_stimuli(dataset, out, categories=names, per_category=per_category, practice=practice, critic=partner,
                           canvas_size=size, seed=seed)
    s = load_stimuli(path)
    _echo_written("stimuli", path, f"{len(s.categories)} categories, {len(s.stimuli)} drawings + {len(s.practice)} practice, {size}x{size}"
                  + (f"; drawings from {source} kept in {path / 'drawings.npz'}" if source is not None else ""))
    check = s.manifest["partner_check"]
    blank = check["blank_canvas"]["guess"]
    typer.echo(f"partner: recognizes {check['fully_revealed_correct']} of {check['stimuli']} fully revealed drawings "
               f"({check['exemplars_correct']} of {check['exemplars']} exemplars; {check['fully_revealed_nothing_yet']} "
               f"answered 'nothing yet'); on a blank canvas it answers "
               + ("'nothing yet'" if blank is None else f"{blank!r}") + f" (p {check['blank_canvas']['probability']:.2f})")


def _default_limits() -> str:
    """GameConfig's rate limits as `--limit` would give them, for the help (stdlib-only module: no extra needed)."""
    from drawgap.clickme.config import GameConfig

    return ", ".join(f"{name.replace('_', '-')}={rate:g}/{burst:g}" for name, (rate, burst) in GameConfig().rate_limits().items())


@clickme_app.command("serve")
def clickme_serve(
    stimuli: Path = typer.Argument(..., help="Stimuli folder written by `drawgap clickme stimuli`."),
    db: str = typer.Option("clickme.sqlite3", "--db", help=_DB_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    time_limit: float = typer.Option(7.0, "--time-limit", help="Seconds per drawing."),
    brush: int = typer.Option(14, "--brush", help="Reveal brush size in canvas pixels."),
    points_per_query: int = typer.Option(10, "--points-per-query", help="Painted points between two partner queries."),
    partner_nothing_yet: bool = typer.Option(True, "--partner-nothing-yet/--no-partner-nothing-yet", help="The partner answers 'nothing yet' until the revealed image is nearer to a category than to the blank canvas. --no-partner-nothing-yet: the older partner, which names a category even on a blank canvas (only to go on with a database collected with it)."),
    trials: int = typer.Option(20, "--trials", help="Drawings per participant."),
    practice: int = typer.Option(1, "--practice", help="Practice trials per participant (0: none)."),
    completion_code: Optional[str] = typer.Option(None, "--completion-code", help="Study-wide completion code (default: one per participant)."),
    consent: Optional[Path] = typer.Option(None, "--consent", help="Consent page text (UTF-8, plain text): an optional '# Title' line, then paragraphs separated by blank lines."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar="DRAWGAP_CLICKME_ADMIN_TOKEN",
                                              help="Token for /api/admin/*; without one those routes are disabled. Prefer "
                                                   "the environment variable: a command line is visible to every local user."),
    min_trial_ms: int = typer.Option(1000, "--min-trial-ms", help="Completion code: an unrecognized trial shorter than this (or the time limit) does not count as played."),
    min_points: int = typer.Option(5, "--min-points", help="Completion code: a trial with fewer points does not count as played."),
    body_timeout: float = typer.Option(10.0, "--body-timeout", help="Seconds a request body may take to arrive (then 408)."),
    max_skipped: float = typer.Option(0.5, "--max-skipped", help="Completion code: the largest fraction of the required trials (practice included) that may be skipped or not played."),
    seed: int = typer.Option(0, "--seed", help="Seed of the participants' sequences."),
    workers: int = typer.Option(1, "--workers", help="Server processes (each with its own partner: one per core)."),
    torch_threads: int = typer.Option(1, "--torch-threads", help="CPU threads of each partner's network."),
    limit: list[str] = typer.Option([], "--limit", metavar="NAME=RATE/BURST", help="A rate limit, NAME=RATE/BURST (requests per second, bucket size), "
                                    "repeatable; NAME: partner (per participant), address-partner, total-partner, "
                                    "address-join (new participants per client address), total-join. Defaults: "
                                    f"{_default_limits()}; raise address-* for many participants behind one router."),
) -> None:
    """Run the game's server: the experiment page, the partner and the database."""
    _require_clickme_extra()
    from drawgap.clickme.app import serve
    from drawgap.clickme.config import GameConfig, parse_limits, read_consent

    config = GameConfig(time_limit_s=time_limit, brush_px=brush, points_per_query=points_per_query,
                        partner_nothing_yet=partner_nothing_yet,
                        trials_per_participant=trials, practice_trials=practice, completion_code=completion_code, seed=seed,
                        effort_min_trial_ms=min_trial_ms, effort_min_points=min_points,
                        effort_max_skipped_fraction=max_skipped, body_timeout_s=body_timeout, **parse_limits(limit),
                        **(read_consent(consent) if consent is not None else {}))
    typer.echo(f"serving ClickMe on http://{host}:{port}/?PROLIFIC_PID=...&STUDY_ID=...  (admin routes "
               f"{'enabled' if admin_token else 'disabled'})", err=True)
    serve(stimuli, db, config=config, admin_token=admin_token, host=host, port=port, workers=workers,
          torch_threads=torch_threads)


@clickme_app.command("export")
def clickme_export(
    db: str = typer.Option("clickme.sqlite3", "--db", help=_DB_HELP),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Clicks file to write (.npz, format drawgap.clicks/1)."),
    include_practice: bool = typer.Option(False, "--include-practice", help="Also export the practice trials."),
) -> None:
    """Export every painted point for human importance maps."""
    _require_clickme_extra()
    from drawgap.clickme.db import open_existing
    from drawgap.clickme.export import export_clicks

    meta = export_clicks(open_existing(db), out, include_practice=include_practice)
    _echo_written("clicks", out, f"{meta['n_trials']} trials, {meta['n_points']} points")


@clickme_app.command("status")
def clickme_status(
    db: str = typer.Option("clickme.sqlite3", "--db", help=_DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the progress per stimulus: assigned, played, recognized, skipped, mean score."""
    _require_clickme_extra()
    import json

    from drawgap.clickme.db import open_existing
    from drawgap.clickme.status import format_status, stimulus_progress, totals

    engine = open_existing(db)
    rows, total = stimulus_progress(engine), totals(engine)
    typer.echo(json.dumps({"totals": total, "stimuli": rows}, indent=1) if as_json else format_status(rows, total))


@clickme_app.command("migrate")
def clickme_migrate(
    db: str = typer.Option("clickme.sqlite3", "--db", help=_DB_HELP),
) -> None:
    """Upgrade a database made by an older drawgap to this version's schema, in place, in one transaction (stop
    its server first). A SQLite database is first copied to <file>.<UTC time>.bak beside it."""
    _require_clickme_extra()
    from drawgap.clickme.migrate import migrate

    for line in migrate(db):
        typer.echo(line)


# ----------------------------------------------------------------------------------------------- critics

critics_app = typer.Typer(help="Train, list and check the critics: SimCLR features and the ProtoNet one-shot classifier.", no_args_is_help=True)
app.add_typer(critics_app, name="critics")


@critics_app.command("train")
def critics_train(
    kind: str = typer.Argument(..., help="simclr (features for diversity/originality) or protonet (one-shot classifier)."),
    data: Path = typer.Option(..., "--data", help="Training dataset file (.npz)."),
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="Run folder: checkpoint.pt, train_log.jsonl, then model.safetensors + config.json."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation dataset file: SimCLR 1-NN retrieval, ProtoNet 20-way 1-shot accuracy."),
    arch: str = typer.Option("omniglot", "--arch", help="omniglot (conv4) or quickdraw (conv3 wide / ResNet48)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Critic resolution (default 50 for omniglot, 48 for quickdraw)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Binarization threshold of the critic's preprocessing."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: SimCLR 6600, ProtoNet 8000 episodes; with --minutes alone: estimated from the speed)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Time budget of this run: stops with a checkpoint and writes the critic (with --steps: whichever comes first)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="SimCLR drawings per batch (two views each; default 448)."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="rmsprop or adam (default: SimCLR rmsprop, ProtoNet adam)."),
    temperature: float = typer.Option(0.5, "--temperature", help="SimCLR NT-Xent temperature."),
    strength: str = typer.Option("normal", "--strength", help="SimCLR augmentation strength: light, normal or strong."),
    ways: int = typer.Option(60, "--ways", help="ProtoNet classes per training episode."),
    queries: int = typer.Option(5, "--queries", help="ProtoNet queries per class per episode."),
    lr_step: Optional[int] = typer.Option(None, "--lr-step", help="Multiply the LR by --lr-gamma every this many steps (ProtoNet default: steps/4; SimCLR: constant LR unless set)."),
    lr_gamma: float = typer.Option(0.5, "--lr-gamma", help="LR decay factor of --lr-step."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from a trained critic (shipped name or folder) of the same kind and architecture: fine-tuning."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (about 2-3x faster on CPUs with AVX-512 BF16)."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    threads: int = typer.Option(2, "--threads", help="CPU threads."),
    seed: int = typer.Option(0, "--seed", help="Seed of batches, episodes, augmentations and initial weights."),
    val_every: int = typer.Option(500, "--val-every", help="Validate every this many steps (0: only at the end)."),
    val_ways: int = typer.Option(20, "--val-ways", help="ProtoNet validation classes per episode."),
    val_episodes: int = typer.Option(1000, "--val-episodes", help="ProtoNet validation episodes (seeded)."),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", help="Write checkpoint.pt every this many steps (and on Ctrl-C)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt (its recipe; --steps may extend it)."),
) -> None:
    """Train a critic (SPEC.md 3): progress bar, checkpoints, exact resume; writes a critic folder."""
    from drawgap.critics.training import CriticTrainer, TrainConfig

    config = TrainConfig(
        kind=kind, arch=arch, image_size=image_size, threshold=threshold, steps=steps, minutes=minutes, lr=lr, optimizer=optimizer,
        seed=seed, bf16=bf16, device=device, threads=threads, batch_size=batch_size, temperature=temperature,
        strength=strength, ways=ways, queries=queries, lr_step=lr_step, lr_gamma=lr_gamma, val_every=val_every,
        val_ways=val_ways, val_episodes=val_episodes, checkpoint_every=checkpoint_every, init_from=init_from,
    )
    from drawgap.critics.registry import read_critic_config
    from drawgap.critics.validation import summary

    trainer = CriticTrainer(config, data, out, val=val, resume=resume).fit()
    critic = trainer.critic_
    typer.echo(f"wrote critic {out}  ({critic.kind}, {critic.arch}, {critic.image_size}px, weights sha256 {critic.weights_hash[:12]}, "
               f"step {trainer.steps_done_}, stopped by {trainer.stopped_by})")
    if val is not None:
        # the last validation runs after the progress bar has closed: say its numbers here
        metrics = read_critic_config(out)["provenance"]["config"]["validation"]["metrics"]
        typer.echo(f"validation on {val}: {summary(metrics)}")


@critics_app.command("list")
def critics_list() -> None:
    """The shipped critics: name, whether its weights are installed, and what it was validated at."""
    from drawgap.critics.registry import SHIPPED, is_installed, read_critic_config, shipped_dir

    for name, about in SHIPPED.items():
        if not is_installed(shipped_dir(name)):
            typer.echo(f"{name:<18} not installed  {about}")
            continue
        cfg = read_critic_config(shipped_dir(name))
        metrics = ((cfg.get("provenance") or {}).get("config") or {}).get("validation") or {}
        scores = ", ".join(f"{k} {v:.2f}" for k, v in (metrics.get("metrics") or {}).items() if "accuracy" in k)
        typer.echo(f"{name:<18} {cfg['kind']}/{cfg['arch']} {cfg['image_size']}px  {about}" + (f"  [{scores}]" if scores else ""))


@critics_app.command("check")
def critics_check(
    critic: str = typer.Argument(..., help="Critic name (see `drawgap critics list`) or folder."),
    data: Path = typer.Option(..., "--data", help="Dataset file of real drawings, e.g. the test split."),
    ways: int = typer.Option(20, "--ways", help="ProtoNet: classes per episode."),
    episodes: int = typer.Option(1000, "--episodes", help="ProtoNet: seeded episodes."),
    seed: int = typer.Option(0, "--seed", help="ProtoNet: episode seed."),
) -> None:
    """Print a critic's acceptance numbers on real drawings: SimCLR leave-one-out 1-NN class retrieval
    (cosine and L2), ProtoNet W-way 1-shot accuracy (exemplar support, real queries)."""
    from drawgap.critics import load_critic
    from drawgap.critics.validation import acceptance_metrics
    from drawgap.data.formats import read_dataset

    model = load_critic(critic)
    ds = read_dataset(data)
    typer.echo(f"{critic}: {model.kind}/{model.arch} {model.image_size}px on {data} ({_dataset_summary(ds)})")
    scores = acceptance_metrics(model, ds, ways=ways, episodes=episodes, seed=seed)
    if model.kind == "simclr":
        for metric in ("cosine", "l2"):
            typer.echo(f"1-NN class retrieval ({metric}, leave-one-out among {len(ds.images)} drawings): {scores[f'nn_accuracy_{metric}']:.2f} %")
    else:
        ways = min(ways, ds.n_classes)
        typer.echo(f"{ways}-way 1-shot accuracy (support = exemplars, queries = other real drawings, {episodes} episodes, "
                   f"seed {seed}): {scores[f'{ways}way_1shot_accuracy']:.2f} %")


# -------------------------------------------------------------------------------------------- importance

importance_app = typer.Typer(help="Feature importance (SPEC.md 5): model maps, human maps from clicks, comparison, figure.", no_args_is_help=True)
app.add_typer(importance_app, name="importance")
importance_maps_app = typer.Typer(help="Importance maps of a critic or a diffusion model (.npz, drawgap.importance_maps/1).", no_args_is_help=True)
importance_app.add_typer(importance_maps_app, name="maps")


def _maps_summary(m) -> str:
    r = m.meta.get("reliability") or {}
    rel = "" if r.get("spearman") is None else (f"; reliability {r['spearman']:.2f} ({r['method'].split(',')[0]})"
                                                + (" NOISE LEVEL" if r.get("noise_level") else ""))
    return f"{m.method}, {len(m)} maps of {m.resolution}x{m.resolution}, {len(set(m.categories))} categories{rel}"


def _named_maps(paths: list[Path]) -> dict:
    """Maps files by method name (the file's stem where two share a method)."""
    from drawgap.importance.maps_file import read_maps

    named = {}
    for path in paths:
        m = read_maps(path)
        named[m.method if m.method not in named else path.stem] = m
    return named


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


@importance_maps_app.command("critic")
def importance_maps_critic(
    critic: str = typer.Argument(..., help="Critic: shipped name (e.g. strokes-protonet) or folder."),
    data: Path = typer.Option(..., "--data", help="Dataset file (drawings besides the exemplars) or samples file (its samples)."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Maps file to write (.npz)."),
    method: str = typer.Option("saliency", "--method", help="saliency | integrated_gradients | smoothgrad | occlusion | rise | sobol."),
    per_class: int = typer.Option(1, "--per-class", help="Drawings explained per class."),
    classes: int = typer.Option(0, "--classes", help="Only the drawings of the first N classes (0: all); the episode keeps every exemplar."),
    option: list[str] = typer.Option([], "--option", help="Method option KEY=VALUE (repeatable), e.g. n_steps=64."),
    seed: int = typer.Option(0, "--seed", help="Seed of the drawings' choice and of random methods."),
) -> None:
    """Which pixels drive a critic's one-shot decision (target: the drawing's class among the exemplars)."""
    from drawgap.critics import load_critic
    from drawgap.data.formats import read_drawings
    from drawgap.importance.critic_attribution import critic_importance, parse_options
    from drawgap.importance.maps_file import write_maps

    options = parse_options(option, method)
    m = critic_importance(load_critic(critic), read_drawings(data), method, per_class=per_class, seed=seed,
                          classes=classes, **options)
    _echo_written("maps", write_maps(m, out), _maps_summary(m))


@importance_maps_app.command("diffusion")
def importance_maps_diffusion(
    run_dir: Path = typer.Argument(..., help="Run directory of a trained cfgdm (or ddpm, loss_grad only)."),
    exemplars: Path = typer.Option(..., "--exemplars", help="Dataset file (its class exemplars) or samples file (its exemplars)."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Maps file (.npz); with several --kind, one file per kind: OUT.<kind>.npz."),
    kind: list[str] = typer.Option(["guided_diff"], "--kind", help="guided_diff | implicit | loss_grad | guided (SPEC.md 5.2's formula: at noise level on the strokes CFGDM) (repeatable)."),
    classes: int = typer.Option(0, "--classes", help="Only the first N classes (0: all)."),
    trajectories: int = typer.Option(25, "--trajectories", help="Sampling trajectories per exemplar."),
    sampler: str = typer.Option("dpm++", "--sampler", help="ancestral | ddim | dpm++ (SDE-DPM-Solver++) | dpm++ode."),
    steps: Optional[int] = typer.Option(10, "--steps", help="Sampler steps (ancestral: all T)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Guidance g (default: the family's, cfgdm 1 as in the paper, ddpm 0)."),
    t_min: int = typer.Option(1, "--t-min", help="Smallest timestep kept in the maps."),
    t_max: Optional[int] = typer.Option(None, "--t-max", help="Largest timestep kept (default T)."),
    grad_steps: int = typer.Option(3, "--grad-steps", help="Timesteps at which the loss gradient is taken."),
    batch_size: int = typer.Option(64, "--batch-size", help="Trajectories per network call (x2 images: cond + uncond)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the hardware has native bf16, else fp32), fp32, or bf16 (denoiser under bfloat16 autocast: ~2x faster, ~3 significant digits)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the trajectories."),
) -> None:
    """Guided-score, implicit-classifier and loss-gradient maps along sampling trajectories (SPEC.md 5.2), each
    with its split-half reliability over trajectories."""
    from drawgap.data.formats import read_drawings
    from drawgap.importance.diffusion_maps import diffusion_importance, exemplars_of
    from drawgap.importance.maps_file import write_maps
    from drawgap.models import load_generator

    images, classes_, ids = exemplars_of(read_drawings(exemplars), classes)
    generator = load_generator(run_dir)
    results = diffusion_importance(
        generator, images, classes_, seed=seed, progress=True, image_ids=ids, kinds=tuple(kind),
        n_trajectories=trajectories, sampler=sampler, steps=steps, guidance=guidance,
        t_range=(t_min, t_max or generator.schedule.config.num_train_timesteps), grad_steps=grad_steps,
        batch_size=batch_size, precision=precision)
    for k, m in results.items():
        path = out if len(results) == 1 else out.with_name(f"{out.stem}.{k}{out.suffix or '.npz'}")
        _echo_written("maps", write_maps(m, path), _maps_summary(m))


@importance_app.command("human")
def importance_human(
    clicks: Path = typer.Argument(..., help="Clicks file: `drawgap clickme export` .npz, or CSV x,y,time,participant,image[,category]."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Maps file to write (.npz)."),
    rule: str = typer.Option("box", "--rule", help="box (the paper's +1 per click in a +-radius box) | gaussian."),
    radius: int = typer.Option(9, "--radius", help="Box half-size in canvas pixels (rule box)."),
    blur_size: int = typer.Option(33, "--blur-size", help="Gaussian kernel size in canvas pixels (rule gaussian)."),
    sigma: float = typer.Option(11.0, "--sigma", help="Gaussian sigma in canvas pixels (rule gaussian)."),
    canvas: Optional[int] = typer.Option(None, "--canvas", help="Canvas size (default: the file's, else 256)."),
    resolution: int = typer.Option(48, "--resolution", help="Size of the maps (the comparison resolution)."),
    min_participants: int = typer.Option(1, "--min-participants", help="Drop images with fewer participants."),
    min_clicks: int = typer.Option(1, "--min-clicks", help="Drop a participant's map of an image with fewer clicks."),
    splits: int = typer.Option(50, "--splits", help="Random split-halves for the reliability (the human ceiling)."),
    include_skipped: bool = typer.Option(False, "--include-skipped", help="Keep trials the participant skipped."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset file the stimuli came from (stores the drawings with the maps)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split-halves."),
) -> None:
    """Human importance maps from clicks, averaged over participants, with their split-half reliability."""
    from drawgap.data.formats import read_dataset
    from drawgap.importance.human_maps import build_human_maps, read_clicks
    from drawgap.importance.maps_file import write_maps

    c = read_clicks(clicks, canvas=canvas, exclude_skipped=not include_skipped)
    if dataset is not None:
        c = c.with_images_from(read_dataset(dataset))
    m = build_human_maps(c, rule=rule, radius=radius, blur_size=blur_size, sigma=sigma, resolution=resolution,
                         min_participants=min_participants, min_clicks=min_clicks, n_splits=splits, seed=seed)
    ceiling = m.meta["ceiling_median"]
    _echo_written("maps", write_maps(m, out), f"{_maps_summary(m)}, median ceiling "
                  f"{'n/a (one participant per image)' if ceiling is None else f'{ceiling:.3f}'}")


@importance_app.command("compare")
def importance_compare(
    human: Path = typer.Argument(..., help="Human maps file (.npz)."),
    models: list[Path] = typer.Argument(..., help="Model maps files (.npz); with two or more, also paired tests between them."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Comparison file to write (.json)."),
    resolution: int = typer.Option(48, "--resolution", help="Comparison resolution."),
    threshold: float = typer.Option(0.5, "--threshold", help="Region threshold, a fraction of each map's maximum."),
) -> None:
    """Spearman rho per category vs human maps (with ceiling and null), localization, Wilcoxon tests."""
    from drawgap.importance.compare import compare_sources
    from drawgap.importance.maps_file import read_maps
    from drawgap.io import write_json_atomic

    result = compare_sources(read_maps(human), _named_maps(models), resolution, threshold)
    write_json_atomic(out, result)
    for name, r in result["models"].items():
        s, lh, lm = r["summary"], r["localization"]["human_mean"], r["localization"]["model_mean"]
        typer.echo(f"{name}: rho {_num(s['spearman_mean'])} (null {_num(s['null_spearman_mean'])}, "
                   f"{_num(s['fraction_of_ceiling_mean'])} of ceiling) over {len(r['categories'])} categories; "
                   f"pixels for 50% mass human {_num(lh['pixels_50'])} vs model {_num(lm['pixels_50'])}; "
                   f"regions {_num(lh['regions'])} vs {_num(lm['regions'])}")
    typer.echo(f"wrote comparison {out}")


@importance_app.command("ink")
def importance_ink(
    maps: Path = typer.Argument(..., help="Maps file (.npz) that stores its images."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Report to write (.json)."),
    strokes: Optional[Path] = typer.Option(None, "--strokes", help="The built-in strokes dataset file the images come from: adds the mass per stroke."),
    resolution: int = typer.Option(48, "--resolution", help="Resolution of the measures."),
    dilate: int = typer.Option(1, "--dilate", help="Pixels by which the ink mask is dilated."),
    threshold: float = typer.Option(0.5, "--threshold", help="Region threshold, a fraction of each map's maximum."),
) -> None:
    """How much of each map's mass lies on the ink vs the background, and how localized the maps are."""
    from drawgap.data.formats import read_dataset
    from drawgap.importance.compare import ink_report, strokes_masks
    from drawgap.importance.maps_file import read_maps
    from drawgap.io import write_json_atomic

    m = read_maps(maps)
    masks = strokes_masks(read_dataset(strokes), m.image_ids, path=maps) if strokes is not None else None
    report = ink_report(m, resolution, threshold, dilate, masks)
    write_json_atomic(out, report)
    mean = report["mean"]
    typer.echo(f"{m.method}: mass on ink {_num(mean['mass_on_ink'])} (ink area {_num(mean['ink_area'])}, "
               f"enrichment {_num(mean['ink_enrichment'])}); pixels for 50% mass {_num(mean['pixels_50'])}; "
               f"regions {_num(mean['regions'])}")
    typer.echo(f"wrote ink report {out}")


@importance_app.command("figure")
def importance_figure_cmd(
    models: list[Path] = typer.Argument(..., help="Model maps files (.npz), one row each."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="Figure to write (.png, .pdf or .svg)."),
    human: Optional[Path] = typer.Option(None, "--human", help="Human maps file (.npz): the row under the exemplars."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated categories (default: the first shared ones)."),
    max_categories: int = typer.Option(10, "--max-categories", help="Columns when --categories is not given."),
    resolution: int = typer.Option(48, "--resolution", help="Resolution of the maps shown."),
) -> None:
    """Exemplar, human map and model maps per category, like ICML Fig. 5."""
    from drawgap.importance.maps_file import read_maps
    from drawgap.report.figures import save_figure
    from drawgap.report.importance_figure import figure_data, importance_figure

    names = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    cats, drawings, human_maps, model_maps, label = figure_data(read_maps(human) if human else None, _named_maps(models),
                                                                resolution, names, max_categories)
    path = save_figure(importance_figure(cats, drawings, human_maps, model_maps, drawing_label=label), out)
    _echo_written("figure", path, f"{len(cats)} categories, {len(model_maps)} model(s)")


# ------------------------------------------------------------------------------ train / sample (generators)


class _FamilyCommands(typer.core.TyperGroup):
    """`drawgap train FAMILY`: a command per generator family, listed from the registry and built on demand
    from the family's declared options (`Generator.Options`) and the loop's (`TrainOptions`)."""

    def list_commands(self, ctx) -> list[str]:
        from drawgap.models.registry import family_names

        return family_names()

    def get_command(self, ctx, name: str):
        from drawgap.models.registry import generator_class

        return _train_command(generator_class(name))  # InputError naming the known families


train_app = typer.Typer(cls=_FamilyCommands, no_args_is_help=True,
                        help="Train a generator family (CPU or GPU); N processes: accelerate launch --multi_gpu --num_processes N -m drawgap.cli train ...")
app.add_typer(train_app, name="train")


def _train_command(family):
    """The `drawgap train FAMILY` command: --data, --out, the family's options, the loop's, --resume, --init-from."""
    import inspect

    from drawgap.models.training import TrainOptions
    from drawgap.options import typer_parameters

    def train_family(data: Path, out: Path, resume: bool, init_from: str | None, **options) -> None:
        from drawgap.models.training import run_training

        result = run_training(family.name, data, out, resume=resume, init_from=init_from, progress=sys.stderr.isatty(), **options)
        state = result.state
        if result.process_index == 0:
            loss = "-" if state.loss is None else f"{state.loss:.4f}"
            _echo_written("generator", out, f"{family.name}, step {state.step}/{state.total_steps}, loss {loss}, {state.seconds / 60:.1f} min, stopped by {result.stopped_by}")
        typer.echo(f"process {result.process_index}/{result.num_processes}: step {state.step}, weights sha256 {result.weights_sha256}")
        if result.stopped_by == "signal":
            typer.echo(f"drawgap: interrupted at step {state.step}; checkpoint saved, continue with --resume", err=True)
            sys.exit(130)

    keyword = inspect.Parameter.KEYWORD_ONLY
    train_family.__signature__ = inspect.Signature([
        inspect.Parameter("data", keyword, annotation=Path, default=typer.Option(..., "--data", help="Training dataset file (.npz).")),
        inspect.Parameter("out", keyword, annotation=Path, default=typer.Option(
            ..., "--out", callback=_writable_folder, help="Run directory: generator.json + weights.safetensors, train.json, checkpoints/, log.jsonl.")),
        *typer_parameters(family.Options),
        *typer_parameters(TrainOptions),
        inspect.Parameter("resume", keyword, annotation=bool, default=typer.Option(
            False, "--resume", help="Continue the run in --out from its newest checkpoint, exactly.")),
        inspect.Parameter("init_from", keyword, annotation=Optional[str], default=typer.Option(
            None, "--init-from", help="Start a new run from the weights of a generator of this family (shipped name or "
            "run directory; its network, a fresh optimizer): fine-tuning, or continuing a model whose checkpoints are gone.")),
    ])
    one = typer.Typer(add_completion=False)
    summary = " ".join((family.__doc__ or family.name).strip().split("\n\n")[0].split())
    one.command(name=family.name, help=summary)(train_family)
    command = typer.main.get_command(one)
    command.name = family.name
    _hide_flag_types(command)  # built on demand, after main() has walked the static commands
    return command


class _SweepCommands(_FamilyCommands):
    """`drawgap sweep FAMILY`: a command per generator family, built from its declared options like `train`'s."""

    def get_command(self, ctx, name: str):
        from drawgap.models.registry import generator_class

        return _sweep_command(generator_class(name))  # InputError naming the known families


sweep_app = typer.Typer(cls=_SweepCommands, no_args_is_help=True,
                        help="One variant of a generator family per value of one of its options, each evaluated against "
                             "humans, and the cloud on the diversity-recognizability plane (the NeurIPS sweeps).")
app.add_typer(sweep_app, name="sweep")


def _sweep_command(family):
    """The `drawgap sweep FAMILY` command: the sweep's options, the family's (given to every variant), the loop's."""
    import inspect

    from drawgap.models.training import TrainOptions
    from drawgap.options import given, typer_parameters

    def sweep_family(param: str, test: Path, critics: str, out: Path, data: Optional[Path], generator: Optional[str],
                     classes: int, per_exemplar: int, sampler: Optional[str], sampler_steps: Optional[int], queries: int,
                     bootstrap: int, **options) -> None:
        from drawgap.pipelines.sweep import SweepConfig, SweepInterrupted, run_sweep

        loop = given(TrainOptions, options)
        seed = loop.pop("seed", 0)
        cfg = SweepConfig(family=family.name, param=param, test=test, critics=critics, out=out, data=data,
                          generator=generator, family_options=given(family.Options, options), train_options=loop,
                          seed=seed, classes=classes, per_exemplar=per_exemplar, sampler=sampler,
                          sampler_steps=sampler_steps, queries=queries, bootstrap=bootstrap)
        echo = lambda line: typer.echo(f"sweep {family.name}: {line}", err=True)  # noqa: E731
        try:
            with _metric_warnings_to_stderr():
                result = run_sweep(cfg, echo=echo, progress=sys.stderr.isatty())
        except SweepInterrupted as exc:
            typer.echo(f"drawgap: {exc}", err=True)
            sys.exit(130)
        _echo_written("sweep", result.path, f"{len(result.variants)} variants; figure {', '.join(map(str, result.figures))}")

    keyword = inspect.Parameter.KEYWORD_ONLY

    def opt(name, annotation, default, *decls, help):
        return inspect.Parameter(name, keyword, annotation=annotation, default=typer.Option(default, *decls, help=help))

    sweep_family.__signature__ = inspect.Signature([
        opt("param", str, ..., "--param", help="The option to sweep and its values: NAME=v1,v2,... (a training option of the "
            "family trains a variant per value; a sampling option, e.g. guidance, samples --generator per value; "
            "training-step=all samples each snapshot of the --generator run)."),
        opt("data", Optional[Path], None, "--data", help="Training dataset file (.npz): training options."),
        opt("test", Path, ..., "--test", help="Test dataset file (.npz): the exemplars drawn from, and the human reference."),
        opt("critics", str, ..., "--critics", help="Critic pair by prefix (e.g. strokes, omniglot), as `drawgap evaluate --critics`."),
        inspect.Parameter("out", keyword, annotation=Path, default=typer.Option(
            ..., "--out", callback=_writable_folder, help="Sweep folder: sweep.json, sweep.png/pdf, runs/, samples/, metrics/ "
            "(rerun the same command to continue an interrupted sweep).")),
        opt("generator", Optional[str], None, "--generator", help="Sampling options: the trained run directory or shipped name to sample."),
        opt("classes", int, 0, "--classes", help="Evaluate on the first N test classes (0: all)."),
        opt("per_exemplar", int, 10, "--per-exemplar", help="Drawings per exemplar, and human drawings per class."),
        opt("sampler", Optional[str], None, "--sampler", help="Diffusion sampler for every variant (default: the family's)."),
        opt("sampler_steps", Optional[int], None, "--sampler-steps", help="Diffusion sampler steps for every variant (default: the sampler's)."),
        opt("queries", int, 500, "--queries", help="Queries per class in the recognizability task list."),
        opt("bootstrap", int, 1000, "--bootstrap", help="Bootstrap resamples for the 95% intervals."),
        *typer_parameters(family.Options),
        *typer_parameters(TrainOptions),
    ])
    from drawgap.pipelines.sweep import sweepable_options

    kinds = {kind: ", ".join(o.flag for o in sweepable_options(family).values() if o.kind == kind) for kind in ("training", "sampling")}
    one = typer.Typer(add_completion=False)
    one.command(name=family.name, help=f"Sweep one option of {family.name}, evaluate each variant, draw the cloud. Training "
                f"options (a run per value, --data): {kinds['training'] or 'none'}. Sampling options (--generator sampled "
                f"per value): {kinds['sampling'] or 'none'}. Learning curve: --param training-step=all --generator RUN "
                f"samples each snapshot of a run trained with --snapshot-every.")(sweep_family)
    command = typer.main.get_command(one)
    command.name = family.name
    _hide_flag_types(command)
    return command


@app.command("sample")
def sample_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `drawgap train`, or a shipped generator's name (`drawgap generators`)."),
    exemplars: Path = typer.Option(..., "--exemplars", help="Dataset file (its class exemplars) or samples file (its exemplars)."),
    out: Path = typer.Option(..., "--out", callback=_writable_folder, help="Folder for the samples files, one per guidance value: GENERATOR_gG.npz."),
    per_exemplar: int = typer.Option(20, "--per-exemplar", help="Drawings per exemplar."),
    guidance: Optional[str] = typer.Option(None, "--guidance", help="Comma-separated guidance values g, e.g. 0,0.5,1,2 (cfgdm; default 1, ddpm 0)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Diffusion: ancestral (all T = 500 steps, the paper's) | ddim | dpm++ (SDE-DPM-Solver++, default) | dpm++ode (deterministic)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (ancestral: T; ddim / dpm++: default 20)."),
    seed: int = typer.Option(0, "--seed", help="Seed: drawing k of class c depends only on (seed, c, k)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Drawings per network call (guidance doubles it)."),
    classes: int = typer.Option(0, "--classes", help="Only the first N classes (0: all)."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
) -> None:
    """Draw from each exemplar with a trained generator; write samples files ready for `drawgap evaluate`."""
    from drawgap.models.sampling import parse_guidance, sample_to_files

    with _metric_warnings_to_stderr():
        paths = sample_to_files(
            run_dir, exemplars, out, per_exemplar=per_exemplar, guidance=parse_guidance(guidance), sampler=sampler,
            steps=steps, seed=seed, batch_size=batch_size, classes=classes, device=device, progress=sys.stderr.isatty(),
        )
    from drawgap.data.formats import read_samples
    from drawgap.models.naming import system_name

    for path in paths:
        s = read_samples(path)
        p = s.meta["params"]
        g = "none" if p["guidance"] is None else format(p["guidance"], "g")
        sampler = f", {p['sampler']} x{p['steps']}" if p["sampler"] is not None else ""  # a GAN has no sampler
        _echo_written("samples", path, f"{_samples_summary(s)}{sampler}, g={g}; system {system_name(s.meta)!r}")


@app.command("generators")
def generators_list() -> None:
    """The shipped trained generators: name, whether installed, size and how long they trained."""
    from drawgap.models.base import WEIGHTS_FILE, read_generator_record
    from drawgap.models.registry import SHIPPED, is_installed, shipped_dir

    for name, about in SHIPPED.items():
        if not is_installed(shipped_dir(name)):
            typer.echo(f"{name:<16} not installed  {about}")
            continue
        record = read_generator_record(shipped_dir(name))
        t = record.get("training") or {}
        trained = f"{t.get('step', '?')} steps, {t.get('seconds', 0) / 60:.0f} min" if t else "?"
        size = (shipped_dir(name) / WEIGHTS_FILE).stat().st_size / 1e6
        typer.echo(f"{name:<16} installed, {size:.1f} MB, {record.get('n_parameters', 0) / 1e6:.2f} M parameters, "
                   f"{trained}  {about}")


# ------------------------------------------------------------------------------------------- report / demo


@app.command("report")
def report_cmd(
    results_dir: Path = typer.Argument(..., help="Results directory: its metrics files (any depth), samples files and importance maps."),
    out: Path = typer.Option(..., "--out", callback=_writable_file, help="HTML file to write (self-contained: figures embedded)."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Also write every figure here as PNG and PDF (default: RESULTS_DIR/figures)."),
) -> None:
    """One HTML report: findings in numbers, figures, metrics with 95% intervals, distance to human, provenance."""
    from drawgap.report.html import write_report

    figures_dir = figures if figures is not None else results_dir / "figures"
    path = write_report(results_dir, out, figures_dir)
    _echo_written("report", path, f"figures as PNG and PDF in {figures_dir}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo_out"), "--out", callback=_writable_folder, help="Folder that keeps everything: data, generators, samples, metrics, figures, report."),
    data: str = typer.Option("strokes", "--data", help="strokes (built-in, offline), omniglot (weak split) or quickdraw (QuickDraw-FS, the shipped QuickDraw models' test split)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Omniglot: local folder or zip of the official archives (offline). Quick, Draw!: the folder of <category>.ndjson files (required)."),
    train: bool = typer.Option(False, "--train", help="Train the generators here from scratch instead of loading the shipped ones."),
    budget: float = typer.Option(10.0, "--budget", help="Minutes of training, all generators together (with --train, or when none is shipped)."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help="Optimizer steps per generator, instead of the budget's estimate."),
    classes: int = typer.Option(20, "--classes", help="Test exemplars to draw from and evaluate (0: every test class)."),
    per_exemplar: int = typer.Option(10, "--per-exemplar", help="Drawings per exemplar (and human drawings per class)."),
    sampler_steps: int = typer.Option(20, "--sampler-steps", help="DPM-Solver++ steps per drawing (20: clean backgrounds, see benchmarks/demo_sampler_settings.py)."),
    guidance: str = typer.Option("0,0.5,1,2", "--guidance", help="Comma-separated CFGDM guidance values."),
    queries: int = typer.Option(500, "--queries", help="Queries per class in the recognizability task list."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95% intervals."),
    importance_classes: int = typer.Option(10, "--importance-classes", help="Test exemplars whose CFGDM importance maps are made, besides the critics' (0: skip the importance stage)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training and of the drawings."),
    generators: Optional[str] = typer.Option(None, "--generators", help="Comma-separated generator families to draw with, shipped ones copied and the others trained (default: every generator shipped for the dataset, ddpm and cfgdm trained if not; with --train: ddpm,cfgdm)."),
) -> None:
    """The whole study into one folder: data, generators, sampling, evaluation, report (what `make demo` runs)."""
    from drawgap.models.sampling import parse_guidance
    from drawgap.pipelines.demo import DemoConfig, main_console, run_demo

    config = DemoConfig(out=out, data=data, source=source, train=train, budget=budget, train_steps=train_steps,
                        classes=classes, per_exemplar=per_exemplar, sampler_steps=sampler_steps,
                        guidance=tuple(parse_guidance(guidance)), queries=queries, bootstrap=bootstrap,
                        importance_classes=importance_classes, seed=seed,
                        generators=None if generators is None else tuple(g.strip() for g in generators.split(",") if g.strip()))
    with _metric_warnings_to_stderr():
        run_demo(config, main_console())


# --------------------------------------------------------------------------------------------- entry point


def _framework_exceptions() -> tuple[tuple, tuple, tuple]:
    """(exit, usage, abort) exception types of the command framework. Typer >= 0.29 vendors click as
    `typer._click` (click itself may be absent); older Typer raises click's own types."""
    from typer import exceptions as tx

    exits, usage, aborts = [tx.Exit], [tx.TyperException], [tx.Abort]
    try:
        import click
    except ImportError:
        pass
    else:
        exits.append(click.exceptions.Exit)
        usage.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(exits), tuple(usage), tuple(aborts)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit(143) in this process, so that `finally` blocks run and atomic writers
    remove their temporary files (the default action kills the process where it stands). Processes
    forked from this one (data workers) keep the default action."""
    main_pid = os.getpid()

    def handle(signum, _frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        typer.echo("drawgap: terminated", err=True)
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):  # only the main thread may set handlers (in-process callers)
        signal.signal(signal.SIGTERM, handle)


def _hide_flag_types(command) -> None:
    """No type beside a flag in --help. Typer >= 0.29 shows every option's type, a flag's too (`--as-samples
    <bool>`, `--help <bool>`: `TyperOption.display_type_rich` falls back to the annotation's name), though a
    flag takes no value; an empty metavar is what it shows instead. Applied to every command, help included."""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)
    try:
        help_option = command.get_help_option(command.context_class(command))
    except (AttributeError, TypeError):  # a framework without these hooks: its --help as it is
        help_option = None
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""


def main(argv: Optional[list[str]] = None) -> None:
    exits, usage, aborts = _framework_exceptions()
    if argv is None:  # the `drawgap` command itself, not an in-process call (tests, scripts)
        exit_on_sigterm()
    command = typer.main.get_command(app)
    _hide_flag_types(command)
    try:
        code = command.main(args=argv, prog_name="drawgap", standalone_mode=False)
        # Typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code instead of raising.
        if isinstance(code, int) and code != 0:
            if code == 130:
                typer.echo("drawgap: interrupted", err=True)
            sys.exit(code)
    except InputError as exc:
        typer.echo(f"drawgap: error: {exc}", err=True)
        sys.exit(2)
    except exits as exc:
        sys.exit(exc.exit_code)
    except usage as exc:
        if type(exc).__name__ == "NoSuchOption" and getattr(exc, "ctx", None) is not None:
            # one line naming the option and the command (`train ddpm --context 5`: ddpm has no context)
            path = exc.ctx.command_path  # "drawgap train ddpm"
            close = getattr(exc, "possibilities", None)
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else f" (see `{path} --help`)"
            typer.echo(f"drawgap: error: {exc.option_name}: `{path}` has no such option{hint}", err=True)
            sys.exit(2)
        exc.show()
        sys.exit(exc.exit_code)
    except (*aborts, KeyboardInterrupt):
        typer.echo("drawgap: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
