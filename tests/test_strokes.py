import json

import numpy as np
import pytest
from PIL import Image

from drawgap.data.formats import read_dataset, read_samples
from drawgap.data.strokes import (
    StrokesConfig,
    build_strokes,
    preview_rows,
    render_strokes,
    sample_characters,
    split_drawings,
)
from drawgap.errors import InputError

SMALL = StrokesConfig(n_classes=12, per_class=4, image_size=32, n_alphabets=3, test_fraction=0.25, seed=3)


@pytest.fixture(scope="module")
def small():
    return build_strokes(SMALL)


def _nn_accuracies(ds):
    """(leave-one-out 1-NN over all drawings, 1-NN of each non-exemplar drawing to the exemplars), pixel L2."""
    x = ds.images.reshape(len(ds.images), -1).astype(np.float64) / 255
    sq = (x**2).sum(1)
    d = sq[:, None] + sq[None] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    loo = float((ds.labels[d.argmin(1)] == ds.labels).mean())
    queries = np.setdiff1d(np.arange(len(x)), ds.exemplars)
    one_shot = float((d[queries][:, ds.exemplars].argmin(1) == ds.labels[queries]).mean())
    return loo, one_shot


def test_same_seed_gives_byte_identical_images_and_other_seeds_differ(small):
    again = build_strokes(SMALL)
    other = build_strokes(StrokesConfig(**{**SMALL.to_dict(), "seed": 4}))
    for split in ("train", "test"):
        assert again[split].images.tobytes() == small[split].images.tobytes()
        np.testing.assert_array_equal(again[split].exemplars, small[split].exemplars)
        assert not np.array_equal(other[split].images, small[split].images)


def test_characters_do_not_depend_on_the_number_of_drawings():
    few = sample_characters(SMALL)
    many = sample_characters(StrokesConfig(**{**SMALL.to_dict(), "per_class": 9}))
    for (a, _), (b, _) in zip(few, many):
        assert a.name == b.name and len(a.strokes) == len(b.strokes)
        for sa, sb in zip(a.strokes, b.strokes):
            np.testing.assert_array_equal(sa.control, sb.control)


def test_split_is_by_class_first_characters_of_each_alphabet_are_test(small):
    train, test = small["train"], small["test"]
    # 12 classes over 3 alphabets = 4 each; round(0.25 * 4) = 1 test character per alphabet
    assert list(test.classes) == ["alphabet01/character01", "alphabet02/character01", "alphabet03/character01"]
    assert len(train.classes) == 9 and "alphabet02/character04" in train.classes
    assert not set(train.classes) & set(test.classes)
    for ds in (train, test):
        assert ds.images.shape == (ds.n_classes * 4, 32, 32) and ds.images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(ds.labels), np.full(ds.n_classes, 4))
        np.testing.assert_array_equal(ds.labels[ds.exemplars], np.arange(ds.n_classes))


def test_meta_records_source_config_and_seed(small):
    meta = small["test"].meta
    assert (meta["name"], meta["split"], meta["source"], meta["image_size"], meta["seed"]) == ("strokes", "test", "built-in", 32, 3)
    assert meta["config"]["n_classes"] == 12 and meta["config"]["n_alphabets"] == 3
    assert meta["provenance"]["seed"] == 3 and "numpy" in meta["provenance"]["versions"]
    assert meta["exemplars"]["method"] == "eq1-pixel-blur"
    assert meta["license"]
    json.dumps(meta)


def test_default_alphabet_count_and_even_sharing():
    config = StrokesConfig(n_classes=45, per_class=2)
    assert config.alphabets == 2  # one per 20 characters
    names = [c.name for c, _ in sample_characters(config)]
    assert sum(n.startswith("alphabet01/") for n in names) == 23 and names[-1] == "alphabet02/character22"


def test_images_are_anti_aliased_ink_high_and_centred(small):
    images = np.concatenate([small["train"].images, small["test"].images])
    assert images.max() == 255
    gray = (images > 0) & (images < 255)
    assert gray.sum() > 0.2 * (images > 0).sum()  # edges are intermediate gray levels
    assert np.median(images) == 0  # background is 0, ink is high
    border = int(SMALL.margin * 32) - 1  # the margin stays empty
    assert images[:, :border].max() == 0 and images[:, -border:].max() == 0
    assert images[:, :, :border].max() == 0 and images[:, :, -border:].max() == 0
    for image in images:
        ys, xs = np.nonzero(image)
        centre = np.array([(ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2])
        assert np.abs(centre - 15.5).max() <= 0.1 * 32, centre


def test_render_golden_line_profiles():
    # A horizontal line 1 px wide on the boundary between rows 7 and 8 half-covers both rows
    line = [np.array([[3.0, 8.0], [13.0, 8.0]])]
    np.testing.assert_array_equal(render_strokes(line, 16, 1.0)[5:11, 8], [0, 0, 128, 128, 0, 0])
    # centred on row 8 it covers that row only; 2 px wide it also half-covers rows 7 and 9
    line = [np.array([[3.0, 8.5], [13.0, 8.5]])]
    np.testing.assert_array_equal(render_strokes(line, 16, 1.0)[5:11, 8], [0, 0, 0, 255, 0, 0])
    np.testing.assert_array_equal(render_strokes(line, 16, 2.0)[5:11, 8], [0, 0, 128, 255, 128, 0])


def test_per_stroke_masks_make_up_the_drawing(small):
    drawings = split_drawings(SMALL, "train")
    assert len(drawings) == len(small["train"].images)
    n_multi = 0
    for drawing, image in zip(drawings, small["train"].images):
        assert np.array_equal(drawing.render(), image)
        masks = drawing.render(per_stroke=True)
        assert masks.shape == (len(drawing.strokes), 32, 32)
        assert (masks.reshape(len(masks), -1).max(axis=1) > 0).all()  # every stroke leaves ink
        np.testing.assert_array_equal((masks > 0).any(axis=0), image > 0)  # union of masks = inked pixels
        assert (masks.max(axis=0) <= image).all() and (image <= masks.astype(int).sum(axis=0)).all()
        n_multi += len(masks) > 1
    assert n_multi > 0


def test_pixel_nearest_neighbour_is_well_above_chance_but_not_perfect():
    # 50 classes over 2 alphabets, 80% test: 40 test classes x 10 drawings
    test = build_strokes(StrokesConfig(n_classes=50, per_class=10, test_fraction=0.8, seed=0))["test"]
    assert test.n_classes == 40
    chance = 1 / 40
    loo, one_shot = _nn_accuracies(test)
    # measured: loo 0.708, one-shot 0.600
    assert 5 * chance < loo < 1.0
    assert 5 * chance < one_shot < 1.0


def test_cli_writes_valid_files_and_preview(cli, tmp_path):
    out = tmp_path / "strokes"
    res = cli("data", "strokes", "--out", out, "--classes", 12, "--per-class", 3, "--size", 24,
              "--seed", 5, "--preview", tmp_path / "grid.png")
    assert res.code == 0, res
    assert "wrote dataset" in res.out and "train.npz" in res.out and "test.npz" in res.out
    check = cli("data", "validate", out / "train.npz", out / "test.npz")
    assert check.code == 0 and check.out.count("ok dataset") == 2, check
    train, test = read_dataset(out / "train.npz"), read_dataset(out / "test.npz")
    assert train.n_classes + test.n_classes == 12 and train.image_size == 24
    assert test.meta["config"]["seed"] == 5
    np.testing.assert_array_equal(
        test.images, build_strokes(StrokesConfig(n_classes=12, per_class=3, image_size=24, seed=5))["test"].images
    )
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    # drawn as the report draws: black ink on a white page (most pixels white, the ink near black)
    assert np.median(grid) == 255 and grid.min() < 40 and grid.shape[0] > grid.shape[1]  # 10 rows x 3 columns
    picked, rows = preview_rows(train, 10, 3)
    assert len(rows) == 10 and all(row[0] == train.exemplars[c] and len(row) == 3 for c, row in zip(picked, rows))

    res = cli("data", "strokes", "--out", out, "--classes", 12, "--per-class", 3, "--size", 24, "--as-samples")
    assert res.code == 0, res
    samples = read_samples(out / "test_samples.npz")
    assert samples.samples.shape == (test.n_classes, 3, 24, 24) and samples.meta["exemplar_included"] is True
    assert "exemplar included (the papers' protocol)" in res.out

    res = cli("data", "strokes", "--out", out / "x", "--classes", 12, "--per-class", 3, "--size", 24, "--as-samples",
              "--exclude-exemplar")
    assert res.code == 0, res
    samples = read_samples(out / "x" / "test_samples.npz")
    assert samples.samples.shape == (test.n_classes, 2, 24, 24) and samples.meta["exemplar_included"] is False
    ex = test.exemplar_images()
    assert not any(np.array_equal(d, ex[c]) for c in range(test.n_classes) for d in samples.samples[c])
    res = cli("data", "strokes", "--out", out / "y", "--classes", 12, "--exclude-exemplar")
    assert res.code == 2 and "--exclude-exemplar" in res.err and not (out / "y").exists()


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--classes", 1, "n_classes"),
        ("--size", 8, "image_size"),
        ("--per-class", 1, "per_class"),
        ("--test-fraction", 1.0, "test_fraction"),
        ("--test-fraction", 0, "test_fraction"),
        ("--seed", -1, "seed"),
        ("--alphabets", 7, "n_alphabets"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line_and_write_nothing(cli, tmp_path, option, value, words):
    out = tmp_path / "never"
    res = cli("data", "strokes", "--out", out, "--classes", 12, option, value)
    assert res.code == 2, res
    assert res.err.count("\n") == 1 and res.err.startswith("drawgap: error: ") and words in res.err, res.err
    assert not out.exists()


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(InputError, match="control_jitter"):
        StrokesConfig(control_jitter=-0.1)
    with pytest.raises(InputError, match="split"):
        split_drawings(SMALL, "valid")


def test_help_shows_no_type_beside_flags(cli):
    """Typer >= 0.29 printed `<bool>` beside every flag, --help included; a flag takes no value."""
    for args in (("data", "strokes", "--help"), ("demo", "--help"), ("--help",), ("data", "omniglot", "--help")):
        r = cli(*args)
        assert r.code == 0 and "--help" in r.out and "<bool>" not in r.out, args
    assert "<int>" in cli("data", "strokes", "--help").out  # options that take a value keep their type
