"""Helpers to test and benchmark the game on one machine: small stimuli, a throwaway PostgreSQL server, and
the ClickMe server as a real process on a loopback port.

Used by drawgap's tests and `benchmarks/bench_clickme.py`; a researcher can use them to try a setup before
an experiment. Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

# ------------------------------------------------------------------------------------------------ stimuli


def make_test_dataset(n_classes: int = 4, per_class: int = 5, size: int = 28, seed: int = 0):
    """A small Dataset whose classes look different: each class is a few fixed strokes, each drawing moves
    the strokes' ends a little (seeded)."""
    from PIL import Image, ImageDraw

    from drawgap.data.formats import Dataset

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(n_classes):
        strokes = rng.uniform(0.15, 0.85, size=(2 + c % 3, 2, 2)) * size
        for _ in range(per_class):
            im = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(im)
            for (a, b) in strokes + rng.normal(0, size * 0.03, size=strokes.shape):
                draw.line([tuple(a), tuple(b)], fill=255, width=max(1, size // 14))
            images.append(np.asarray(im, dtype=np.uint8))
            labels.append(c)
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), np.array([f"shape{c:02d}" for c in range(n_classes)]),
                   (np.arange(n_classes) * per_class).astype(np.int64), {"name": "clickme-test", "split": "test", "source": "generated"})


def make_test_stimuli(root: str | os.PathLike, n_classes: int = 4, per_class: int = 5, per_category: int = 3,
                      practice: int = 1, seed: int = 0) -> Path:
    """`root/stimuli`: stimuli from `make_test_dataset` with a randomly initialised ProtoNet partner
    (48 px, as the QuickDraw critic) saved beside it."""
    import torch

    from drawgap.clickme.stimuli import prepare_stimuli
    from drawgap.critics import ProtoNetCritic, save_critic
    from drawgap.data.formats import write_dataset

    root = Path(root)
    dataset = write_dataset(make_test_dataset(n_classes, per_class, seed=seed), root / "dataset.npz")
    torch.manual_seed(seed)
    critic = save_critic(ProtoNetCritic(arch="omniglot", image_size=48), root / "critic", seed=seed)
    return prepare_stimuli(dataset, root / "stimuli", per_category=per_category, practice=practice, critic=critic, seed=seed)


# ---------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory on 127.0.0.1 (Debian's binaries; `initdb` + `pg_ctl`).

    Run as root, the server runs as the `postgres` user (PostgreSQL refuses root). Durability settings
    are relaxed (fsync off): it is for tests of the ClickMe server, not of PostgreSQL.
    """

    def __init__(self, bin_dir: str | os.PathLike | None = None):
        found = bin_dir or self.find_bin_dir()
        if found is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin_dir = Path(found)
        self.port = free_port()
        self.dir: Path | None = None

    @staticmethod
    def find_bin_dir() -> Path | None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        if candidates:
            return Path(candidates[-1]).parent
        initdb = shutil.which("initdb")
        return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> "TemporaryPostgres":
        self.dir = Path(tempfile.mkdtemp(prefix="drawgap-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data, log = self.dir / "data", self.dir / "server.log"
        _run(self._as_server_user([str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                   "-E", "UTF8", "--no-sync", "--no-instructions"]))
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _run(self._as_server_user([str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                   "-w", "-t", "60", "start"]))
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            subprocess.run(self._as_server_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                                                 "immediate", "-w", "stop"]), capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class ServerProcess:
    """`drawgap clickme serve` as a child process on 127.0.0.1 (one port for its whole life, so that a
    restarted server is found where the clients left it)."""

    def __init__(self, stimuli: str | os.PathLike, db: str, log: str | os.PathLike, *args: str, port: int | None = None,
                 env: dict | None = None):
        self.stimuli, self.db, self.log, self.args = str(stimuli), db, Path(log), [str(a) for a in args]
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "drawgap.cli", "clickme", "serve", self.stimuli, "--db", self.db,
               "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
