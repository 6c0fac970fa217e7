"""Refuse an .npz file whose arrays could not fit in memory, before numpy allocates them.

`np.load` trusts each member's .npy header: it allocates the array the header describes, then fills it.
A header that claims 215 GiB in a file of a few bytes (MemoryError), or a zip bomb (a member whose zeros
really do inflate to more than the machine holds), would exhaust memory. Each member's header is read
here from the zip stream (a few hundred bytes): the size it claims must be the size the member holds,
and all members together must fit in the memory available.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from drawgap.errors import InputError

GiB = 1 << 30


def memory_available() -> int:
    """Bytes of memory a new allocation can use: MemAvailable on Linux, else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_npz_sizes(path: str | os.PathLike, limit: int | None = None) -> None:
    """InputError naming the member when a header lies about its size or the arrays exceed `limit` bytes
    (default: `memory_available()`). Files that are not zip archives are left to np.load to report."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return
    limit = memory_available() if limit is None else limit
    total = 0
    with archive:
        for info in archive.infolist():
            field = info.filename.removesuffix(".npy")
            claimed = _claimed_bytes(archive, info, path, field)
            total += info.file_size if claimed is None else claimed
            if total > limit:
                raise InputError(f"expected arrays that fit in memory: {_gib(total)} GiB up to this member, "
                                 f"{_gib(limit)} GiB available", path=path, field=field)


def _claimed_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, field: str) -> int | None:
    """Bytes of the array the member's .npy header describes (None: not an .npy member)."""
    try:
        with archive.open(info) as fh:
            if fh.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                return None
            fh.seek(0)
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(fh, max_header_size=1 << 16)
            header_bytes = fh.tell()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise InputError(f"expected an .npy array, could not read its header ({type(exc).__name__}: {exc})",
                         path=path, field=field) from None
    claimed = math.prod(shape) * dtype.itemsize
    held = info.file_size - header_bytes
    if claimed != held and not dtype.hasobject:  # object arrays are pickles: np.load refuses them anyway
        raise InputError(f"expected the {held} bytes the member holds, its header claims shape {tuple(shape)} of "
                         f"{dtype} ({_gib(claimed)} GiB)", path=path, field=field)
    return claimed


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"
