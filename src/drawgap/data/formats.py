"""The two stable file formats of DESIGN.md: dataset files and samples files (`.npz`).

Image convention: ink is high (255 in uint8, 1.0 in float), background 0; square single-channel images.

Every reader validates what it reads and stops with an `InputError` naming the file, the field and what
was expected; every writer validates first and writes atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drawgap.data.npz_guard import check_npz_sizes
from drawgap.errors import InputError
from drawgap.io import savez_atomic

DATASET_FORMAT = "drawgap.dataset/1"
SAMPLES_FORMAT = "drawgap.samples/1"


@dataclass
class Dataset:
    """One split of a drawing dataset.

    images: uint8 [N, H, W], ink = 255; labels: int64 [N] into `classes`; classes: str [C];
    exemplars: int64 [C], index into `images` of each class's exemplar; meta: JSON-able dict.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    exemplars: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    def content_sha256(self) -> str:
        """sha256 of the drawings, labels, class names and exemplars, not of the file: the same for every
        build of the same data (the file's own hash changes with the time recorded in its meta)."""
        return content_sha256(images=self.images, labels=self.labels, classes=self.classes, exemplars=self.exemplars)

    def exemplar_images(self) -> np.ndarray:
        """[C, H, W] the exemplar drawing of each class."""
        return self.images[self.exemplars]

    def images_of(self, c: int) -> np.ndarray:
        """[n_c, H, W] every drawing of class index c, in file order."""
        return self.images[self.labels == c]

    def to_samples(self, per_class: int | None = None, exclude_exemplar: bool = False, classes: int | None = None) -> "Samples":
        """The human drawings of each class as a samples file (the human reference).

        Each row holds the drawings of one class: the exemplar included by default, as in the papers' human
        data (SPEC.md 1.1: the 20 real drawings of each class; 4.2: a human query can be the exemplar itself),
        or left out with `exclude_exemplar` (so that no drawing is scored against itself: originality 0,
        recognized by construction). `meta["exemplar_included"]` says which (`exemplar_rows`: how many rows
        hold their exemplar, fewer than all when `per_class` cuts it off). Every class must have the same
        count, or `per_class` picks the first drawings of each; `classes` keeps the first N classes only.
        """
        counts = np.bincount(self.labels, minlength=self.n_classes) - int(bool(exclude_exemplar))
        n = int(counts.min()) if per_class is None else int(per_class)
        if per_class is None and counts.max() != counts.min():
            raise InputError(
                f"expected the same number of drawings per class, found {counts.min()} to {counts.max()}; "
                "pass per_class",
                field="labels",
            )
        if n < 1 or n > counts.min():
            raise InputError(f"expected per_class in 1..{counts.min()}"
                             + (" (the exemplar excluded)" if exclude_exemplar else "") + f", got {n}", field="per_class")
        index = np.arange(len(self.labels))
        kept = self.n_classes if classes is None else min(int(classes), self.n_classes)
        rows, holding = [], 0
        for c in range(kept):
            members = index[self.labels == c]
            if exclude_exemplar:
                members = members[members != self.exemplars[c]]
            rows.append(self.images[members[:n]])
            holding += int(self.exemplars[c] in members[:n])
        meta = {
            "format": SAMPLES_FORMAT,
            "generator": "human",
            "params": {},
            # true when every row holds its exemplar; with `per_class` below the count, some rows may not
            "exemplar_included": holding == kept,
            "exemplar_rows": holding,
            "dataset": {k: self.meta.get(k) for k in ("name", "split", "source", "image_size")},
        }
        return Samples(samples=np.stack(rows), exemplars=self.exemplar_images()[:kept], classes=self.classes[:kept].copy(),
                       meta=meta)


@dataclass
class Samples:
    """Drawings made from exemplars: samples [C, S, H, W] (uint8 or float32), exemplars [C, H, W]."""

    samples: np.ndarray
    exemplars: np.ndarray
    classes: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.samples.shape[-1])

    @property
    def n_classes(self) -> int:
        return int(self.samples.shape[0])

    @property
    def per_class(self) -> int:
        return int(self.samples.shape[1])

    def content_sha256(self) -> str:
        """sha256 of the drawings, exemplars and class names (see `Dataset.content_sha256`)."""
        return content_sha256(samples=self.samples, exemplars=self.exemplars, classes=self.classes)

    def as_float(self) -> tuple[np.ndarray, np.ndarray]:
        """(samples, exemplars) as float32 in [0, 1], ink high."""
        return to_unit_float(self.samples), to_unit_float(self.exemplars)


def content_sha256(**arrays: np.ndarray) -> str:
    """sha256 over named arrays, in the order given: each name, dtype, shape and C-order bytes; string
    arrays as their UTF-8 text, one item per line, so the width numpy gives them does not count."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.kind in "US":
            data, dtype = "\n".join(map(str, array.ravel())).encode(), "str"
        else:  # little-endian bytes whatever the machine
            little = array.dtype.newbyteorder("<")
            data, dtype = np.ascontiguousarray(array, dtype=little).tobytes(), little.str
        digest.update(f"{name}:{dtype}:{array.shape};".encode())
        digest.update(data)
    return digest.hexdigest()


def to_unit_float(x: np.ndarray) -> np.ndarray:
    """uint8 (ink 255) or float (ink 1.0) to float32 in [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------- checks


def _require(arrays, name: str, path) -> np.ndarray:
    if name not in arrays:
        raise InputError("missing key", path=path, field=name)
    return arrays[name]


def _check_images(x: np.ndarray, name: str, path, ndim: int, dtypes: tuple) -> None:
    if x.dtype not in [np.dtype(d) for d in dtypes]:
        raise InputError(f"expected dtype {' or '.join(map(str, dtypes))}, got {x.dtype}", path=path, field=name)
    if x.ndim != ndim:
        dims = ["N", "H", "W"] if ndim == 3 else ["C", "S", "H", "W"]
        raise InputError(f"expected shape [{', '.join(dims)}], got {list(x.shape)}", path=path, field=name)
    if x.shape[-1] != x.shape[-2]:
        raise InputError(f"expected square images, got {x.shape[-2]}x{x.shape[-1]}", path=path, field=name)
    if x.shape[-1] < 4:
        raise InputError(f"expected images of at least 4x4 pixels, got {x.shape[-1]}", path=path, field=name)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise InputError("expected finite values, found NaN or inf", path=path, field=name)
        lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"expected float values in [0, 1], got range [{lo:.3g}, {hi:.3g}]", path=path, field=name)


def _check_classes(classes: np.ndarray, path) -> None:
    if classes.dtype.kind not in "US" or classes.ndim != 1:
        raise InputError(f"expected a 1-d array of strings, got {classes.dtype} {list(classes.shape)}", path=path, field="classes")
    names, first, counts = np.unique(classes, return_index=True, return_counts=True)
    if (counts > 1).any():  # labels index the names: a repeated name makes two classes one in every report
        dup = names[counts > 1][np.argmin(first[counts > 1])]
        where = np.flatnonzero(classes == dup).tolist()
        raise InputError(f"expected unique class names, {str(dup)!r} is at {where}", path=path, field="classes")


def check_not_empty(data: "Dataset | Samples", path=None) -> None:
    """Refuse a file that holds no class or no drawing: valid as a format, useless to every verb
    (`evaluate` needs at least 2 classes of 2 drawings; `data validate` checks this much)."""
    if isinstance(data, Samples):
        field, (c, s) = "samples", data.samples.shape[:2]
        if c == 0 or s == 0:
            raise InputError(f"expected at least one class and one sample per class, got {c} x {s}", path=path, field=field)
    else:
        c, n = len(data.classes), len(data.images)
        if c == 0 or n == 0:
            raise InputError(f"expected at least one class and one drawing, got {c} classes and {n} drawings", path=path, field="images")


def _parse_meta(raw, path, expected_format: str) -> dict:
    try:
        meta = json.loads(str(raw[()] if isinstance(raw, np.ndarray) else raw))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"expected a JSON string ({exc})", path=path, field="meta") from None
    if not isinstance(meta, dict):
        raise InputError("expected a JSON object", path=path, field="meta")
    fmt = meta.get("format")
    if fmt != expected_format:
        raise InputError(f"expected format {expected_format!r}, got {fmt!r}", path=path, field="meta.format")
    return meta


def validate_dataset(ds: Dataset, path=None) -> Dataset:
    """Check a dataset against the format; return it, or raise `InputError`."""
    _check_images(ds.images, "images", path, 3, ("uint8",))
    _check_classes(ds.classes, path)
    n, c = ds.images.shape[0], len(ds.classes)
    if ds.labels.dtype != np.int64 or ds.labels.shape != (n,):
        raise InputError(f"expected int64 [{n}], got {ds.labels.dtype} {list(ds.labels.shape)}", path=path, field="labels")
    if n and (ds.labels.min() < 0 or ds.labels.max() >= c):
        raise InputError(f"expected class indices in 0..{c - 1}, got {ds.labels.min()}..{ds.labels.max()}", path=path, field="labels")
    if ds.exemplars.dtype != np.int64 or ds.exemplars.shape != (c,):
        raise InputError(
            f"expected int64 [{c}] (one per class), got {ds.exemplars.dtype} {list(ds.exemplars.shape)}",
            path=path,
            field="exemplars",
        )
    if c and (ds.exemplars.min() < 0 or ds.exemplars.max() >= n):
        raise InputError(f"expected indices into images (0..{n - 1}), got {ds.exemplars.min()}..{ds.exemplars.max()}", path=path, field="exemplars")
    if c and not np.array_equal(ds.labels[ds.exemplars], np.arange(c)):
        bad = int(np.flatnonzero(ds.labels[ds.exemplars] != np.arange(c))[0])
        raise InputError(f"expected exemplar of class {bad} to be a drawing of that class", path=path, field="exemplars")
    return ds


def validate_samples(s: Samples, path=None) -> Samples:
    """Check a samples file against the format; return it, or raise `InputError`."""
    _check_images(s.samples, "samples", path, 4, ("uint8", "float32"))
    _check_images(s.exemplars, "exemplars", path, 3, ("uint8", "float32"))
    _check_classes(s.classes, path)
    c = s.samples.shape[0]
    if s.exemplars.shape[0] != c:
        raise InputError(f"expected {c} exemplars (one per row of samples), got {s.exemplars.shape[0]}", path=path, field="exemplars")
    if len(s.classes) != c:
        raise InputError(f"expected {c} class names (one per row of samples), got {len(s.classes)}", path=path, field="classes")
    if s.exemplars.shape[-1] != s.samples.shape[-1]:
        raise InputError(
            f"expected exemplars of the samples' size {s.samples.shape[-1]}, got {s.exemplars.shape[-1]}",
            path=path,
            field="exemplars",
        )
    if s.exemplars.dtype != s.samples.dtype:
        raise InputError(f"expected the samples' dtype {s.samples.dtype}, got {s.exemplars.dtype}", path=path, field="exemplars")
    return s


# ---------------------------------------------------------------------------------------------- read/write


def _load_npz(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path)
    check_npz_sizes(path)  # before np.load allocates what the headers claim
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise InputError(f"expected an .npz file, could not read it ({type(exc).__name__}: {exc})", path=path) from None


def _meta_array(meta: dict) -> np.ndarray:
    return np.array(json.dumps(meta, sort_keys=True))


def write_dataset(ds: Dataset, path: str | os.PathLike) -> Path:
    meta = {"format": DATASET_FORMAT, "image_size": ds.image_size, **ds.meta}
    meta["format"] = DATASET_FORMAT
    ds = Dataset(ds.images, ds.labels, np.asarray(ds.classes).astype(str), ds.exemplars, meta)
    validate_dataset(ds, path)
    savez_atomic(path, images=ds.images, labels=ds.labels, classes=ds.classes, exemplars=ds.exemplars, meta=_meta_array(meta))
    return Path(path)


def read_dataset(path: str | os.PathLike) -> Dataset:
    z = _load_npz(path)
    if "images" not in z and {"samples", "exemplars"} <= set(z):
        raise InputError("expected a dataset file, got a samples file (samples, exemplars)", path=path, field="images")
    return _dataset_of(z, path)


def _dataset_of(z: dict, path) -> Dataset:
    ds = Dataset(
        images=_require(z, "images", path),
        labels=_require(z, "labels", path),
        classes=_require(z, "classes", path),
        exemplars=_require(z, "exemplars", path),
        meta=_parse_meta(_require(z, "meta", path), path, DATASET_FORMAT),
    )
    return validate_dataset(ds, path)


def write_samples(s: Samples, path: str | os.PathLike) -> Path:
    meta = {**s.meta, "format": SAMPLES_FORMAT}
    s = Samples(s.samples, s.exemplars, np.asarray(s.classes).astype(str), meta)
    validate_samples(s, path)
    savez_atomic(path, samples=s.samples, exemplars=s.exemplars, classes=s.classes, meta=_meta_array(meta))
    return Path(path)


def read_samples(path: str | os.PathLike) -> Samples:
    z = _load_npz(path)
    if "samples" not in z and {"images", "labels"} <= set(z):
        raise InputError("expected a samples file, got a dataset file (images, labels); its human drawings as a samples "
                         "file: `drawgap data ... --as-samples` (the command that built it, with --as-samples); "
                         "a generator's: `drawgap sample RUN --exemplars THIS_FILE`", path=path, field="samples")
    return _samples_of(z, path)


def read_drawings(path: str | os.PathLike) -> Dataset | Samples:
    """A dataset file or a samples file, told apart by their keys (a samples file holds `samples`), read
    once and validated: the one reader for every option that takes either."""
    z = _load_npz(path)
    return _samples_of(z, path) if "samples" in z else _dataset_of(z, path)


def _samples_of(z: dict, path) -> Samples:
    s = Samples(
        samples=_require(z, "samples", path),
        exemplars=_require(z, "exemplars", path),
        classes=_require(z, "classes", path),
        meta=_parse_meta(_require(z, "meta", path), path, SAMPLES_FORMAT),
    )
    return validate_samples(s, path)
