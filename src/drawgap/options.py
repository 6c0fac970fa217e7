"""Declared options: dataclass fields that carry their own help, and the command-line options built from them.

A generator family declares its `drawgap train` options as a dataclass whose fields are made with `option`
(default, help, flag); the training loop declares its shared ones the same way (`TrainOptions`). The CLI
builds `drawgap train FAMILY`'s options from these declarations (`typer_parameters`), so that a family's
options live in its file alone. `cli_command` writes a command line from the CLI's own option definitions
(the demo's recorded commands), so that a renamed flag cannot leave a stale command behind.

Every generated option defaults to None, "not given": the declared default applies, and a resumed run
keeps the value it was started with (see `models.training.run_training`).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Optional


def option(default: Any, help: str = "", *, flag: str | None = None, model: bool = False) -> Any:
    """A dataclass field with its command-line help.

    help: "" keeps the field off the command line (internal settings); flag: the option's name when it is
    not `--field-name`; model: the option shapes the network (recorded in generator.json through the
    family's config, not a training setting recorded in train.json).
    """
    metadata = {"help": help, "flag": flag, "model": model}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def cli_fields(options_class) -> list[dataclasses.Field]:
    """The fields of a declared-options dataclass that are on the command line (those with help)."""
    return [f for f in dataclasses.fields(options_class) if f.metadata.get("help")]


def model_fields(options_class) -> set[str]:
    return {f.name for f in dataclasses.fields(options_class) if f.metadata.get("model")}


def _base_type(field: dataclasses.Field, hints: dict) -> type:
    """int for `int`, `int | None` or `Optional[int]`."""
    hint = hints[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def typer_parameters(options_class) -> list[inspect.Parameter]:
    """Keyword parameters whose defaults are `typer.Option`s, one per command-line field (for a generated
    command's `__signature__`); help ends with the declared default (not in brackets, which rich markup eats)."""
    import typer

    hints = typing.get_type_hints(options_class)
    params = []
    for f in cli_fields(options_class):
        kind = _base_type(f, hints)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = flag_of(f)
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        shown = "" if default is None else f" (default: {'on' if default is True else 'off' if default is False else default})"
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
            default=typer.Option(None, *decls, help=f.metadata["help"] + shown),
        ))
    return params


def given(options_class, values: dict) -> dict:
    """The values of `values` that belong to `options_class` and were given (not None)."""
    names = {f.name for f in dataclasses.fields(options_class)}
    return {k: v for k, v in values.items() if k in names and v is not None}


def cli_command(words: list[str], *arguments, **options) -> str:
    """The command line `drawgap WORDS ARGUMENTS --flag value ...`, each flag looked up by its parameter
    name in the CLI's own command (`drawgap.cli`), so that a renamed option fails here instead of in a
    reader's shell. None values are left out, lists repeat the flag, booleans are `--flag` / `--no-flag`,
    floats are written with format "g", and every value is quoted for a POSIX shell.
    """
    import shlex

    import typer

    from drawgap.cli import app

    command = typer.main.get_command(app)
    for word in words:
        command = command.get_command(None, word)
        if command is None:
            raise ValueError(f"`drawgap {' '.join(words)}`: no such command")
    params = {p.name: p for p in command.params}
    quote = lambda v: shlex.quote(format(v, "g") if isinstance(v, float) else str(v))  # noqa: E731
    parts = ["drawgap", *words, *map(quote, arguments)]
    for name, value in options.items():
        if value is None:
            continue
        if name not in params or not params[name].opts[0].startswith("-"):
            raise ValueError(f"`drawgap {' '.join(words)}` has no option for {name!r}")
        param = params[name]
        if isinstance(value, bool) and param.secondary_opts:
            parts.append(param.opts[0] if value else param.secondary_opts[0])
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [param.opts[0], quote(v)]
    return " ".join(parts)
