"""The `drawgap` command line: thin Typer verbs over the Python API (DESIGN.md). No logic lives here.

Errors: an `InputError` (bad file, field or option) prints one line `drawgap: error: ...` and exits 2;
Ctrl-C exits 130 after the running step has left its last checkpoint in place.
"""

from __future__ import annotations

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
