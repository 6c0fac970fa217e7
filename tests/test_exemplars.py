"""Eq. 1 exemplars: golden values on hand-made features and images, the critic path, the CLI verb."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from drawgap.data.exemplars import (
    critic_exemplars,
    eq1_exemplars,
    load_feature_critic,
    pixel_space_exemplars,
    with_exemplars,
)
from drawgap.data.formats import read_dataset, write_dataset
from drawgap.errors import InputError
from tests.conftest import make_dataset

# class 0: rows 1, 3, 5 = (0,0), (1,0), (4,0); mean (5/3, 0); distances 5/3, 2/3, 7/3 -> row 3
# class 1: rows 0, 2, 4, 6 = (0,0), (0,2), (0,4), (0,6); mean (0,3); distances 3, 1, 1, 3 -> tie, first: row 2
FEATURES = np.array([[0, 0], [0, 0], [0, 2], [1, 0], [0, 4], [4, 0], [0, 6]], np.float32)
LABELS = np.array([1, 0, 1, 0, 1, 0, 1])


def test_eq1_golden_with_ties_to_the_lowest_index():
    np.testing.assert_array_equal(eq1_exemplars(FEATURES, LABELS), [3, 2])
    out = eq1_exemplars(torch.from_numpy(FEATURES), torch.from_numpy(LABELS))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [3, 2])


def test_eq1_rejects_an_empty_class_and_mismatched_lengths():
    with pytest.raises(InputError, match="class 2 has none"):
        eq1_exemplars(FEATURES, LABELS, n_classes=3)
    with pytest.raises(InputError, match="one label per feature row"):
        eq1_exemplars(FEATURES, LABELS[:-1])


def _vertical_line(x: int) -> np.ndarray:
    img = np.zeros((12, 12), np.uint8)
    img[2:10, x] = 255
    return img


def test_pixel_space_blur_makes_the_middle_stroke_the_exemplar():
    # one stroke drawn at x = 4, 5, 6: raw binary pixels do not overlap, so all three are equally far
    # from the mean (tie -> the first); blurred, the middle one is nearest to the mean
    images = np.stack([_vertical_line(4), _vertical_line(5), _vertical_line(6)])
    labels = np.zeros(3, np.int64)
    np.testing.assert_array_equal(pixel_space_exemplars(images, labels), [1])
    np.testing.assert_array_equal(pixel_space_exemplars(images, labels, sigma=0.0), [0])


def test_pixel_space_indices_are_global():
    images = np.stack([_vertical_line(1), _vertical_line(4), _vertical_line(8), _vertical_line(5), _vertical_line(6)])
    labels = np.array([0, 1, 0, 1, 1])  # class 0: x = 1, 8 (tie -> row 0); class 1: x = 4, 5, 6 -> row 3
    np.testing.assert_array_equal(pixel_space_exemplars(images, labels), [0, 3])


class TableCritic:
    """Features looked up from each image's top-left pixel (an id written into it by the test)."""

    def __init__(self, table):
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.calls = 0

    def features(self, images):
        assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 3
        self.calls += 1
        return self.table[images[:, 0, 0].long()]


def _dataset_with_ids():
    ds = make_dataset(n_classes=2, per_class=4, size=8)
    ds.images[:, 0, 0] = np.arange(len(ds.images))  # image i carries id i
    return ds


def test_with_exemplars_uses_critic_features_in_batches():
    ds = _dataset_with_ids()
    # class 0 (rows 0-3): 0, 0, 9, 3 -> mean 3 -> row 3; class 1 (rows 4-7): 5, 1, 1, 1 -> mean 2 -> row 5
    critic = TableCritic([[0], [0], [9], [3], [5], [1], [1], [1]])
    np.testing.assert_array_equal(critic_exemplars(critic, ds.images, ds.labels, batch_size=3), [3, 5])
    assert critic.calls == 3  # 8 images in batches of 3
    out = with_exemplars(ds, critic, critic_name="table")
    np.testing.assert_array_equal(out.exemplars, [3, 5])
    assert out.meta["exemplars"] == {"method": "eq1-critic-features", "critic": "table", "critic_class": "TableCritic"}
    assert with_exemplars(ds).meta["exemplars"] == {"method": "eq1-pixel-blur", "sigma": 1.5}
    critic.weights_hash = "ab" * 32
    assert with_exemplars(ds, critic).meta["exemplars"]["critic_weights_sha256"] == "ab" * 32


@pytest.fixture
def fake_critics(monkeypatch):
    """A stand-in `drawgap.critics` module whose load_critic knows one name."""
    critic = TableCritic([[0], [0], [9], [3], [5], [1], [1], [1]])

    def load_critic(name):
        if name != "table":
            raise InputError("unknown critic", path=name)
        return critic

    module = types.ModuleType("drawgap.critics")
    module.load_critic = load_critic
    monkeypatch.setitem(sys.modules, "drawgap.critics", module)
    return critic


def test_cli_exemplars_in_place_and_to_a_new_file(tmp_path, cli, fake_critics):
    path = write_dataset(_dataset_with_ids(), tmp_path / "d.npz")
    before = path.read_bytes()
    new = tmp_path / "new.npz"
    r = cli("data", "exemplars", path, "--critic", "table", "--out", new)
    assert r.code == 0, r
    assert path.read_bytes() == before  # --out leaves the input alone
    ds = read_dataset(new)
    np.testing.assert_array_equal(ds.exemplars, [3, 5])
    assert ds.meta["exemplars"]["critic"] == "table" and ds.meta["exemplars"]["provenance"]["config"]["critic"] == "table"
    assert ds.meta["name"] == "tiny"  # the rest of the meta is kept
    # in place, critic-free
    assert cli("data", "exemplars", new).code == 0
    assert read_dataset(new).meta["exemplars"]["method"] == "eq1-pixel-blur"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "new.npz"]  # no temporary files left


def test_cli_exemplars_errors_exit_2(tmp_path, cli, fake_critics):
    path = write_dataset(_dataset_with_ids(), tmp_path / "d.npz")
    before = path.read_bytes()
    r = cli("data", "exemplars", path, "--critic", "nope")
    assert r.code == 2 and "nope: unknown critic" in r.err, r
    assert path.read_bytes() == before
    r = cli("data", "exemplars", tmp_path / "absent.npz")
    assert r.code == 2 and "absent.npz: no such file" in r.err, r


def test_critic_without_features_is_rejected(monkeypatch):
    module = types.ModuleType("drawgap.critics")
    module.load_critic = lambda name: object()
    monkeypatch.setitem(sys.modules, "drawgap.critics", module)
    with pytest.raises(InputError, match="features"):
        load_feature_critic("x")
