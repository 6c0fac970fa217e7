"""What made a file: package versions, time, command line. Recorded in every output's meta."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata

_PACKAGES = ("drawgap", "torch", "numpy", "pillow", "kornia", "scipy", "diffusers", "accelerate", "captum")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape drawgap's numbers (those installed)."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance(config: dict | None = None, seed: int | None = None) -> dict:
    """A record to store in an output file's meta: config, seed, versions, time and command."""
    return {
        "config": config or {},
        "seed": seed,
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
    }
