"""Atomic writes: a file is written to a temporary name beside its target, flushed, then renamed, so a
reader never sees a half-written output and an interrupted run never corrupts an existing one.
A failed or interrupted write (an exception, Ctrl-C, SIGTERM through `cli.exit_on_sigterm`) removes its
temporary file; one left by a killed process is removed by the next write into that folder."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from drawgap.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure remove it.

    `suffix` keeps an extension that a writer insists on (numpy appends `.npz` otherwise).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    suffix = target.suffix if suffix is None else suffix
    # the writer's pid in the name tells a later run whether the file is still being written
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; give the output the permissions a plain open() would (0666 minus umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


# .NAME.PID.XXXXXXXX.tmp[SUFFIX]: what atomic_path names its temporary files (mkstemp's 8 random characters)
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]{8}\.tmp")
_swept: set[Path] = set()


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that `atomic_path` left in `folder` in runs that were killed (SIGKILL,
    power loss): those named by it whose process no longer exists. Files of a live process, and any
    other file, are left alone. Returns the paths removed."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            m = _TEMP_NAME.match(entry.name)
            if m and entry.is_file() and not entry.is_symlink() and not pid_alive(int(m.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def _sweep_once(folder: Path) -> None:
    """remove_stale_temp_files, once per folder and process: a writer of many files lists its folder once."""
    key = folder.resolve()
    if key not in _swept:
        _swept.add(key)
        remove_stale_temp_files(key)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def check_writable(path: str | os.PathLike, *, folder: bool = False, field: str = "--out") -> Path:
    """InputError now, before any work, when `path` (a file, or with `folder` a folder) could not be written:
    the slow part of a verb (sampling, evaluation, training) must not run only to fail at its last line.
    Creates nothing: a nameless temporary file (O_TMPFILE where the system has it) probes the nearest
    folder that exists."""
    target = Path(path)
    if target.is_dir() and not folder:
        raise InputError("expected a file name, found a folder", path=target, field=field)
    if target.exists() and folder and not target.is_dir():
        raise InputError("expected a folder, found a file", path=target, field=field)
    existing = target if folder else target.parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot be created: {existing} is not a folder", path=target, field=field)
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".drawgap-write-check."):
            pass
    except OSError as exc:
        raise InputError(f"cannot write in {existing} ({exc.strerror or exc})", path=target, field=field) from None
    return target


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def savez_atomic(path: str | os.PathLike, compressed: bool = True, **arrays) -> None:
    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            save(fh, **arrays)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
