"""`drawgap data validate` (issue 18, item 6): every file given is checked and each bad one reported
(exit 2 if any); files with no class or no drawing, and repeated class names, are refused."""

import numpy as np

from drawgap.data.formats import Dataset, Samples, write_dataset, write_samples
from tests.conftest import make_dataset


def _empty_dataset(path):
    ds = Dataset(np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64), np.array([], dtype="<U4"), np.zeros(0, np.int64),
                 {"name": "empty"})
    return write_dataset(ds, path)  # a valid format: writing it is allowed, using it is not


def _no_samples(path):
    s = Samples(np.zeros((3, 0, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8), np.array(["a", "b", "c"]), {"generator": "x"})
    return write_samples(s, path)


def _duplicate_names(path):
    ds = make_dataset(n_classes=4, per_class=2)
    meta = {"format": "drawgap.dataset/1", "image_size": 8, **ds.meta}
    classes = np.array(["a", "b", "a", "c"])
    np.savez(path, images=ds.images, labels=ds.labels, classes=classes, exemplars=ds.exemplars,
             meta=np.array(__import__("json").dumps(meta)))
    return path


def test_validate_checks_every_file_and_reports_each_bad_one(tmp_path, cli):
    good = write_dataset(make_dataset(), tmp_path / "good.npz")
    empty = _empty_dataset(tmp_path / "empty.npz")
    no_samples = _no_samples(tmp_path / "no_samples.npz")
    dup = _duplicate_names(tmp_path / "dup.npz")
    also_good = write_dataset(make_dataset(seed=1), tmp_path / "also_good.npz")
    r = cli("data", "validate", empty, good, no_samples, dup, also_good)
    assert r.code == 2, r
    assert [line.split()[:3] for line in r.out.splitlines()] == [["ok", "dataset", str(good)], ["ok", "dataset", str(also_good)]]
    assert r.err.strip().splitlines() == [
        f"drawgap: error: {empty}: images: expected at least one class and one drawing, got 0 classes and 0 drawings",
        f"drawgap: error: {no_samples}: samples: expected at least one class and one sample per class, got 3 x 0",
        f"drawgap: error: {dup}: classes: expected unique class names, 'a' is at [0, 2]",
    ]


def test_validate_of_good_files_exits_0(tmp_path, cli):
    files = [write_dataset(make_dataset(seed=s), tmp_path / f"{s}.npz") for s in range(2)]
    r = cli("data", "validate", *files)
    assert r.code == 0 and r.err == "" and len(r.out.splitlines()) == 2
