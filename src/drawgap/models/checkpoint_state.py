"""Saving and loading a training checkpoint without running code from it.

A run directory is something people share, so resuming one must never unpickle objects: accelerate's
`load_state` reads the state of objects registered with `register_for_checkpointing` with
`torch.load(weights_only=False)`, which runs whatever a planted `custom_checkpoint_0.pkl` asks. So the
EMA is not registered with accelerate; its state is written here as `ema.safetensors` (tensors, with the
scalars as JSON metadata), the families' LR schedules' states as `schedules.json`, and accelerate loads only
what it reads with `weights_only=True` (model, optimizers, random states). A checkpoint written before this change (EMA in `custom_checkpoint_0.pkl`)
still resumes: that file is read with `weights_only=True`, which refuses anything but tensors and numbers.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

from drawgap.errors import InputError
from drawgap.io import atomic_path
from drawgap.training_core import load_checkpoint_file

EMA_FILE = "ema.safetensors"
SCHEDULES_FILE = "schedules.json"
LEGACY_EMA_FILE = "custom_checkpoint_0.pkl"  # accelerate's name for the first registered object
_CUSTOM = re.compile(r"^custom_checkpoint_\d+\.pkl$")


def save_ema_state(ema, checkpoint: Path) -> None:
    """Write `ema.state_dict()` into `checkpoint/ema.safetensors`: shadow tensors plus scalar metadata."""
    from safetensors.torch import save_file

    state = ema.state_dict()
    tensors = {f"shadow.{i:05d}": p.detach().to("cpu").contiguous() for i, p in enumerate(state["shadow_params"])}
    scalars = {k: v for k, v in state.items() if k != "shadow_params"}
    with atomic_path(checkpoint / EMA_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"ema": json.dumps(scalars)})


def save_schedule_states(schedulers: list, checkpoint: Path) -> None:
    """Write each LR scheduler's `state_dict()` (numbers, lists, strings) into `checkpoint/schedules.json`."""
    from drawgap.io import write_json_atomic

    write_json_atomic(checkpoint / SCHEDULES_FILE, [scheduler.state_dict() for scheduler in schedulers])


def _load_schedule_states(schedulers: list, checkpoint: Path) -> None:
    path = checkpoint / SCHEDULES_FILE
    if not schedulers and not path.exists():  # a family without schedules, or a checkpoint from before them
        return
    try:
        states = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"expected the LR schedules' states as JSON ({exc})", path=path) from None
    if not isinstance(states, list) or len(states) != len(schedulers) or not all(isinstance(x, dict) for x in states):
        raise InputError(f"expected the states of {len(schedulers)} LR schedule(s)", path=path)
    for scheduler, state in zip(schedulers, states):
        scheduler.load_state_dict(state)


def remove_stale_checkpoint_dirs(run_dir: Path, folders: tuple[str, ...]) -> list[Path]:
    """Remove the `.step_N.tmp` folders that a killed run left half-written in `folders` of its run directory (a
    complete one is renamed to `step_N`; one training writes a run directory at a time). Returns those removed."""
    stale = []
    for folder in folders:
        root = Path(run_dir) / folder
        stale += sorted(p for p in root.glob(".step_*.tmp") if p.is_dir() and not p.is_symlink()) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def load_checkpoint(accelerator, checkpoint: Path, ema, schedulers: list = ()) -> None:
    """Restore model, optimizers, random states (accelerate), the EMA (None: the family keeps none) and the LR
    schedulers from `checkpoint`, unpickling nothing but tensors and numbers; InputError (one line) for a file
    that holds anything else or does not fit."""
    if ema is not None:
        try:
            ema.load_state_dict(_read_ema_state(checkpoint, ema))
        except ValueError as exc:  # diffusers' own checks of the settings (decay in [0, 1], types)
            raise InputError(f"expected the EMA state of drawgap train ({exc})", path=checkpoint / EMA_FILE) from None
    _load_schedule_states(list(schedulers), checkpoint)
    # accelerate insists that the custom_checkpoint_N.pkl files match the registered objects (none here):
    # it reads the checkpoint through a folder of links to every other file, so those are never opened
    with tempfile.TemporaryDirectory(prefix="drawgap-resume-") as view:
        for entry in checkpoint.iterdir():
            if not _CUSTOM.match(entry.name):
                os.symlink(entry.resolve(), Path(view) / entry.name)
        try:
            accelerator.load_state(view)
        except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, OSError, EOFError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"expected a checkpoint of tensors and numbers written by drawgap train ({first})",
                             path=checkpoint) from None


def _read_ema_state(checkpoint: Path, ema) -> dict:
    path = checkpoint / EMA_FILE
    if path.exists():
        state = _read_safetensors_ema(path)
    elif (checkpoint / LEGACY_EMA_FILE).exists():
        path = checkpoint / LEGACY_EMA_FILE
        state = load_checkpoint_file(path, "an EMA state")  # a planted pickle ends here, unrun
    else:
        raise InputError(f"no EMA state ({EMA_FILE}) in the checkpoint", path=checkpoint)
    expected = [tuple(p.shape) for p in ema.shadow_params]
    shadow = state.get("shadow_params") if isinstance(state, dict) else None
    if not isinstance(shadow, list) or [tuple(getattr(p, "shape", ())) for p in shadow] != expected:
        raise InputError("expected the EMA tensors of this generator", path=path, field="shadow_params")
    device = ema.shadow_params[0].device if ema.shadow_params else "cpu"
    return {**state, "shadow_params": [p.to(device) for p in shadow]}


def _read_safetensors_ema(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            scalars = json.loads((f.metadata() or {}).get("ema", "null"))
            shadow = [f.get_tensor(k) for k in sorted(f.keys())]
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"expected a safetensors file ({exc})", path=path) from None
    if not isinstance(scalars, dict):
        raise InputError("expected the EMA's settings as JSON metadata", path=path, field="ema")
    return {**scalars, "shadow_params": shadow}

