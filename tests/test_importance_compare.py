"""Comparison statistics and the maps file: golden values worked out by hand, round trips, error cases."""

import json
import math

import numpy as np
import pytest
import scipy.stats as st

from drawgap.errors import InputError
from drawgap.importance.compare import (
    compare_sources,
    compare_to_human,
    count_regions,
    entropy,
    ink_mask,
    ink_mass,
    ink_report,
    localization,
    mass_fraction,
    mass_on_masks,
    paired_test,
    spearman,
    spearman_brown,
    spearman_matrix,
)
from drawgap.importance.maps_file import ImportanceMaps, make_meta, read_maps, write_maps




def _maps(maps, cats, method="test", **kw):
    maps = np.asarray(maps, dtype=np.float32)
    ids = np.array([f"img{i}" for i in range(len(maps))])
    return ImportanceMaps(maps, ids, np.asarray(cats), make_meta(method, {}, 0), **kw)


# ------------------------------------------------------------------------------------------ golden values


def test_entropy_uniform_and_point_maps():
    assert entropy(np.ones((8, 6))) == pytest.approx(math.log(48))
    m = np.zeros((10, 10))
    m[2, 3] = 5.0
    assert entropy(m) == pytest.approx(0.0)
    m[7, 7] = 5.0
    m[0, 0] = 5.0
    m[9, 1] = 5.0
    assert entropy(m) == pytest.approx(math.log(4))  # four equal pixels
    assert math.isnan(entropy(np.zeros((4, 4))))


def test_mass_fraction_hand_made():
    m = np.zeros((10, 10))
    m[0, :4] = 1.0  # 4 equal pixels out of 100
    assert mass_fraction(m, 0.5) == pytest.approx(0.02)  # 2 pixels hold half
    assert mass_fraction(m, 0.9) == pytest.approx(0.04)  # 3.6 pixels -> 4
    m2 = np.zeros((4, 4))
    m2[0, 0], m2[1, 1], m2[2, 2] = 6, 3, 1  # cumulative mass 0.6, 0.9, 1.0
    assert mass_fraction(m2, 0.5) == pytest.approx(1 / 16)
    assert mass_fraction(m2, 0.9) == pytest.approx(2 / 16)  # 0.9 exactly reached by two pixels
    assert mass_fraction(np.ones((4, 5)), 0.5) == pytest.approx(0.5)
    with pytest.raises(InputError):
        mass_fraction(m, 1.5)


def test_count_regions_eight_connected_and_threshold():
    m = np.zeros((9, 9))
    m[1, 1] = m[2, 2] = 1.0  # diagonal neighbours: one 8-connected region
    m[6:8, 6:8] = 0.8
    m[4, 0] = 0.3  # below half the maximum
    assert count_regions(m, 0.5) == 2
    assert count_regions(m, 0.25) == 3
    assert count_regions(np.zeros((5, 5))) == 0
    loc = localization(m, 0.5)
    assert loc["regions"] == 2
    assert loc["normalized_entropy"] == pytest.approx(loc["entropy"] / math.log(81))


def test_spearman_known_values_and_matrix():
    a = np.arange(16, dtype=float).reshape(4, 4)
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # monotone transform
    assert spearman(a, -a) == pytest.approx(-1.0)
    # 5 values: ranks (1..5) vs (2,1,4,3,5): sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8
    assert spearman(np.array([1, 2, 3, 4, 5.0]), np.array([2, 1, 4, 3, 5.0])) == pytest.approx(0.8)
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 5, 5)), rng.random((2, 5, 5))
    y[0, 0, :3] = y[0, 1, :3] = 0.0  # ties get average ranks, as in scipy
    want = np.array([[st.spearmanr(p.ravel(), q.ravel()).statistic for q in y] for p in x])
    np.testing.assert_allclose(spearman_matrix(x, y), want, atol=1e-12)


def test_spearman_brown_correction():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(1.0) == pytest.approx(1.0)
    assert spearman_brown(0.0) == pytest.approx(0.0)


def test_paired_test_matches_scipy_and_handles_no_difference():
    a = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.85])
    b = np.array([0.5, 0.6, 0.65, 0.4, 0.55, 0.3])
    out = paired_test(a, b)
    assert out["pvalue"] == pytest.approx(st.wilcoxon(a, b).pvalue)
    assert out["pvalue"] == pytest.approx(2 / 64)  # exact: all 6 differences positive
    assert out["n"] == 6 and out["median_difference"] > 0
    same = paired_test(a, a)
    assert same["pvalue"] is None and same["n"] == 6
    assert paired_test([1.0, np.nan], [0.0, 2.0])["n"] == 1


def test_ink_mass_and_masks():
    m = np.zeros((6, 6))
    m[2, 2] = 3.0
    m[5, 5] = 1.0
    ink = np.zeros((6, 6), bool)
    ink[2, 2] = True
    out = ink_mass(m, ink, dilate=0)
    assert out["mass_on_ink"] == pytest.approx(0.75)
    assert out["ink_area"] == pytest.approx(1 / 36)
    assert out["ink_enrichment"] == pytest.approx(0.75 * 36)
    assert ink_mass(m, ink, dilate=1)["ink_area"] == pytest.approx(9 / 36)  # 3x3 after dilation
    np.testing.assert_allclose(mass_on_masks(m, np.stack([ink, ~ink])), [0.75, 0.25])
    # a 1-px line at 96 px stays ink when brought to 48 px (any ink in the footprint)
    big = np.zeros((96, 96), np.float32)
    big[40, 10:90] = 1.0
    small = ink_mask(big, 48)
    assert small[20, 5:45].all() and small.sum() == 40


# ------------------------------------------------------------------------------------------ files


def test_compare_to_human_identity_null_and_ceiling():
    rng = np.random.default_rng(1)
    human_maps = rng.random((3, 12, 12)) ** 4
    human = _maps(human_maps, ["cat", "dog", "owl"], ceiling=np.array([0.8, 0.5, np.nan], np.float32))
    model = _maps(np.concatenate([human_maps[:2], rng.random((1, 12, 12))]), ["cat", "dog", "owl"])
    r = compare_to_human(human, model, resolution=12)
    assert r["categories"] == ["cat", "dog", "owl"]
    rho = r["per_category"]["spearman"]
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(1.0)
    assert abs(rho[2]) < 0.5
    assert r["per_category"]["fraction_of_ceiling"][:2] == pytest.approx([1 / 0.8, 1 / 0.5])
    assert math.isnan(r["per_category"]["fraction_of_ceiling"][2])
    # the null pairs each model map with the other categories' human maps
    want_null = np.mean([spearman(model.maps[0], human_maps[1]), spearman(model.maps[0], human_maps[2])])
    assert r["per_category"]["null_spearman"][0] == pytest.approx(want_null, abs=1e-6)
    assert r["localization"]["human"]["entropy"][0] == pytest.approx(entropy(human_maps[0]), abs=1e-5)


def test_compare_averages_images_per_category_and_needs_shared_categories():
    a = np.zeros((2, 4, 4), np.float32)
    a[0, 0, 0] = 1.0
    a[1, 3, 3] = 3.0  # scale does not matter: each map is normalised to unit mass before averaging
    human = _maps(a, ["cat", "cat"])
    model = _maps(a[:1] + a[1:] / 3, ["cat"])
    assert compare_to_human(human, model, 4)["per_category"]["spearman"] == [pytest.approx(1.0)]
    with pytest.raises(InputError, match="no category in common"):
        compare_to_human(human, _maps(a[:1], ["dog"]), 4)


def test_compare_sources_json_is_strict_and_has_between_models():
    rng = np.random.default_rng(2)
    human = _maps(rng.random((4, 8, 8)), list("abcd"), "human-box")
    m1 = _maps(rng.random((4, 8, 8)), list("abcd"), "one")
    m2 = _maps(rng.random((4, 8, 8)), list("abcd"), "two")
    out = compare_sources(human, {"one": m1, "two": m2}, resolution=8)
    text = json.dumps(out, allow_nan=False)  # NaN (no ceiling) became null
    assert out["models"]["one"]["per_category"]["ceiling"] == [None] * 4
    assert "one vs two" in out["between_models"]
    assert out["between_models"]["one vs two"]["spearman"]["n"] == 4
    assert out["format"] == "drawgap.importance_comparison/1" and "versions" in text
    with pytest.raises(InputError, match="threshold"):
        compare_sources(human, {"one": m1}, threshold=0)


def test_ink_report_on_stored_images():
    img = np.zeros((2, 8, 8), np.float32)
    img[:, 3, 1:7] = 1.0
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 3, 2] = 1.0  # all mass on the stroke
    maps[1, 7, 7] = 1.0  # all mass in a corner, far from it
    r = ink_report(_maps(maps, ["a", "b"], images=img), resolution=8, dilate=0,
                   stroke_masks=[img[:1] > 0, img[1:] > 0])
    assert r["per_map"]["mass_on_ink"] == [1.0, 0.0]
    assert r["per_map"]["mass_per_stroke"] == [[1.0], [0.0]]
    assert r["mean"]["ink_area"] == pytest.approx(6 / 64)
    with pytest.raises(InputError, match="no images"):
        ink_report(_maps(maps, ["a", "b"]))


def test_maps_file_round_trip(tmp_path):
    m = _maps(np.random.default_rng(0).random((3, 5, 5)), ["a", "b", "a"], "critic-saliency",
              images=np.zeros((3, 7, 7), np.float32), ceiling=np.array([0.5, np.nan, 1.0], np.float32))
    back = read_maps(write_maps(m, tmp_path / "m.npz"))
    np.testing.assert_array_equal(back.maps, m.maps)
    assert list(back.categories) == ["a", "b", "a"] and list(back.image_ids) == ["img0", "img1", "img2"]
    assert back.method == "critic-saliency" and back.meta["seed"] == 0
    assert "versions" in back.meta["provenance"]
    np.testing.assert_array_equal(back.ceiling, m.ceiling)
    assert back.images.shape == (3, 7, 7) and back.ceiling_std is None


@pytest.mark.parametrize(
    "change, field, words",
    [
        (dict(maps=-np.ones((2, 4, 4), np.float32)), "maps", ">= 0"),
        (dict(maps=np.ones((2, 4, 4), np.float64)), "maps", "float32"),
        (dict(maps=np.full((2, 4, 4), np.nan, np.float32)), "maps", "finite"),
        (dict(categories=np.array(["a"])), "categories", "one per map"),
        (dict(images=np.ones((2, 4, 4), np.float32) * 2), "images", "[0, 1]"),
        (dict(ceiling=np.ones(3, np.float32)), "ceiling", "float32 [2]"),
    ],
)
def test_maps_file_validation_names_field(tmp_path, change, field, words):
    fields = dict(maps=np.ones((2, 4, 4), np.float32), image_ids=np.array(["x", "y"]), categories=np.array(["a", "b"]),
                  meta=make_meta("m", {}, 0))
    fields.update(change)
    with pytest.raises(InputError) as err:
        write_maps(ImportanceMaps(**fields), tmp_path / "bad.npz")
    assert f": {field}: " in str(err.value) and words in str(err.value)
    assert not (tmp_path / "bad.npz").exists()


def test_read_maps_errors(tmp_path):
    np.savez(tmp_path / "nokey.npz", maps=np.ones((1, 4, 4), np.float32))
    with pytest.raises(InputError, match="image_ids: missing key"):
        read_maps(tmp_path / "nokey.npz")
    np.savez(tmp_path / "fmt.npz", maps=np.ones((1, 4, 4), np.float32), image_ids=np.array(["a"]),
             categories=np.array(["a"]), meta=np.array(json.dumps({"format": "other/1", "method": "x"})))
    with pytest.raises(InputError, match="meta.format"):
        read_maps(tmp_path / "fmt.npz")
