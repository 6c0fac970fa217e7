"""The `drawgap` command line: thin Typer verbs over the Python API (DESIGN.md). No logic lives here.

Errors: an `InputError` (bad file, field or option) prints one line `drawgap: error: ...` and exits 2;
Ctrl-C exits 130 after the running step has left its last checkpoint in place.
"""

from __future__ import annotations

import contextlib
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


def _echo_written(kind: str, path: Path, summary: str) -> None:
    typer.echo(f"wrote {kind} {path}  ({summary})")


def _dataset_summary(ds) -> str:
    return f"{ds.n_classes} classes, {len(ds.images)} drawings, {ds.image_size}x{ds.image_size}"


def _samples_summary(s) -> str:
    return f"{s.n_classes} classes x {s.per_class} drawings, {s.image_size}x{s.image_size}"


def _write_splits(splits: dict, out: Path, as_samples: bool) -> None:
    """Write each split as a dataset file, or as a samples file (the human reference) with --as-samples."""
    from drawgap.data.formats import write_dataset, write_samples

    for split, ds in splits.items():
        if as_samples:
            s = ds.to_samples()
            path = write_samples(s, out / f"{split}_samples.npz")
            _echo_written("samples", path, _samples_summary(s))
        else:
            path = write_dataset(ds, out / f"{split}.npz")
            _echo_written("dataset", path, _dataset_summary(ds))


# -------------------------------------------------------------------------------------------------- data


@data_app.command("validate")
def data_validate(
    files: list[Path] = typer.Argument(..., help="Dataset or samples files to check."),
) -> None:
    """Check dataset or samples files against the formats of DESIGN.md."""
    from drawgap.data.formats import read_dataset, read_samples, _load_npz

    for f in files:
        keys = _load_npz(f)
        if "samples" in keys:
            s = read_samples(f)
            typer.echo(f"ok samples {f}  ({_samples_summary(s)})")
        else:
            ds = read_dataset(f)
            typer.echo(f"ok dataset {f}  ({_dataset_summary(ds)})")


# ------------------------------------------------------------------------------------------ data strokes


@data_app.command("strokes")
def data_strokes(
    out: Path = typer.Option(..., "--out", help="Folder for train.npz and test.npz (or *_samples.npz)."),
    classes: int = typer.Option(300, "--classes", help="Number of characters (classes), train and test together."),
    per_class: int = typer.Option(20, "--per-class", help="Drawings per class."),
    size: int = typer.Option(48, "--size", help="Image size in pixels (square)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Fraction of each alphabet's characters held out as test classes."),
    alphabets: Optional[int] = typer.Option(None, "--alphabets", help="Number of alphabets (default: one per 20 characters)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same images."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write samples files (the human reference) instead."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a PNG grid: 10 train classes x 10 drawings, exemplar first."),
) -> None:
    """Build the built-in procedural dataset: alphabets of 1-4 stroke characters drawn with motor noise."""
    from drawgap.data.strokes import StrokesConfig, build_strokes, write_preview

    config = StrokesConfig(
        n_classes=classes, per_class=per_class, image_size=size, n_alphabets=alphabets,
        test_fraction=test_fraction, seed=seed,
    )
    splits = build_strokes(config, progress=True)
    _write_splits(splits, out, as_samples)
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
    out: Path = typer.Option(..., "--out", help="Folder for the split files (train.npz/test.npz, background.npz, evaluation.npz)."),
    source: Optional[list[Path]] = typer.Option(
        None, "--source", help="Local copy: a folder holding images_background.zip / images_evaluation.zip (or the extracted "
        "folders), or the zip files (repeat the option). Default: download the official archives into the cache."
    ),
    split: str = typer.Option("weak", "--split", help="weak (train/test: character01-03 of every alphabet are test), background, evaluation, or official (both)."),
    size: int = typer.Option(50, "--size", help="Image size: 48 for the diffusion models, 50 for the VAEs, GANs and critics."),
    threshold: float = typer.Option(0.5, "--threshold", help="Binarization threshold after resizing (ink is above it)."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features choose the exemplars (Eq. 1); default: blurred pixels."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write samples files (the human reference) instead."),
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
    _write_splits(splits, out, as_samples)


@data_app.command("exemplars")
def data_exemplars(
    dataset: Path = typer.Argument(..., help="Dataset file whose exemplars to recompute."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features choose the exemplars (Eq. 1); default: blurred pixels."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here instead of replacing DATASET (which is replaced atomically)."),
) -> None:
    """Recompute each class's exemplar with Eq. 1 and record the method and critic in the file's meta."""
    from drawgap.data.exemplars import recompute_exemplars

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
    out: Path = typer.Option(..., "--out", help="Folder for quickdraw.npz (one class per category)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Local folder of <category>.ndjson (or .npy with --bitmaps) files; default: download into the cache."),
    size: int = typer.Option(48, "--size", help="Image size of the rendered drawings."),
    max_per_category: Optional[int] = typer.Option(None, "--max-per-category", help="Keep the first K drawings of each category (reading stops there)."),
    recognized_only: bool = typer.Option(False, "--recognized-only", help="Keep only drawings the game recognized."),
    on_error: str = typer.Option("skip", "--on-error", help="Malformed ndjson line: skip (count and warn) or stop (error naming file and line)."),
    bitmaps: bool = typer.Option(False, "--bitmaps", help="Use the official 28x28 numpy_bitmap renderings instead of rendering the strokes."),
    critic: Optional[str] = typer.Option(None, "--critic", help="Critic (name or path) whose features choose the exemplars (Eq. 1); default: blurred pixels."),
    as_samples: bool = typer.Option(False, "--as-samples", help="Write a samples file (the human reference) instead; needs the same count per category."),
) -> None:
    """Build a dataset file from Quick, Draw! categories (one class per category)."""
    from drawgap.data.exemplars import load_feature_critic
    from drawgap.data.quickdraw import load_quickdraw

    model = None if critic is None else load_feature_critic(critic)
    with _quickdraw_warnings():
        ds = load_quickdraw(
            categories, source=source, size=size, max_per_category=max_per_category, recognized_only=recognized_only,
            on_error=_on_error_option(on_error), bitmaps=bitmaps, critic=model, critic_name=critic, progress=sys.stderr.isatty(),
        )
    _write_splits({"quickdraw": ds}, out, as_samples)


@data_app.command("quickdraw-fs")
def data_quickdraw_fs(
    categories: str = typer.Option(..., "--categories", help="Comma-separated Quick, Draw! categories to split into sub-categories."),
    out: Path = typer.Option(..., "--out", help="Folder for train.npz and test.npz (or *_samples.npz with --as-samples)."),
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
) -> None:
    """Rebuild QuickDraw-FS (SPEC.md 1.2, a documented reconstruction): sub-categories by clustering."""
    from drawgap.data.exemplars import load_feature_critic
    from drawgap.data.quickdraw_fs import build_quickdraw_fs, quickdraw_fs_config

    config = quickdraw_fs_config(
        [c.strip() for c in categories.split(",") if c.strip()], image_size=size, min_cluster=min_cluster,
        clusters_per_category=clusters_per_category, selection=selection, test_fraction=test_fraction, seed=seed,
        max_per_category=max_per_category, recognized_only=recognized_only, on_error=_on_error_option(on_error), critic=critic,
    )
    model = None if critic is None else load_feature_critic(critic)
    with _quickdraw_warnings():
        splits = build_quickdraw_fs(config, source=source, critic=model, progress=sys.stderr.isatty())
    _write_splits(splits, out, as_samples)


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


def main(argv: Optional[list[str]] = None) -> None:
    exits, usage, aborts = _framework_exceptions()
    command = typer.main.get_command(app)
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
        exc.show()
        sys.exit(exc.exit_code)
    except (*aborts, KeyboardInterrupt):
        typer.echo("drawgap: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
