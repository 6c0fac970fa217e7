"""Exception types. Every user-facing failure is an `InputError` naming the file, the field and what
was expected; the CLI prints it on one line and exits with code 2."""

from __future__ import annotations

import os


class DrawgapError(Exception):
    """Base class of drawgap's own errors."""


class InputError(DrawgapError, ValueError):
    """Bad input: a file, a field of it, or an option, with what was expected.

    >>> str(InputError("expected uint8", path="a.npz", field="images"))
    'a.npz: images: expected uint8'
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, field: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.detail = message
        parts = [p for p in (self.path, field) if p]
        super().__init__(": ".join([*parts, message]))
