"""Google's Quick, Draw! data (Jongejan et al. 2016, CC BY 4.0): download, streaming parser, rasterizer.

Three parts, top to bottom:

1. **Files.** One file per category in the official bucket, `full/simplified/<category>.ndjson` (strokes)
   and `full/numpy_bitmap/<category>.npy` (28x28 renderings). `fetch_category` downloads into the cache
   (`drawgap.data.download`: the size and SHA-256 of each file are recorded in the directory's manifest
   on download and checked on later use), or takes the file from a local folder (`source=`, offline).
2. **Parsing.** `NdjsonDrawings` streams an ndjson file line by line (memory bounded whatever the file
   size), keeps only recognized drawings if asked, stops after `limit` drawings, and reports malformed
   lines by number: skipped with a count and a warning, or an `InputError` naming file and line.
3. **Rasterizing.** `rasterize_strokes` renders a simplified drawing at any size with the recipe of the
   official `numpy_bitmap` files (see its docstring); `load_quickdraw` builds a dataset, one class per
   category.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import multiprocessing as mp
import os
import urllib.parse
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from drawgap.errors import InputError

BUCKET_URL = "https://storage.googleapis.com/quickdraw_dataset/full"
LICENSE = "CC BY 4.0 (Google, Quick, Draw! dataset)"
CITATION = "Jongejan, Rowley, Kawashima, Kim, Fox-Gieg (2016), The Quick, Draw! A.I. Experiment"

# The two kinds of file this module reads: bucket folder, extension, and the name a browser download
# from the bucket's web console gives (slashes become underscores), also accepted in a --source folder.
KINDS = {
    "simplified": ("simplified", ".ndjson", "full_simplified_"),
    "numpy_bitmap": ("numpy_bitmap", ".npy", "full_numpy_bitmap_"),
}

BOX = 256.0  # simplified drawings live in a 256 box (coordinates 0..255)
BITMAP_SIZE = 28  # side of the official numpy_bitmap renderings


# ================================================================================================ files


def quickdraw_url(category: str, kind: str = "simplified", base_url: str = BUCKET_URL) -> str:
    """URL of one category's file in the official bucket (spaces encoded as %20)."""
    folder, ext, _ = _kind(kind)
    return f"{base_url.rstrip('/')}/{folder}/{urllib.parse.quote(category)}{ext}"


def fetch_category(
    category: str,
    kind: str = "simplified",
    *,
    source: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    base_url: str = BUCKET_URL,
    progress: bool = True,
) -> Path:
    """Path of one category's file: from the local folder `source` (offline), else downloaded and cached.

    A `source` folder may hold `<category>.ndjson` or `full_simplified_<category>.ndjson` (and the same
    for `.npy` with `full_numpy_bitmap_`). Downloads go to `<cache>/quickdraw/<kind>/`, by default under
    `drawgap.data.download.cache_dir()`; a verified copy there is reused.
    """
    folder, ext, console_prefix = _kind(kind)
    if source is not None:
        source = Path(source)
        if not source.is_dir():
            raise InputError("expected a folder of Quick, Draw! files", path=source)
        for name in (f"{category}{ext}", f"{console_prefix}{category}{ext}", f"{urllib.parse.quote(category)}{ext}"):
            if (source / name).is_file():
                return source / name
        raise InputError(f"no {category}{ext} (nor {console_prefix}{category}{ext}) for category {category!r}", path=source)

    from drawgap.data.download import cache_dir, download_file, read_manifest

    root = Path(cache) if cache is not None else cache_dir()
    dest = root / "quickdraw" / folder / f"{category}{ext}"
    # Google publishes no checksums: the first download records size and SHA-256 in the manifest, and later
    # calls hold the cached copy to them (a changed or truncated copy is downloaded again and checked)
    known = read_manifest(dest.parent).get(dest.name) or {}
    return download_file(
        quickdraw_url(category, kind, base_url), dest, size=known.get("size"), sha256=known.get("sha256"), progress=progress
    )


def load_bitmaps(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """The official 28x28 renderings of a `numpy_bitmap` file as uint8 [N, 28, 28], memory-mapped.

    Only the rows used are read from disk (np.load with mmap_mode), so `limit` keeps memory bounded.
    """
    path = Path(path)
    try:
        flat = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"expected a .npy file, could not read it ({exc})", path=path) from None
    side = BITMAP_SIZE * BITMAP_SIZE
    if flat.dtype != np.uint8 or flat.ndim != 2 or flat.shape[1] != side:
        raise InputError(f"expected uint8 [N, {side}], got {flat.dtype} {list(flat.shape)}", path=path)
    n = len(flat) if limit is None else min(len(flat), int(limit))
    return flat[:n].reshape(n, BITMAP_SIZE, BITMAP_SIZE)


def _kind(kind: str) -> tuple[str, str, str]:
    if kind not in KINDS:
        raise InputError(f"expected one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    return KINDS[kind]


# ============================================================================================== parsing


@dataclass(frozen=True)
class Drawing:
    """One drawing of a simplified ndjson file.

    strokes: one int array [2, P] per stroke (row 0 = x, row 1 = y, in the 0..255 box);
    line: its 1-based line number in the file.
    """

    strokes: tuple[np.ndarray, ...]
    word: str | None
    recognized: bool | None
    key_id: str | None
    countrycode: str | None
    line: int


class NdjsonDrawings:
    """The drawings of one simplified ndjson file, streamed line by line (an iterable; re-iterable for paths).

    Memory is bounded whatever the file size: a line is read, checked and handed over before the next one
    is read, and iteration stops reading as soon as `limit` drawings have been yielded.

    A malformed line (bad JSON, no `drawing`, a stroke whose x and y lengths differ, coordinates outside
    0..255) is reported by its line number: `on_error="skip"` skips it, records (line, reason) in `skipped`
    and warns once at the end (`MalformedLineWarning`, unless warn=False); `on_error="stop"` raises
    `InputError` naming the file and the line.

    >>> import io
    >>> lines = ['{"word": "dot", "recognized": true, "drawing": [[[3], [4]]]}', '{oops']
    >>> reader = NdjsonDrawings(io.StringIO("\\n".join(lines)), name="mem.ndjson", warn=False)
    >>> [d.line for d in reader], reader.skipped
    ([1], [(2, 'expected a JSON object, could not parse it (Expecting property name enclosed in double quotes)')])
    """

    def __init__(
        self,
        source: str | os.PathLike | IO,
        *,
        recognized_only: bool = False,
        limit: int | None = None,
        on_error: str = "skip",
        name: str | None = None,
        warn: bool = True,
    ):
        if on_error not in ("skip", "stop"):
            raise InputError(f"expected 'skip' or 'stop', got {on_error!r}", field="on_error")
        if limit is not None and limit < 0:
            raise InputError(f"expected a limit >= 0, got {limit}", field="limit")
        self.source = source
        self.recognized_only = recognized_only
        self.limit = limit
        self.on_error = on_error
        self.name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>"))
        self.warn = warn
        self.skipped: list[tuple[int, str]] = []  # (line number, reason), filled while iterating

    def __iter__(self) -> Iterator[Drawing]:
        self.skipped = []
        if self.limit == 0:
            return
        if isinstance(self.source, (str, os.PathLike)):
            if not Path(self.source).is_file():
                raise InputError("no such file", path=self.name)
            with open(self.source, "rb") as fh:
                yield from self._parse(fh)
        else:
            yield from self._parse(self.source)

    def _parse(self, lines: Iterable) -> Iterator[Drawing]:
        yielded = 0
        try:
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue  # blank lines (a trailing newline) are not drawings
                try:
                    drawing = parse_drawing_line(raw, number)
                except _MalformedLine as bad:
                    if self.on_error == "stop":
                        raise InputError(str(bad), path=self.name, field=f"line {number}") from None
                    self.skipped.append((number, str(bad)))
                    continue
                if self.recognized_only and drawing.recognized is not True:
                    continue
                yield drawing
                yielded += 1
                if self.limit is not None and yielded >= self.limit:
                    return  # stop reading: the rest of the file is never touched
        finally:
            if self.skipped and self.warn:
                line, why = self.skipped[0]
                warnings.warn(
                    f"{self.name}: skipped {len(self.skipped)} malformed line(s) (first: line {line}: {why})",
                    MalformedLineWarning,
                    stacklevel=2,
                )


class MalformedLineWarning(UserWarning):
    """Some lines of an ndjson file were malformed and skipped."""


class _MalformedLine(ValueError):
    pass


def parse_drawing_line(raw: str | bytes, number: int = 0) -> Drawing:
    """One ndjson line -> `Drawing`, or `_MalformedLine` saying what is wrong with it."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits; deep nesting
        if isinstance(exc, json.JSONDecodeError):
            why = exc.msg
        elif isinstance(exc, UnicodeDecodeError):
            why = "not UTF-8"
        elif isinstance(exc, RecursionError):
            why = "nested too deeply"
        else:
            why = "a number with too many digits"
        raise _MalformedLine(f"expected a JSON object, could not parse it ({why})") from None
    if not isinstance(record, dict):
        raise _MalformedLine(f"expected a JSON object, got {type(record).__name__}")
    if "drawing" not in record:
        raise _MalformedLine("missing 'drawing'")
    strokes = record["drawing"]
    if not isinstance(strokes, list) or not strokes:
        raise _MalformedLine("'drawing': expected a non-empty list of strokes [xs, ys]")
    parsed = []
    for s, stroke in enumerate(strokes):
        if not isinstance(stroke, list) or len(stroke) < 2 or not all(isinstance(v, list) for v in stroke[:2]):
            raise _MalformedLine(f"'drawing' stroke {s}: expected [xs, ys]")
        xs, ys = stroke[0], stroke[1]
        if len(xs) != len(ys):
            raise _MalformedLine(f"'drawing' stroke {s}: x and y lengths differ ({len(xs)} vs {len(ys)})")
        if not xs:
            raise _MalformedLine(f"'drawing' stroke {s}: expected at least one point")
        try:
            xy = np.array([xs, ys], dtype=np.float64)
        except (TypeError, ValueError, OverflowError, RecursionError):  # OverflowError: a 400-digit integer
            xy = None
        if xy is None or xy.ndim != 2:
            raise _MalformedLine(f"'drawing' stroke {s}: expected numeric coordinates")
        if not np.isfinite(xy).all():
            raise _MalformedLine(f"'drawing' stroke {s}: expected finite coordinates, found NaN or infinity")
        if xy.min() < 0 or xy.max() > 255:
            raise _MalformedLine(f"'drawing' stroke {s}: coordinates outside 0-255 (found {xy.min():g} to {xy.max():g})")
        parsed.append(xy.astype(np.int16) if np.array_equal(xy, np.round(xy)) else xy)
    recognized = record.get("recognized")
    return Drawing(
        strokes=tuple(parsed),
        word=record.get("word"),
        recognized=recognized if isinstance(recognized, bool) else None,
        key_id=None if record.get("key_id") is None else str(record["key_id"]),
        countrycode=record.get("countrycode"),
        line=number,
    )


# ============================================================================================ rasterizing

LINE_WIDTH = 16.0  # in 256-box units, as in the official numpy_bitmap rendering
PADDING = 16.0  # on each side, in 256-box units, plus half the line width
PEN_TOLERANCE = 0.1  # cairo's default tolerance (device pixels) for the polygon that stands for a round pen
SUPERSAMPLE = 8  # sub-samples per pixel side, on pixels that the stroke's edge crosses
_BATCH_WORK = 1 << 22  # (segment, pixel) candidates x sub-samples handled at once: bounds the memory


def rasterize_strokes(strokes: Sequence, size: int = BITMAP_SIZE, **options) -> np.ndarray:
    """Render one simplified drawing (strokes [xs, ys] in the 256 box) as uint8 [size, size], ink = 255.

    See `rasterize` for the recipe and the options.
    """
    return rasterize([strokes], size, **options)[0]


def rasterize(
    drawings: Iterable,
    size: int = BITMAP_SIZE,
    *,
    line_width: float = LINE_WIDTH,
    padding: float = PADDING,
    pen_tolerance: float | None = PEN_TOLERANCE,
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """Render drawings (`Drawing`s or lists of strokes [xs, ys]) as uint8 [N, size, size], ink coverage.

    The recipe of the official `numpy_bitmap` files (the cairo script the dataset's authors published,
    quickdraw-dataset issue 19): each drawing is centred in the 256 box (shifted by half the unused extent
    on each axis), drawn with round caps and joins and line width 16 in a box of 256 + 2*16 + 16 units
    (padding 16 on each side plus half the line width, so that strokes at the edge stay whole), scaled to
    `size` pixels: x_pixel = (x + offset + 24) * size / 304. A stroke is one path (its own overlaps are
    painted once); strokes are painted over one another (coverages a, b -> 1 - (1-a)(1-b)), as in cairo.

    The round pen: cairo draws round caps and joins with a regular polygon whose sides stay within
    `pen_tolerance` device pixels of the circle (0.1 is cairo's default: 12 sides at 28 px, 16 at 48 px),
    which holds about 4.5 % less ink than a disc at 28 px; the default reproduces that. `pen_tolerance=None`
    draws exact circles.

    Anti-aliasing (hand-written because no installed library draws wide polylines with round caps and
    exact area coverage: PIL has no round caps and no sub-pixel coverage): a pixel's value is the area of it
    inside the stroke. A stroke is the union, over its segments, of the band within line_width/2 of the
    segment and of the pen polygon at each end. Its "pen distance" field is 1-Lipschitz (up to a jump of
    the polygon's sagitta), so a pixel whose centre is deep inside (outside) is fully covered (empty); only
    pixels that the edge crosses are sampled, on a `supersample`^2 grid where each sub-sample counts
    clip((r - d)/h + 1/2, 0, 1), h the sub-sample spacing: the coverage of its h x h cell by a straight
    edge. Against a 48 x 48 sub-sample reference, the default 8 x 8 is off by 0.05 grey levels on average
    and 5 at most (of 255). All drawings of a batch are handled at once as (segment, pixel) pairs, without a
    Python loop over pixels or segments.

    Against cairo 1.16 running the official script at 28 px (measured on 300 generated shape drawings): 86 %
    of pixels identical, mean difference 0.26 levels, 99th percentile 5, worst 17. What is left is cairo's
    own rasterizer: it samples 15 sub-rows per pixel (area here), and fills the inner corner of acute joins
    slightly more. The official files' centring uses the bounding box's maximum only ((256 - max)/2);
    simplified drawings all start at 0, where that is the same as centring the box, which is done here.
    """
    if int(size) != size or size < 1:
        raise InputError(f"expected a size >= 1, got {size}", field="size")
    if supersample < 1:
        raise InputError(f"expected supersample >= 1, got {supersample}", field="supersample")
    size = int(size)
    margin = padding + line_width / 2.0
    scale = size / (BOX + 2.0 * margin)
    pen = _Pen(line_width / 2.0 * scale, pen_tolerance)
    images, batch, pairs = [], [], 0
    for drawing in drawings:
        strokes = [p for p in (_stroke_points(s) for s in (drawing.strokes if isinstance(drawing, Drawing) else drawing)) if len(p)]
        shift = _centring_offset(strokes) + margin
        strokes = [(p + shift) * scale for p in strokes]
        batch.append(strokes)
        pairs += sum(_bbox_area(p, pen.reach(supersample), size) for p in strokes)
        if pairs * supersample**2 >= _BATCH_WORK:
            images.append(_render_batch(batch, size, pen, supersample))
            batch, pairs = [], 0
    if batch or not images:
        images.append(_render_batch(batch, size, pen, supersample))
    return np.concatenate(images)


class _Pen:
    """The round pen of radius r (device pixels): exact, or cairo's regular polygon of n sides.

    `field` is the pen distance from points q to the stroke piece of segment [a, b]: within the band
    (projection inside the segment) the distance to the segment, else the pen gauge around a or b (for the
    polygon, the distance to the side facing q, plus its sagitta, so that its boundary is at r).
    """

    def __init__(self, radius: float, tolerance: float | None):
        self.radius = radius
        self.sides = None if tolerance is None else _cairo_pen_sides(radius, tolerance)
        # how far the field can jump where the band ends: the polygon's sagitta
        self.slack = 0.0 if self.sides is None else radius * (1.0 - math.cos(math.pi / self.sides))

    def reach(self, supersample: int) -> float:
        """Beyond this distance (pixels) from a segment, a pixel centre receives no ink from it."""
        return self.radius + math.sqrt(0.5) + 0.5 / supersample + self.slack + 1e-6

    def field(self, qx, qy, ax, ay, abx, aby, inv_length2, t_shift):
        """Pen distance from points (qx, qy) to segments from (ax, ay) along (abx, aby); broadcastable.

        inv_length2 = 1/|ab|^2 (0 for a zero-length segment) and t_shift = -1 for a zero-length segment
        (0 otherwise), so that a dot is all end: precomputed once per segment by `segment_terms`.
        """
        qax, qay = qx - ax, qy - ay
        t = (qax * abx + qay * aby) * inv_length2 + t_shift
        nearest = np.clip(t, 0.0, 1.0)
        dx, dy = qax - nearest * abx, qay - nearest * aby
        d = np.sqrt(dx * dx + dy * dy)
        if self.sides is not None:
            end = (t < 0.0) | (t > 1.0)  # beyond the segment: the pen polygon around the end point
            step = 2.0 * math.pi / self.sides  # cairo's pen vertices sit at angles 2*pi*i/n
            off = np.mod(np.arctan2(dy[end], dx[end]), step) - step / 2.0  # angle to the nearest side's normal
            d[end] = d[end] * np.cos(off) + self.slack
        return d

    @staticmethod
    def segment_terms(a: np.ndarray, b: np.ndarray):
        """(ax, ay, abx, aby, inv_length2, t_shift) of segments a, b [S, 2], for `field`."""
        ab = b - a
        length2 = (ab * ab).sum(1)
        zero = length2 == 0
        inv = np.where(zero, 0.0, 1.0 / np.where(zero, 1.0, length2))
        return a[:, 0], a[:, 1], ab[:, 0], ab[:, 1], inv, np.where(zero, -1.0, 0.0)


def _cairo_pen_sides(radius: float, tolerance: float) -> int:
    """Number of vertices of cairo's pen polygon (cairo-pen.c, _cairo_pen_vertices_needed)."""
    if tolerance >= radius:
        return 4  # (cairo uses a single vertex below radius tolerance/4: pens under 0.03 px, no matter here)
    n = math.ceil(2.0 * math.pi / math.acos(1.0 - tolerance / radius))
    return max(4, n + n % 2)


def _stroke_points(stroke) -> np.ndarray:
    """[xs, ys] (or a [2, P] array) -> [P, 2] float points, consecutive repeats removed."""
    try:
        xy = np.asarray(stroke[0:2], dtype=np.float64)
    except (TypeError, ValueError):
        xy = np.zeros((0,))
    if xy.ndim != 2 or xy.shape[0] != 2 or not np.isfinite(xy).all():
        raise InputError(f"expected a stroke [xs, ys] of finite numbers and equal lengths, got {str(stroke)[:60]}", field="strokes")
    p = xy.T
    if len(p) > 1:
        p = p[np.r_[True, np.any(np.diff(p, axis=0) != 0, axis=1)]]
    return p


def _centring_offset(strokes: list[np.ndarray]) -> np.ndarray:
    """Shift that centres the drawing's bounding box in the 256 box."""
    if not strokes:
        return np.zeros(2)
    every = np.concatenate(strokes)
    return (BOX - (every.min(0) + every.max(0))) / 2.0


def _segments(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The segments [a, b] of a polyline; a single point is one zero-length segment (a dot)."""
    return (p[:-1], p[1:]) if len(p) > 1 else (p, p)


def _bbox_area(p: np.ndarray, reach: float, size: int) -> int:
    a, b = _segments(p)
    lo = np.clip(np.floor(np.minimum(a, b) - reach), 0, size)
    hi = np.clip(np.ceil(np.maximum(a, b) + reach), 0, size)
    return int(np.prod(hi - lo, axis=1).sum())


def _render_batch(drawings: list[list[np.ndarray]], size: int, pen: _Pen, supersample: int) -> np.ndarray:
    """Coverage of a batch of drawings (strokes already in device pixels) -> uint8 [B, size, size]."""
    n_pixels = size * size
    uncovered = np.ones(len(drawings) * n_pixels)
    a_list, b_list, stroke_of_segment, drawing_of_stroke = [], [], [], []
    for d, strokes in enumerate(drawings):
        for p in strokes:
            a, b = _segments(p)
            a_list.append(a)
            b_list.append(b)
            stroke_of_segment.append(np.full(len(a), len(drawing_of_stroke)))
            drawing_of_stroke.append(d)
    if a_list:
        a, b = np.concatenate(a_list), np.concatenate(b_list)
        stroke, pixel, coverage = _stroke_coverage(a, b, np.concatenate(stroke_of_segment), size, pen, supersample)
        # paint strokes over one another: each multiplies what is left uncovered by (1 - its coverage)
        np.multiply.at(uncovered, np.asarray(drawing_of_stroke)[stroke] * n_pixels + pixel, 1.0 - coverage)
    ink = np.rint((1.0 - uncovered) * 255.0).astype(np.uint8)
    return ink.reshape(len(drawings), size, size)


def _subsample_field(pen: _Pen, cx, cy, terms, supersample: int, chunk: int = 1 << 16) -> np.ndarray:
    """float32 [R, supersample^2]: the pen field at the sub-samples of pixel centres (cx, cy) [R] for
    segment terms [R]. The bulk of the work: float32 (1e-5 px is far below what a uint8 pixel shows), in
    chunks of about `chunk` values so that the temporaries stay in cache."""
    h = 1.0 / supersample
    u = (np.arange(supersample) + 0.5) * h - 0.5
    ux, uy = (g.reshape(1, -1).astype(np.float32) for g in np.meshgrid(u, u, indexing="xy"))
    cx, cy = cx.astype(np.float32)[:, None], cy.astype(np.float32)[:, None]
    terms = [v.astype(np.float32)[:, None] for v in terms]
    out = np.empty((len(cx), supersample * supersample), np.float32)
    step = max(1, chunk // (supersample * supersample))
    for i in range(0, len(cx), step):
        part = slice(i, i + step)
        out[part] = pen.field(cx[part] + ux, cy[part] + uy, *(v[part] for v in terms))
    return out


def _min_by_group(rows: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Row-wise min over groups of consecutive rows starting at `first`. Same as np.minimum.reduceat(rows,
    first, axis=0), which is ~15x slower on 2-d arrays; groups here hold few rows (the segments of a stroke
    near one pixel), so one pass per rank within the group is enough."""
    group = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(rows)]))
    rank = np.arange(len(rows)) - first[group]
    out = rows[first].copy()
    for k in range(1, int(rank.max(initial=0)) + 1):
        at = np.flatnonzero(rank == k)
        out[group[at]] = np.minimum(out[group[at]], rows[at])
    return out


def _stroke_coverage(a, b, stroke_of_segment, size, pen: _Pen, supersample):
    """(stroke, pixel, coverage) of every pixel that a stroke touches, from segments a, b [S, 2]."""
    r, h = pen.radius, 1.0 / supersample
    # 1. candidate (segment, pixel) pairs: the pixels of each segment's bounding box grown by the reach
    reach = pen.reach(supersample)
    lo = np.clip(np.floor(np.minimum(a, b) - reach), 0, size).astype(np.int64)
    hi = np.clip(np.ceil(np.maximum(a, b) + reach), 0, size).astype(np.int64)
    width, count = hi[:, 0] - lo[:, 0], np.prod(hi - lo, axis=1)
    seg = np.repeat(np.arange(len(a)), count)
    local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    px = lo[seg, 0] + local % np.maximum(width[seg], 1)
    py = lo[seg, 1] + local // np.maximum(width[seg], 1)
    terms = pen.segment_terms(a, b)
    cx, cy = px + 0.5, py + 0.5
    f_centre = pen.field(cx, cy, *(v[seg] for v in terms))
    # 2. group the pairs by (stroke, pixel); the field of a stroke is the min over its segments
    key = stroke_of_segment[seg] * (size * size) + py * size + px
    order = np.argsort(key, kind="stable")
    key, seg, cx, cy, f_centre = key[order], seg[order], cx[order], cy[order], f_centre[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    f_min = np.minimum.reduceat(f_centre, starts) if len(key) else f_centre
    # 3. deep inside: covered; far outside: empty; the rest are sampled (the field is 1-Lipschitz + slack)
    blur = math.sqrt(0.5) + pen.slack + h / 2.0
    coverage = (f_min <= r - blur).astype(np.float64)
    edge = (f_min > r - blur) & (f_min < r + blur)
    if edge.any():
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(key)]))
        near = edge[group] & (f_centre < r + blur)  # pairs that can put ink in an edge pixel
        f_sub = _subsample_field(pen, cx[near], cy[near], [v[seg[near]] for v in terms], supersample)
        near_group = group[near]
        first = np.flatnonzero(np.r_[True, near_group[1:] != near_group[:-1]])
        f_sub = _min_by_group(f_sub, first)
        coverage[near_group[first]] = np.clip((r - f_sub) / h + 0.5, 0.0, 1.0).mean(axis=1)
    touched = coverage > 0
    first_key = key[starts][touched]
    return first_key // (size * size), first_key % (size * size), coverage[touched]


# ============================================================================================== dataset


def load_quickdraw(
    categories: Sequence[str],
    *,
    source: str | os.PathLike | None = None,
    size: int = 48,
    max_per_category: int | None = None,
    recognized_only: bool = False,
    on_error: str = "skip",
    bitmaps: bool = False,
    critic=None,
    critic_name: str | None = None,
    progress: bool = True,
    workers: int = 1,
):
    """A dataset with one class per Quick, Draw! category (its drawings in file order).

    From the simplified strokes rendered at `size` (default), or with `bitmaps=True` from the official
    28x28 renderings (resized to `size` by antialiased bilinear interpolation if it differs). Each class's
    exemplar follows Eq. 1, with the critic's features if one is given, else with blurred pixels
    (`drawgap.data.exemplars.with_exemplars`). `workers`: processes rendering categories (`render_categories`).
    """
    from drawgap.data.exemplars import with_exemplars
    from drawgap.data.formats import Dataset
    from drawgap.provenance import provenance

    _check_categories(categories)
    if bitmaps and recognized_only:
        raise InputError("the numpy_bitmap files carry no 'recognized' field; drop recognized_only", field="recognized_only")
    for category in categories:  # every file is there (or downloaded) before any work starts
        fetch_category(category, "numpy_bitmap" if bitmaps else "simplified", source=source, progress=progress)
    images, labels = [], []
    rendered = render_categories(categories, workers=workers, progress=progress, source=source, size=size,
                                 max_per_category=max_per_category, recognized_only=recognized_only,
                                 on_error=on_error, bitmaps=bitmaps)
    for c, (category, drawn) in enumerate(zip(categories, _progress(rendered, "categories", progress, len(categories)))):
        if len(drawn) == 0:
            raise InputError(f"no drawings kept for category {category!r}", field="categories")
        images.append(drawn)
        labels.append(np.full(len(drawn), c, np.int64))
    config = {
        "categories": list(categories),
        "image_size": size,
        "max_per_category": max_per_category,
        "recognized_only": recognized_only,
        "on_error": on_error,
        "from": "numpy_bitmap" if bitmaps else "simplified",
        "rasterizer": rasterizer_config(),
        "critic": critic_name,
    }
    meta = {
        "name": "quickdraw",
        "split": "all",
        "source": os.fspath(source) if source is not None else BUCKET_URL,
        "license": LICENSE,
        "citation": CITATION,
        "image_size": size,
        "provenance": provenance(config, None),
    }
    ds = Dataset(np.concatenate(images), np.concatenate(labels), np.array(list(categories)), np.zeros(len(categories), np.int64), meta)
    return with_exemplars(ds, critic, critic_name=critic_name)


def category_images(
    category: str,
    *,
    source=None,
    size: int = 48,
    max_per_category: int | None = None,
    recognized_only: bool = False,
    on_error: str = "skip",
    bitmaps: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """uint8 [n, size, size]: one category's drawings, rendered from strokes (or the official bitmaps)."""
    if bitmaps:
        path = fetch_category(category, "numpy_bitmap", source=source, progress=progress)
        return _resized(np.asarray(load_bitmaps(path, max_per_category)), size)
    path = fetch_category(category, "simplified", source=source, progress=progress)
    reader = NdjsonDrawings(path, recognized_only=recognized_only, limit=max_per_category, on_error=on_error)
    return rasterize(reader, size)


def render_categories(categories: Sequence[str], *, workers: int = 1, progress: bool = True,
                      **options) -> Iterator[np.ndarray]:
    """`category_images(category, **options)` of each category, in order.

    With `workers` > 1 the categories are rendered in that many forked processes (rendering is NumPy work
    on small arrays, bound by Python-level loops that hold the GIL, so threads would not use a second core),
    at most two categories per worker ahead of the consumer, so that memory stays bounded however many
    categories there are. A worker's warnings (skipped lines) are re-issued here, and its `InputError`
    raised here, so the caller sees what one process would have shown. The images are the same for any
    number of workers.
    """
    if workers < 1:
        raise InputError(f"expected 1 or more, got {workers}", field="workers")
    tasks = [(category, options) for category in categories]
    if workers == 1 or len(tasks) < 2 or "fork" not in mp.get_all_start_methods():
        for category, opts in tasks:
            yield category_images(category, progress=progress, **opts)
        return
    pending: collections.deque = collections.deque()
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("fork")) as pool:
        queue = iter(tasks)
        try:
            for task in itertools.islice(queue, 2 * workers):
                pending.append(pool.submit(_render_category, task))
            while pending:
                images, caught, error = pending.popleft().result()
                task = next(queue, None)
                if task is not None:
                    pending.append(pool.submit(_render_category, task))
                for message, category in caught:
                    warnings.warn(message, category, stacklevel=2)
                if error is not None:
                    detail, path, field = error
                    raise InputError(detail, path=path, field=field)
                yield images
        finally:
            for future in pending:
                future.cancel()


def _render_category(task) -> tuple[np.ndarray | None, list, tuple | None]:
    """One category in a worker: (images, [(warning message, category)], InputError parts or None)."""
    category, options = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            images, error = category_images(category, progress=False, **options), None
        except InputError as exc:  # sent back as parts: an exception with keyword arguments does not unpickle
            images, error = None, (exc.detail, exc.path, exc.field)
    return images, [(str(w.message), w.category) for w in caught], error


def rasterizer_config() -> dict:
    """The rendering recipe, as recorded in the meta of files built from strokes."""
    return {
        "recipe": "official numpy_bitmap (cairo): centred in the 256 box, round caps and joins",
        "line_width": LINE_WIDTH,
        "padding": PADDING,
        "pen_tolerance": PEN_TOLERANCE,
        "supersample": SUPERSAMPLE,
    }


def categories_in(source: str | os.PathLike, kind: str = "simplified") -> list[str]:
    """Every category with a file in the folder `source` (`<category>.ndjson` or the official
    `full_simplified_<category>.ndjson`; `.npy` for bitmaps), in file-name order: what `--categories all` means.

    File-name order, not name order ("baseball bat.ndjson" sorts before "baseball.ndjson"): QuickDraw-FS draws
    each category's random stream from its position, and the shipped QuickDraw models' split
    (data/splits/quickdraw-fs-150.json) was built over the files in this order."""
    folder, ext, console_prefix = _kind(kind)
    source = Path(source)
    if not source.is_dir():
        raise InputError("expected a folder of Quick, Draw! files", path=source)
    by_file = {}
    for f in source.iterdir():
        if f.is_file() and f.name.endswith(ext):
            stem = f.name[: -len(ext)]
            by_file[f.name] = urllib.parse.unquote(stem[len(console_prefix):] if stem.startswith(console_prefix) else stem)
    if not by_file:
        raise InputError(f"no *{ext} files: expected one per category", path=source)
    return list(dict.fromkeys(by_file[name] for name in sorted(by_file)))


def _check_categories(categories: Sequence[str]) -> None:
    if not categories:
        raise InputError("expected at least one category", field="categories")
    if len(set(categories)) != len(categories):
        raise InputError(f"expected distinct categories, got {list(categories)}", field="categories")
    for c in categories:
        if not c or "/" in c or c != c.strip():
            raise InputError(f"expected a category name (no '/', no surrounding spaces), got {c!r}", field="categories")


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return np.ascontiguousarray(images)
    from drawgap.data.transforms import as_tensor_images, resize, to_uint8

    return to_uint8(resize(as_tensor_images(images), size))


def _progress(items, desc: str, enabled: bool, total: int | None = None):
    from tqdm import tqdm

    total = len(items) if total is None else total
    return tqdm(items, desc=desc, total=total, disable=not enabled or total < 2, leave=False)
