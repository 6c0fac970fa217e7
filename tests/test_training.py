"""The shared training loop: exact resume, interrupts, time budget, LR schedule, class augmentation,
and two CPU processes under `accelerate launch` training one model."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from drawgap.data.formats import write_dataset
from drawgap.errors import InputError
from drawgap.models import create_generator, load_generator
from drawgap.models.class_augment import AFFINE, HFLIP, IDENTITY, VFLIP, augment_class, augment_drawings
from drawgap.models.training import TrainOptions, latest_checkpoint, read_state, train
from tests.conftest import make_dataset

LEAN = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4}
REPO = Path(__file__).resolve().parents[1]


def tiny(name="cfgdm"):
    return create_generator(name, seed=0, image_size=8, denoiser=LEAN, num_train_timesteps=10)


@pytest.fixture
def data():
    return make_dataset(n_classes=4, per_class=3)


@pytest.fixture
def data_file(tmp_path, data):
    return write_dataset(data, tmp_path / "train.npz")


def _child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


# ------------------------------------------------------------------------------------------------ resume


def test_resume_continues_exactly(tmp_path, data):
    options = dict(steps=6, batch_size=4, checkpoint_every=2, log_every=1, augment_class=True)
    straight = train(tiny(), data, tmp_path / "a", TrainOptions(**options), progress=False)

    def interrupt_at_3(state):
        if state.step == 3:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would: the loop checkpoints and stops

    stopped = train(tiny(), data, tmp_path / "b", TrainOptions(**options), progress=False, callback=interrupt_at_3)
    assert stopped.stopped_by == "signal" and stopped.state.step == 3
    assert read_state(latest_checkpoint(tmp_path / "b")).step == 3
    resumed = train(load_generator(tmp_path / "b"), data, tmp_path / "b", TrainOptions(**options), resume=True, progress=False)
    assert resumed.state.step == 6 and resumed.stopped_by == "steps"
    assert resumed.weights_sha256 == straight.weights_sha256
    a, b = load_generator(tmp_path / "a"), load_generator(tmp_path / "b")  # the EMA weights too
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    # lr decays linearly to 0 at the last step (the log of step s + 1 holds the lr it ran with: 1e-4 * (1 - s / 6))
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1e-4 * (1 - s / 6) for s in range(0, 6)])
    # checkpoints at steps 2, 4, 6; the two newest are kept
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_keep_freed_memory_reuses_freed_activations_without_page_faults():
    # what a CPU training step gains from it: once the heap has settled (a few steps), a large activation is
    # allocated in memory an earlier step freed, without page faults, and the memory stops growing; glibc's
    # default unmaps it on free, and its every page faults in again. In a child: the setting is for the process.
    code = (
        "import json, resource, torch\n"
        "from drawgap.training_core import keep_freed_memory\n"
        "def step():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    x = torch.ones(2**24)\n"  # 64 MB, above glibc's largest mmap threshold (32 MB)
        "    del x\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096 // 2**20\n"
        "default = [step() for _ in range(3)]\n"
        "kept = keep_freed_memory()\n"
        "settled = [step() for _ in range(8)]\n"
        "mb = rss()\n"
        "later = [step() for _ in range(8)]\n"
        "print(json.dumps([kept, default, later, rss() - mb]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True, check=True).stdout
    kept, default, later, grown_mb = json.loads(out)
    if not kept:
        pytest.skip("no glibc mallopt here")
    assert min(default) >= 30  # 16,384 pages of 4 kB (32 with transparent huge pages) every time
    assert max(later) < 30 and grown_mb == 0


def test_run_directory_guards(tmp_path, data):
    train(tiny(), data, tmp_path, TrainOptions(steps=1, batch_size=4), progress=False)
    with pytest.raises(InputError, match="already holds a training"):
        train(tiny(), data, tmp_path, TrainOptions(steps=1, batch_size=4), progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train(tiny(), data, tmp_path / "empty", TrainOptions(steps=1, batch_size=4), resume=True, progress=False)
    with pytest.raises(InputError, match="batch_size"):
        train(tiny(), data, tmp_path / "big", TrainOptions(steps=1, batch_size=64), progress=False)
    with pytest.raises(InputError, match="--steps or --minutes"):
        train(tiny(), data, tmp_path / "none", TrainOptions(batch_size=4), progress=False)


def test_time_budget_estimates_the_step_count(tmp_path, data):
    options = TrainOptions(minutes=0.04, batch_size=4, calibration_steps=2, checkpoint_every=10_000)
    result = train(tiny(), data, tmp_path, options, progress=False)
    assert result.stopped_by in ("minutes", "steps")
    assert result.state.total_steps is not None and result.state.total_steps >= 3
    assert read_state(latest_checkpoint(tmp_path)).step == result.state.step  # the stop wrote a checkpoint


def test_bf16_and_fsdm_train(tmp_path, data):
    fsdm = create_generator("fsdm", seed=0, image_size=8, denoiser=LEAN, num_train_timesteps=10, context_dim=16,
                            encoder_widths=[4, 8], set_size=3)
    result = train(fsdm, data, tmp_path, TrainOptions(steps=2, batch_size=2, bf16=True, log_every=1), progress=False)
    assert result.state.step == 2 and np.isfinite(result.state.loss)
    assert load_generator(tmp_path).name == "fsdm"


# ------------------------------------------------------------------------------------------ augmentation


def test_class_augmentation_choices():
    x = (torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    x[:, 1] = x[:, 0]  # a drawing and its exemplar, identical
    torch.manual_seed(0)
    y = augment_drawings(x, choice=torch.tensor([HFLIP, VFLIP, IDENTITY, AFFINE]))
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1].flip(-2)) and torch.equal(y[2], x[2])
    assert torch.equal(y[3, 0], y[3, 1])  # the same affine parameters for the drawing and its exemplar
    assert set(y[3].unique().tolist()) <= {0.0, 1.0}  # nearest resampling keeps binary drawings binary
    assert not torch.equal(y[3], x[3])
    torch.manual_seed(1)
    batch = {"images": x[:, :1], "exemplars": x[:, 1:].clone(), "label": torch.arange(4)}
    out = augment_class(batch, ("images", "exemplars"))
    assert torch.equal(out["images"], out["exemplars"]) and torch.equal(out["label"], batch["label"])


def test_class_augmentation_probabilities():
    torch.manual_seed(0)
    x = torch.zeros(4000, 1, 4, 4)
    x[:, 0, 0, 1] = 1  # one ink pixel: hflip moves it to (0, 2), vflip to (3, 1)
    y = augment_drawings(x)
    hflip = (y[:, 0, 0, 2] == 1).float().mean()
    vflip = (y[:, 0, 3, 1] == 1).float().mean()
    assert hflip == pytest.approx(0.2, abs=0.03) and vflip == pytest.approx(0.2, abs=0.03)


# ------------------------------------------------------------------------------------- CLI, signals, DDP


def test_sigint_leaves_a_readable_checkpoint_and_resume_continues(tmp_path, data_file, cli):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "drawgap.cli", "train", "cfgdm", "--data", str(data_file), "--out", str(run),
           "--steps", "100000", "--batch-size", "4", "--checkpoint-every", "1"]
    proc = subprocess.Popen(cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(run) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert latest_checkpoint(run) is not None, proc.stderr.read() if proc.poll() is not None else "no checkpoint"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err
    step = read_state(latest_checkpoint(run)).step
    assert step >= 1
    assert load_generator(run).name == "cfgdm"
    assert json.loads((run / "generator.json").read_text())["training"]["step"] == step

    assert cli("train", "cfgdm", "--data", data_file, "--out", run).code == 2  # no silent overwrite
    lr_change = cli("train", "cfgdm", "--data", data_file, "--out", run, "--resume", "--lr", "0.1")
    assert lr_change.code == 2 and "keeps its recipe" in lr_change.err
    r = cli("train", "cfgdm", "--data", data_file, "--out", run, "--resume", "--steps", step + 2)
    assert r.code == 0, r.err
    assert f"step {step + 2}/{step + 2}" in r.out
    assert read_state(latest_checkpoint(run)).step == step + 2
    # train.json keeps the first command and records each continuation after it, for TRAINING.md
    train_record = json.loads((run / "train.json").read_text())
    assert train_record["options"]["steps"] == 100000
    assert [(x["at_step"], x["total_steps"]) for x in train_record["resumed"]] == [(step, step + 2)]
    from drawgap.models.registry import generator_notes
    from drawgap.models.base import read_generator_record
    notes = generator_notes("strokes-cfgdm", read_generator_record(run), train_record, "0" * 64)
    assert f"# at step {step}, to {step + 2}" in notes and notes.index("then resumed:") > notes.index("--steps 100000")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_one_model(tmp_path, data_file):
    run = tmp_path / "ddp"
    # accelerate's torchrun launcher; with no GPU drawgap asks accelerate for its CPU backend (gloo)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "drawgap.cli", "train", "cfgdm", "--data", str(data_file), "--out", str(run), "--steps", "3",
           "--batch-size", "2", "--checkpoint-every", "2", "--cpu"]
    done = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    hashes = dict(re.findall(r"process (\d)/2: step 3, weights sha256 ([0-9a-f]{64})", done.stdout))
    assert set(hashes) == {"0", "1"}, done.stdout
    assert hashes["0"] == hashes["1"]  # one model, kept in sync by DDP
    assert json.loads((run / "train.json").read_text())["processes"] == 2
    assert read_state(latest_checkpoint(run)).step == 3
    assert load_generator(run).sample(np.zeros((1, 8, 8), np.uint8), 1, sampler="ddim", steps=2).shape == (1, 1, 1, 8, 8)


# ------------------------------------------------------------------------------- divergence and the log

from dataclasses import dataclass as _dataclass  # noqa: E402

from drawgap.models.base import Generator as _Generator  # noqa: E402
from drawgap.options import option as _option  # noqa: E402


@_dataclass
class _NanOptions:
    nan_at: int = _option(4, "The (1-based) step whose loss is NaN.")


class _NanAtStep(_Generator):
    """A toy family whose loss becomes NaN at a chosen step, and that logs two scalars besides its loss."""

    name = "test-nan-at-step"
    Options = _NanOptions

    def __init__(self, image_size=8):
        super().__init__(image_size=image_size)
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_set(self, dataset, seed=0):
        return [{"images": torch.from_numpy(x).float().div(255)[None]} for x in dataset.images]

    def forward(self, batch):
        return ((batch["images"] - self.w) ** 2).mean()

    def configure_optimizers(self, options, state):
        self.nan_at = options.nan_at
        return [torch.optim.SGD(self.parameters(), lr=0.1)], []

    def training_step(self, batch, run):
        (opt,) = run.optimizers
        loss = run.model(batch)
        if run.state.step + 1 == self.nan_at:
            loss = loss * float("nan")
        run.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {"loss": loss, "w": self.w.detach()[0], "twice": 2 * loss.detach()}

    def sample(self, exemplars, n, *, seed=None, batch_size=64, progress=False):
        x = self.check_exemplars(exemplars)
        return self.w.detach().clamp(0, 1).expand(len(x), n, 1, self.image_size, self.image_size).clone()


def test_a_non_finite_loss_stops_with_one_line_naming_the_step_and_keeps_the_last_checkpoint(cli, tmp_path, data_file):
    out = tmp_path / "run"
    r = cli("train", "test-nan-at-step", "--data", data_file, "--out", out, "--steps", "8", "--batch-size", "4",
            "--checkpoint-every", "2", "--nan-at", "4", "--cpu")
    assert r.code == 2, r
    assert r.err.strip().splitlines() == [
        f"drawgap: error: {out}: loss: training stopped: the loss is nan at step 4 (its last checkpoint, step_00000002, "
        "is kept); try a lower --lr, without --bf16, or another --seed"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]
    assert read_state(out / "checkpoints" / "step_00000002").step == 2
    assert torch.isfinite(load_generator(out).w).all()  # the run's generator is the last good one
    # --resume continues from that checkpoint (to step 3 here, before the step that diverged)
    r = cli("train", "test-nan-at-step", "--data", data_file, "--out", out, "--steps", "3", "--resume")
    assert r.code == 0 and "step 3/3" in r.out, r


def test_log_keeps_every_scalar_the_step_returns(tmp_path, data):
    """log.jsonl: the mean loss and the mean of every other value since the last line (here w and 2 x loss)."""
    model = create_generator("test-nan-at-step", seed=0, image_size=8)
    seen = []
    train(model, data, tmp_path, TrainOptions(steps=4, batch_size=4, log_every=2), family_options=_NanOptions(nan_at=99),
          progress=False, callback=lambda state: seen.append(dict(state.logged)))
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    for line, pair in zip(lines, (seen[:2], seen[2:])):
        assert line["loss"] == pytest.approx(np.mean([s["loss"] for s in pair]), abs=1e-6)
        assert line["w"] == pytest.approx(np.mean([s["w"] for s in pair]), abs=1e-6)
        assert line["twice"] == pytest.approx(2 * line["loss"], abs=1e-5)


@pytest.mark.parametrize("family, keys", [("vae-ns", {"logpx", "kl", "vlb", "alpha"}),
                                          ("dagan-un", {"critic", "gp", "generator"})])
def test_log_keeps_the_baselines_terms(tmp_path, data, family, keys):
    tiny_options = {"vae-ns": dict(context=2, z_dim=2, c_dim=4, hidden_dim=8, conv_channels="2,2,2,2"),
                    "dagan-un": dict(z_size=2, widths=[2, 2, 2, 2], critic_inner_layers=1, critic_dense=4)}[family]
    model = create_generator(family, seed=0, image_size=8, **tiny_options)
    options = {"dagan-un": dict(n_critic=2)}.get(family, {})
    train(model, data, tmp_path, TrainOptions(steps=4, batch_size=2, log_every=2),
          family_options=model.Options(**options) if options else None, progress=False)
    for line in (json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()):
        assert keys <= set(line) and all(np.isfinite(line[k]) for k in keys), line


# ------------------------------------------------------------------------------------------------ --init-from


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path, data_file, cli):
    """A batch of the whole dataset makes every step the same full-batch SGD step, so a 3-step run continued
    by a 1-step run --init-from it ends where a straight 4-step run does (a fresh start would not)."""
    from drawgap.models.training import run_training

    common = dict(batch_size=12, log_every=1, nan_at=99, cpu=True, progress=False)
    run_training("test-nan-at-step", data_file, tmp_path / "straight", steps=4, **common)
    run_training("test-nan-at-step", data_file, tmp_path / "first", steps=3, **common)
    run_training("test-nan-at-step", data_file, tmp_path / "second", steps=1, init_from=tmp_path / "first", **common)
    w = lambda run: [json.loads(line)["w"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
    assert w("second") == pytest.approx(w("straight")[3:], abs=1e-6)
    assert w("second")[0] != pytest.approx(w("straight")[0], abs=1e-4)  # not where a fresh run goes
    record = json.loads((tmp_path / "second" / "train.json").read_text())
    assert record["init_from"]["source"] == str(tmp_path / "first")
    assert record["init_from"]["weights_sha256"] == json.loads((tmp_path / "first" / "generator.json").read_text())["weights_sha256"]
    # the command line: a shipped name or a directory
    r = cli("train", "test-nan-at-step", "--data", data_file, "--out", tmp_path / "third", "--steps", "1", "--batch-size", "12",
            "--cpu", "--init-from", tmp_path / "second")
    assert r.code == 0 and json.loads((tmp_path / "third" / "train.json").read_text())["init_from"]["source"] == str(tmp_path / "second"), r
    # --init-from and --resume together are refused, by name
    r = cli("train", "test-nan-at-step", "--data", data_file, "--out", tmp_path / "second", "--steps", "2", "--resume",
            "--init-from", tmp_path / "first")
    assert r.code == 2 and "--init-from" in r.err and len(r.err.strip().splitlines()) == 1, r


def test_init_from_checks_the_family_and_the_network(tmp_path, data, data_file):
    from drawgap.models.registry import export_for_shipping
    from drawgap.models.training import run_training

    tiny_ns = dict(context=2, z_dim=2, c_dim=4, hidden_dim=8, conv_channels="2,2,2,2")
    create_generator("vae-ns", seed=1, image_size=8, **tiny_ns).save(tmp_path / "ns")
    with pytest.raises(InputError, match="holds a vae-ns generator.*needs a dagan-un"):
        run_training("dagan-un", data_file, tmp_path / "x", init_from=tmp_path / "ns", steps=1, batch_size=2, progress=False)
    with pytest.raises(InputError, match="whose conv_channels is '2,2,2,2'; got '4,4,4,4'"):
        run_training("vae-ns", data_file, tmp_path / "y", init_from=tmp_path / "ns", conv_channels="4,4,4,4",
                     steps=1, batch_size=2, progress=False)
    # the network (here a context of 2) comes from the source when its model options are not given
    run_training("vae-ns", data_file, tmp_path / "z", init_from=tmp_path / "ns", steps=1, batch_size=2, progress=False)
    assert load_generator(tmp_path / "z").config == load_generator(tmp_path / "ns").config
    # a shipped-style export (float16, a GAN without its critic) starts a run: the critic keeps its seeded init
    gan = dict(z_size=2, widths=[2, 2, 2, 2], critic_inner_layers=1, critic_dense=4)
    train(create_generator("dagan-un", seed=0, image_size=8, **gan), data, tmp_path / "gan", TrainOptions(steps=1, batch_size=2),
          family_options=create_generator("dagan-un", seed=0, image_size=8, **gan).Options(n_critic=1), progress=False)
    export_for_shipping(tmp_path / "gan", tmp_path / "gan-export")
    seen = {}
    from drawgap.models import training as training_module

    original = training_module.train
    training_module.train = lambda generator, *a, **k: seen.setdefault("g", generator) and None
    try:
        run_training("dagan-un", data_file, tmp_path / "g2", init_from=tmp_path / "gan-export", steps=1, batch_size=2, progress=False)
    finally:
        training_module.train = original
    exported = load_generator(tmp_path / "gan-export").state_dict()
    started = seen["g"].state_dict()
    assert all(torch.equal(started[k], v.float()) for k, v in exported.items() if not k.startswith("critic."))
    fresh = create_generator("dagan-un", seed=0, image_size=8, **gan).state_dict()
    assert all(torch.equal(started[k], v) for k, v in fresh.items() if k.startswith("critic."))
