"""Quick, Draw!: files, the streaming ndjson parser, the stroke rasterizer, and `drawgap data quickdraw`."""

from __future__ import annotations

import json
import math

import numpy as np

SHAPES = ("circle", "triangle", "cross", "square", "zigzag")


def shape_strokes(shape: str, rng) -> list[list[list[int]]]:
    """A jittered drawing of `shape` in the official simplified format: strokes [xs, ys], ints, min 0, max 255."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 21)
        parts = [np.stack([np.cos(t), np.sin(t)])]
    elif shape == "triangle":
        parts = [np.array([[0.0, 1.0, -1.0, 0.0], [-1.0, 1.0, 1.0, -1.0]])]
    elif shape == "cross":
        parts = [np.array([[-1.0, 1.0], [-1.0, 1.0]]), np.array([[-1.0, 1.0], [1.0, -1.0]])]
    elif shape == "square":
        parts = [np.array([[-1.0, 1.0, 1.0, -1.0, -1.0], [-1.0, -1.0, 1.0, 1.0, -1.0]])]
    elif shape == "zigzag":
        parts = [np.array([np.linspace(-1, 1, 6), [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]])]
    else:
        raise ValueError(shape)
    stretch = rng.uniform(0.8, 1.2, size=(2, 1))
    parts = [p * stretch + rng.normal(0, 0.04, size=p.shape) for p in parts]
    every = np.concatenate(parts, axis=1)
    lo, extent = every.min(axis=1, keepdims=True), (every.max(axis=1) - every.min(axis=1)).max()
    return [np.rint((p - lo) / extent * 255).astype(int).tolist() for p in parts]


def ndjson_line(word: str, strokes, recognized: bool = True, key: int = 0) -> str:
    record = {"word": word, "countrycode": "US", "timestamp": "2017-03-01 20:41:36.70725 UTC",
              "recognized": recognized, "key_id": str(5000000000000000 + key), "drawing": strokes}
    return json.dumps(record)


def write_ndjson(path, word: str, shapes, per_shape: int, seed: int = 0, recognized_every: int = 0) -> list[str]:
    """A category file of `per_shape` drawings of each shape, interleaved; returns the shape of each line."""
    rng = np.random.default_rng(seed)
    order = [s for _ in range(per_shape) for s in shapes]
    lines = [ndjson_line(word, shape_strokes(s, rng), recognized=not (recognized_every and i % recognized_every == 0), key=i)
             for i, s in enumerate(order)]
    path.write_text("\n".join(lines) + "\n")
    return order


import base64
import hashlib
import io
import warnings
import zlib

import pytest

from drawgap.data.formats import read_dataset, read_samples
from drawgap.data.quickdraw import (
    MalformedLineWarning,
    NdjsonDrawings,
    fetch_category,
    load_bitmaps,
    load_quickdraw,
    quickdraw_url,
    rasterize,
    rasterize_strokes,
    render_categories,
)
from drawgap.errors import InputError

SCALE_28 = 28 / 304  # pixels per 256-box unit at 28 px: 256 + 2*16 padding + 16 line width = 304 units
R_28 = 8 * SCALE_28  # pen radius at 28 px


# ------------------------------------------------------------------------------------------------ files


def test_urls_follow_the_bucket_layout_and_encode_spaces():
    assert quickdraw_url("alarm clock") == "https://storage.googleapis.com/quickdraw_dataset/full/simplified/alarm%20clock.ndjson"
    assert quickdraw_url("cat", "numpy_bitmap") == "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/cat.npy"
    with pytest.raises(InputError, match="kind"):
        quickdraw_url("cat", "raw")


def test_source_folder_is_used_offline_under_either_name(tmp_path):
    (tmp_path / "cat.ndjson").write_text(ndjson_line("cat", [[[0], [0]]]) + "\n")
    (tmp_path / "full_simplified_alarm clock.ndjson").write_text("")
    assert fetch_category("cat", source=tmp_path) == tmp_path / "cat.ndjson"
    assert fetch_category("alarm clock", source=tmp_path) == tmp_path / "full_simplified_alarm clock.ndjson"
    with pytest.raises(InputError) as err:
        fetch_category("dog", source=tmp_path)
    assert str(err.value).startswith(str(tmp_path)) and "dog.ndjson" in str(err.value)


def test_download_is_cached_with_size_and_sha256_in_the_manifest(tmp_path):
    bucket = tmp_path / "bucket" / "simplified"
    bucket.mkdir(parents=True)
    body = (ndjson_line("ice cream", [[[0, 255], [0, 255]]]) + "\n").encode()
    (bucket / "ice cream.ndjson").write_bytes(body)  # the URL asks for ice%20cream, the server decodes it
    base = (tmp_path / "bucket").as_uri()
    cache = tmp_path / "cache"
    path = fetch_category("ice cream", cache=cache, base_url=base, progress=False)
    assert path == cache / "quickdraw" / "simplified" / "ice cream.ndjson"
    assert path.read_bytes() == body
    entry = json.loads((path.parent / "manifest.json").read_text())["ice cream.ndjson"]
    assert entry["size"] == len(body) and entry["sha256"] == hashlib.sha256(body).hexdigest()
    assert entry["url"].endswith("/simplified/ice%20cream.ndjson")
    path.write_bytes(body.replace(b"US", b"FR"))  # a damaged cached copy (same size) is downloaded again
    assert fetch_category("ice cream", cache=cache, base_url=base, progress=False).read_bytes() == body
    (bucket / "ice cream.ndjson").unlink()  # a good cached copy is used as it is
    assert fetch_category("ice cream", cache=cache, base_url=base, progress=False).read_bytes() == body
    path.write_bytes(body[:-5])  # damaged, and the server no longer has it: an error, no silent use
    with pytest.raises(InputError, match="could not download"):
        fetch_category("ice cream", cache=cache, base_url=base, progress=False)


def test_bitmaps_are_memory_mapped_and_checked(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (50, 784), dtype=np.uint8)
    np.save(tmp_path / "cat.npy", rows)
    images = load_bitmaps(tmp_path / "cat.npy", limit=7)
    assert images.shape == (7, 28, 28) and isinstance(images.base, np.memmap)
    np.testing.assert_array_equal(images[3], rows[3].reshape(28, 28))
    np.save(tmp_path / "bad.npy", rows.astype(np.float32))
    with pytest.raises(InputError, match=r"uint8 \[N, 784\]"):
        load_bitmaps(tmp_path / "bad.npy")


# ---------------------------------------------------------------------------------------------- parsing

MALFORMED = {
    2: "{not json",
    4: json.dumps({"word": "cat", "recognized": True}),
    5: json.dumps({"word": "cat", "drawing": [[[0, 10, 20], [0, 10]]]}),
    7: json.dumps({"word": "cat", "drawing": [[[0, 300], [0, 10]]]}),
}


def _file_with_malformed_lines(path):
    rng = np.random.default_rng(0)
    lines = [MALFORMED.get(n) or ndjson_line("cat", shape_strokes("circle", rng), recognized=n % 3 != 0, key=n) for n in range(1, 10)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parser_reads_fields_and_filters_recognized(tmp_path):
    path = _file_with_malformed_lines(tmp_path / "cat.ndjson")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        every = list(NdjsonDrawings(path))
        recognized = list(NdjsonDrawings(path, recognized_only=True))
        first_two = list(NdjsonDrawings(path, limit=2))
    assert [d.line for d in every] == [1, 3, 6, 8, 9]
    assert [d.line for d in recognized] == [1, 8]  # lines 3, 6, 9 are unrecognized (n % 3 == 0)
    assert [d.line for d in first_two] == [1, 3]
    d = every[0]
    assert d.word == "cat" and d.recognized is True and d.key_id == "5000000000000001" and d.countrycode == "US"
    assert len(d.strokes) == 1 and d.strokes[0].shape == (2, 21)


def test_malformed_lines_are_skipped_with_their_numbers_and_a_warning(tmp_path):
    path = _file_with_malformed_lines(tmp_path / "cat.ndjson")
    reader = NdjsonDrawings(path)
    with pytest.warns(MalformedLineWarning, match=r"skipped 4 malformed line\(s\) \(first: line 2"):
        assert len(list(reader)) == 5
    assert [n for n, _ in reader.skipped] == [2, 4, 5, 7]
    reasons = dict(reader.skipped)
    assert "JSON" in reasons[2] and "missing 'drawing'" in reasons[4]
    assert "lengths differ (3 vs 2)" in reasons[5] and "outside 0-255" in reasons[7]


def test_malformed_line_stops_with_file_and_line_number(tmp_path):
    path = _file_with_malformed_lines(tmp_path / "cat.ndjson")
    with pytest.raises(InputError) as err:
        list(NdjsonDrawings(path, on_error="stop"))
    assert str(err.value).startswith(f"{path}: line 2: expected a JSON object")


class _EndlessNdjson(io.RawIOBase):
    """A virtual ndjson file of 10**9 drawings that counts the bytes handed out."""

    def __init__(self):
        self.served, self._line, self._pending = 0, 0, b""

    def readable(self):
        return True

    def readinto(self, buffer):
        while len(self._pending) < len(buffer) and self._line < 10**9:
            self._line += 1
            self._pending += (ndjson_line("dot", [[[self._line % 256], [0]]], key=self._line) + "\n").encode()
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        self.served += n
        return n


def test_parser_streams_and_stops_reading_after_the_limit():
    raw = _EndlessNdjson()
    drawings = list(NdjsonDrawings(io.BufferedReader(raw, buffer_size=8192), limit=5))
    assert [int(d.strokes[0][0, 0]) for d in drawings] == [1, 2, 3, 4, 5]
    assert raw.served <= 2 * 8192  # a buffer or two out of ~100 GB


# ------------------------------------------------------------------------------------------- rasterizer


def _ink_area(image) -> float:
    """Ink of a uint8 rendering in square pixels."""
    return image.astype(np.float64).sum() / 255


def test_horizontal_line_is_a_band_with_round_ends():
    image = rasterize_strokes([[[0, 255], [0, 0]]], 28, pen_tolerance=None)
    # centred: y = 128 -> (128 + 24) * 28/304 = 14.0, the border of rows 13 and 14; each gets r = 0.737 px
    assert np.flatnonzero(image.sum(axis=1)).tolist() == [13, 14]
    np.testing.assert_array_equal(image[13], image[14])
    assert image[13, 10] == round(255 * R_28) == 188  # hand-computed coverage of a middle column
    np.testing.assert_array_equal(image[13], image[13, ::-1])  # symmetric end to end
    length, width = 255, 16
    exact = (length * width + math.pi * 8**2) * SCALE_28**2
    assert _ink_area(image) == pytest.approx(exact, rel=2e-3)


def test_default_pen_is_cairos_polygon():
    # cairo draws round caps with a regular polygon of n sides within 0.1 px of the circle: n = 12 at 28 px
    n = math.ceil(2 * math.pi / math.acos(1 - 0.1 / R_28))
    assert n == 12
    dot = rasterize_strokes([[[0], [0]]], 28)
    assert _ink_area(dot) == pytest.approx(n / 2 * R_28**2 * math.sin(2 * math.pi / n), rel=1e-2)
    assert dot.astype(int).sum() == pytest.approx(416, abs=4)  # cairo 1.16 renders this dot with 416
    line = rasterize_strokes([[[0, 255], [0, 0]]], 28)
    assert _ink_area(line) == pytest.approx((255 * 16 + 3 * 8**2) * SCALE_28**2, rel=2e-3)  # 12-gon: 3 r^2


def test_dot_is_a_centred_disc():
    dot = rasterize_strokes([[[37], [200]]], 28, pen_tolerance=None)
    assert _ink_area(dot) == pytest.approx(math.pi * R_28**2, rel=1e-2)
    ys, xs = np.mgrid[0:28, 0:28] + 0.5
    weights = dot / dot.sum()
    assert (weights * xs).sum() == pytest.approx(14.0, abs=1e-6) and (weights * ys).sum() == pytest.approx(14.0, abs=1e-6)
    np.testing.assert_array_equal(dot, dot.T)


def test_square_outline_is_rotation_symmetric_and_hollow():
    square = rasterize_strokes([[[0, 255, 255, 0, 0], [0, 0, 255, 255, 0]]], 28)
    assert np.abs(square.astype(int) - np.rot90(square)).max() <= 1
    assert square[8:20, 8:20].max() == 0  # hollow
    assert square[1:27, 1:27].max() == 255 and square.sum() > 0


def test_drawing_in_a_corner_ends_centred():
    corner = [[[200, 250, 250], [210, 210, 250]]]
    origin = [[[0, 50, 50], [0, 0, 40]]]
    np.testing.assert_array_equal(rasterize_strokes(corner, 28), rasterize_strokes(origin, 28))
    image = rasterize_strokes(corner, 28).astype(float)
    ys, xs = np.nonzero(image)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(13.5, abs=0.5) and (ys.min() + ys.max()) / 2 == pytest.approx(13.5, abs=0.5)


def test_strokes_are_painted_over_one_another():
    once = rasterize_strokes([[[100], [100]]], 28).astype(float) / 255
    twice = rasterize_strokes([[[100], [100]], [[100], [100]]], 28).astype(float) / 255
    np.testing.assert_allclose(twice, 1 - (1 - once) ** 2, atol=1.5 / 255)
    # within one stroke, overlaps are painted once
    back_and_forth = rasterize_strokes([[[0, 255, 0], [0, 0, 0]]], 28)
    np.testing.assert_array_equal(back_and_forth, rasterize_strokes([[[0, 255], [0, 0]]], 28))


def test_any_size_scales_the_line_width():
    image = rasterize_strokes([[[0, 255], [0, 0]]], 256, pen_tolerance=None)
    assert _ink_area(image[:, 128:129]) == pytest.approx(16 * 256 / 304, rel=1e-3)
    assert rasterize([[[[0], [0]]], []], 48).shape == (2, 48, 48)
    assert rasterize([[]], 10).max() == 0  # an empty drawing is blank


# Two drawings rendered by the official recipe with cairo 1.16 (pycairo 1.20) at 28 px: the uint8 array,
# zlib-compressed and base64-encoded.
CAIRO_28 = [
    (
        [[[235, 228, 207, 176, 140, 104, 73, 52, 45, 52, 73, 104, 140, 176, 207, 228, 235], [155, 191, 222, 243, 250, 243, 222, 191, 155, 119, 88, 67, 60, 67, 88, 119, 155]], [[55, 40, 100], [80, 0, 45]], [[180, 235, 225], [45, 0, 80]], [[0, 110, 220], [170, 160, 175]], [[110], [140]]],
        "eNpjYCAEZPnQReS5YaxzDy1RpRJ/NMCYG///KmFEyLD0//9fAOM0/V3+f5MQjCe469/q/wEwXtB/3bgvj6whHLXr32N9/hvA5JT+xzDoXv8BcdHDR0YM2f8FYHKMH3oYGHj8bPMWLC9z8RRlYOh+j7D90B6g2z78/3//xt//P6tYGFafR8hNeiW5+f92Z0Ggbpv5/09onFqPkNMuv/spDeYL3+cfCuyQPDvzlwmCI/NuL5JvXf/VIwdL9P8cBOf4RVaUMNv4Gq6R5XsTkOSxhcvF/VeCMfX/BwLJ0I9MMAGd/yEwZsx/M22n6MLmaEsxqEE/QAYxmMzfdv7NfzD4B8Sfzq/pSnfR/p8HdtPNw2vn/F/qZ6nAyaLokt655vyn/////reG2/1kLrIrxSzm/eVBeP2HDrKk6Mu9CA7/o/PIHlz9VRWJ5/FvNieMzVTzPxclJOr+XjODsFSO/J/PiJq0bO783tsdGdyy9eurYIxEyt10COj676cmiGFNw0xqeiwMRAEAxx6ZyA==",
    ),
    (
        [[[227, 219, 205, 177, 150, 120, 76, 44, 24, 7, 0, 1, 21, 50, 73, 112, 141, 176, 199, 222, 223], [130, 169, 202, 220, 247, 255, 250, 224, 201, 164, 125, 94, 51, 27, 13, 0, 8, 27, 55, 84, 129]]],
        "eNpjYCAOiCSFCGKV4Enb/ef//z/HghgxpEIe/79Yq2lUeeH/MVtUGa6V/48Zg1lM0ff/1yNLyZz9lcsE47DP/BeGkJJ//sYRSSXLnq+GcM60ryooNgjdeSACZYp9m4jmMM2Pe1kgrJbfCuiuDv8HcQ/HuyWYvj20F+KS/zGYctsOgyn1/8GYchtOgCm9/76YcqvusoIo4f+5mHLt/5XA9JNZmHL9HyDhtO0EptyRPRC68YcEuhTHl04IQ/ZXG7pc/H9rKGvRB340udPnYSy9f6gamQr/J8E5k//FIUlpHPm/nh3OY978MxTOsfz4IhTZFO49/1qYYFKXxFAtZ5n4f3OUjTyPU9vHS6IYvk38+h8Evm0WxZJA2RRtY4qcOYhM5wC1r2VC",
    ),
]


@pytest.mark.parametrize("strokes, golden", CAIRO_28)
def test_matches_the_official_cairo_rendering(strokes, golden):
    official = np.frombuffer(zlib.decompress(base64.b64decode(golden)), np.uint8).reshape(28, 28).astype(int)
    mine = rasterize_strokes(strokes, 28).astype(int)
    diff = np.abs(mine - official)
    # measured: max 6 and 4 levels, mean 0.17 and 0.09; cairo samples 15 sub-rows per pixel, we take area
    assert diff.max() <= 8 and diff.mean() < 0.25
    assert mine.sum() == pytest.approx(official.sum(), rel=2e-3)


# ---------------------------------------------------------------------------------------------- dataset


def _source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_ndjson(src / "cat.ndjson", "cat", ("circle",), 12, seed=1, recognized_every=2)
    write_ndjson(src / "ice cream.ndjson", "ice cream", ("triangle",), 12, seed=2)
    return src


def test_cli_builds_one_class_per_category_from_a_source_folder(tmp_path, cli):
    src = _source(tmp_path)
    result = cli("data", "quickdraw", "cat", "ice cream", "--out", tmp_path / "out", "--source", src,
                 "--size", 28, "--max-per-category", 4, "--recognized-only")
    assert result.code == 0, result
    ds = read_dataset(tmp_path / "out" / "quickdraw.npz")
    assert list(ds.classes) == ["cat", "ice cream"] and np.bincount(ds.labels).tolist() == [4, 4]
    assert ds.images.shape == (8, 28, 28) and ds.meta["provenance"]["config"]["recognized_only"] is True
    expected = rasterize([d for d in NdjsonDrawings(src / "cat.ndjson") if d.recognized][:4], 28)
    np.testing.assert_array_equal(ds.images[:4], expected)  # lines 2, 4, 6, 8 of cat: the recognized ones
    assert ds.labels[ds.exemplars].tolist() == [0, 1] and ds.meta["exemplars"]["method"] == "eq1-pixel-blur"

    as_samples = cli("data", "quickdraw", "cat", "--out", tmp_path / "s", "--source", src, "--max-per-category", 3, "--as-samples")
    assert as_samples.code == 0, as_samples
    assert read_samples(tmp_path / "s" / "quickdraw_samples.npz").samples.shape == (1, 3, 48, 48)


def test_cli_on_error_skip_warns_and_stop_exits_2(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    _file_with_malformed_lines(src / "cat.ndjson")
    skipped = cli("data", "quickdraw", "cat", "--out", tmp_path / "a", "--source", src, "--size", 16)
    assert skipped.code == 0, skipped
    assert "drawgap: warning:" in skipped.err and "skipped 4 malformed line(s) (first: line 2" in skipped.err
    assert len(read_dataset(tmp_path / "a" / "quickdraw.npz").images) == 5

    stopped = cli("data", "quickdraw", "cat", "--out", tmp_path / "b", "--source", src, "--on-error", "stop")
    assert stopped.code == 2
    lines = stopped.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"drawgap: error: {src / 'cat.ndjson'}: line 2: ")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # nothing written


def test_cli_bitmaps_use_the_official_npy(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    rows = np.random.default_rng(0).integers(0, 256, (9, 784), dtype=np.uint8)
    np.save(src / "full_numpy_bitmap_cat.npy", rows)
    result = cli("data", "quickdraw", "cat", "--bitmaps", "--size", 28, "--out", tmp_path / "o", "--source", src, "--max-per-category", 6)
    assert result.code == 0, result
    np.testing.assert_array_equal(read_dataset(tmp_path / "o" / "quickdraw.npz").images, rows[:6].reshape(6, 28, 28))
    refused = cli("data", "quickdraw", "cat", "--bitmaps", "--recognized-only", "--out", tmp_path / "o2", "--source", src)
    assert refused.code == 2 and "recognized" in refused.err


def test_worker_processes_render_the_same_files_and_report_as_one_process(tmp_path, cli):
    src = _source(tmp_path)
    _file_with_malformed_lines(src / "dog.ndjson")
    categories = ["cat", "dog", "ice cream"]
    built = {}
    for workers in (1, 3):  # the warning of a worker's file reaches the caller as it does in one process
        with pytest.warns(MalformedLineWarning, match=r"dog.ndjson: skipped 4 malformed line\(s\)"):
            built[workers] = load_quickdraw(categories, source=src, size=16, progress=False, workers=workers)
    one, three = built[1], built[3]
    np.testing.assert_array_equal(one.images, three.images)
    np.testing.assert_array_equal(one.labels, three.labels)
    np.testing.assert_array_equal(one.exemplars, three.exemplars)

    # a worker's error is the same one-line error, exit 2, nothing written
    stopped = cli("data", "quickdraw", *categories, "--out", tmp_path / "b", "--source", src, "--on-error", "stop",
                  "--workers", 3)
    assert stopped.code == 2
    lines = stopped.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"drawgap: error: {src / 'dog.ndjson'}: line 2: ")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    with pytest.raises(InputError, match="workers"):
        list(render_categories(categories, workers=0))
