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


# --------------------------------------------------------------------------------------------- entry point


def main(argv: Optional[list[str]] = None) -> None:
    import click

    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="drawgap", standalone_mode=False)
    except InputError as exc:
        typer.echo(f"drawgap: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("drawgap: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
