"""Omniglot builder and the download helper, on tiny archives made here in the official layout."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import drawgap.data.omniglot as omniglot
from drawgap.data.download import ChecksumWarning, cache_dir, download_file, read_manifest
from drawgap.data.formats import read_dataset, read_samples
from drawgap.data.omniglot import build_omniglot, preprocess
from drawgap.errors import InputError

# 3 alphabets x 4 characters x 3 drawers; weak split: character01-03 of each alphabet are test
LAYOUT = {"background": {"Beta": 4, "Alpha": 4}, "evaluation": {"Gamma": 4}}
DRAWERS = 3


def _png(row: int, drawer: int) -> bytes:
    """A 105x105 1-bit page, black ink on white: a bar whose height says the character, shift the drawer."""
    img = Image.new("1", (105, 105), 1)
    y = 10 + 20 * row
    ImageDraw.Draw(img).rectangle([10 + 8 * drawer, y, 50 + 8 * drawer, y + 7], fill=0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _members(subset: str) -> dict[str, bytes]:
    members, char_id = {}, 0
    for alphabet, n in LAYOUT[subset].items():
        for c in range(1, n + 1):
            char_id += 1
            for d in range(1, DRAWERS + 1):
                members[f"images_{subset}/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"] = _png(c - 1, d - 1)
    return members


def make_zip(path: Path, subset: str, extra: dict[str, bytes] | None = None) -> Path:
    members = {**_members(subset), **(extra or {})}
    names = list(members)
    random.Random(0).shuffle(names)  # archive order must not matter
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"images_{subset}/", b"")  # directory entries, as in the official zips
        for name in names:
            z.writestr(name, members[name])
    return path


@pytest.fixture
def zips(tmp_path) -> Path:
    root = tmp_path / "omniglot"
    root.mkdir()
    for subset in LAYOUT:
        make_zip(root / f"images_{subset}.zip", subset)
    return root


def _quiet(**kw):
    return dict(size=21, workers=1, progress=False, verify=False, **kw)


# ------------------------------------------------------------------------------------------- layout, splits


def test_weak_split_classes_order_and_drawings(zips):
    splits = build_omniglot(zips, split="weak", **_quiet())
    assert list(splits) == ["train", "test"]
    train, test = splits["train"], splits["test"]
    assert list(train.classes) == ["Alpha/character04", "Beta/character04", "Gamma/character04"]
    assert list(test.classes) == [f"{a}/character{c:02d}" for a in ("Alpha", "Beta", "Gamma") for c in (1, 2, 3)]
    np.testing.assert_array_equal(test.labels, np.repeat(np.arange(9), DRAWERS))
    assert test.images.shape == (27, 21, 21) and test.images.dtype == np.uint8
    # drawings in sorted file order (drawer 1, 2, 3): the bar moves right with the drawer number
    cols = np.nonzero(test.images_of(0).max(axis=1))
    first_ink = [cols[1][cols[0] == k].min() for k in range(DRAWERS)]
    assert first_ink == sorted(first_ink) and len(set(first_ink)) == DRAWERS
    # the character is the bar's height: character02 one step lower than character01
    rows_of = lambda img: np.nonzero(img.max(axis=1))[0]
    assert rows_of(test.images_of(1)[0]).min() > rows_of(test.images_of(0)[0]).max()
    assert train.meta["split"] == "train" and train.meta["split_rule"] == "weak"
    assert train.meta["image_size"] == 21 and train.meta["provenance"]["versions"]["numpy"]
    np.testing.assert_array_equal(train.labels[train.exemplars], np.arange(3))


def test_official_splits_and_single_subset(zips):
    splits = build_omniglot(zips, split="official", **_quiet())
    assert list(splits) == ["background", "evaluation"]
    assert [c.split("/")[0] for c in splits["background"].classes] == ["Alpha"] * 4 + ["Beta"] * 4
    assert list(splits["evaluation"].classes) == [f"Gamma/character{c:02d}" for c in range(1, 5)]
    # one subset needs only its own archive
    (zips / "images_background.zip").unlink()
    only = build_omniglot(zips, split="evaluation", **_quiet())
    np.testing.assert_array_equal(only["evaluation"].images, splits["evaluation"].images)


def test_ink_is_high_golden_square():
    # a black square on pixels 40..64 of a white 105 page is exactly output pixels 8..12 at 21 px (5x)
    page = np.ones((1, 1, 105, 105), np.float32)
    page[..., 40:65, 40:65] = 0.0
    import torch

    out = preprocess(torch.from_numpy(page), 21, 0.5)[0, 0].numpy()
    expected = np.zeros((21, 21))
    expected[8:13, 8:13] = 1
    np.testing.assert_array_equal(out, expected)
    # a blank page stays blank (scale-then-invert would make it all ink)
    assert preprocess(torch.ones(1, 1, 105, 105), 21).sum() == 0


def test_threshold_changes_stroke_width(zips):
    thin = build_omniglot(zips, split="evaluation", threshold=0.9, **_quiet())["evaluation"].images
    thick = build_omniglot(zips, split="evaluation", threshold=0.1, **_quiet())["evaluation"].images
    assert set(np.unique(thick)) == {0, 255}
    assert (thick >= thin).all() and (thick > thin).any()


def test_sources_zip_paths_and_extracted_folders_agree(zips, tmp_path):
    from_dir = build_omniglot(zips, split="weak", **_quiet())
    from_zips = build_omniglot([zips / "images_evaluation.zip", zips / "images_background.zip"], split="weak", **_quiet())
    extracted = tmp_path / "extracted"
    for subset in LAYOUT:
        zipfile.ZipFile(zips / f"images_{subset}.zip").extractall(extracted)
    from_folders = build_omniglot(extracted, split="weak", **_quiet())
    for other in (from_zips, from_folders):
        for name in ("train", "test"):
            np.testing.assert_array_equal(other[name].images, from_dir[name].images)
            np.testing.assert_array_equal(other[name].exemplars, from_dir[name].exemplars)
            assert list(other[name].classes) == list(from_dir[name].classes)


def test_worker_processes_give_the_same_images(zips, monkeypatch):
    one = build_omniglot(zips, split="weak", **_quiet())
    monkeypatch.setattr(omniglot, "_CHUNK", 7)  # several chunks, some straddling the two archives
    two = build_omniglot(zips, split="weak", **{**_quiet(), "workers": 2})
    for name in one:
        np.testing.assert_array_equal(two[name].images, one[name].images)


class RowTableCritic:
    """Feature of the k-th drawing of each class = [0, 10, 6][k]: Eq. 1 (mean 5.33) picks the last one."""

    def __init__(self):
        self.seen = 0

    def features(self, images):
        import torch

        assert images.dtype == torch.uint8 and images.dim() == 3  # the dataset's own images, in order
        rows = torch.arange(self.seen, self.seen + len(images))
        self.seen += len(images)
        return torch.tensor([0.0, 10.0, 6.0])[rows % DRAWERS][:, None]


def test_critic_features_choose_exemplars(zips):
    ds = build_omniglot(zips, split="evaluation", critic=RowTableCritic(), critic_name="fake", **_quiet())["evaluation"]
    np.testing.assert_array_equal(ds.exemplars, np.arange(4) * DRAWERS + 2)
    assert ds.meta["exemplars"] == {"method": "eq1-critic-features", "critic": "fake", "critic_class": "RowTableCritic"}
    # without a critic the blurred pixels pick the middle drawer (its bar lies between the other two)
    plain = build_omniglot(zips, split="evaluation", **_quiet())["evaluation"]
    np.testing.assert_array_equal(plain.exemplars, np.arange(4) * DRAWERS + 1)


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_weak_writes_datasets_and_samples(zips, tmp_path, cli):
    out = tmp_path / "out"
    r = cli("data", "omniglot", "--source", zips, "--split", "weak", "--size", 24, "--out", out)
    assert r.code == 0, r
    # the local zips are not the official bytes: one warning each, and the build goes on
    warnings = [line for line in r.err.splitlines() if line.startswith("drawgap: warning:")]
    assert len(warnings) == 2 and all("md5" in w and "images_" in w for w in warnings), r.err
    train, test = read_dataset(out / "train.npz"), read_dataset(out / "test.npz")
    assert (train.n_classes, test.n_classes) == (3, 9)
    assert test.meta["exemplars"]["method"] == "eq1-pixel-blur"
    assert 0 < test.images.mean() < 255 / 2  # ink is the minority and high
    r = cli("data", "omniglot", "--source", zips, "--size", 24, "--as-samples", "--no-verify", "--out", out)
    assert r.code == 0 and r.err == "", r
    s = read_samples(out / "test_samples.npz")
    assert s.samples.shape == (9, 3, 24, 24)
    np.testing.assert_array_equal(s.exemplars, test.exemplar_images())


def _error_line(r) -> str:
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("drawgap: error: "), r
    return lines[0]


def test_cli_corrupt_zip_exit_2_no_output(zips, tmp_path, cli):
    bad = zips / "images_evaluation.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    out = tmp_path / "out"
    line = _error_line(cli("data", "omniglot", "--source", zips, "--no-verify", "--out", out))
    assert str(bad) in line and "zip" in line
    assert not out.exists()


def test_cli_missing_archive_exit_2_no_output(zips, tmp_path, cli):
    (zips / "images_background.zip").unlink()
    out = tmp_path / "out"
    line = _error_line(cli("data", "omniglot", "--source", zips, "--no-verify", "--out", out))
    assert "missing images_background.zip" in line and str(zips) in line
    assert not out.exists()
    line = _error_line(cli("data", "omniglot", "--source", tmp_path / "nowhere", "--out", out))
    assert "nowhere" in line and "no such file" in line


def test_cli_bad_png_names_archive_and_member(tmp_path, cli):
    root = tmp_path / "src"
    root.mkdir()
    make_zip(root / "images_background.zip", "background")
    member = "images_evaluation/Gamma/character04/0012_03.png"
    make_zip(root / "images_evaluation.zip", "evaluation", extra={member: b"\x89PNG\r\n\x1a\n truncated"})
    out = tmp_path / "out"
    line = _error_line(cli("data", "omniglot", "--source", root, "--no-verify", "--out", out))
    assert str(root / "images_evaluation.zip") in line and member in line
    assert not out.exists()


def test_cli_bad_options_exit_2(zips, tmp_path, cli):
    assert "--split" in _error_line(cli("data", "omniglot", "--source", zips, "--split", "strong", "--out", tmp_path / "o"))
    assert "--threshold" in _error_line(cli("data", "omniglot", "--source", zips, "--threshold", 1.5, "--out", tmp_path / "o"))


# ------------------------------------------------------------------------------------ download (no network)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _official_from(monkeypatch, zips: Path, md5s: dict | None = None):
    """Point the official URLs at the tiny zips (file://), with their true sizes and the given MD5s."""
    table = {
        s: omniglot.OfficialArchive((zips / f"images_{s}.zip").as_uri(), (zips / f"images_{s}.zip").stat().st_size,
                                    (md5s or {}).get(s) or _md5(zips / f"images_{s}.zip"))
        for s in LAYOUT
    }
    monkeypatch.setattr(omniglot, "OFFICIAL", table)


def test_download_into_cache_then_reuse(zips, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DRAWGAP_CACHE", str(tmp_path / "cache"))
    _official_from(monkeypatch, zips)
    out = tmp_path / "out"
    assert cli("data", "omniglot", "--size", 21, "--out", out).code == 0
    cached = tmp_path / "cache" / "omniglot"
    manifest = read_manifest(cached)
    assert manifest["images_background.zip"]["md5"] == _md5(zips / "images_background.zip")
    assert manifest["images_evaluation.zip"]["url"] == (zips / "images_evaluation.zip").as_uri()
    # the cached copies are used from now on: the "server" may go away
    expected = read_dataset(out / "test.npz").images
    for subset in LAYOUT:
        (zips / f"images_{subset}.zip").unlink()
    again = build_omniglot(None, split="weak", size=21, workers=1, progress=False)
    np.testing.assert_array_equal(again["test"].images, expected)


def test_download_md5_mismatch_exit_2_nothing_kept(zips, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DRAWGAP_CACHE", str(tmp_path / "cache"))
    _official_from(monkeypatch, zips, md5s={"background": "0" * 32})
    out = tmp_path / "out"
    line = _error_line(cli("data", "omniglot", "--out", out))
    assert (zips / "images_background.zip").as_uri() in line and "md5" in line
    assert not out.exists()
    assert not (tmp_path / "cache" / "omniglot" / "images_background.zip").exists()
    assert [p.name for p in (tmp_path / "cache" / "omniglot").iterdir() if p.name.startswith(".")] == []


def test_download_file_checks_and_cache_dir(tmp_path, monkeypatch):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"drawgap" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setenv("DRAWGAP_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()
    dest = cache_dir() / "sub" / "blob.bin"
    with pytest.raises(InputError, match="size 7000 \\(expected 7001\\)"):
        download_file(src.as_uri(), dest, size=7001, progress=False)
    assert not dest.exists()
    assert download_file(src.as_uri(), dest, size=7000, sha256=sha, progress=False) == dest
    assert dest.read_bytes() == src.read_bytes()
    entry = json.loads((dest.parent / "manifest.json").read_text())["blob.bin"]
    assert entry["sha256"] == sha and entry["size"] == 7000
    # a verified copy is not fetched again, even if the source changed
    src.write_bytes(b"changed")
    download_file(src.as_uri(), dest, sha256=sha, progress=False)
    assert dest.stat().st_size == 7000
    with pytest.raises(InputError, match="could not download"):
        download_file((tmp_path / "absent").as_uri(), tmp_path / "x", progress=False)


def test_local_checksum_mismatch_warns_and_continues(zips):
    with pytest.warns(ChecksumWarning) as record:
        splits = build_omniglot(zips, split="weak", size=21, workers=1, progress=False)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2 and "images_background.zip: size" in messages[0] and "md5" in messages[1]
    assert splits["test"].n_classes == 9
