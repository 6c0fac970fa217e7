"""Shipped generators: names resolve to run directories, install copies a run with its notes, errors are one line."""

import json

import pytest
import torch

from drawgap.errors import InputError
from drawgap.models import create_generator, load_generator
from drawgap.models import registry
from drawgap.models.sampling import sample_to_files
from drawgap.data.formats import read_samples, write_dataset
from tests.conftest import make_dataset

LEAN = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty package weights folder, so that tests never touch the real shipped weights."""
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    return tmp_path / "weights"


@pytest.fixture
def trained_run(tmp_path):
    g = create_generator("cfgdm", seed=3, image_size=8, denoiser=LEAN, num_train_timesteps=10)
    run = g.save(tmp_path / "run", extra={"training": {"step": 7, "total_steps": 7, "epoch": 1, "seconds": 90.0,
                                                         "loss": 0.25, "processes": 1}}, seed=3)
    (run / "train.json").write_text(json.dumps({
        "options": {"batch_size": 4, "lr": 1e-3, "lr_schedule": "linear", "bf16": False, "seed": 3},
        "dataset": {"path": "train.npz", "name": "strokes", "split": "train", "image_size": 8, "sha256": "ab" * 32},
        "provenance": {"command": "drawgap train cfgdm --data train.npz --out run --steps 7 --seed 3"}}))
    return run


def test_not_installed_names_the_folder(weights_dir):
    with pytest.raises(InputError, match="strokes-cfgdm.*not installed"):
        load_generator("strokes-cfgdm")


def test_unknown_plain_name_lists_the_shipped_ones(weights_dir):
    with pytest.raises(InputError, match="strokes-ddpm"):
        load_generator("no-such-generator")


def test_install_then_load_and_sample_by_name(weights_dir, trained_run, tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"recognizability": 71.25, "diversity": 0.5,
                                   "ci95": {"recognizability": [70.0, 72.5], "diversity": [0.4, 0.6]},
                                   "samples_meta": {"params": {"guidance": 2.0, "sampler": "dpm++", "steps": 20}},
                                   "critics": {"simclr": {"name": "strokes-simclr", "weights_hash": "cd" * 32},
                                               "protonet": {"name": "strokes-protonet", "weights_hash": "ef" * 32}}}))
    dest = registry.install_generator(trained_run, "strokes-cfgdm", metrics=[metrics])
    assert dest == weights_dir / "strokes-cfgdm"
    assert {p.name for p in dest.iterdir()} == {"generator.json", "weights.safetensors", "train.json", "TRAINING.md"}
    notes = (dest / "TRAINING.md").read_text()
    assert "drawgap train cfgdm --data train.npz --out run --steps 7 --seed 3" in notes
    assert "1.5 min" in notes and "seed: 3" in notes and "ab" * 32 in notes
    assert "71.2 [70.0, 72.5]" in notes or "71.3 [70.0, 72.5]" in notes
    assert "strokes-simclr `cdcdcdcd`, strokes-protonet `efefefef`" in notes  # which critics measured it

    original, shipped = load_generator(trained_run), load_generator("strokes-cfgdm")
    for a, b in zip(original.state_dict().values(), shipped.state_dict().values()):
        assert torch.equal(a, b)
    assert json.loads((dest / "generator.json").read_text())["provenance"]["seed"] == 3

    ds = make_dataset(n_classes=2, per_class=2, size=8)
    ds.meta["name"] = "strokes"  # the data it was trained on (train.json): no warning about another dataset
    test = write_dataset(ds, tmp_path / "test.npz")
    (path,) = sample_to_files("strokes-cfgdm", test, tmp_path / "out", per_exemplar=2, guidance=[1.0], steps=3)
    s = read_samples(path)
    assert s.samples.shape == (2, 2, 8, 8)
    assert s.meta["run"]["dir"] == str(dest)


def test_install_refuses_unknown_names_and_broken_runs(weights_dir, trained_run):
    with pytest.raises(InputError, match="shipped name"):
        registry.install_generator(trained_run, "my-model")
    with pytest.raises(InputError, match="expected a ddpm run"):
        registry.install_generator(trained_run, "strokes-ddpm")
    (trained_run / "weights.safetensors").unlink()
    with pytest.raises(InputError, match="weights.safetensors"):
        registry.install_generator(trained_run, "strokes-cfgdm")
    assert not (weights_dir / "strokes-ddpm").exists() and not (weights_dir / "strokes-cfgdm").exists()


def test_cli_lists_and_samples_by_name(weights_dir, trained_run, tmp_path, cli):
    registry.install_generator(trained_run, "strokes-cfgdm")
    listing = cli("generators")
    assert listing.code == 0
    assert "strokes-cfgdm" in listing.out and "7 steps, 2 min" in listing.out
    size = (weights_dir / "strokes-cfgdm" / "weights.safetensors").stat().st_size / 1e6
    assert f"strokes-cfgdm    installed, {size:.1f} MB, " in listing.out
    assert "omniglot-cfgdm   not installed" in listing.out
    result = cli("sample", "omniglot-cfgdm", "--exemplars", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o"))
    assert result.code == 2 and "not installed" in result.err


def test_generator_weights_are_checked_against_their_recorded_sha256(tmp_path):
    """Generators persist like critics (drawgap.weights): the record holds the weights' sha256, and weights
    that are valid safetensors but not the recorded ones are refused."""
    from drawgap.weights import file_sha256

    a = create_generator("cfgdm", seed=1, image_size=8, denoiser=LEAN, num_train_timesteps=10).save(tmp_path / "a")
    b = create_generator("cfgdm", seed=2, image_size=8, denoiser=LEAN, num_train_timesteps=10).save(tmp_path / "b")
    assert json.loads((a / "generator.json").read_text())["weights_sha256"] == file_sha256(a / "weights.safetensors")
    (a / "weights.safetensors").write_bytes((b / "weights.safetensors").read_bytes())
    with pytest.raises(InputError, match="weights.safetensors: expected weights with sha256 .* \\(from generator.json\\)"):
        load_generator(a)


REAL_WEIGHTS = registry.WEIGHTS_DIR  # the package's own shipped generators (read, never written)


@pytest.mark.parametrize("name", sorted(registry.SHIPPED))
def test_shipped_generators_record_their_weights_hash(name):
    from drawgap.weights import file_sha256

    record = json.loads((REAL_WEIGHTS / name / "generator.json").read_text())
    assert record["weights_sha256"] == file_sha256(REAL_WEIGHTS / name / "weights.safetensors")


def test_a_tampered_shipped_weights_file_is_refused(weights_dir):
    import shutil

    shutil.copytree(REAL_WEIGHTS / "strokes-ddpm", weights_dir / "strokes-ddpm")
    assert load_generator("strokes-ddpm") is not None  # the untouched copy loads
    weights = weights_dir / "strokes-ddpm" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's data: still a readable safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="expected weights with sha256 db3109ad"):
        load_generator("strokes-ddpm")


def test_training_notes_say_ema_weights_only_for_families_that_keep_an_ema():
    from drawgap.models.registry import generator_notes

    train = {"options": {"batch_size": 8, "lr": 0.001, "lr_schedule": None, "bf16": True, "seed": 0}}
    with_ema = generator_notes("strokes-cfgdm", {"generator": "cfgdm", "config": {}}, train, "ab" * 32)
    without = generator_notes("strokes-vae-ns", {"generator": "vae-ns", "config": {}}, train, "ab" * 32)
    assert "(batch 8, lr 0.001, bf16 True, EMA weights)" in with_ema
    assert "(batch 8, lr 0.001, bf16 True)" in without and "EMA" not in without
