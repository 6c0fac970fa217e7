"""What the generators' and the critics' training loops share: the stop request on Ctrl-C / SIGTERM, the
time budget, the progress bar, the JSON-lines log, checkpoint files written atomically and read without
unpickling anything, and the allocator setting of a CPU training (`keep_freed_memory`).

Both loops (`models/training.py`, `critics/training.py`) check `StopRequest.signalled` and `TimeBudget` after
each optimizer step, so a stopped run always ends on a step boundary with its checkpoint written, and a
resumed run repeats the uninterrupted one exactly. What they draw at random, and in which order, is each
loop's own (the generators' seeds per step, the critics' global torch RNG): nothing here draws a number.
"""

from __future__ import annotations

import contextlib
import ctypes
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


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a process frees for its next allocations (no mmap, no trimming);
    True when set, False where there is no mallopt (nothing changes). For the rest of the process.

    Why: a CPU training step allocates and frees the same activations every step. By default glibc serves
    each allocation above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it when freed, so
    the next step page-faults every page of it in again and the kernel zeroes it: FSDM's 160 drawings per
    step make activations of 35 to 110 MB, 1.1 M page faults and 3.6 s of system time per 9.2 s fp32 step at
    batch 32. Memory that is kept is reused without faults once the heap has settled (a few steps); the peak
    memory barely moves (FSDM bf16: 2.10 GB against 2.01 GB), it is only not given back before the process
    ends. `benchmarks/bench_training.py --threads 1` against `--default-malloc`, interleaved pairs on a
    loaded 2-core machine (three for FSDM, medians; two for the rest, ranges), steps/s default -> kept (the
    ratio to the FLOP bound):

        FSDM batch 32 fp32      0.10 -> 0.17  (2.7x -> 1.6x)     bf16  0.25 -> 0.31  (2.3x -> 1.8x)
        SimCLR batch 256 fp32   0.25-0.28 -> 0.45-0.55           bf16  0.64-0.65 -> 1.12-1.28
        ProtoNet 60-way fp32    0.40-0.41 -> 0.60-0.80           bf16  1.02-1.05 -> 1.87
        VAE-NS 8 sets fp32      0.61-0.72 -> 0.76-0.81           bf16  1.16-1.23 -> 1.31-1.35

    The lean CFGDM / DDPM (batch 32), VAE-STN and DA-GAN-UN steps, whose tensors are smaller or whose time
    is elsewhere, moved within the noise (5 %).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt to call (macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


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
