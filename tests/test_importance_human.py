"""Human maps from clicks: the box and Gaussian rules, averaging and filters, split-half reliability, the
click file readers and the `drawgap importance human` command."""

import json

import numpy as np
import pytest

from drawgap.errors import InputError
from drawgap.importance.human_maps import Clicks, build_human_maps, click_map, read_clicks, split_half_reliability
from drawgap.importance.maps_file import read_maps




def _clicks(rows, image_ids=("i1", "i2"), categories=("cat", "dog"), canvas=32):
    """rows: (x, y, participant, image)."""
    x, y, p, im = (np.array(v) for v in zip(*rows))
    return Clicks(x.astype(float), y.astype(float), np.arange(len(x), dtype=float), p.astype(str), im.astype(str),
                  np.array(image_ids), np.array(categories), canvas=canvas)


def test_box_rule_is_a_19px_box_then_max_normalised():
    m = click_map(np.array([50.0]), np.array([60.0]), canvas=128, rule="box", radius=9)
    want = np.zeros((128, 128))
    want[51:70, 41:60] = 1.0  # rows y-9..y+9, columns x-9..x+9
    np.testing.assert_array_equal(m, want)
    # two overlapping clicks: the overlap counts 2, normalised to 1; the rest 0.5
    m2 = click_map(np.array([50.0, 55.0]), np.array([60.0, 60.0]), canvas=128, radius=9)
    assert m2[60, 50] == 1.0 and m2[60, 42] == 0.5 and m2[60, 63] == 0.5 and m2[60, 65] == 0.0
    # at the corner the box is clipped to the canvas
    assert click_map(np.array([0.0]), np.array([0.0]), canvas=64, radius=9).sum() == 100


def test_gaussian_rule_peaks_at_the_click_and_stops_at_its_kernel():
    m = click_map(np.array([40.0]), np.array([30.0]), canvas=96, rule="gaussian", blur_size=33, sigma=11.0)
    assert m.max() == 1.0 and m[30, 40] == 1.0
    assert m[30, 40 + 16] > 0 and m[30, 40 + 17] == 0  # radius (33 - 1) / 2 = 16 px
    assert m[30, 40 + 11] == pytest.approx(np.exp(-0.5), rel=1e-3)  # one sigma away
    with pytest.raises(InputError, match="rule"):
        click_map(np.array([1.0]), np.array([1.0]), rule="disc")


def test_maps_average_participants_and_filters_drop():
    rows = [(5, 5, "A", "i1"), (20, 20, "B", "i1"), (20, 20, "B", "i1"), (8, 8, "A", "i2")]
    m = build_human_maps(_clicks(rows), rule="box", radius=1, resolution=32, n_splits=4)
    assert list(m.image_ids) == ["i1", "i2"] and list(m.categories) == ["cat", "dog"]
    assert m.maps[0, 5, 5] == pytest.approx(0.5) and m.maps[0, 20, 20] == pytest.approx(0.5)
    assert m.maps[0].sum() == pytest.approx(9.0)  # two 3x3 boxes at 0.5
    assert m.meta["n_participants"] == [2, 1] and m.method == "human-box"
    two = build_human_maps(_clicks(rows), radius=1, resolution=32, min_participants=2)
    assert list(two.image_ids) == ["i1"] and two.meta["dropped"]["images_below_min_participants"] == 1
    clicks2 = build_human_maps(_clicks(rows), radius=1, resolution=32, min_clicks=2)
    assert list(clicks2.image_ids) == ["i1"] and clicks2.meta["n_participants"] == [1]
    assert clicks2.maps[0, 5, 5] == 0 and clicks2.maps[0, 20, 20] == pytest.approx(1.0)
    with pytest.raises(InputError, match="no image"):
        build_human_maps(_clicks(rows), min_participants=5)


def test_downsampling_to_the_comparison_resolution_keeps_the_location():
    m = build_human_maps(_clicks([(200, 40, "A", "i1")], canvas=256), radius=9, resolution=48)
    assert m.maps.shape == (1, 48, 48)
    peak = np.unravel_index(np.argmax(m.maps[0]), (48, 48))
    assert peak == (int(40 * 48 / 256), int(200 * 48 / 256))  # the 48-px pixel whose centre is the click
    assert m.maps[0, :5].sum() == 0 and m.maps[0, :, :30].sum() == 0  # nothing far from the box


def test_split_half_reliability():
    same = np.repeat(np.random.default_rng(0).random((1, 8, 8)), 6, axis=0)
    mean, std = split_half_reliability(same, n_splits=10, seed=0)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0)
    assert np.isnan(split_half_reliability(same[:1])[0])
    rng = np.random.default_rng(3)
    # 12 participants clicking near the same spot vs anywhere: agreement sets the ceiling
    focused = [(16 + rng.normal(0, 3), 16 + rng.normal(0, 3), f"p{p}", "i1") for p in range(12) for _ in range(3)]
    scattered = [(rng.uniform(0, 32), rng.uniform(0, 32), f"p{p}", "i2") for p in range(12) for _ in range(3)]
    m = build_human_maps(_clicks(focused + scattered), radius=2, resolution=16, n_splits=20, seed=0)
    assert m.ceiling[0] > 0.7 and m.ceiling[1] < 0.2
    assert np.all(m.ceiling_std > 0)
    again = build_human_maps(_clicks(focused + scattered), radius=2, resolution=16, n_splits=20, seed=0)
    np.testing.assert_array_equal(m.ceiling, again.ceiling)  # seeded


def _export_file(path, skipped=False):
    """A clicks file in the `drawgap clickme export` layout (drawgap.clicks/1)."""
    arrays = dict(
        x=np.array([10, 12, 100, 200], np.int16), y=np.array([10, 12, 100, 50], np.int16),
        t=np.array([5, 15, 5, 9], np.int32), trial=np.array([0, 0, 1, 2], np.int32),
        participant=np.array([0, 0, 1, 1], np.int32), image=np.array([1, 1, 1, 0], np.int32),
        category=np.array([1, 1, 1, 0], np.int32),
        trial_outcome=np.array(["recognized", "timeout", "skipped" if skipped else "recognized"]),
        participant_ids=np.array(["s/alice", "s/bob"]), image_ids=np.array(["cat_01", "dog_03"]),
        image_category=np.array([0, 1], np.int32), image_source_index=np.array([4, 0], np.int64),
        categories=np.array(["cat", "dog"]),
        meta=np.array(json.dumps({"format": "drawgap.clicks/1", "canvas_size": 256})),
    )
    np.savez(path, **arrays)
    return path


def test_read_export_format(tmp_path):
    c = read_clicks(_export_file(tmp_path / "clicks.npz"))
    assert list(c.image) == ["dog_03", "dog_03", "dog_03", "cat_01"]
    assert list(c.participant) == ["s/alice", "s/alice", "s/bob", "s/bob"]
    assert list(c.categories) == ["cat", "dog"] and c.canvas == 256
    assert list(c.source_index) == [4, 0]
    skipped = read_clicks(_export_file(tmp_path / "skip.npz", skipped=True))
    assert len(skipped.x) == 3 and skipped.meta["clicks_in_skipped_trials"] == 1
    assert len(read_clicks(tmp_path / "skip.npz", exclude_skipped=False).x) == 4


def test_read_plain_npz_and_csv(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.array([1.0, 2.0]), y=np.array([3.0, 4.0]), t=np.array([0, 1]),
             participant=np.array([7, 8]), image=np.array(["b", "a"]), image_ids=np.array(["a", "b"]),
             categories=np.array(["ant", "bee"]))
    c = read_clicks(tmp_path / "plain.npz")
    assert list(c.image) == ["b", "a"] and list(c.participant) == ["7", "8"] and c.canvas == 256
    (tmp_path / "c.csv").write_text("x,y,time,participant,image,category\n1,2,0,p1,img9,owl\n3,4,5,p2,img9,owl\n")
    c = read_clicks(tmp_path / "c.csv")
    assert list(c.image_ids) == ["img9"] and list(c.categories) == ["owl"] and len(c.x) == 2


@pytest.mark.parametrize("drop, field", [("x", "x"), ("image_ids", "image_ids"), ("participant", "participant")])
def test_read_clicks_names_missing_field(tmp_path, drop, field):
    arrays = dict(x=np.array([1.0]), y=np.array([1.0]), t=np.array([0.0]), participant=np.array(["p"]),
                  image=np.array(["a"]), image_ids=np.array(["a"]), categories=np.array(["ant"]))
    del arrays[drop]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError) as err:
        read_clicks(tmp_path / "bad.npz")
    assert f"bad.npz: {field}: missing field" in str(err.value)


def test_read_clicks_bad_values(tmp_path):
    np.savez(tmp_path / "img.npz", x=np.array([1.0]), y=np.array([1.0]), t=np.array([0.0]), participant=np.array(["p"]),
             image=np.array(["zzz"]), image_ids=np.array(["a"]), categories=np.array(["ant"]))
    with pytest.raises(InputError, match="image: expected image ids"):
        read_clicks(tmp_path / "img.npz")
    (tmp_path / "c.csv").write_text("x,y,participant,image\n1,2,p,i\n")
    with pytest.raises(InputError, match="time: missing column"):
        read_clicks(tmp_path / "c.csv")


def test_cli_human(tmp_path, cli, tiny_dataset):
    from drawgap.data.formats import write_dataset

    ds = write_dataset(tiny_dataset, tmp_path / "d.npz")
    r = cli("importance", "human", _export_file(tmp_path / "clicks.npz"), "--out", tmp_path / "h.npz",
            "--resolution", "16", "--dataset", ds, "--splits", "5")
    assert r.code == 0, r
    m = read_maps(tmp_path / "h.npz")
    assert list(m.image_ids) == ["cat_01", "dog_03"] and m.maps.shape == (2, 16, 16)
    assert m.meta["n_participants"] == [1, 2] and m.meta["options"]["rule"] == "box"
    np.testing.assert_allclose(m.images[0], tiny_dataset.images[4] / 255.0)
    assert np.isnan(m.ceiling[0]) and np.isfinite(m.ceiling[1])
    r = cli("importance", "human", tmp_path / "missing.npz", "--out", tmp_path / "x.npz")
    assert r.code == 2 and "no such file" in r.err and not (tmp_path / "x.npz").exists()
