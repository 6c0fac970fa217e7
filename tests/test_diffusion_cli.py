"""`drawgap sample` (and the errors of `drawgap train`): files, meta, and one-line errors with exit code 2."""

import json

import numpy as np
import pytest

from drawgap.data.formats import read_samples, write_dataset, write_samples
from drawgap.models import create_generator
from drawgap.models.naming import system_name
from tests.conftest import make_dataset

LEAN = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4}


@pytest.fixture
def run_dir(tmp_path):
    g = create_generator("cfgdm", seed=0, image_size=8, denoiser=LEAN, num_train_timesteps=10)
    return g.save(tmp_path / "run")


@pytest.fixture
def dataset(tmp_path):
    ds = make_dataset(n_classes=3, per_class=2)
    return ds, write_dataset(ds, tmp_path / "test.npz")


def test_sample_writes_one_file_per_guidance(tmp_path, run_dir, dataset, cli):
    ds, path = dataset
    out = tmp_path / "samples"
    r = cli("sample", run_dir, "--exemplars", path, "--per-exemplar", 2, "--guidance", "0,0.5", "--sampler", "ddim",
            "--steps", 2, "--out", out, "--seed", 3)
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["cfgdm_g0.5.npz", "cfgdm_g0.npz"]
    s = read_samples(out / "cfgdm_g0.5.npz")
    assert s.samples.shape == (3, 2, 8, 8) and s.samples.dtype == np.uint8
    np.testing.assert_array_equal(s.exemplars, ds.exemplar_images())
    assert list(s.classes) == list(ds.classes)
    assert s.meta["generator"] == "cfgdm"
    assert s.meta["params"] == {"guidance": 0.5, "sampler": "ddim", "steps": 2, "per_exemplar": 2, "seed": 3}
    assert s.meta["run"]["config"]["denoiser"] == LEAN and s.meta["dataset"]["kind"] == "dataset"
    assert s.meta["provenance"]["seed"] == 3 and "torch" in s.meta["provenance"]["versions"]
    assert not np.array_equal(s.samples, read_samples(out / "cfgdm_g0.npz").samples)


def test_sample_from_a_samples_file_and_first_classes(tmp_path, run_dir, dataset, cli):
    ds, _ = dataset
    human = write_samples(ds.to_samples(), tmp_path / "human.npz")
    r = cli("sample", run_dir, "--exemplars", human, "--per-exemplar", 1, "--classes", 2, "--steps", 2, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    # no --guidance: the generator's default (1 for cfgdm), recorded and in the file's name
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["cfgdm_g1.npz"]
    assert "g=1;" in r.out and "system 'cfgdm g=1 (dpm++, 2 steps)'" in r.out
    s = read_samples(tmp_path / "o" / "cfgdm_g1.npz")
    assert s.samples.shape == (2, 1, 8, 8) and s.meta["params"]["guidance"] == 1.0
    assert system_name(s.meta) == "cfgdm g=1 (dpm++, 2 steps)"
    assert s.meta["params"]["sampler"] == "dpm++" and s.meta["dataset"]["kind"] == "samples"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"--guidance": "0,strong"}, "--guidance: expected comma-separated numbers"),
        ({"--guidance": "-1"}, "--guidance: expected finite numbers >= 0"),
        ({"--sampler": "euler"}, "sampler: expected a sampler in ancestral, ddim, dpm++"),
        ({"--sampler": "ancestral", "--steps": "5"}, "ancestral sampling runs all T = 10 steps"),
        ({"--per-exemplar": "0"}, "--per-exemplar"),
    ],
)
def test_sample_bad_options(tmp_path, run_dir, dataset, cli, change, words):
    args = {"--exemplars": dataset[1], "--out": tmp_path / "o", "--steps": "2", **change}
    r = cli("sample", run_dir, *[x for kv in args.items() for x in kv])
    assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1, r
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_sample_bad_files(tmp_path, run_dir, cli):
    big = make_dataset(n_classes=2, per_class=2, size=12)
    wrong_size = write_dataset(big, tmp_path / "big.npz")
    r = cli("sample", run_dir, "--exemplars", wrong_size, "--out", tmp_path / "o")
    assert r.code == 2 and "big.npz: exemplars: expected 8x8 exemplars" in r.err
    (run_dir / "weights.safetensors").unlink()
    r = cli("sample", run_dir, "--exemplars", wrong_size, "--out", tmp_path / "o")
    assert r.code == 2 and "weights.safetensors: no such file" in r.err
    r = cli("sample", tmp_path / "nowhere", "--exemplars", wrong_size, "--out", tmp_path / "o")
    assert r.code == 2 and "generator.json: no such file" in r.err
    assert not (tmp_path / "o").exists()


def test_train_bad_options(tmp_path, dataset, cli):
    _, path = dataset
    r = cli("train", "vae", "--data", path, "--out", tmp_path / "r", "--steps", 1)
    assert r.code == 2 and "unknown generator 'vae'" in r.err
    r = cli("train", "cfgdm", "--data", path, "--out", tmp_path / "r", "--steps", 1, "--n-feat", 60)
    assert r.code == 2 and "--preset paper" in r.err
    r = cli("train", "cfgdm", "--data", path, "--out", tmp_path / "r", "--steps", 1, "--widths", "30,60")
    assert r.code == 2 and "--widths: expected positive multiples of 8" in r.err
    r = cli("train", "cfgdm", "--data", path, "--out", tmp_path / "r")
    assert r.code == 2 and "--steps or --minutes" in r.err
    r = cli("train", "cfgdm", "--data", tmp_path / "missing.npz", "--out", tmp_path / "r", "--steps", 1)
    assert r.code == 2 and "missing.npz: no such file" in r.err
    assert json.dumps(r.err).count("\\n") == 1  # one line


def test_sample_warns_when_the_exemplars_come_from_another_dataset(tmp_path, run_dir, dataset, cli):
    _, path = dataset  # a dataset named "tiny"
    (run_dir / "train.json").write_text(json.dumps({"dataset": {"name": "omniglot", "path": "omniglot48/train.npz"}}))
    r = cli("sample", run_dir, "--exemplars", path, "--per-exemplar", 1, "--steps", 2, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert "drawgap: warning:" in r.err and "trained on 'omniglot'" in r.err and "come from 'tiny'" in r.err
    (run_dir / "train.json").write_text(json.dumps({"dataset": {"name": "tiny", "path": "tiny/train.npz"}}))
    r = cli("sample", run_dir, "--exemplars", path, "--per-exemplar", 1, "--steps", 2, "--out", tmp_path / "p")
    assert r.code == 0 and "warning" not in r.err
