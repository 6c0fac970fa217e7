"""Resuming a run directory someone else made never runs code planted in it (issue 18, item 1).

A planted pickle is an object whose unpickling writes a marker file; `drawgap train --resume` must
ignore it or refuse it (one line, exit 2), and the marker must never appear.
"""

import shutil

import pytest
import torch

from drawgap.data.formats import write_dataset
from drawgap.models import create_generator, load_generator
from drawgap.models.checkpoint_state import EMA_FILE, LEGACY_EMA_FILE
from drawgap.models.training import TrainOptions, latest_checkpoint, read_state, train
from tests.conftest import make_dataset

LEAN = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4}


class Planted:
    """Unpickling this runs `exec`: what a hostile run directory would ship."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture
def run(tmp_path):
    """A finished two-step run (checkpoints at steps 1 and 2) and its dataset file."""
    data = make_dataset(n_classes=4, per_class=3)
    generator = create_generator("cfgdm", seed=0, image_size=8, denoiser=LEAN, num_train_timesteps=10)
    train(generator, data, tmp_path / "run", TrainOptions(steps=2, batch_size=4, checkpoint_every=1), progress=False)
    return tmp_path / "run", write_dataset(data, tmp_path / "train.npz")


def _resume(cli, run_dir, data_file, steps):
    return cli("train", "cfgdm", "--data", data_file, "--out", run_dir, "--resume", "--steps", steps)


def test_a_planted_custom_checkpoint_is_never_unpickled(run, cli, tmp_path):
    run_dir, data_file = run
    marker = tmp_path / "marker"
    torch.save({"shadow_params": Planted(marker)}, latest_checkpoint(run_dir) / LEGACY_EMA_FILE)
    r = _resume(cli, run_dir, data_file, 3)
    assert not marker.exists()
    assert r.code == 0, r.err  # ignored: the EMA comes from ema.safetensors
    assert read_state(latest_checkpoint(run_dir)).step == 3
    assert load_generator(run_dir).name == "cfgdm"


def test_a_checkpoint_whose_ema_is_a_planted_pickle_is_refused(run, cli, tmp_path):
    run_dir, data_file = run
    marker = tmp_path / "marker"
    ckpt = latest_checkpoint(run_dir)
    (ckpt / EMA_FILE).unlink()  # as a checkpoint of an older drawgap, whose EMA was accelerate's pickle
    torch.save({"shadow_params": Planted(marker)}, ckpt / LEGACY_EMA_FILE)
    r = _resume(cli, run_dir, data_file, 3)
    assert not marker.exists()
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and LEGACY_EMA_FILE in lines[0] and "refused" in lines[0], r.err
    assert read_state(latest_checkpoint(run_dir)).step == 2  # nothing trained, nothing written


def test_a_planted_optimizer_state_is_refused(run, cli, tmp_path):
    run_dir, data_file = run
    marker = tmp_path / "marker"
    torch.save({"state": Planted(marker)}, latest_checkpoint(run_dir) / "optimizer.bin")
    r = _resume(cli, run_dir, data_file, 3)
    assert not marker.exists()
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "step_00000002" in r.err and "tensors and numbers" in r.err


def test_an_older_checkpoint_with_a_plain_ema_pickle_still_resumes(run, cli, tmp_path):
    """The EMA state accelerate used to write (tensors and numbers only) is read with weights_only=True."""
    run_dir, data_file = run
    ckpt = latest_checkpoint(run_dir)
    from drawgap.models.checkpoint_state import _read_safetensors_ema

    state = _read_safetensors_ema(ckpt / EMA_FILE)
    (ckpt / EMA_FILE).unlink()
    torch.save(state, ckpt / LEGACY_EMA_FILE)
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    r = _resume(cli, copy, data_file, 3)
    assert r.code == 0, r.err
    assert read_state(latest_checkpoint(copy)).step == 3
