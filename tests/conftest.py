"""Shared fixtures. Every fixture is made here, never downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# Tiny test networks run fastest on one thread; two threads on a 2-core machine mostly wait on each other.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Keep one thread in every test, whatever the code under test set (trainers take a --threads option)."""
    yield
    torch.set_num_threads(1)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(capsys):
    """Run the `drawgap` CLI in-process: cli("data", "strokes", ...) -> CliResult(code, out, err)."""
    from drawgap.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def make_dataset(n_classes=4, per_class=3, size=8, seed=0):
    """A tiny valid Dataset: random ink blobs, exemplar = first drawing of each class."""
    from drawgap.data.formats import Dataset

    rng = np.random.default_rng(seed)
    images = (rng.random((n_classes * per_class, size, size)) > 0.7).astype(np.uint8) * 255
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int64)
    classes = np.array([f"alpha/character{c:02d}" for c in range(n_classes)])
    exemplars = (np.arange(n_classes) * per_class).astype(np.int64)
    return Dataset(images, labels, classes, exemplars, {"name": "tiny", "split": "test", "source": "test"})


@pytest.fixture
def tiny_dataset():
    return make_dataset()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the whole session (None where its binaries are missing); each test
    makes its own database in it (`postgres.create_database(name)`)."""
    from drawgap.clickme.testing import TemporaryPostgres

    if TemporaryPostgres.find_bin_dir() is None:
        yield None
        return
    server = TemporaryPostgres().start()
    yield server
    server.stop()
