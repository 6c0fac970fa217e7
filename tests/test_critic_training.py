"""Critic training: the CLI writes weights + config with the data hash; checkpoints resume exactly."""

import hashlib
import json

import numpy as np
import pytest
import torch

from drawgap.critics import load_critic
from drawgap.critics.training import TrainConfig, train_critic
from drawgap.data.formats import Dataset, read_dataset, write_dataset


def pattern_dataset(n_classes=6, per_class=5, size=16, seed=0):
    """Each class is a bar at its own place and angle, drawn with per-drawing jitter."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n_classes * per_class, size, size), np.uint8)
    for c in range(n_classes):
        for k in range(per_class):
            img = images[c * per_class + k]
            r = 2 + (c * 5) % (size - 6) + rng.integers(0, 2)
            if c % 2:
                img[r : r + 2, 2 : size - 2] = 255
            else:
                img[2 : size - 2, r : r + 2] = 255
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int64)
    classes = np.array([f"bars/c{c}" for c in range(n_classes)])
    exemplars = (np.arange(n_classes) * per_class).astype(np.int64)
    return Dataset(images, labels, classes, exemplars, {"name": "bars", "split": "train", "source": "test"})


@pytest.fixture
def bars(tmp_path):
    return write_dataset(pattern_dataset(), tmp_path / "bars.npz")


def _common(kind):
    if kind == "simclr":
        return ["--batch-size", "8"]
    return ["--ways", "3", "--queries", "2", "--val-ways", "3", "--val-episodes", "20"]


@pytest.mark.parametrize("kind", ["simclr", "protonet"])
def test_cli_trains_and_writes_a_critic(cli, bars, tmp_path, kind):
    out = tmp_path / kind
    r = cli("critics", "train", kind, "--data", bars, "--val", bars, "--out", out, "--image-size", "16",
            "--steps", "3", "--checkpoint-every", "2", "--threads", "1", *_common(kind))
    assert r.code == 0, r
    assert "wrote critic" in r.out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == kind and cfg["image_size"] == 16
    assert cfg["data_sha256"] == hashlib.sha256(bars.read_bytes()).hexdigest()
    assert cfg["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    run = cfg["provenance"]["config"]
    assert run["command"].startswith(f"drawgap critics train {kind} --data {bars}") and "--steps 3" in run["command"]
    assert run["training"]["steps"] == 3 and run["steps_done"] == 3
    metrics = run["validation"]["metrics"]
    assert any("accuracy" in k for k in metrics)
    # the final validation is printed, since it runs after the progress bar closes
    shown = f"{metrics['nn_accuracy_l2']:.2f} % (L2)" if kind == "simclr" else f"3-way 1-shot accuracy {metrics['3way_1shot_accuracy']:.2f} %"
    assert f"validation on {bars}: " in r.out and shown in r.out
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[-1]["event"] == "done"
    critic = load_critic(out)
    assert critic.data_hash == cfg["data_sha256"]
    r = cli("critics", "check", out, "--data", bars, "--ways", "3", "--episodes", "10")
    assert r.code == 0, r
    assert ("1-NN class retrieval (cosine" in r.out) if kind == "simclr" else ("3-way 1-shot accuracy" in r.out)


def test_existing_checkpoint_needs_resume(cli, bars, tmp_path):
    args = ["critics", "train", "simclr", "--data", bars, "--out", tmp_path / "o", "--image-size", "16",
            "--steps", "1", "--batch-size", "8", "--threads", "1"]
    assert cli(*args).code == 0
    r = cli(*args)
    assert r.code == 2 and "--resume" in r.err and "checkpoint.pt" in r.err


def test_bad_options_are_input_errors(cli, bars, tmp_path):
    r = cli("critics", "train", "vae", "--data", bars, "--out", tmp_path / "o")
    assert r.code == 2 and "simclr, protonet" in r.err
    r = cli("critics", "train", "simclr", "--data", bars, "--out", tmp_path / "o", "--image-size", "16", "--batch-size", "500")
    assert r.code == 2 and "batch_size" in r.err
    r = cli("critics", "check", "nonesuch", "--data", bars)
    assert r.code == 2 and "omniglot-simclr" in r.err


class Interrupt:
    """on_step hook that presses Ctrl-C after `at` steps."""

    def __init__(self, at):
        self.at = at

    def __call__(self, step, loss):
        if step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["simclr", "protonet"])
def test_interrupt_and_resume_equals_a_straight_run(bars, tmp_path, kind):
    extra = dict(batch_size=8) if kind == "simclr" else dict(ways=3, queries=2, lr_step=2)
    config = TrainConfig(kind=kind, image_size=16, steps=6, threads=1, checkpoint_every=100, val_every=0, seed=3, **extra)
    straight = train_critic(config, bars, tmp_path / "straight", progress=False)

    with pytest.raises(KeyboardInterrupt):
        train_critic(config, bars, tmp_path / "split", progress=False, on_step=Interrupt(4))
    ckpt = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and not (tmp_path / "split" / "model.safetensors").exists()
    resumed = train_critic(config, bars, tmp_path / "split", resume=True, progress=False)

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    cfg = json.loads((tmp_path / "split" / "config.json").read_text())
    assert cfg["provenance"]["config"]["resumed_at"] == 4
    # and the run can be extended: --steps larger than the checkpoint's
    longer = TrainConfig(**{**config.__dict__, "steps": 7})
    train_critic(longer, bars, tmp_path / "split", resume=True, progress=False)
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["step"] == 7


def test_resume_refuses_other_training_data(bars, tmp_path):
    config = TrainConfig(kind="simclr", image_size=16, steps=1, batch_size=8, threads=1, val_every=0)
    train_critic(config, bars, tmp_path / "o", progress=False)
    other = write_dataset(pattern_dataset(seed=1, n_classes=7), tmp_path / "other.npz")
    from drawgap.errors import InputError

    with pytest.raises(InputError, match="sha256"):
        train_critic(config, other, tmp_path / "o", resume=True, progress=False)


def test_resume_accepts_a_rebuilt_copy_of_the_same_data(bars, tmp_path):
    # the same drawings written again: another file hash (the meta records when and how it was built), the
    # same content hash, so the run resumes; the config records both hashes
    config = TrainConfig(kind="simclr", image_size=16, steps=1, batch_size=8, threads=1, val_every=0)
    train_critic(config, bars, tmp_path / "o", progress=False)
    ds = read_dataset(bars)
    ds.meta["built"] = "again"
    rebuilt = write_dataset(ds, tmp_path / "rebuilt.npz")
    assert hashlib.sha256(rebuilt.read_bytes()).digest() != hashlib.sha256(bars.read_bytes()).digest()
    config.steps = 2
    critic = train_critic(config, rebuilt, tmp_path / "o", resume=True, progress=False)
    data = json.loads((tmp_path / "o" / "config.json").read_text())["provenance"]["config"]["data"]
    assert data["sha256"] == critic.data_hash == hashlib.sha256(rebuilt.read_bytes()).hexdigest()
    assert data["content_sha256"] == read_dataset(bars).content_sha256()


def test_cli_ctrl_c_leaves_a_checkpoint_and_exits_130(cli, bars, tmp_path, monkeypatch):
    from drawgap.critics.training import CriticTrainer

    real_loss = CriticTrainer._loss

    def loss_then_ctrl_c(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_loss(self, step)

    monkeypatch.setattr(CriticTrainer, "_loss", loss_then_ctrl_c)
    r = cli("critics", "train", "simclr", "--data", bars, "--out", tmp_path / "o", "--image-size", "16",
            "--steps", "5", "--batch-size", "8", "--threads", "1", "--checkpoint-every", "100")
    assert r.code == 130 and "interrupted" in r.err
    assert torch.load(tmp_path / "o" / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_init_from_starts_at_the_given_weights_with_its_own_schedule(cli, bars, tmp_path):
    first = tmp_path / "first"
    assert cli("critics", "train", "simclr", "--data", bars, "--out", first, "--image-size", "16", "--steps", "2",
               "--threads", "1", "--batch-size", "8").code == 0
    # lr 0: steps change no parameter, so the fine-tuned weights are exactly the ones it started from
    # (BatchNorm's running statistics do move: they are buffers, updated in train mode by design)
    tuned = tmp_path / "tuned"
    r = cli("critics", "train", "simclr", "--data", bars, "--out", tuned, "--image-size", "16", "--steps", "2",
            "--threads", "1", "--batch-size", "8", "--init-from", first, "--lr", "0", "--lr-step", "1")
    assert r.code == 0, r
    a, b = dict(load_critic(first).named_parameters()), dict(load_critic(tuned).named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = json.loads((tuned / "config.json").read_text())["provenance"]["config"]
    assert f"--init-from {first}" in run["command"] and "--lr-step 1" in run["command"]
    # with a learning rate the same start moves away from it, and the LR steps down every step (gamma 0.5)
    moved = tmp_path / "moved"
    assert cli("critics", "train", "simclr", "--data", bars, "--out", moved, "--image-size", "16", "--steps", "3",
               "--threads", "1", "--batch-size", "8", "--init-from", first, "--lr", "1e-3", "--lr-step", "1").code == 0
    c = dict(load_critic(moved).named_parameters())
    assert not all(torch.equal(a[k], c[k]) for k in a)
    lrs = [e["lr"] for e in map(json.loads, (moved / "train_log.jsonl").read_text().splitlines()) if "lr" in e]
    assert lrs and all(abs(lr - 1e-3 * 0.5 ** round(__import__("math").log2(1e-3 / lr))) < 1e-12 for lr in lrs)
    assert min(lrs) < 1e-3


def test_init_from_refuses_another_kind(cli, bars, tmp_path):
    proto = tmp_path / "proto"
    assert cli("critics", "train", "protonet", "--data", bars, "--out", proto, "--image-size", "16", "--steps", "1",
               "--threads", "1", *_common("protonet")).code == 0
    r = cli("critics", "train", "simclr", "--data", bars, "--out", tmp_path / "s", "--image-size", "16", "--steps", "1",
            "--threads", "1", "--batch-size", "8", "--init-from", proto)
    assert r.code == 2 and "init_from" in r.err and "simclr" in r.err
    assert not (tmp_path / "s" / "model.safetensors").exists()


def test_fine_tuned_critics_keep_the_recipe_of_the_weights_they_started_from(cli, bars, tmp_path):
    from drawgap.critics.registry import read_critic_config, training_notes

    def train(out, *extra, steps="2"):
        return cli("critics", "train", "simclr", "--data", bars, "--out", out, "--image-size", "16", "--steps", steps,
                   "--threads", "1", "--batch-size", "8", "--checkpoint-every", "1", *extra)

    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert train(first, "--seed", "3").code == 0
    assert train(second, "--init-from", first, "--lr", "1e-4").code == 0
    first_cfg = read_critic_config(first)
    # the third run starts, stops after one step, and resumes after its starting point is gone: the record
    # of where it started was taken at the start and travels in the checkpoint
    assert train(third, "--init-from", second, steps="1").code == 0
    (third / "model.safetensors").unlink()
    (third / "config.json").unlink()
    second_cfg = read_critic_config(second)
    for f in second.iterdir():
        f.unlink()
    assert train(third, "--init-from", second, "--resume", steps="2").code == 0

    cfg = read_critic_config(third)
    parent = cfg["provenance"]["config"]["parent"]
    assert parent["weights_sha256"] == second_cfg["weights_sha256"] and parent["steps_done"] == 2
    assert parent["command"] == second_cfg["provenance"]["config"]["command"]
    grandparent = parent["parent"]
    assert grandparent["weights_sha256"] == first_cfg["weights_sha256"] and grandparent["seed"] == 3
    assert "parent" not in grandparent

    notes = training_notes("strokes-simclr", cfg)
    assert "In 3 runs" in notes
    # oldest first: the first run's command, then the second's, then the one that made these weights
    order = [notes.index(c) for c in (first_cfg["provenance"]["config"]["command"],
                                      second_cfg["provenance"]["config"]["command"],
                                      cfg["provenance"]["config"]["command"])]
    assert order == sorted(order)
    assert f"weights sha256 `{first_cfg['weights_sha256']}`" in notes


def test_a_critic_trained_from_scratch_has_no_lineage(cli, bars, tmp_path):
    from drawgap.critics.registry import read_critic_config, training_notes

    assert cli("critics", "train", "simclr", "--data", bars, "--out", tmp_path / "o", "--image-size", "16",
               "--steps", "1", "--threads", "1", "--batch-size", "8").code == 0
    cfg = read_critic_config(tmp_path / "o")
    assert cfg["provenance"]["config"].get("parent") is None
    assert "runs, each starting" not in training_notes("strokes-simclr", cfg)


# --------------------------------------------------------------------- the loop shared with the generators

SIMCLR = ["--image-size", "16", "--batch-size", "8", "--threads", "1", "--val-every", "0", "--seed", "3"]


def _weights_sha256(out):
    return json.loads((out / "config.json").read_text())["weights_sha256"]


def test_sigterm_mid_step_then_resume_equals_a_straight_run(cli, bars, tmp_path):
    """A SIGTERM that arrives in the middle of a step (after its augmentations drew their random numbers) is a
    request: the step ends, the checkpoint is written, the process exits 130; the resumed run then ends with
    the weights of a run never stopped (on the old loop, the signal cut the step and the resumed run redrew
    its augmentations from an RNG already advanced)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    args = ["critics", "train", "simclr", "--data", str(bars), "--steps", "30", "--checkpoint-every", "1000", *SIMCLR]
    code = (
        "import sys, time\n"
        "import drawgap.critics.training as t\n"
        "real = t.CriticTrainer._loss\n"
        "def slow(self, step):\n"
        "    loss = real(self, step)\n"  # the step's random numbers are drawn: now the signal comes
        "    if step == 5:\n"
        "        print('ready', flush=True)\n"
        "    time.sleep(0.2)\n"
        "    return loss\n"
        "t.CriticTrainer._loss = slow\n"
        "from drawgap.cli import main\n"
        f"main({[*args, '--out', str(tmp_path / 'split')]!r})\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo / "src"))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    assert "interrupted" in proc.stderr.read()
    stopped_at = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["step"]
    assert 6 <= stopped_at < 30 and not (tmp_path / "split" / "model.safetensors").exists()
    events = [json.loads(line) for line in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert events[-1] == {"event": "interrupted", "step": stopped_at}

    assert cli(*args, "--out", tmp_path / "split", "--resume").code == 0
    assert cli(*args, "--out", tmp_path / "straight").code == 0
    assert _weights_sha256(tmp_path / "split") == _weights_sha256(tmp_path / "straight")
    run = json.loads((tmp_path / "split" / "config.json").read_text())["provenance"]["config"]
    assert run["resumed_at"] == stopped_at and run["steps_done"] == 30 and run["stopped_by"] == "steps"


def test_minutes_stops_on_time_with_a_checkpoint(cli, bars, tmp_path):
    import time

    out = tmp_path / "o"
    started = time.monotonic()
    r = cli("critics", "train", "simclr", "--data", bars, "--out", out, "--steps", "100000000", "--minutes", "0.05",
            "--checkpoint-every", "100000", *SIMCLR)
    took = time.monotonic() - started
    assert r.code == 0, r
    assert 3.0 <= took < 3.0 + 20, took  # the budget is 3 s; the rest is setup and saving
    run = json.loads((out / "config.json").read_text())["provenance"]["config"]
    done = run["steps_done"]
    assert run["stopped_by"] == "minutes" and 0 < done < 100000000
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == done
    # a budget is not the recipe: the recorded command names the steps reached, not the minutes
    assert f"--steps {done}" in run["command"] and "--minutes" not in run["command"]


def test_minutes_without_steps_estimates_them_and_protonet_takes_its_lr_steps_from_them(cli, bars, tmp_path):
    """--minutes alone: the step count is estimated from the speed (as `drawgap train` does); ProtoNet's LR
    then halves every quarter of that count, and the recorded command (--steps N --lr-step N/4) makes the same
    weights from scratch."""
    proto = ["--image-size", "16", "--ways", "3", "--queries", "2", "--threads", "1", "--val-every", "0", "--seed", "1"]
    out = tmp_path / "timed"
    r = cli("critics", "train", "protonet", "--data", bars, "--out", out, "--minutes", "0.02", *proto)
    assert r.code == 0, r
    events = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    (estimated,) = [e for e in events if e.get("event") == "steps estimated"]
    steps = estimated["steps"]
    run = json.loads((out / "config.json").read_text())["provenance"]["config"]
    # the estimate is reached, or the budget runs out a little before it when the machine slows down
    assert steps > 21 and (run["steps_done"] == steps) == (run["stopped_by"] == "steps"), (steps, run["steps_done"])
    assert run["steps_done"] <= steps and run["stopped_by"] in ("steps", "minutes")
    assert run["training"]["lr_step"] == max(estimated["step"], steps // 4)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == run["steps_done"]
    # the LR a line logs is the one after that line's step: 1e-3 until the estimate, then halved every lr_step
    # steps counted from the start (the log is every 10 steps, so a run stopped by its budget between two lines
    # may have halved once more after the last one: each line is checked, not the run's last LR)
    logged = [e for e in events if "lr" in e]
    expected = [1e-3 if e["step"] < estimated["step"] else 1e-3 * 0.5 ** (e["step"] // run["training"]["lr_step"]) for e in logged]
    assert [e["lr"] for e in logged] == pytest.approx(expected)
    assert any(e["step"] >= estimated["step"] for e in logged)

    again = tmp_path / "again"
    words = run["command"].split()[3:]  # drawgap critics train ...
    words[words.index("--out") + 1] = str(again)
    assert cli("critics", "train", *words, "--threads", "1").code == 0
    assert _weights_sha256(again) == _weights_sha256(out)


class _Planted:
    """An object a weights_only load must refuse to build: unpickling it would create the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_checkpoint_that_is_not_tensors_and_numbers(cli, bars, tmp_path):
    out, marker = tmp_path / "o", tmp_path / "planted-code-ran"
    out.mkdir()
    torch.save({"step": 1, "model": _Planted(marker)}, out / "checkpoint.pt")
    r = cli("critics", "train", "simclr", "--data", bars, "--out", out, "--steps", "2", "--resume", *SIMCLR)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "checkpoint.pt" in r.err and "refused" in r.err
    assert not marker.exists() and not (out / "model.safetensors").exists()
