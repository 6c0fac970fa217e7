"""What the generators' and the critics' training loops share: the stop request on Ctrl-C / SIGTERM, the
time budget, the progress bar, the JSON-lines log, and checkpoint files written atomically and read without
unpickling anything.

Both loops (`models/training.py`, `critics/training.py`) check `StopRequest.signalled` and `TimeBudget` after
each optimizer step, so a stopped run always ends on a step boundary with its checkpoint written, and a
resumed run repeats the uninterrupted one exactly. What they draw at random, and in which order, is each
loop's own (the generators' seeds per step, the critics' global torch RNG): nothing here draws a number.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from drawgap.errors import InputError
from drawgap.io import atomic_path


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (then checkpoints and stops); a
    second signal stops at once (KeyboardInterrupt), without waiting for the step to end."""

    def __init__(self):
        self.signalled = False
        self._previous = {}

    def __enter__(self):
        with contextlib.suppress(ValueError):  # signal handlers can only be set from the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signalled:
            raise KeyboardInterrupt
        self.signalled = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TimeBudget:
    """`minutes` of training (None: no budget), counted from construction.

    `expired()` says when it is spent; `estimate_total_steps(step)`, called after each step while the run's
    length is unknown, gives the step count that fills the budget once `calibration_steps` steps have been
    timed (the first, slow step excluded), else None.
    """

    def __init__(self, minutes: float | None, calibration_steps: int = 20):
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.calibration_steps = calibration_steps
        self.started = time.monotonic()
        self._calibrated_from: tuple[int, float] | None = None

    def expired(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.started >= self.seconds

    def estimate_total_steps(self, step: int) -> int | None:
        if self.seconds is None:
            return None
        now = time.monotonic()
        if self._calibrated_from is None:
            self._calibrated_from = (step, now)
            return None
        first_step, first_time = self._calibrated_from
        if step - first_step < self.calibration_steps:
            return None
        per_step = (now - first_time) / (step - first_step)
        left = max(0.0, self.seconds - (now - self.started))
        return step + int(left / per_step)


def progress_bar(enabled: bool, total: int | None, initial: int = 0, desc: str = "training"):
    """A tqdm bar on stderr (None when disabled); redrawn at most every 30 s when stderr is a file or pipe."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


def append_log(path: str | os.PathLike, record: dict) -> None:
    """One JSON line appended to a training log."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def save_checkpoint_file(path: str | os.PathLike, state: dict) -> None:
    """`torch.save` of a dict of tensors, numbers, strings, lists and dicts, written to a temporary file and
    renamed: a run killed while saving leaves the previous checkpoint whole."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint_file(path: str | os.PathLike, what: str = "a drawgap checkpoint") -> dict:
    """A checkpoint written by `save_checkpoint_file`, read with `weights_only=True`, which refuses any object
    but tensors and plain data (a planted pickle is never run); InputError (one line) for a missing,
    damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no checkpoint to resume from", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only's refusal, a truncated file, another format
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"refused: expected {what} of tensors and numbers only ({type(exc).__name__}: {first})", path=path) from None
    if not isinstance(state, dict):
        raise InputError(f"expected {what} (a mapping), got {type(state).__name__}", path=path)
    return state
