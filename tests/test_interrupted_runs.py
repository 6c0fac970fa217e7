"""Interrupted runs leave no temporary files behind for long (issue 18, item 5, outside ClickMe): a
SIGTERM lets the atomic writers remove theirs; what a SIGKILL leaves, the next run writing into that
folder removes, only its own recognisably named files, only those of processes that no longer exist."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drawgap.data.formats import write_dataset
from drawgap.io import atomic_path, write_bytes_atomic
from tests.conftest import make_dataset

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hold_a_temp_file(target: Path, handler: bool):
    """A process inside atomic_path(target), its temporary file written, waiting to be signalled."""
    code = (
        "import sys, time\n"
        f"{'from drawgap.cli import exit_on_sigterm; exit_on_sigterm()' if handler else ''}\n"
        "from drawgap.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_file(), proc.stderr.read()
    return proc, tmp


def test_sigterm_removes_the_temporary_file(tmp_path):
    proc, tmp = _hold_a_temp_file(tmp_path / "metrics.json", handler=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "drawgap: terminated" in proc.stderr.read()
    assert not tmp.exists() and not (tmp_path / "metrics.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_file_is_removed_by_the_next_run_and_a_live_ones_is_kept(tmp_path, cli):
    out = tmp_path / "data"
    out.mkdir()
    live, live_tmp = _hold_a_temp_file(out / "test.npz", handler=False)
    try:
        killed, killed_tmp = _hold_a_temp_file(out / "train.npz", handler=False)
        killed.kill()
        killed.wait()
        other = out / f".notes.{_dead_pid()}.tmp"  # not a name atomic_path makes
        other.write_text("mine")
        assert killed_tmp.exists()  # what SIGKILL leaves
        r = cli("data", "strokes", "--classes", 6, "--per-class", 2, "--size", 16, "--out", out)
        assert r.code == 0, r
        assert not killed_tmp.exists()
        assert live_tmp.exists() and other.exists()
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["test.npz", "train.npz"]
    finally:
        live.kill()
        live.wait()


def test_a_stale_temp_file_is_recognised_by_its_name_and_dead_pid(tmp_path):
    pid = _dead_pid()
    stale = tmp_path / f".x.npz.{pid}.abcd_123.tmp.npz"
    stale.write_bytes(b"half")
    mine = tmp_path / f".x.npz.{os.getpid()}.abcd_123.tmp.npz"  # a live process: this one
    mine.write_bytes(b"half")
    write_dataset(make_dataset(), tmp_path / "x.npz")
    assert not stale.exists() and mine.exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_bytes_atomic(tmp_path / "a.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_train_removes_half_written_checkpoint_folders(tmp_path, cli):
    data = write_dataset(make_dataset(n_classes=4, per_class=3), tmp_path / "train.npz")
    run = tmp_path / "run"
    args = ["train", "cfgdm", "--data", data, "--out", run, "--batch-size", 4, "--widths", "8,16"]
    assert cli(*args, "--steps", 1).code == 0
    stale = run / "checkpoints" / ".step_00000007.tmp"  # as a run SIGKILLed while saving step 7 leaves it
    stale.mkdir()
    (stale / "optimizer.bin").write_bytes(b"half")
    r = cli(*args, "--steps", 2, "--resume")
    assert r.code == 0, r
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
