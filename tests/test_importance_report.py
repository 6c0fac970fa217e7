"""The figure (ICML Fig. 5-like), the ink report on the built-in strokes dataset, and the `compare`,
`ink` and `figure` commands."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from drawgap.errors import InputError
from drawgap.importance.maps_file import ImportanceMaps, make_meta, write_maps
from drawgap.report.importance_figure import figure_data, importance_figure




def _maps(method, cats, seed, images=True, ceiling=None, size=12):
    rng = np.random.default_rng(seed)
    n = len(cats)
    return ImportanceMaps(rng.random((n, size, size)).astype(np.float32) ** 3, np.array([str(i) for i in range(n)]),
                          np.array(cats), make_meta(method, {}, seed),
                          images=(rng.random((n, 16, 16)) > 0.8).astype(np.float32) if images else None,
                          ceiling=ceiling)


def test_figure_layout_and_data():
    human = _maps("human-box", ["cat", "dog", "owl"], 0)
    models = {"diffusion-guided": _maps("diffusion-guided", ["owl", "cat", "dog", "cat"], 1, images=False),
              "critic-saliency": _maps("critic-saliency", ["cat", "dog", "owl"], 2)}
    cats, exemplars, h, m, label = figure_data(human, models, resolution=12)
    assert label == "exemplar"  # the human maps' drawings come first
    assert figure_data(None, {"critic-saliency": models["critic-saliency"]}, resolution=12)[-1] == "drawing"
    assert cats == ["cat", "dog", "owl"] and exemplars.shape == (3, 16, 16) and h.shape == (3, 12, 12)
    np.testing.assert_array_equal(exemplars[2], human.images[2])  # the first source with images
    assert list(m) == ["diffusion-guided", "critic-saliency"]
    fig = importance_figure(cats, exemplars, h, m, scores={"critic-saliency": [0.5, None, 0.1]})
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 4 * 3  # exemplar, human, two models x three categories
    assert axes[3].get_ylabel() == "human" and axes[9].get_ylabel() == "critic-saliency"
    assert axes[9].get_xlabel() == "rho 0.50"
    with pytest.raises(InputError, match="not in every maps file"):
        figure_data(human, models, categories=["cat", "emu"])
    with pytest.raises(InputError, match="one per category"):
        importance_figure(["a", "b"], None, None, {"x": np.ones((3, 4, 4))})


def test_strokes_masks_cover_the_ink(tmp_path):
    from drawgap.data.strokes import StrokesConfig, build_strokes
    from drawgap.importance.compare import ink_report, strokes_masks

    ds = build_strokes(StrokesConfig(n_classes=4, per_class=2, image_size=16, seed=3))["test"]
    masks = strokes_masks(ds, [0, 1])
    for i, k in enumerate(masks):
        np.testing.assert_array_equal(k.any(axis=0), ds.images[i] > 0)  # the strokes make the drawing
    ink = (ds.images[:2] > 127).astype(np.float32)  # ink at the critics' threshold, 0.5
    maps = ImportanceMaps(ink, np.array(["0", "1"]), ds.classes[ds.labels[:2]], make_meta("ink", {}, 0),
                          images=ds.images[:2].astype(np.float32) / 255)
    r = ink_report(maps, resolution=16, dilate=0, stroke_masks=masks)
    assert r["per_map"]["mass_on_ink"] == [pytest.approx(1.0)] * 2
    assert all(sum(s) >= 0.999 for s in r["per_map"]["mass_per_stroke"])  # strokes may overlap
    with pytest.raises(InputError, match="not dataset indices"):
        strokes_masks(ds, ["cat"])
    from tests.conftest import make_dataset

    with pytest.raises(InputError, match="strokes dataset"):
        strokes_masks(make_dataset(), [0])


def test_cli_compare_ink_and_figure(tmp_path, cli):
    cats = ["cat", "dog", "owl", "emu", "yak"]
    human = write_maps(_maps("human-box", cats, 0, ceiling=np.full(5, 0.6, np.float32)), tmp_path / "human.npz")
    a = write_maps(_maps("diffusion-guided", cats, 1), tmp_path / "a.npz")
    b = write_maps(_maps("diffusion-guided", cats, 2), tmp_path / "b.npz")  # same method: named by file
    r = cli("importance", "compare", human, a, b, "--out", tmp_path / "cmp.json", "--resolution", "12")
    assert r.code == 0, r
    out = json.loads((tmp_path / "cmp.json").read_text())
    assert set(out["models"]) == {"diffusion-guided", "b"} and "diffusion-guided vs b" in out["between_models"]
    assert out["models"]["b"]["categories"] == sorted(cats)
    assert "rho" in r.out and "of ceiling" in r.out

    r = cli("importance", "ink", a, "--out", tmp_path / "ink.json", "--resolution", "12")
    assert r.code == 0, r
    ink = json.loads((tmp_path / "ink.json").read_text())
    assert len(ink["per_map"]["mass_on_ink"]) == 5 and 0 < ink["mean"]["mass_on_ink"] < 1

    r = cli("importance", "figure", a, "--human", human, "--out", tmp_path / "fig.png", "--max-categories", "3")
    assert r.code == 0, r
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"

    r = cli("importance", "compare", human, tmp_path / "missing.npz", "--out", tmp_path / "bad.json")
    assert r.code == 2 and "missing.npz: no such file" in r.err and not (tmp_path / "bad.json").exists()
    r = cli("importance", "figure", a, "--out", tmp_path / "fig.xyz")
    assert r.code == 2 and not (tmp_path / "fig.xyz").exists()
