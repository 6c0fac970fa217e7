"""`drawgap sweep`: a training option trains one variant per value, a sampling option samples one generator per
value, every variant is evaluated against the human reference and drawn on the plane; a rerun skips what is
done and resumes an interrupted training exactly; bad input is one line and exit code 2."""

import json
import os
import signal

import pytest
import torch

from drawgap.critics import ProtoNetCritic, SimCLRCritic, save_critic
from drawgap.data.formats import read_samples
from drawgap.metrics.metrics_file import read_metrics
from drawgap.models import load_generator
from drawgap.models.registry import generator_class
from drawgap.pipelines.sweep import parse_param, sweepable_options, value_order

SIZE = 16
TINY_NS = ["--z-dim", "4", "--c-dim", "8", "--hidden-dim", "16", "--conv-channels", "4,4,8,8"]
FAST = ["--per-exemplar", "3", "--queries", "10", "--bootstrap", "20"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny built-in strokes data (6 train, 6 test classes at 16 px) and a tiny critic pair named by its prefix."""
    from drawgap.cli import main

    root = tmp_path_factory.mktemp("sweep")
    main(["data", "strokes", "--out", str(root / "data"), "--classes", "12", "--per-class", "6", "--size", str(SIZE),
          "--alphabets", "2", "--test-fraction", "0.5"])
    torch.manual_seed(0)
    save_critic(SimCLRCritic("omniglot", image_size=SIZE), root / "c-simclr")
    save_critic(ProtoNetCritic("omniglot", image_size=SIZE), root / "c-protonet")
    return {"train": root / "data" / "train.npz", "test": root / "data" / "test.npz", "critics": str(root / "c")}


def _context_sweep(files, out, *extra):
    return ["sweep", "vae-ns", "--param", "context=3,2", "--data", files["train"], "--test", files["test"],
            "--critics", files["critics"], "--out", out, "--steps", "3", "--batch-size", "2", "--cpu", *TINY_NS, *FAST, *extra]


def _weights(run):
    """A hash of the tensors, which the weights file holds beside its metadata."""
    from drawgap.models.training import weights_sha256

    return weights_sha256(load_generator(run))


def test_training_sweep_end_to_end_then_rerun_skips_everything(cli, files, tmp_path):
    out = tmp_path / "out"
    r = cli(*_context_sweep(files, out))
    assert r.code == 0, r
    assert "[1/2] context=3: training" in r.err and "[2/2] context=2: evaluating" in r.err
    record = json.loads((out / "sweep.json").read_text())
    assert record["format"] == "drawgap.sweep/1" and record["complete"] is True
    assert (record["family"], record["param"], record["kind"], record["values"]) == ("vae-ns", "context", "training", [3, 2])
    assert "sweep vae-ns --param context=3,2" in record["command"]
    assert [v["name"] for v in record["variants"]] == ["context=3", "context=2"]
    for v in record["variants"]:
        run = out / v["run"]
        assert load_generator(run).config["context"] == v["value"]  # each value trained its own network
        assert v["training"] == {**v["training"], "step": 3, "stopped_by": "steps"}
        s = read_samples(out / v["samples"])
        assert s.samples.shape == (6, 3, SIZE, SIZE) and s.meta["generator"] == "vae-ns"
        m = read_metrics(out / v["metrics"])
        assert m["system"] == f"vae-ns {v['name']}" and "distance_to_human" in m
    assert read_metrics(out / "metrics" / "human.json")["system"] == "human"
    assert read_samples(out / "human.npz").samples.shape == (6, 3, SIZE, SIZE)
    for ext in ("png", "pdf"):
        assert (out / f"sweep.{ext}").stat().st_size > 1000

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "sweep.json"}
    again = cli(*_context_sweep(files, out))
    assert again.code == 0, again
    assert again.err.count("skipped") == 4 and "training" not in again.err.replace("trained", "")
    changed = [p for p, t in before.items() if p.is_file() and p.stat().st_mtime_ns != t and p.suffix not in (".png", ".pdf")]
    assert changed == []  # no run, samples or metrics file rewritten


def test_interrupted_sweep_resumes_exactly(cli, files, tmp_path, monkeypatch):
    """Ctrl-C during the second variant's training: exit 130 with its checkpoint; the rerun skips the first
    variant, resumes the second from its checkpoint and ends with the weights of an uninterrupted sweep."""
    import drawgap.models.training as training

    whole = tmp_path / "whole"
    assert cli(*_context_sweep(files, whole)).code == 0

    original, calls = training._step_schedules, []

    def interrupt_second_run(schedules, state):
        original(schedules, state)
        calls.append(state.step)
        if state.step == 1 and calls.count(0) == 2:  # step 1 of the second variant
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(training, "_step_schedules", interrupt_second_run)
    out = tmp_path / "out"
    r = cli(*_context_sweep(files, out))
    assert r.code == 130, r
    assert "interrupted while training context=2 (step 2, checkpoint saved)" in r.err
    record = json.loads((out / "sweep.json").read_text())
    assert record["complete"] is False and [v["training"]["stopped_by"] for v in record["variants"]] == ["steps", "signal"]
    assert not (out / "sweep.png").exists()

    monkeypatch.setattr(training, "_step_schedules", original)
    first = _weights(out / "runs" / "context=3")
    r = cli(*_context_sweep(files, out))
    assert r.code == 0, r
    assert "[1/2] context=3: trained (3 steps), skipped" in r.err
    assert "[2/2] context=2: training (resumed from its newest checkpoint)" in r.err
    assert _weights(out / "runs" / "context=3") == first
    assert _weights(out / "runs" / "context=2") == _weights(whole / "runs" / "context=2")
    a, b = (read_metrics(d / "metrics" / "context=2.json") for d in (whole, out))
    assert (a["diversity"], a["recognizability"]) == (b["diversity"], b["recognizability"])


def test_sampling_sweep_samples_one_generator_per_guidance(cli, files, tmp_path):
    run = tmp_path / "cfgdm"
    assert cli("train", "cfgdm", "--data", files["train"], "--out", run, "--steps", "2", "--batch-size", "4",
               "--widths", "8,8,8", "--cpu").code == 0
    out = tmp_path / "out"
    r = cli("sweep", "cfgdm", "--param", "guidance=2,0", "--generator", run, "--test", files["test"],
            "--critics", files["critics"], "--out", out, "--sampler-steps", "2", *FAST)
    assert r.code == 0, r
    record = json.loads((out / "sweep.json").read_text())
    assert record["kind"] == "sampling" and record["values"] == [2.0, 0.0]
    assert not (out / "runs").exists()  # nothing trained
    for v in record["variants"]:
        s = read_samples(out / v["samples"])
        assert s.meta["params"]["guidance"] == v["value"] and s.meta["params"]["steps"] == 2
        assert s.meta["run"]["dir"] == str(run)
    names = {v["name"]: read_metrics(out / v["metrics"])["system"] for v in record["variants"]}
    assert names == {"guidance=2": "cfgdm guidance=2", "guidance=0": "cfgdm guidance=0"}


def test_learning_curve_sweep_samples_each_snapshot_of_a_run(cli, files, tmp_path):
    from drawgap.models.training import snapshots

    run = tmp_path / "cfgdm"
    bad = cli("train", "cfgdm", "--data", files["train"], "--out", run, "--steps", "4", "--checkpoint-every", "2",
              "--snapshot-every", "3", "--cpu")
    assert bad.code == 2 and "snapshot_every: expected 0 or a multiple of checkpoint_every (2), got 3" in bad.err
    assert cli("train", "cfgdm", "--data", files["train"], "--out", run, "--steps", "5", "--batch-size", "4",
               "--widths", "8,8,8", "--checkpoint-every", "2", "--snapshot-every", "2", "--cpu").code == 0
    kept = snapshots(run)
    assert sorted(kept) == [2, 4]  # not 5: the last step is the run directory itself
    assert json.loads((kept[2] / "generator.json").read_text())["training"]["step"] == 2
    assert _weights(kept[2]) != _weights(kept[4]) != _weights(run)
    out = tmp_path / "curve"
    r = cli("sweep", "cfgdm", "--param", "training-step=all", "--generator", run, "--test", files["test"],
            "--critics", files["critics"], "--out", out, "--sampler-steps", "2", *FAST)
    assert r.code == 0, r
    record = json.loads((out / "sweep.json").read_text())
    assert record["kind"] == "snapshot" and record["values"] == [2, 4, 5]
    dirs = {v["value"]: read_samples(out / v["samples"]).meta["run"]["dir"] for v in record["variants"]}
    assert dirs == {2: str(kept[2]), 4: str(kept[4]), 5: str(run)}
    assert (out / "sweep.png").is_file()
    missing = cli("sweep", "cfgdm", "--param", "training-step=3", "--generator", run, "--test", files["test"],
                  "--critics", files["critics"], "--out", tmp_path / "c3", *FAST)
    assert missing.code == 2 and "--param: has no snapshot of step 3 (it has 2, 4, 5)" in missing.err, missing.err


def test_help_lists_the_families_and_what_each_can_sweep(cli):
    r = cli("sweep", "--help")
    assert r.code == 0 and all(f in r.out for f in ("vae-ns", "vae-stn", "dagan-un", "dagan-rn", "cfgdm", "ddpm", "fsdm"))
    r = cli("sweep", "vae-stn", "--help")
    text = " ".join(r.out.replace("│", " ").split())
    assert r.code == 0 and "Training options (a run per value, --data): time-steps, z-size," in text
    assert "Sampling options (--generator sampled per value): none." in text and "--time-steps" in text


def test_options_and_their_kind_come_from_the_family_declaration():
    ns = sweepable_options(generator_class("vae-ns"))
    assert ns["context"].kind == "training" and ns["beta"].kind == "training" and "guidance" not in ns
    stn = sweepable_options(generator_class("vae-stn"))
    assert stn["time_steps"].flag == "time-steps" and stn["z_size"].kind == "training"
    cfgdm = sweepable_options(generator_class("cfgdm"))
    assert cfgdm["guidance"].kind == "sampling" and cfgdm["steps"].kind == "sampling" and cfgdm["lr"].kind == "training"
    assert "guidance" not in sweepable_options(generator_class("dagan-un"))
    option, values = parse_param(generator_class("vae-stn"), "time-steps=10, 60,30")
    assert option.name == "time_steps" and values == [10, 60, 30] and value_order(values) == [0, 2, 1]
    option, values = parse_param(generator_class("vae-ns"), "beta=0.5,2")
    assert values == [0.5, 2.0] and isinstance(values[0], float)


@pytest.mark.parametrize("args, message", [
    (["sweep", "no-such-family", "--param", "x=1"], "unknown generator 'no-such-family'; expected one of"),
    (["sweep", "ddpm", "--param", "context=2,5"], "--param: ddpm has no option 'context' to sweep (it has training: preset,"),
    (["sweep", "vae-ns", "--param", "context=2,five"], "--param: expected integers for context, got 'five'"),
    (["sweep", "vae-ns", "--param", "context="], "--param: expected a comma-separated list of values for context"),
    (["sweep", "vae-ns", "--param", "context=2,,5"], "--param: expected a comma-separated list of values"),
    (["sweep", "vae-ns", "--param", "context"], "--param: expected NAME=v1,v2,..."),
    (["sweep", "vae-ns", "--param", "context=2,2"], "--param: expected distinct values"),
    (["sweep", "vae-ns", "--param", "context=0,2"], "context: expected a positive integer, got 0"),
    (["sweep", "vae-ns", "--param", "context=2,3", "--context", "4"], "context is swept by --param"),
    (["sweep", "cfgdm", "--param", "guidance=0,1"], "--generator: guidance is a sampling option of cfgdm"),
    (["sweep", "vae-ns", "--param", "context=2,3", "--generator", "strokes-cfgdm"], "--generator: context is a training option"),
    (["sweep", "dagan-un", "--param", "guidance=0,1"], "dagan-un has no option 'guidance' to sweep (it has training: z-size,"),
    (["sweep", "vae-ns", "--param", "beta=1,2", "--sampler", "ddim"], "--sampler: vae-ns has no sampler option"),
    (["sweep", "vae-ns", "--param", "beta=1,2", "--per-exemplar", "1"], "--per-exemplar: expected an integer >= 2, got 1"),
    (["sweep", "vae-ns", "--param", "beta=1,2", "--bogus", "1"], "--bogus: `drawgap sweep vae-ns` has no such option"),
])
def test_bad_input_is_one_line_and_exit_2(cli, files, tmp_path, args, message):
    out = tmp_path / "out"
    training = "guidance" not in args[3]  # give what a training sweep needs, so that the case's own error shows
    r = cli(*args, "--test", files["test"], "--critics", files["critics"], "--out", out,
            *(["--data", files["train"], "--steps", "1"] if training else []))
    assert r.code == 2, r
    assert message in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (out / "sweep.json").exists()


def test_rerun_with_other_settings_is_refused(cli, files, tmp_path):
    out = tmp_path / "out"
    args = ["sweep", "vae-ns", "--param", "beta=1,2", "--data", files["train"], "--test", files["test"],
            "--critics", files["critics"], "--out", out, "--steps", "1", "--batch-size", "2", "--cpu", *TINY_NS, *FAST]
    assert cli(*args).code == 0
    before = (out / "sweep.json").read_text()
    r = cli(*[a if a != "1" or i != args.index("--steps") + 1 else "2" for i, a in enumerate(args)])
    assert r.code == 2 and "holds a sweep with other settings (train_options differ)" in r.err, r
    assert (out / "sweep.json").read_text() == before


def test_ctrl_c_in_a_real_process_then_the_same_command_resumes(cli, files, tmp_path):
    """`drawgap sweep` as a process: SIGINT during the first variant's training stops it with its checkpoint
    (exit 130, one line saying how to continue); the same command then resumes it and finishes the sweep."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "out"
    args = [str(a) for a in _context_sweep(files, out)]
    args[args.index("--steps") + 1] = "80"
    args += ["--checkpoint-every", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.Popen([sys.executable, "-m", "drawgap.cli", *args], env=env, stderr=subprocess.PIPE, text=True)
    checkpoints = out / "runs" / "context=3" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "drawgap: interrupted while training context=3" in err and "rerun the same command to continue" in err
    assert "Traceback" not in err
    record = json.loads((out / "sweep.json").read_text())
    assert [v["training"]["stopped_by"] for v in record["variants"]] == ["signal"]
    stopped = record["variants"][0]["training"]["step"]
    assert 4 <= stopped < 80

    r = cli(*args)
    assert r.code == 0, r
    assert "[1/2] context=3: training (resumed from its newest checkpoint)" in r.err
    record = json.loads((out / "sweep.json").read_text())
    assert record["complete"] and [v["training"]["step"] for v in record["variants"]] == [80, 80]
    assert (out / "sweep.png").is_file()


def test_more_values_into_the_same_out_keep_the_finished_variants(cli, files, tmp_path):
    out = tmp_path / "out"
    args = _context_sweep(files, out)
    assert cli(*args).code == 0
    trained = {name: _weights(out / "runs" / name) for name in ("context=3", "context=2")}
    more = [a if a != "context=3,2" else "context=3,2,4" for a in args]
    r = cli(*more)
    assert r.code == 0, r
    assert "[1/3] context=3: trained (3 steps), skipped" in r.err and "[3/3] context=4: training" in r.err
    record = json.loads((out / "sweep.json").read_text())
    assert record["values"] == [3, 2, 4] and [v["name"] for v in record["variants"]] == ["context=3", "context=2", "context=4"]
    assert {name: _weights(out / "runs" / name) for name in trained} == trained  # not retrained
    assert load_generator(out / "runs" / "context=4").config["context"] == 4
