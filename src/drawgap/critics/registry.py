"""Saving and loading critics, and the named critics that ship with drawgap.

A critic directory holds `model.safetensors` (the weights) and `config.json` (format, kind, arch, sizes,
threshold, the sha256 of the weights and of the training data, how it was trained, seed, versions and
validation metrics). The directory alone rebuilds the critic.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from drawgap.critics.base import Critic
from drawgap.critics.protonet import ProtoNetCritic
from drawgap.critics.simclr import SimCLRCritic
from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.provenance import provenance
from drawgap.shipped import shipped_names
from drawgap.weights import (
    file_sha256,
    install_directory,
    load_weights,
    read_record,
    read_weights,
    resolve_directory,
    weights_exist,
    write_weights,
)

CRITIC_FORMAT = "drawgap.critic/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
WEIGHTS_DIR = Path(__file__).parent / "weights"
KINDS: dict[str, type[Critic]] = {"simclr": SimCLRCritic, "protonet": ProtoNetCritic}

# The critics drawgap ships, by name: what each one is for (a view of the one table, `drawgap.shipped`).
SHIPPED: dict[str, str] = shipped_names("critic")


def build_critic(config: dict) -> Critic:
    """A fresh (untrained) critic from a config dict holding `kind` and the constructor's arguments."""
    kind = config.get("kind")
    if kind not in KINDS:
        raise InputError(f"expected kind one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    cls = KINDS[kind]
    return cls(**{k: config[k] for k in inspect.signature(cls).parameters if k in config})


def shipped_dir(name: str) -> Path:
    return WEIGHTS_DIR / name


def is_installed(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return weights_exist(d / WEIGHTS_FILE) and (d / CONFIG_FILE).is_file()


def save_critic(critic: Critic, directory: str | os.PathLike, **extra_config) -> Path:
    """Write `model.safetensors` then `config.json` (each atomically) into `directory`; return it.

    `extra_config` (training settings, command, data hash, validation metrics, ...) is stored in the config
    beside the critic's own settings, with seed, versions and time.
    """
    directory = Path(directory)
    weights_hash = write_weights(critic, directory / WEIGHTS_FILE)
    data_hash = extra_config.pop("data_hash", critic.data_hash)
    seed = extra_config.pop("seed", None)
    record = {
        "format": CRITIC_FORMAT,
        **critic.config,
        "weights_sha256": weights_hash,
        "data_sha256": data_hash,
        "provenance": provenance(extra_config, seed),
    }
    write_json_atomic(directory / CONFIG_FILE, record)
    critic.weights_hash, critic.data_hash = weights_hash, data_hash
    return directory


def read_critic_config(directory: str | os.PathLike) -> dict:
    return read_record(Path(directory) / CONFIG_FILE, CRITIC_FORMAT)


def critic_dir(name_or_path: str | os.PathLike) -> Path:
    """The directory of a shipped critic's name, or the given directory; a clear error for anything else."""
    return resolve_directory(name_or_path, "critic", WEIGHTS_DIR, (WEIGHTS_FILE, CONFIG_FILE),
                             "train it with `drawgap critics train` and copy the output directory there")


def lineage_record(name_or_path: str | os.PathLike) -> dict:
    """What made a critic's weights, for a run that starts from them (`--init-from`): its command, steps,
    seed, data, validation and weights hash, and in turn the record of the weights it started from. A
    fine-tuned critic keeps its whole recipe this way even after its starting point is overwritten."""
    config = read_critic_config(critic_dir(name_or_path))
    prov = config.get("provenance") or {}
    run = prov.get("config") or {}
    record = {
        "source": os.fspath(name_or_path),
        "weights_sha256": config.get("weights_sha256"),
        "data_sha256": config.get("data_sha256"),
        "data_content_sha256": (run.get("data") or {}).get("content_sha256"),
        "command": run.get("command"),
        "steps_done": run.get("steps_done"),
        "seed": prov.get("seed"),
        "created": prov.get("created"),
        "validation": (run.get("validation") or {}).get("metrics"),
        "parent": run.get("parent"),
    }
    return {k: v for k, v in record.items() if v is not None}


def load_critic(name_or_path: str | os.PathLike, device: str | None = None) -> Critic:
    """A critic by shipped name (`omniglot-simclr`, ...) or from a directory written by `save_critic`.

    The weights' sha256 is checked against the config; the critic comes back in eval mode.
    """
    key = os.fspath(name_or_path)
    directory = critic_dir(key)
    config = read_critic_config(directory)
    weights = directory / WEIGHTS_FILE
    critic = build_critic(config)
    load_weights(critic, read_weights(weights, "cpu", config.get("weights_sha256"), CONFIG_FILE), weights)
    critic.name = key if key in SHIPPED else None
    critic.weights_hash = config.get("weights_sha256") or file_sha256(weights)
    critic.data_hash = config.get("data_sha256")
    if device is not None:
        critic.to(device)
    return critic.eval()


def install_critic(run_dir: str | os.PathLike, name: str) -> Path:
    """Copy a trained critic (model.safetensors + config.json) into the package's `weights/<name>/` under a
    shipped name, with a TRAINING.md that holds the exact command, data and validation numbers."""
    if name not in SHIPPED:
        raise InputError(f"expected a shipped name ({', '.join(SHIPPED)}), got {name!r}", field="name")
    critic = load_critic(run_dir)  # checks the weights against the config
    config = read_critic_config(run_dir)
    dest = install_directory(run_dir, shipped_dir(name), (WEIGHTS_FILE, CONFIG_FILE),
                             training_notes(name, config, _data_command(config)))
    assert load_critic(name).weights_hash == critic.weights_hash
    return dest


def _data_command(config: dict) -> str | None:
    """The command that built the training data, read from the data file when it is still there unchanged."""
    from drawgap.data.formats import read_dataset

    data = ((config.get("provenance") or {}).get("config") or {}).get("data") or {}
    path = data.get("path")
    if not path or not Path(path).is_file() or file_sha256(path) != config.get("data_sha256"):
        return None
    return (read_dataset(path).meta.get("provenance") or {}).get("command")


def training_notes(name: str, config: dict, data_command: str | None = None) -> str:
    """TRAINING.md of a shipped critic: what it is, how it was trained, how well it does."""
    prov = config.get("provenance") or {}
    run = prov.get("config") or {}
    data = run.get("data") or {}
    val = run.get("validation") or {}
    lines = [
        f"# {name}",
        "",
        SHIPPED[name] + ".",
        f"{config['kind']} critic, arch `{config['arch']}`, {config['image_size']} px, binarization threshold {config['threshold']}.",
        "",
        "## How it was trained",
        "",
    ]
    ancestors = _ancestors(run.get("parent"))
    if ancestors:
        lines += [f"In {len(ancestors) + 1} runs, each starting from the weights the run before it made "
                  "(`--init-from`); the earlier runs, oldest first:", ""]
        for k, parent in enumerate(ancestors, 1):
            lines += _run_notes(k, parent)
        lines += [f"{len(ancestors) + 1}. The run that made these weights:", ""]
    lines += [
        "```",
        run.get("command") or "(unknown)",
        "```",
        "",
        f"- steps: {run.get('steps_done')}" + (f" (resumed at step {run['resumed_at']})" if run.get("resumed_at") else ""),
        f"- seed: {prov.get('seed')}",
        f"- training data: `{data.get('path')}` ({data.get('n_classes')} classes, {data.get('n_drawings')} drawings), "
        f"sha256 `{config.get('data_sha256')}`" + (f", built by `{data_command}`" if data_command else ""),
    ]
    if data.get("content_sha256"):
        lines += [f"- training data content sha256 `{data['content_sha256']}` (the same for every build of the same data: "
                  "`drawgap data validate FILE` prints it)"]
    lines += [
        f"- weights sha256: `{config.get('weights_sha256')}`",
        f"- created {prov.get('created')} with " + ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items()),
        "",
        "The full training settings are in `config.json` (`provenance.config.training`).",
    ]
    if val:
        lines += ["", "## Validation", "", f"On `{val.get('path')}` (sha256 `{val.get('sha256')}`):", ""]
        lines += [f"- {k}: {v:.2f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in (val.get("metrics") or {}).items()]
        lines += ["", f"Check again with `drawgap critics check {name} --data {val.get('path')}`."]
    return "\n".join(lines) + "\n"


def _ancestors(parent: dict | None) -> list[dict]:
    """The lineage records of the runs before this one, oldest first."""
    chain = []
    while parent:
        chain.append(parent)
        parent = parent.get("parent")
    return chain[::-1]


def _run_notes(k: int, record: dict) -> list[str]:
    val = record.get("validation") or {}
    facts = [f"{record['steps_done']} steps" if record.get("steps_done") is not None else None,
             f"seed {record['seed']}" if record.get("seed") is not None else None,
             "weights sha256 `{}`".format(record["weights_sha256"]) if record.get("weights_sha256") else None,
             "data sha256 `{}`".format(record["data_sha256"]) if record.get("data_sha256") else None,
             "data content sha256 `{}`".format(record["data_content_sha256"]) if record.get("data_content_sha256") else None]
    facts += [f"{key} {round(value, 2) if isinstance(value, float) else value}" for key, value in val.items()]
    lines = [f"{k}. " + "; ".join(f for f in facts if f) + (f" ({record['note']})" if record.get("note") else ""), ""]
    return lines + ["   ```", "   " + (record.get("command") or "(command not recorded)"), "   ```", ""]
