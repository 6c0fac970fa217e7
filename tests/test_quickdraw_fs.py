"""QuickDraw-FS reconstruction: sub-categories by clustering, end to end through the CLI (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from drawgap.data.formats import read_dataset, read_samples
from drawgap.data.quickdraw import NdjsonDrawings, rasterize
from drawgap.data.quickdraw_fs import QuickDrawFSConfig, build_quickdraw_fs, kmeans, pixel_embedding, quickdraw_fs_config
from drawgap.errors import InputError
from tests.test_quickdraw import write_ndjson

PER_SHAPE = 60
CATEGORIES = {"round things": ("circle", "triangle"), "pointy": ("cross", "square", "zigzag")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Two categories in the official ndjson format, each mixing clearly distinct shapes, and a table
    from each drawing's 48 px rendering to its shape (the ground truth the clusters should recover)."""
    src = tmp_path_factory.mktemp("quickdraw")
    shape_of = {}
    for seed, (category, shapes) in enumerate(CATEGORIES.items()):
        path = src / f"{category}.ndjson"
        order = write_ndjson(path, category, shapes, PER_SHAPE, seed=seed)
        for image, shape in zip(rasterize(NdjsonDrawings(path), 48), order):
            shape_of[image.tobytes()] = shape
    return src, shape_of


def _shapes(ds, c, shape_of):
    return {shape_of[im.tobytes()] for im in ds.images_of(c)}


def test_cli_builds_homogeneous_sub_categories_split_by_class(source, cli, tmp_path):
    src, shape_of = source
    result = cli("data", "quickdraw-fs", "--categories", "round things,pointy", "--source", src, "--out", tmp_path,
                 "--min-cluster", 50, "--seed", 3)
    assert result.code == 0, result
    train, test = read_dataset(tmp_path / "train.npz"), read_dataset(tmp_path / "test.npz")
    # k = floor(120 / 50) = 2 and floor(180 / 50) = 3 clusters of 60, all kept; 5 * 115/665 -> 1 test class
    assert (train.n_classes, test.n_classes) == (4, 1)
    names = sorted([*train.classes, *test.classes])
    assert names == ["pointy/0", "pointy/1", "pointy/2", "round things/0", "round things/1"]
    found = []
    for ds in (train, test):
        assert np.bincount(ds.labels).tolist() == [50] * ds.n_classes
        assert ds.image_size == 48 and ds.images.dtype == np.uint8
        for c in range(ds.n_classes):
            shapes = _shapes(ds, c, shape_of)
            assert len(shapes) == 1, (ds.classes[c], shapes)  # each sub-category is one shape
            found += shapes
        assert ds.labels[ds.exemplars].tolist() == list(range(ds.n_classes))
    assert sorted(found) == sorted(s for shapes in CATEGORIES.values() for s in shapes)
    meta = train.meta
    assert meta["name"] == "quickdraw-fs" and meta["reconstruction"] is True and "reconstruction" in meta["note"].lower()
    config = meta["provenance"]["config"]
    assert config["min_cluster"] == 50 and config["seed"] == 3 and config["selection"] == "closest"
    assert config["test_fraction"] == pytest.approx(115 / 665) and meta["provenance"]["seed"] == 3
    assert {s["cluster_size"] for s in meta["sub_categories"]} == {60}
    assert "0.3" in meta["binarization"]



def test_small_clusters_are_dropped_and_random_selection_is_seeded(source):
    src, shape_of = source
    config = QuickDrawFSConfig(["pointy"], min_cluster=55, clusters_per_category=4, selection="random", seed=1,
                               test_fraction=0.5)
    splits = build_quickdraw_fs(config, source=src, progress=False)
    sizes = [s["cluster_size"] for ds in splits.values() for s in ds.meta["sub_categories"]]
    assert all(size >= 55 for size in sizes) and len(sizes) == 2  # 4 clusters of 180 drawings: one shape is split
    for ds in splits.values():
        assert np.bincount(ds.labels).tolist() == [55] * ds.n_classes
        assert all(len(_shapes(ds, c, shape_of)) == 1 for c in range(ds.n_classes))
    again = build_quickdraw_fs(config, source=src, progress=False)
    np.testing.assert_array_equal(again["train"].images, splits["train"].images)


def test_critic_features_cluster_and_choose_exemplars(source):
    src, shape_of = source

    class BlurCritic:
        calls = 0

        def features(self, images):
            BlurCritic.calls += 1
            return __import__("torch").from_numpy(pixel_embedding(np.asarray(images)))

    config = QuickDrawFSConfig(["round things"], min_cluster=50, critic="blur-critic", test_fraction=0.5)
    splits = build_quickdraw_fs(config, source=src, critic=BlurCritic(), progress=False)
    assert BlurCritic.calls >= 2  # clustering, then the exemplars of each split
    for ds in splits.values():
        assert ds.meta["exemplars"]["method"] == "eq1-critic-features" and ds.meta["exemplars"]["critic"] == "blur-critic"
        assert len(_shapes(ds, 0, shape_of)) == 1


def test_as_samples_and_errors(source, cli, tmp_path):
    src, _ = source
    ok = cli("data", "quickdraw-fs", "--categories", "round things", "--source", src, "--out", tmp_path, "--min-cluster", 50,
             "--test-fraction", 0.5, "--as-samples")
    assert ok.code == 0, ok
    assert read_samples(tmp_path / "train_samples.npz").samples.shape == (1, 50, 48, 48)

    too_few = cli("data", "quickdraw-fs", "--categories", "round things", "--source", src, "--out", tmp_path / "x", "--min-cluster", 100)
    assert too_few.code == 2 and "kept 1 sub-categories" in too_few.err and not (tmp_path / "x").exists()
    missing = cli("data", "quickdraw-fs", "--categories", "round things,dog", "--source", src, "--out", tmp_path / "y")
    assert missing.code == 2 and "dog.ndjson" in missing.err
    for option, value in (("--test-fraction", 1.0), ("--selection", "best"), ("--min-cluster", 1)):
        bad = cli("data", "quickdraw-fs", "--categories", "pointy", "--source", src, "--out", tmp_path / "z", option, value)
        assert bad.code == 2 and bad.err.startswith("drawgap: error: "), (option, bad)


def test_kmeans_restarts_find_separated_groups():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.5, (40, 2)) for c in centres])
    for seed in range(5):
        _, assignment = kmeans(points, 4, np.random.default_rng(seed))
        groups = assignment.reshape(4, 40)
        assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 4


def test_pixel_embedding_is_a_pca_of_blurred_pooled_pixels():
    images = np.random.default_rng(0).integers(0, 256, (30, 48, 48), dtype=np.uint8)
    e = pixel_embedding(images, dims=8)
    assert e.shape == (30, 8)
    np.testing.assert_allclose(e.mean(axis=0), 0, atol=1e-9)
    variances = e.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-12)  # components by decreasing variance
    np.testing.assert_allclose(np.corrcoef(e.T) - np.eye(8), 0, atol=1e-6)  # uncorrelated
    with pytest.raises(InputError):
        QuickDrawFSConfig(["a"], selection="nearest").check()


def test_worker_processes_build_the_same_files(source):
    src, _ = source
    config = quickdraw_fs_config(list(CATEGORIES), min_cluster=50, seed=3)
    one = build_quickdraw_fs(config, source=src, progress=False, workers=1)
    two = build_quickdraw_fs(config, source=src, progress=False, workers=2)
    for split in ("train", "test"):
        assert one[split].content_sha256() == two[split].content_sha256()


def test_categories_all_means_every_category_file_in_source(source, cli, tmp_path):
    src, _ = source
    named = cli("data", "quickdraw-fs", "--categories", "pointy,round things", "--source", src, "--out", tmp_path / "named",
                "--min-cluster", 50, "--seed", 3)
    every = cli("data", "quickdraw-fs", "--categories", "all", "--source", src, "--out", tmp_path / "all",
                "--min-cluster", 50, "--seed", 3)
    assert named.code == 0 and every.code == 0, (named, every)
    for split in ("train", "test"):  # 'all' is the folder's categories in file-name order
        a, b = read_dataset(tmp_path / "named" / f"{split}.npz"), read_dataset(tmp_path / "all" / f"{split}.npz")
        assert a.content_sha256() == b.content_sha256()
    assert read_dataset(tmp_path / "all" / "train.npz").meta["provenance"]["config"]["categories"] == ["pointy", "round things"]
    no_source = cli("data", "quickdraw-fs", "--categories", "all", "--out", tmp_path / "x")
    assert no_source.code == 2 and "--source" in no_source.err and not (tmp_path / "x").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    none = cli("data", "quickdraw-fs", "--categories", "all", "--source", empty, "--out", tmp_path / "y")
    assert none.code == 2 and "no *.ndjson files" in none.err and not (tmp_path / "y").exists()


def test_preview_shows_the_sub_categories_of_a_category(source, cli, tmp_path):
    src, _ = source
    r = cli("data", "quickdraw-fs", "--categories", "all", "--source", src, "--out", tmp_path / "d", "--min-cluster", 50,
            "--seed", 3, "--preview", tmp_path / "p.png", "--preview-category", "pointy")
    assert r.code == 0, r
    assert "the sub-categories of pointy" in r.out
    from PIL import Image

    with Image.open(tmp_path / "p.png") as im:  # three rows (pointy/0..2) of ten drawings, black ink on white
        assert im.size[1] < im.size[0] and np.asarray(im.convert("L")).mean() > 200
    bad = cli("data", "quickdraw-fs", "--categories", "pointy", "--source", src, "--out", tmp_path / "e", "--min-cluster", 50,
              "--preview", tmp_path / "q.png", "--preview-category", "dog")
    assert bad.code == 2 and "--preview-category" in bad.err and not (tmp_path / "e").exists()
    alone = cli("data", "quickdraw-fs", "--categories", "pointy", "--source", src, "--out", tmp_path / "f", "--preview", tmp_path / "q.png")
    assert alone.code == 2 and "--preview-category" in alone.err and not (tmp_path / "f").exists()


# ------------------------------------------------------------------------------------------ split records


def test_test_split_is_rebuilt_from_its_categories_alone(tmp_path, cli):
    """A split record lets the test classes be rebuilt from the categories that hold them (the other files need
    not be there): the same drawings, labels, classes and exemplars as the full build; other drawings in a file,
    or a class that comes out different, stop the rebuild with a message naming them."""
    import json

    from drawgap.data.quickdraw_fs import read_split_record, rebuild_test_split
    from tests.test_quickdraw import write_ndjson

    src = tmp_path / "src"
    src.mkdir()
    shapes = {"a": ("circle", "cross"), "b": ("square", "zigzag"), "c": ("triangle", "circle"), "d": ("cross", "square"),
              "e": ("zigzag", "triangle")}
    for seed, (category, pair) in enumerate(shapes.items()):
        write_ndjson(src / f"{category}.ndjson", category, pair, 30, seed=seed)
    built = cli("data", "quickdraw-fs", "--categories", "e,c,a,d,b", "--source", src, "--out", tmp_path / "full",
                "--min-cluster", 25, "--test-fraction", 0.3, "--seed", 4)
    assert built.code == 0, built
    r = cli("data", "quickdraw-fs-split", tmp_path / "full" / "test.npz", "--source", src, "--out", tmp_path / "split.json")
    assert r.code == 0 and "3 test classes from" in r.out, r
    record = read_split_record(tmp_path / "split.json")
    full = read_dataset(tmp_path / "full" / "test.npz")
    assert [c["class"] for c in record["test_classes"]] == list(full.classes)
    assert record["config"]["categories"] == ["e", "c", "a", "d", "b"] and record["config"]["min_cluster"] == 25
    held = set(record["files"])
    assert held == {str(c).split("/")[0] for c in full.classes} and len(held) < 5
    for f in src.iterdir():  # only the files that hold test classes are needed
        if f.stem not in held:
            f.unlink()
    rebuilt = rebuild_test_split(record, src, progress=False)
    assert rebuilt.content_sha256() == full.content_sha256()
    np.testing.assert_array_equal(rebuilt.exemplars, full.exemplars)
    assert rebuilt.meta["sub_categories"] == full.meta["sub_categories"] and rebuilt.meta["split"] == "test"
    assert rebuilt.meta["rebuilt_from_split"]["categories"] == len(held)

    tampered = json.loads((tmp_path / "split.json").read_text())
    tampered["test_classes"][1]["sha256"] = "0" * 64
    with pytest.raises(InputError, match=f"1 of 3 rebuilt test classes differ.*{tampered['test_classes'][1]['class']}"):
        rebuild_test_split(tampered, src, progress=False)
    changed = src / f"{sorted(held)[0]}.ndjson"
    changed.write_text(changed.read_text().replace('"recognized": true', '"recognized": false', 1))
    with pytest.raises(InputError, match="built from") as err:
        rebuild_test_split(record, src, progress=False)
    assert str(changed) in str(err.value)
    bad = cli("data", "quickdraw-fs-split", tmp_path / "full" / "train.npz", "--source", src, "--out", tmp_path / "x.json")
    assert bad.code == 2 and "test.npz" in bad.err and not (tmp_path / "x.json").exists()


def test_shipped_split_record_names_the_shipped_models_test_classes():
    """The record drawgap ships: 95 test classes of 150 drawings from 86 of the 300 development categories."""
    from drawgap.data.quickdraw_fs import SHIPPED_SPLIT, QuickDrawFSConfig, read_split_record

    record = read_split_record(SHIPPED_SPLIT)
    config = QuickDrawFSConfig(**record["config"]).check()
    assert (config.min_cluster, config.seed, config.image_size, len(config.categories)) == (150, 0, 48, 300)
    assert len(record["test_classes"]) == 95 and record["n_sub_categories_total"] == 550 and len(record["files"]) == 86
    assert {c["class"].rsplit("/", 1)[0] for c in record["test_classes"]} == set(record["files"])
    assert all(len(c["sha256"]) == 64 and 0 <= c["exemplar"] < 150 for c in record["test_classes"])


def test_categories_all_is_in_file_name_order(tmp_path):
    """'all' lists the folder's files in file-name order ("baseball bat.ndjson" before "baseball.ndjson", where name
    order would put "baseball" first): the order the shipped QuickDraw models' split was built in, and each
    category's random stream depends on its position."""
    from drawgap.data.quickdraw import categories_in

    for name in ("baseball.ndjson", "baseball bat.ndjson", "apple.ndjson", "full_simplified_bat.ndjson"):
        (tmp_path / name).write_text("")
    assert categories_in(tmp_path) == ["apple", "baseball bat", "baseball", "bat"]
