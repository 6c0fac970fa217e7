"""Persisting trained networks, for generators and critics alike: weights in safetensors beside a JSON record,
the weights' sha256 recorded and checked, records read with one-line errors, names of shipped weights
resolved to their directories, and a trained directory installed under a shipped name.

A generator's run directory (`generator.json` + `weights.safetensors`) and a critic's directory
(`config.json` + `model.safetensors`) differ in their file names and records, not in how they are written,
read, checked or shipped: that is here, once. The table of what is shipped is `drawgap.shipped`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import torch
from torch import nn

from drawgap.errors import InputError
from drawgap.io import atomic_path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """`safetensors.torch.save_file`, atomically, with the same bytes for the same tensors and metadata in any
    process: safetensors writes the metadata in the order of a Rust hash map, seeded per process, so the file's
    sha256 (recorded in generator.json and TRAINING.md) changed from one run to the next. The metadata is
    rewritten in sorted key order, in place (the header keeps its length, so the data offsets hold)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        if metadata and len(metadata) > 1:
            _sort_header_metadata(Path(tmp))
    return Path(path)


def _sort_header_metadata(path: Path) -> None:
    with open(path, "r+b") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        raw = fh.read(length)
        header = json.loads(raw)  # keeps the order of the tensors' entries
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        ordered = {"__metadata__": header.pop("__metadata__"), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # not the format this expects: leave the file as safetensors wrote it
            return
        fh.seek(8)
        fh.write(text + b" " * (length - len(text)))  # safetensors pads its header with spaces


def write_weights(module: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> str:
    """The module's state as safetensors (contiguous CPU tensors), written atomically; returns its sha256."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_safetensors(state, path, metadata)
    return file_sha256(path)


def shard_index(path: str | os.PathLike) -> Path:
    """The index of a weights file stored in shards (HuggingFace's layout: `model.safetensors.index.json` beside
    `model-00001-of-00002.safetensors`, ...); its metadata holds each shard's sha256."""
    path = Path(path)
    return path.with_name(path.name + ".index.json")


def weights_exist(path: str | os.PathLike) -> bool:
    """A weights file, whole or in shards."""
    return Path(path).is_file() or shard_index(path).is_file()


def _check_sha256(path: Path, expected: str | None, recorded_in: str) -> None:
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise InputError(f"expected weights with sha256 {expected} (from {recorded_in}), got {actual}", path=path)


def _load_safetensors(path: Path, device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"expected a safetensors file, could not read it ({exc})", path=path) from None


def read_weights(path: str | os.PathLike, device: str | torch.device = "cpu", expected_sha256: str | None = None,
                 recorded_in: str = "the record", missing: str = "no such file") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking its sha256 against the recorded one (if any). A file
    stored in shards (`shard_weights`) is read from its index, whose sha256 is the recorded one and which holds
    each shard's: every shard is checked before its tensors are used."""
    path = Path(path)
    if not path.is_file() and shard_index(path).is_file():
        index_path = shard_index(path)
        _check_sha256(index_path, expected_sha256, recorded_in)
        index = read_record(index_path, SHARDS_FORMAT)
        state: dict[str, torch.Tensor] = {}
        for shard, sha256 in index["shard_sha256"].items():
            shard_path = path.with_name(Path(shard).name)  # names only: an index cannot point outside its folder
            _check_sha256(shard_path, sha256, index_path.name)
            state.update(_load_safetensors(shard_path, device))
        if set(state) != set(index["weight_map"]):
            raise InputError("expected the tensors its weight_map lists in its shards", path=index_path, field="weight_map")
        return state
    if not path.is_file():
        raise InputError(missing, path=path)
    state = _load_safetensors(path, device)
    _check_sha256(path, expected_sha256, recorded_in)
    return state


SHARDS_FORMAT = "drawgap.weight_shards/1"


def shard_weights(path: str | os.PathLike, max_shard_bytes: int = 15_000_000) -> str:
    """Store a safetensors file as shards of at most `max_shard_bytes` (a tensor is never split) with an index,
    then remove the whole file; returns the index's sha256, to record where the file's was. For weights too large
    to keep as one file in a repository (e.g. the 22.7 MB QuickDraw ProtoNet); `read_weights` reads them back
    unchanged. The shard split is huggingface_hub's."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    path = Path(path)
    state = _load_safetensors(path, "cpu")
    plan = split_torch_state_dict_into_shards(state, filename_pattern=path.stem + "{suffix}" + path.suffix,
                                              max_shard_size=max_shard_bytes)
    shard_sha256 = {}
    for shard, names in plan.filename_to_tensors.items():
        with atomic_path(path.with_name(shard)) as tmp:
            save_file({n: state[n].contiguous() for n in names}, str(tmp))
        shard_sha256[shard] = file_sha256(path.with_name(shard))
    index = {"format": SHARDS_FORMAT, "shard_sha256": shard_sha256, "weight_map": plan.tensor_to_filename}
    with atomic_path(shard_index(path)) as tmp:
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    path.unlink()
    return file_sha256(shard_index(path))


def load_weights(module: nn.Module, state: dict, path: str | os.PathLike, optional_prefixes: tuple[str, ...] = ()) -> nn.Module:
    """Load `state` into `module`, naming the first missing, unexpected or mis-shaped tensor otherwise
    (load_state_dict's own message is many lines). Tensors under `optional_prefixes` may be missing (a shipped
    GAN without its critic); they keep their initial values."""
    expected = {k: v for k, v in module.state_dict().items() if k in state or not k.startswith(optional_prefixes)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise InputError(
            f"weights do not match the config ({len(missing)} missing, {len(unexpected)} unexpected tensors; {what})",
            path=path,
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise InputError(f"weights do not match the config: {k} has shape {list(state[k].shape)}, expected {list(v.shape)}", path=path)
    module.load_state_dict(state, strict=not optional_prefixes)
    return module


def read_record(path: str | os.PathLike, fmt: str, missing: str = "no such file") -> dict:
    """A JSON object whose `format` is `fmt` (a generator.json, a critic's config.json, a metrics.json)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(missing, path=path)
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"expected JSON ({exc})", path=path) from None
    got = record.get("format") if isinstance(record, dict) else type(record).__name__
    if got != fmt:
        raise InputError(f"expected format {fmt!r}, got {got!r}", path=path, field="format")
    return record


def resolve_directory(name_or_dir: str | os.PathLike, kind: str, root: Path, files: tuple[str, ...],
                      how_to_get: str, paths_may_be_missing: bool = False) -> Path:
    """The directory of a shipped name (`root/<name>`, InputError saying how to get the weights when they are
    not installed), or the directory given; an error listing the shipped names for anything else.
    paths_may_be_missing: a missing directory written as a path ("runs/x", "./x") is returned as it is,
    for the reader of its files to name the missing one."""
    from drawgap.shipped import shipped_names

    key = os.fspath(name_or_dir)
    names = shipped_names(kind)
    if key in names:
        directory = root / key
        if not all(weights_exist(directory / f) for f in files):
            raise InputError(f"{kind} {key!r} is known but its weights are not installed in {directory}; {how_to_get}",
                             field=kind)
        return directory
    if Path(key).is_dir() or (paths_may_be_missing and ("/" in key or key.startswith("."))):
        return Path(key)
    raise InputError(f"expected a {kind} name ({', '.join(names)}) or a directory holding {' and '.join(files)}, "
                     f"got {key!r}", field=kind)


def install_directory(source: str | os.PathLike, dest: Path, files: tuple[str, ...], notes: str) -> Path:
    """Copy `files` (those present) from a trained directory into `dest`, each atomically, with TRAINING.md."""
    source = Path(source)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        present = [f] if (source / f).is_file() else []
        if not present and shard_index(source / f).is_file():  # weights in shards: the shards, then their index
            present = [*json.loads(shard_index(source / f).read_text())["shard_sha256"], shard_index(source / f).name]
        for name in present:
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(source / name, tmp)
    with atomic_path(dest / "TRAINING.md") as tmp:
        tmp.write_text(notes)
    return dest
