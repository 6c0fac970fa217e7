"""The importance-maps file (`.npz`): one set of maps from one source (a critic attribution method, a
diffusion map, or human clicks), one map per image.

Arrays:
- `maps` float32 [N, H, W]: importance, finite and >= 0 (every producer stores a magnitude).
- `image_ids` str [N]: what each map is about (a dataset index, an exemplar's class name, a ClickMe image id).
- `categories` str [N]: the category (class) of each image; comparisons pair maps by category.
- `images` float32 [N, h, w] in [0, 1], optional: the drawing each map is about (the exemplar for diffusion
  maps, the query drawing for critic maps, the clicked drawing for human maps), for figures and ink masks.
- `ceiling`, `ceiling_std` float32 [N], optional: split-half reliability of human maps (NaN where unknown).
- `meta` str, JSON: `{"format": "drawgap.importance_maps/1", "method", "options", "seed", "provenance", ...}`.

`read_maps` validates and raises `InputError` naming the file and the field; `write_maps` validates first
and writes atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drawgap.errors import InputError
from drawgap.io import savez_atomic

MAPS_FORMAT = "drawgap.importance_maps/1"
_OPTIONAL = ("images", "ceiling", "ceiling_std")


@dataclass
class ImportanceMaps:
    """Maps [N, H, W] with the ids and categories of their images; see the module docstring."""

    maps: np.ndarray
    image_ids: np.ndarray
    categories: np.ndarray
    meta: dict = field(default_factory=dict)
    images: np.ndarray | None = None
    ceiling: np.ndarray | None = None
    ceiling_std: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.maps.shape[-1])

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "unknown"))

    def subset(self, index) -> "ImportanceMaps":
        """The maps at `index` (an int array or boolean mask), with their ids, categories and images."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return ImportanceMaps(self.maps[index], self.image_ids[index], self.categories[index], dict(self.meta),
                              pick(self.images), pick(self.ceiling), pick(self.ceiling_std))


def make_meta(method: str, options: dict, seed: int | None, **extra) -> dict:
    """The meta every producer writes: format, method, options, seed and provenance (versions, command)."""
    from drawgap.provenance import provenance

    return {"format": MAPS_FORMAT, "method": method, "options": options, "seed": seed,
            "provenance": provenance({"method": method, **options}, seed), **extra}


def validate_maps(m: ImportanceMaps, path=None) -> ImportanceMaps:
    """Check maps against the format; return them, or raise `InputError`."""
    x = m.maps
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 3:
        raise InputError(f"expected float32 [N, H, W], got {getattr(x, 'dtype', type(x))} {list(np.shape(x))}", path=path, field="maps")
    n = x.shape[0]
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise InputError(f"expected maps of at least 2x2 pixels, got {x.shape[1]}x{x.shape[2]}", path=path, field="maps")
    if not np.isfinite(x).all():
        raise InputError("expected finite values, found NaN or inf", path=path, field="maps")
    if n and x.min() < 0:
        raise InputError(f"expected importance >= 0 (a magnitude), got minimum {x.min():.3g}", path=path, field="maps")
    for name in ("image_ids", "categories"):
        a = getattr(m, name)
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "US" or a.shape != (n,):
            raise InputError(f"expected str [{n}] (one per map), got {getattr(a, 'dtype', type(a))} {list(np.shape(a))}",
                             path=path, field=name)
    if m.images is not None:
        im = m.images
        if im.dtype != np.float32 or im.ndim != 3 or im.shape[0] != n:
            raise InputError(f"expected float32 [{n}, h, w], got {im.dtype} {list(im.shape)}", path=path, field="images")
        if n and (not np.isfinite(im).all() or im.min() < -1e-3 or im.max() > 1 + 1e-3):
            raise InputError("expected values in [0, 1]", path=path, field="images")
    for name in ("ceiling", "ceiling_std"):
        a = getattr(m, name)
        if a is not None and (a.dtype != np.float32 or a.shape != (n,)):
            raise InputError(f"expected float32 [{n}], got {a.dtype} {list(a.shape)}", path=path, field=name)
    if m.meta.get("format") != MAPS_FORMAT:
        raise InputError(f"expected format {MAPS_FORMAT!r}, got {m.meta.get('format')!r}", path=path, field="meta.format")
    if not isinstance(m.meta.get("method"), str):
        raise InputError("expected a method name (str)", path=path, field="meta.method")
    return m


def write_maps(m: ImportanceMaps, path: str | os.PathLike) -> Path:
    """Validate and write atomically; `meta.format` is set to the current format."""
    m = ImportanceMaps(m.maps, np.asarray(m.image_ids).astype(str), np.asarray(m.categories).astype(str),
                       {**m.meta, "format": MAPS_FORMAT}, m.images, m.ceiling, m.ceiling_std)
    validate_maps(m, path)
    arrays = {"maps": m.maps, "image_ids": m.image_ids, "categories": m.categories,
              "meta": np.array(json.dumps(m.meta, default=_json_default))}
    arrays.update({k: getattr(m, k) for k in _OPTIONAL if getattr(m, k) is not None})
    savez_atomic(path, **arrays)
    return Path(path)


def read_maps(path: str | os.PathLike) -> ImportanceMaps:
    from drawgap.data.formats import _load_npz

    z = _load_npz(path)
    for key in ("maps", "image_ids", "categories", "meta"):
        if key not in z:
            raise InputError("missing key", path=path, field=key)
    try:
        meta = json.loads(str(z["meta"][()]))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"expected a JSON string ({exc})", path=path, field="meta") from None
    if not isinstance(meta, dict):
        raise InputError("expected a JSON object", path=path, field="meta")
    m = ImportanceMaps(z["maps"], z["image_ids"], z["categories"], meta, *(z.get(k) for k in _OPTIONAL))
    return validate_maps(m, path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple)):
        return list(np.asarray(obj).tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
