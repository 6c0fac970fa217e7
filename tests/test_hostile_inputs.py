"""Hostile inputs get one line and exit 2, never a traceback (issue 18, item 4): an unwritable --out
(refused before the work starts), ndjson lines that overflow or nest too deeply, npz headers that claim
more memory than there is (a zip bomb), and a ClickMe database that is not one."""

import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from drawgap.data.formats import read_dataset, write_dataset
from drawgap.data.npz_guard import check_npz_sizes
from drawgap.data.quickdraw import NdjsonDrawings
from drawgap.errors import InputError
from drawgap.io import check_writable
from tests.conftest import make_dataset


def _one_line(r):
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("drawgap: error: "), r
    return lines[0]


# --------------------------------------------------------------------------------------- unwritable --out

# every verb with --out; the other inputs do not exist, so a verb that reads them before checking --out
# reports them instead: the --out error coming first shows that it is checked before any work
VERBS = {
    "evaluate": ["evaluate", "{missing}"],
    "compare": ["compare", "{missing}"],
    "train": ["train", "cfgdm", "--data", "{missing}"],
    "sample": ["sample", "{missing}", "--exemplars", "{missing}"],
    "report": ["report", "{missing}"],
    "demo": ["demo"],
    "data strokes": ["data", "strokes", "--classes", "4", "--per-class", "2", "--size", "8"],
    "data omniglot": ["data", "omniglot", "--source", "{missing}"],
    "data exemplars": ["data", "exemplars", "{missing}"],
    "data quickdraw": ["data", "quickdraw", "cat", "--source", "{missing}"],
    "data quickdraw-fs": ["data", "quickdraw-fs", "--categories", "cat", "--source", "{missing}"],
    "clickme stimuli": ["clickme", "stimuli", "{missing}"],
    "clickme export": ["clickme", "export", "--db", "{missing}"],
    "critics train": ["critics", "train", "protonet", "--data", "{missing}"],
    "importance maps critic": ["importance", "maps", "critic", "strokes-protonet", "--data", "{missing}"],
    "importance maps diffusion": ["importance", "maps", "diffusion", "{missing}", "--exemplars", "{missing}"],
    "importance human": ["importance", "human", "{missing}"],
    "importance compare": ["importance", "compare", "{missing}", "{missing}"],
    "importance ink": ["importance", "ink", "{missing}"],
    "importance figure": ["importance", "figure", "{missing}"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_an_unwritable_out_is_refused_before_the_work(verb, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"  # its parent is a file: nothing can be written there, even as root
    args = [a.format(missing=tmp_path / "missing.npz") for a in VERBS[verb]]
    line = _one_line(cli(*args, "--out", out))
    assert "--out" in line and f"{blocker} is not a folder" in line
    assert blocker.read_text() == "not a folder"


def test_check_writable_names_what_is_wrong(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="expected a file name, found a folder"):
        check_writable(tmp_path)
    with pytest.raises(InputError, match="expected a folder, found a file"):
        check_writable(tmp_path / "f", folder=True)
    assert check_writable(tmp_path / "new" / "deeper" / "x.npz") == tmp_path / "new" / "deeper" / "x.npz"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_read_only_folder_is_refused(tmp_path, cli):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        line = _one_line(cli("data", "strokes", "--classes", "4", "--per-class", "2", "--size", "8", "--out", locked / "d"))
        assert "cannot write in" in line and "Permission denied" in line
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------------------------------ ndjson

GOOD = json.dumps({"word": "cat", "recognized": True, "drawing": [[[0, 10, 20], [0, 10, 20]]]})
HOSTILE = {
    2: '{"word": "cat", "drawing": [[[' + "9" * 400 + ", 1], [0, 1]]]}",  # float() overflows
    4: "[" * 100_000 + "]" * 100_000,  # json's recursion limit
    5: '{"word": "cat", "drawing": [[[' + "9" * 5000 + "], [0]]]}",  # over Python's 4300-digit int limit
}


@pytest.fixture
def hostile_ndjson(tmp_path):
    path = tmp_path / "cat.ndjson"
    path.write_text("\n".join(HOSTILE.get(n, GOOD) for n in range(1, 7)) + "\n")
    return path


def test_overflowing_and_deep_ndjson_lines_are_skipped_and_counted(hostile_ndjson):
    reader = NdjsonDrawings(hostile_ndjson, warn=False)
    assert [d.line for d in reader] == [1, 3, 6]
    reasons = dict(reader.skipped)
    assert sorted(reasons) == [2, 4, 5]
    assert "numeric coordinates" in reasons[2]
    assert "nested too deeply" in reasons[4]
    assert "too many digits" in reasons[5]


def test_overflowing_ndjson_line_stops_with_file_and_line(hostile_ndjson, tmp_path, cli):
    line = _one_line(cli("data", "quickdraw", "cat", "--out", tmp_path / "b", "--source", hostile_ndjson.parent,
                         "--on-error", "stop", "--workers", "1"))
    assert line.startswith(f"drawgap: error: {hostile_ndjson}: line 2: ")
    skipped = cli("data", "quickdraw", "cat", "--out", tmp_path / "a", "--source", hostile_ndjson.parent, "--size", 16,
                  "--workers", "1")
    assert skipped.code == 0, skipped
    assert "skipped 3 malformed line(s) (first: line 2" in skipped.err
    assert len(read_dataset(tmp_path / "a" / "quickdraw.npz").images) == 3


# ------------------------------------------------------------------------------------------------- npz


def _npz_with_member(path, name, header: dict, body: bytes, compress=zipfile.ZIP_STORED):
    head = io.BytesIO()
    np.lib.format.write_array_header_2_0(head, header)
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr(name, head.getvalue() + body)
    return path


def test_a_header_claiming_215_gib_is_refused_without_allocating(tmp_path, cli):
    bomb = _npz_with_member(tmp_path / "bomb.npz", "images.npy",
                            {"descr": "<f4", "fortran_order": False, "shape": (57_711_769_600,)}, b"\0" * 64)
    line = _one_line(cli("data", "validate", bomb))
    assert f"{bomb}: images: expected the 64 bytes the member holds" in line and "215.0 GiB" in line


def test_a_zip_bomb_is_refused_from_its_headers(tmp_path, monkeypatch):
    """A member that truly inflates to 64 MiB of zeros (65 KiB on disk) against 16 MiB of memory."""
    path = tmp_path / "zeros.npz"
    with open(path, "wb") as fh:
        np.savez_compressed(fh, images=np.zeros((64, 1024, 1024), np.uint8))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr("drawgap.data.npz_guard.memory_available", lambda: 16 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"images: expected arrays that fit in memory: 0\.1 GiB"):
            read_dataset(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the 64 MiB array was never allocated


def test_real_files_pass_the_size_check(tmp_path):
    path = write_dataset(make_dataset(), tmp_path / "d.npz")
    check_npz_sizes(path)
    with pytest.raises(InputError, match="fit in memory"):
        check_npz_sizes(path, limit=100)


# ------------------------------------------------------------------------------------------------ clickme


def test_clickme_export_of_a_file_that_is_not_a_database(tmp_path, cli):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("this is not a database\n" * 10)
    before = not_db.read_bytes()
    line = _one_line(cli("clickme", "export", "--db", not_db, "--out", tmp_path / "clicks.npz"))
    assert f"{not_db}: db: could not open the database (file is not a database)" in line
    assert not_db.read_bytes() == before and not (tmp_path / "clicks.npz").exists()
