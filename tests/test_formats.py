import json

import numpy as np
import pytest

from drawgap.data.formats import (
    Dataset,
    Samples,
    read_dataset,
    read_drawings,
    read_samples,
    write_dataset,
    write_samples,
)
from drawgap.errors import InputError
from tests.conftest import make_dataset


def test_dataset_round_trip(tmp_path, tiny_dataset):
    path = write_dataset(tiny_dataset, tmp_path / "d.npz")
    back = read_dataset(path)
    np.testing.assert_array_equal(back.images, tiny_dataset.images)
    np.testing.assert_array_equal(back.labels, tiny_dataset.labels)
    np.testing.assert_array_equal(back.exemplars, tiny_dataset.exemplars)
    assert list(back.classes) == list(tiny_dataset.classes)
    assert back.meta["format"] == "drawgap.dataset/1"
    assert back.meta["image_size"] == 8
    assert back.meta["name"] == "tiny"


def test_samples_round_trip_and_human_rows(tmp_path, tiny_dataset):
    s = tiny_dataset.to_samples()
    assert s.samples.shape == (4, 3, 8, 8)
    # each row holds the drawings of its class, exemplar row is the exemplar drawing
    np.testing.assert_array_equal(s.samples[2], tiny_dataset.images[6:9])
    np.testing.assert_array_equal(s.exemplars[1], tiny_dataset.images[3])
    path = write_samples(s, tmp_path / "s.npz")
    back = read_samples(path)
    np.testing.assert_array_equal(back.samples, s.samples)
    assert back.meta["generator"] == "human"
    assert back.meta["format"] == "drawgap.samples/1"
    assert back.meta["exemplar_included"] is True  # the papers' protocol: the exemplar is one of the drawings


def test_human_reference_without_the_exemplar(tmp_path, tiny_dataset):
    tiny_dataset.exemplars[2] = 7  # the middle drawing of class 2 (images 6, 7, 8)
    s = tiny_dataset.to_samples(exclude_exemplar=True)
    assert s.samples.shape == (4, 2, 8, 8) and s.meta["exemplar_included"] is False and s.meta["exemplar_rows"] == 0
    assert tiny_dataset.to_samples(per_class=1).meta["exemplar_rows"] == 3  # class 2: its first drawing is not the exemplar
    np.testing.assert_array_equal(s.samples[2], tiny_dataset.images[[6, 8]])
    np.testing.assert_array_equal(s.samples[0], tiny_dataset.images[[1, 2]])
    np.testing.assert_array_equal(s.exemplars[2], tiny_dataset.images[7])
    assert read_samples(write_samples(s, tmp_path / "s.npz")).meta["exemplar_included"] is False
    with pytest.raises(InputError, match=r"per_class in 1..2 \(the exemplar excluded\), got 3"):
        tiny_dataset.to_samples(per_class=3, exclude_exemplar=True)


def test_one_reader_for_a_dataset_or_a_samples_file(tmp_path, tiny_dataset):
    ds = read_drawings(write_dataset(tiny_dataset, tmp_path / "d.npz"))
    assert isinstance(ds, Dataset) and ds.content_sha256() == tiny_dataset.content_sha256()
    s = read_drawings(write_samples(tiny_dataset.to_samples(), tmp_path / "s.npz"))
    assert isinstance(s, Samples) and s.content_sha256() == tiny_dataset.to_samples().content_sha256()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz: expected an .npz file"):
        read_drawings(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="missing.npz: no such file"):
        read_drawings(tmp_path / "missing.npz")


def test_content_hash_follows_the_drawings_not_the_file(tmp_path, tiny_dataset):
    a = write_dataset(tiny_dataset, tmp_path / "a.npz")
    tiny_dataset.meta["note"] = "written again"
    b = write_dataset(tiny_dataset, tmp_path / "b.npz")
    assert a.read_bytes() != b.read_bytes()
    assert read_dataset(a).content_sha256() == read_dataset(b).content_sha256() == tiny_dataset.content_sha256()
    # one pixel, one label, one class name, one exemplar: each changes it
    base = tiny_dataset.content_sha256()
    for name, edit in [("images", lambda d: d.images.__setitem__((0, 0, 0), 255 - d.images[0, 0, 0])),
                       ("labels", lambda d: d.labels.__setitem__(0, d.labels[3])),
                       ("classes", lambda d: d.classes.__setitem__(0, "renamed")),
                       ("exemplars", lambda d: d.exemplars.__setitem__(0, 1))]:
        d = read_dataset(a)
        edit(d)
        assert d.content_sha256() != base, name


def test_content_hash_by_its_definition():
    import hashlib

    from drawgap.data.formats import content_sha256

    x = np.array([[1, 2]], dtype=np.uint8)
    names = np.array(["a", "bc"])
    want = hashlib.sha256(b"x:|u1:(1, 2);" + bytes([1, 2]) + b"names:str:(2,);a\nbc").hexdigest()
    assert content_sha256(x=x, names=names) == want
    # the byte order and the width of the strings do not count; the order of the arrays does
    assert content_sha256(v=np.arange(3, dtype=">i4")) == content_sha256(v=np.arange(3, dtype="<i4"))
    assert content_sha256(x=x, names=names.astype("<U8")) == want
    assert content_sha256(names=names, x=x) != want


def test_float_samples_allowed(tmp_path):
    s = Samples(np.zeros((2, 3, 6, 6), np.float32), np.ones((2, 6, 6), np.float32), np.array(["a", "b"]), {})
    back = read_samples(write_samples(s, tmp_path / "f.npz"))
    assert back.samples.dtype == np.float32


def _raw_dataset(ds, **override):
    arrays = dict(images=ds.images, labels=ds.labels, classes=ds.classes, exemplars=ds.exemplars,
                  meta=np.array(json.dumps({"format": "drawgap.dataset/1"})))
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(
    "override, field, words",
    [
        (dict(images=None), "images", "missing key"),
        (dict(images=np.zeros((12, 8, 8), np.float64)), "images", "dtype"),
        (dict(images=np.zeros((12, 8, 9), np.uint8)), "images", "square"),
        (dict(images=np.zeros((12, 64), np.uint8)), "images", "shape"),
        (dict(labels=np.zeros(12, np.int32)), "labels", "int64"),
        (dict(labels=np.full(12, 7, np.int64)), "labels", "0..3"),
        (dict(exemplars=np.array([0, 3, 6], np.int64)), "exemplars", "one per class"),
        (dict(exemplars=np.array([0, 3, 6, 99], np.int64)), "exemplars", "indices into images"),
        (dict(exemplars=np.array([0, 3, 6, 0], np.int64)), "exemplars", "class 3"),
        (dict(meta=np.array("{not json")), "meta", "JSON"),
        (dict(meta=np.array('{"format": "other/1"}')), "meta.format", "drawgap.dataset/1"),
    ],
)
def test_dataset_validation_names_file_and_field(tmp_path, tiny_dataset, override, field, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **_raw_dataset(tiny_dataset, **override))
    with pytest.raises(InputError) as err:
        read_dataset(path)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    assert f": {field}: " in msg or msg.endswith(f": {field}: missing key"), msg
    assert words in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "samples, exemplars, classes, field, words",
    [
        (np.full((2, 3, 6, 6), np.nan, np.float32), np.zeros((2, 6, 6), np.float32), ["a", "b"], "samples", "NaN"),
        (np.zeros((2, 3, 6, 6), np.uint8), np.zeros((3, 6, 6), np.uint8), ["a", "b"], "exemplars", "2 exemplars"),
        (np.zeros((2, 3, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8), ["a"], "classes", "2 class names"),
        (np.zeros((2, 3, 6, 6), np.uint8), np.zeros((2, 8, 8), np.uint8), ["a", "b"], "exemplars", "size 6"),
        (np.zeros((2, 3, 6, 6), np.float32) + 2, np.zeros((2, 6, 6), np.float32), ["a", "b"], "samples", "[0, 1]"),
        (np.zeros((2, 3, 6, 6), np.int32), np.zeros((2, 6, 6), np.int32), ["a", "b"], "samples", "dtype"),
    ],
)
def test_samples_validation(tmp_path, samples, exemplars, classes, field, words):
    path = tmp_path / "bad.npz"
    np.savez(path, samples=samples, exemplars=exemplars, classes=np.array(classes),
             meta=np.array('{"format": "drawgap.samples/1"}'))
    with pytest.raises(InputError) as err:
        read_samples(path)
    assert f"{path}: {field}: " in str(err.value)
    assert words in str(err.value)


def test_truncated_npz_is_an_input_error(tmp_path, tiny_dataset):
    path = write_dataset(tiny_dataset, tmp_path / "d.npz")
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.npz"):
        read_dataset(cut)


def test_invalid_write_leaves_existing_file_untouched(tmp_path, tiny_dataset):
    path = write_dataset(tiny_dataset, tmp_path / "d.npz")
    before = path.read_bytes()
    bad = make_dataset()
    bad.exemplars = np.array([0, 0, 0, 0], np.int64)
    with pytest.raises(InputError):
        write_dataset(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_cli_validate_exit_codes(tmp_path, tiny_dataset, cli):
    good = write_dataset(tiny_dataset, tmp_path / "d.npz")
    r = cli("data", "validate", good)
    assert r.code == 0 and "ok dataset" in r.out
    assert f"content sha256 {tiny_dataset.content_sha256()}" in r.out
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    r = cli("data", "validate", tmp_path / "junk.npz")
    assert r.code == 2
    assert r.err.count("\n") == 1 and "junk.npz" in r.err


def test_weights_files_have_the_same_bytes_in_every_process(tmp_path):
    # safetensors orders the metadata by a per-process hash seed; drawgap sorts it, so the sha256 recorded for
    # a generator's weights is reproducible. Five keys: 120 orders, so two processes agree by chance 1 in 120.
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, torch\n"
            "from drawgap.weights import save_safetensors\n"
            "save_safetensors({'w': torch.arange(6.0).view(2, 3), 'b': torch.ones(2)}, sys.argv[1],\n"
            "                 metadata={k: k.upper() for k in ('format', 'generator', 'alpha', 'zeta', 'mid')})\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    paths = [tmp_path / f"w{k}.safetensors" for k in range(2)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env, timeout=120)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == 1
    from safetensors import safe_open

    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata() == {k: k.upper() for k in ("format", "generator", "alpha", "zeta", "mid")}
        assert f.get_tensor("w").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and f.get_tensor("b").tolist() == [1.0, 1.0]
    assert list(json.loads(paths[0].read_bytes()[8:8 + int.from_bytes(paths[0].read_bytes()[:8], "little")])["__metadata__"]) \
        == ["alpha", "format", "generator", "mid", "zeta"]
