"""Omniglot (Lake et al. 2015) as dataset files: SPEC.md 1.1.

Source: the two official archives, `images_background.zip` (964 characters, 30 alphabets) and
`images_evaluation.zip` (659 characters, 20 alphabets), laid out as
`images_<subset>/<alphabet>/characterNN/<id>_<drawer>.png`, black ink on white 105x105 1-bit PNG.
They are downloaded (size + MD5 checked) into the cache, or read from a local source: a directory holding
the zips or the extracted `images_<subset>/` folders, or the zip paths themselves. PNGs are read straight
out of the zip, in sorted path order (never filesystem order, which made the authors' exemplar flags
unportable).

Per image (SPEC.md 1.1): bilinear antialiased resize to `size`, per-image scale to [0, 1], invert so ink
is high, binarize at `threshold`; stored as uint8 with ink 255.

Splits:
  * "weak" (Rezende et al. 2016): character01-03 of every alphabet of both subsets are `test`
    (150 classes), every other character is `train` (1,473 classes);
  * "background" / "evaluation": the official subsets; "official" gives both.
Class names are `Alphabet/characterNN`, sorted; class ids are positions in that order. Drawings of a class
are in sorted file order. Each class's exemplar is chosen by Eq. 1 (`drawgap.data.exemplars`).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import re
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from drawgap.data.download import cache_dir, download_file, verify_file
from drawgap.data.exemplars import PIXEL_BLUR_SIGMA, with_exemplars
from drawgap.data.formats import Dataset
from drawgap.data.transforms import binarize, resize, scale_0_1
from drawgap.errors import InputError
from drawgap.provenance import provenance


@dataclass(frozen=True)
class OfficialArchive:
    url: str
    size: int
    md5: str


SUBSETS = ("background", "evaluation")
OFFICIAL = {
    "background": OfficialArchive(
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip",
        9_464_212,
        "68d2efa1b9178cc56df9314c21c6e718",
    ),
    "evaluation": OfficialArchive(
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_evaluation.zip",
        6_462_886,
        "6b91aef0f799c5bb55b94e3f2daec811",
    ),
}
# which subsets each split needs
SPLITS = {"weak": SUBSETS, "official": SUBSETS, "background": ("background",), "evaluation": ("evaluation",)}
WEAK_TEST_CHARACTERS = ("character01", "character02", "character03")
LICENSE = "MIT (Omniglot, Lake, Salakhutdinov & Tenenbaum 2015, Science 350:1332)"

_MEMBER = re.compile(r"^images_(background|evaluation)/([^/]+)/(character\d+)/([^/]+\.png)$")
_CHUNK = 512


@dataclass(frozen=True)
class Drawing:
    """One PNG of the archive: where it is and which class it belongs to."""

    subset: str
    alphabet: str
    character: str
    member: str  # path inside the archive / below the source folder, e.g. images_background/A/character01/x.png

    @property
    def class_name(self) -> str:
        return f"{self.alphabet}/{self.character}"


# ------------------------------------------------------------------------------------------------ sources


class _Archive:
    """Reads PNG members of one subset from a zip file or an extracted folder."""

    def __init__(self, subset: str, location: Path):
        self.subset, self.location = subset, location
        self._zip = None
        if location.is_file():
            try:
                self._zip = zipfile.ZipFile(location)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"expected a zip archive, could not open it ({exc})", path=location) from None

    def drawings(self) -> list[Drawing]:
        if self._zip is not None:
            names = self._zip.namelist()
        else:
            names = [p.relative_to(self.location.parent).as_posix() for p in self.location.rglob("*.png")]
        found = []
        for name in sorted(names):
            m = _MEMBER.match(name)
            if m and m.group(1) == self.subset:
                found.append(Drawing(self.subset, m.group(2), m.group(3), name))
        if not found:
            raise InputError(f"expected images_{self.subset}/<alphabet>/characterNN/*.png, found none", path=self.location)
        return found

    def read(self, member: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(member)
            return (self.location.parent / member).read_bytes()
        except (zipfile.BadZipFile, OSError, KeyError, EOFError) as exc:
            raise InputError(f"member {member}: could not read it ({exc})", path=self.location) from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _subset_of_zip(path: Path) -> str:
    """Which subset a zip holds, by its members (a renamed file is still recognised)."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                m = _MEMBER.match(name)
                if m:
                    return m.group(1)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"expected a zip archive, could not open it ({exc})", path=path) from None
    raise InputError("expected a zip of images_background/ or images_evaluation/ PNGs, found none", path=path)


def locate_sources(sources: Iterable[str | os.PathLike], subsets: Iterable[str]) -> dict[str, Path]:
    """Map each needed subset to a local zip or extracted `images_<subset>` folder among `sources`.

    Each source is a zip file, or a directory holding `images_<subset>.zip` or `images_<subset>/`.
    """
    found: dict[str, Path] = {}
    for src in map(Path, sources):
        if src.is_dir():
            for subset in SUBSETS:
                for candidate in (src / f"images_{subset}.zip", src / f"images_{subset}"):
                    if candidate.exists() and subset not in found:
                        found[subset] = candidate
        elif src.is_file():
            found.setdefault(_subset_of_zip(src), src)
        else:
            raise InputError("no such file or directory", path=src, field="--source")
    for subset in subsets:
        if subset not in found:
            where = ", ".join(str(s) for s in sources)
            raise InputError(f"missing images_{subset}.zip (or an images_{subset}/ folder)", path=where, field="--source")
    return {s: found[s] for s in subsets}


def fetch_official(subsets: Iterable[str], progress: bool = True) -> dict[str, Path]:
    """Download the official archives into `<cache>/omniglot/` (size + MD5 checked), or reuse them."""
    root = cache_dir() / "omniglot"
    return {
        s: download_file(OFFICIAL[s].url, root / f"images_{s}.zip", size=OFFICIAL[s].size, md5=OFFICIAL[s].md5, progress=progress)
        for s in subsets
    }


# ------------------------------------------------------------------------------------------ preprocessing


def preprocess(white_background: torch.Tensor, size: int, threshold: float = 0.5) -> torch.Tensor:
    """SPEC.md 1.1 on float [N,1,H,W] images with ink 0 on white 1 -> {0,1} float [N,1,size,size], ink 1.

    Resize (bilinear, antialiased), per-image scale to [0,1], invert, binarize (> threshold). The resized
    page is rounded to 1/255 steps, as the papers' PIL resize of a uint8 image was; this also removes the
    float residue (~1e-7) that the resize leaves on a uniform page, which the scaling would blow up. Scaling
    the inverted page equals the papers' scale-then-invert-then-divide-by-max for every page with ink, and
    keeps a blank page blank (theirs would turn it all ink).
    """
    resized = torch.round(resize(white_background, size) * 255.0) / 255.0
    return binarize(scale_0_1(1.0 - resized), threshold)


def _decode(archive: _Archive, member: str) -> np.ndarray:
    data = archive.read(member)
    try:
        with Image.open(io.BytesIO(data)) as img:
            # the official PNGs are 1-bit: read them as 0/1 directly, anything else through grey levels
            return np.asarray(img, np.uint8) * np.uint8(255) if img.mode == "1" else np.asarray(img.convert("L"))
    except Exception as exc:  # PIL raises many types on bad data (OSError, SyntaxError, ValueError, zlib.error)
        raise InputError(f"member {member}: not a readable PNG ({type(exc).__name__}: {exc})", path=archive.location) from None


def _load_chunk(archive: _Archive, members: list[str], size: int, threshold: float) -> np.ndarray:
    """Decode and preprocess some members -> uint8 [n, size, size], ink 255."""
    pages = [_decode(archive, m) for m in members]  # uint8, white 255
    out = np.empty((len(pages), size, size), np.uint8)
    # batch the resize over images of the same shape (all of them, for the official data)
    for shape in {p.shape for p in pages}:
        idx = [i for i, p in enumerate(pages) if p.shape == shape]
        x = torch.from_numpy(np.stack([pages[i] for i in idx]))[:, None].float() / 255.0
        out[idx] = preprocess(x, size, threshold)[:, 0].to(torch.uint8).numpy() * np.uint8(255)
    return out


_OPEN: dict[tuple[str, str], _Archive] = {}  # archives opened by this process (one set per worker)
_OPEN_PID = [os.getpid()]


def _archive(subset: str, location: str) -> _Archive:
    if _OPEN_PID[0] != os.getpid():  # a forked worker: never share the parent's file offsets
        _OPEN.clear()
        _OPEN_PID[0] = os.getpid()
    key = (subset, location)
    if key not in _OPEN:
        _OPEN[key] = _Archive(subset, Path(location))
    return _OPEN[key]


def _work(task: tuple) -> tuple[np.ndarray | None, tuple | None]:
    """One chunk -> (images, None), or (None, the InputError's parts) to re-raise in the parent."""
    subset, location, members, size, threshold = task
    try:
        return _load_chunk(_archive(subset, location), members, size, threshold), None
    except InputError as exc:
        return None, (exc.detail, exc.path, exc.field)


def _init_worker() -> None:
    torch.set_num_threads(1)  # the parallelism is the worker processes themselves


def load_images(
    locations: dict[str, Path],
    drawings: list[Drawing],
    size: int,
    threshold: float,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """All drawings, decoded and preprocessed -> uint8 [N, size, size], in the order given.

    Chunks of PNGs go to `workers` forked processes: decoding ~32k small PNGs is bound by Python-level
    work in PIL that holds the GIL, so threads would not use a second core. Forking (as torch's
    DataLoader does) shares the imported modules, so a worker starts in milliseconds. Where fork is not
    available, or with workers=1, the chunks run in this process.
    """
    tasks, starts = [], []
    for i in range(0, len(drawings), _CHUNK):
        chunk = drawings[i : i + _CHUNK]
        for subset in dict.fromkeys(d.subset for d in chunk):  # a chunk may straddle two archives
            idx = [i + j for j, d in enumerate(chunk) if d.subset == subset]
            tasks.append((subset, str(locations[subset]), [drawings[k].member for k in idx], size, threshold))
            starts.append(idx)
    out = np.empty((len(drawings), size, size), np.uint8)

    pool, threads_before = None, torch.get_num_threads()
    if workers > 1 and len(tasks) > 1 and "fork" in mp.get_all_start_methods():
        pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("fork"), initializer=_init_worker)
    else:
        torch.set_num_threads(1)  # small batches: one thread is faster than a contended pool
    try:
        results = pool.map(_work, tasks) if pool else map(_work, tasks)
        for idx, (images, error) in zip(starts, results):
            if error is not None:
                detail, path, field = error
                raise InputError(detail, path=path, field=field)
            out[idx] = images
            if progress:
                progress(len(idx))
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads_before)
        for a in _OPEN.values():
            a.close()
        _OPEN.clear()
    return out


# ----------------------------------------------------------------------------------------------- building


def split_drawings(drawings: list[Drawing], split: str) -> dict[str, list[Drawing]]:
    """The named output splits of `split` and their drawings (weak -> train/test; official subsets by name)."""
    if split == "weak":
        return {
            "train": [d for d in drawings if d.character not in WEAK_TEST_CHARACTERS],
            "test": [d for d in drawings if d.character in WEAK_TEST_CHARACTERS],
        }
    return {s: [d for d in drawings if d.subset == s] for s in SPLITS[split]}


def _check_options(split: str, size: int, threshold: float) -> None:
    if split not in SPLITS:
        raise InputError(f"expected one of {', '.join(SPLITS)}, got {split!r}", field="--split")
    if not 4 <= size <= 1024:
        raise InputError(f"expected an image size in 4..1024, got {size}", field="--size")
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"expected a threshold in [0, 1), got {threshold}", field="--threshold")


def build_omniglot(
    source: Iterable[str | os.PathLike] | None = None,
    *,
    split: str = "weak",
    size: int = 50,
    threshold: float = 0.5,
    verify: bool = True,
    critic=None,
    critic_name: str | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Dataset]:
    """Omniglot as {split name: Dataset}, images uint8 [N, size, size] with ink 255 and Eq. 1 exemplars.

    `source`: local zips / directories (None downloads the official archives into the cache). A local
    zip whose size or MD5 differs from the official one only warns (`ChecksumWarning`) when `verify`.
    `critic`: an object with `.features(images)` for Eq. 1; None uses blurred pixels (see exemplars.py).
    Raises `InputError` naming the file (and member) for a missing, corrupt or unreadable input.
    """
    _check_options(split, size, threshold)
    subsets = SPLITS[split]
    if source is None:
        locations, origin = fetch_official(subsets, progress), {s: OFFICIAL[s].url for s in subsets}
    else:
        source = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        locations = locate_sources(source, subsets)
        origin = {s: str(p) for s, p in locations.items()}
        if verify:
            for s, p in locations.items():
                if p.is_file():
                    verify_file(p, size=OFFICIAL[s].size, md5=OFFICIAL[s].md5, strict=False)

    archives = {s: _Archive(s, p) for s, p in locations.items()}
    try:
        drawings = [d for s in subsets for d in archives[s].drawings()]
        parts = split_drawings(drawings, split)
        for name, members in parts.items():
            if not members:
                raise InputError(f"split {name!r} has no drawings", path=", ".join(origin.values()))
        # decode every drawing once; the splits below pick their rows out of the result
        images = _with_progress(lambda tick: load_images(locations, drawings, size, threshold, workers, tick), len(drawings), progress)
    finally:
        for a in archives.values():
            a.close()

    row = {d.member: i for i, d in enumerate(drawings)}
    config = {"split": split, "image_size": size, "threshold": threshold, "source": origin, "critic": critic_name}
    out = {}
    for name, part in parts.items():
        classes = sorted({d.class_name for d in part})
        class_id = {c: k for k, c in enumerate(classes)}
        part = sorted(part, key=lambda d: class_id[d.class_name])  # stable: sorted paths within a class
        meta = {
            "name": "omniglot",
            "split": name,
            "split_rule": split,
            "source": origin,
            "license": LICENSE,
            "image_size": size,
            "threshold": threshold,
            "preprocessing": "resize(bilinear, antialias, rounded to 1/255) -> scale_0_1 -> invert -> binarize(> threshold); ink 255",
            "provenance": provenance(config, seed=None),
        }
        ds = Dataset(
            images=images[[row[d.member] for d in part]],
            labels=np.array([class_id[d.class_name] for d in part], np.int64),
            classes=np.array(classes),
            exemplars=np.zeros(len(classes), np.int64),
            meta=meta,
        )
        out[name] = with_exemplars(ds, critic, critic_name=critic_name, sigma=PIXEL_BLUR_SIGMA)
    return out


def _with_progress(run: Callable, total: int, enabled: bool):
    from tqdm import tqdm

    with tqdm(total=total, desc="omniglot", unit="png", disable=not enabled, file=sys.stderr, leave=False) as bar:
        return run(bar.update)
