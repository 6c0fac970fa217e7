"""Downloads with a checksum, a cache and a manifest (DESIGN.md: "every download has a checksum, a cache,
and an offline path").

A file is streamed to a temporary name beside its destination while its size and digests are computed,
checked against what the caller expects, then renamed into place: an interrupted or corrupt download
never leaves a file that looks complete. Each directory that receives downloads keeps `manifest.json`
(file name -> URL, size, md5, sha256, time), which also lets a later call skip re-hashing a large file
that has not changed since it was verified.

Any URL that `urllib` opens works, `file://` included (tests use it; no network is needed for them).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from drawgap.errors import InputError
from drawgap.io import atomic_path, write_json_atomic

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class ChecksumWarning(UserWarning):
    """A local copy of a known file has a different size or digest than the official one."""


def cache_dir() -> Path:
    """Where downloads are kept: `$DRAWGAP_CACHE`, else `~/.cache/drawgap` (created if missing)."""
    root = Path(os.environ.get("DRAWGAP_CACHE") or Path.home() / ".cache" / "drawgap").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_digests(path: str | os.PathLike) -> dict:
    """{"size", "md5", "sha256"} of a file, read in chunks."""
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return {"size": size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def mismatches(found: dict, *, size: int | None = None, md5: str | None = None, sha256: str | None = None) -> list[str]:
    """What differs between `found` digests and the expected ones (only those given), as readable lines."""
    expected = {"size": size, "md5": md5 and md5.lower(), "sha256": sha256 and sha256.lower()}
    return [
        f"{key} {found[key]} (expected {want})"
        for key, want in expected.items()
        if want is not None and found[key] != want
    ]


def verify_file(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    strict: bool = True,
) -> bool:
    """Check a file's size and digests. Strict: raise `InputError` on a mismatch; else warn, return False."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    if size is None and md5 is None and sha256 is None:
        return True
    if size is not None and path.stat().st_size != size and strict:
        # cheap early exit before hashing a large wrong file
        raise InputError(f"size {path.stat().st_size} (expected {size})", path=path)
    wrong = mismatches(file_digests(path), size=size, md5=md5, sha256=sha256)
    if not wrong:
        return True
    if strict:
        raise InputError("; ".join(wrong), path=path)
    warnings.warn(f"{path}: {'; '.join(wrong)}; continuing with this copy", ChecksumWarning, stacklevel=2)
    return False


# ---------------------------------------------------------------------------------------------- manifest


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a download directory ({} when there is none or it is unreadable)."""
    try:
        return json.loads((Path(directory) / MANIFEST_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _record(dest: Path, url: str, digests: dict) -> None:
    manifest = read_manifest(dest.parent)
    stat = dest.stat()
    manifest[dest.name] = {
        "url": url,
        **digests,
        "mtime_ns": stat.st_mtime_ns,
        "downloaded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(dest.parent / MANIFEST_NAME, manifest)


def _cached(dest: Path, size, md5, sha256) -> bool:
    """True when `dest` exists and matches: trusted from the manifest if unchanged since, else re-hashed."""
    if not dest.is_file():
        return False
    entry = read_manifest(dest.parent).get(dest.name)
    stat = dest.stat()
    if entry and entry.get("mtime_ns") == stat.st_mtime_ns and entry.get("size") == stat.st_size:
        if not mismatches(entry, size=size, md5=md5, sha256=sha256):
            return True
    if size is not None and stat.st_size != size:
        return False
    return not mismatches(file_digests(dest), size=size, md5=md5, sha256=sha256)


# ---------------------------------------------------------------------------------------------- download


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` unless a verified copy is already there; return `dest`.

    The bytes stream to a temporary file beside `dest` while size, MD5 and SHA-256 are computed; any
    expected value given that does not match raises `InputError` (naming the URL) and leaves nothing
    behind. On success the file is renamed into place and recorded in the directory's manifest.
    """
    dest = Path(dest)
    if _cached(dest, size, md5, sha256):
        return dest
    md5_h, sha_h, got = hashlib.md5(), hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url) as response, atomic_path(dest) as tmp:
            total = size or _content_length(response)
            with open(tmp, "wb") as out, _progress_bar(total, dest.name, progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    md5_h.update(chunk)
                    sha_h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            digests = {"size": got, "md5": md5_h.hexdigest(), "sha256": sha_h.hexdigest()}
            wrong = mismatches(digests, size=size, md5=md5, sha256=sha256)
            if wrong:
                raise InputError(f"downloaded file does not match: {'; '.join(wrong)}", path=url)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(f"could not download to {dest} ({reason})", path=url) from None
    _record(dest, url, digests)
    return dest


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    return int(value) if value and value.isdigit() else None


def _progress_bar(total: int | None, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="B", unit_scale=True, disable=not enabled, file=sys.stderr, leave=False)
