"""Stimuli for the game: which drawings are shown, as 256 px PNGs, and the partner that must recognize them.

A stimuli directory (written by `prepare_stimuli`, read by `load_stimuli`):

    manifest.json          {"format": "drawgap.clickme-stimuli/1", "canvas_size", "categories": [...],
                            "stimuli": [{"id", "category", "category_index", "source_index", "exemplar",
                                         "file"}, ...],
                            "practice": [same fields], "dataset": {...}, "critic": {...},
                            "partner_check": {...} (see `partner_check`; a null guess is "nothing yet"),
                            "provenance"}
    images/<id>.png        white drawing on black, upsampled to canvas_size x canvas_size
    partner/critic/        the ProtoNet critic (drawgap.critics save format)
    partner/support.npz    embeddings float32 [C, D]: the critic's embedding of each category's exemplar
                           stimulus (its one-shot prototype); classes str [C]; meta str (JSON)

Each category's exemplar (the dataset's prototype drawing) is its first stimulus, so that human maps can be
compared on it (SPEC.md 5.1); the other drawings are drawn at random (seeded) from the rest of the category.
Practice drawings are further drawings of the categories, never shown as trials.

The drawings come from a dataset file, or straight from Quick, Draw! ndjson files (`quickdraw_stimuli_dataset`:
one class per category, rendered at 48 px as QuickDraw-FS, Eq. 1 exemplars); the dataset built from ndjson is
kept in the directory as `drawings.npz`, so that model maps of the same exemplars can be made from it
(`drawgap importance maps diffusion RUN --exemplars DIR/drawings.npz`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drawgap.clickme.partner import Partner
from drawgap.data.formats import Dataset, read_dataset
from drawgap.data.transforms import as_tensor_images, resize, to_uint8
from drawgap.errors import InputError
from drawgap.io import savez_atomic, write_bytes_atomic, write_json_atomic
from drawgap.provenance import provenance

STIMULI_FORMAT = "drawgap.clickme-stimuli/1"
SUPPORT_FORMAT = "drawgap.clickme-support/1"
MANIFEST = "manifest.json"
DRAWINGS = "drawings.npz"  # the dataset of stimuli built from ndjson, kept in the directory
DEFAULT_N_CATEGORIES = 25
QUICKDRAW_IMAGE_SIZE = 48  # QuickDraw-FS's size, the QuickDraw critics' and generators' input

# The 25 ClickMe-QuickDraw categories, in the original game's order (SPEC.md 1.2, [CD] guess_server/guesser.py:36),
# as Quick, Draw! file names: the game's "cat head" is the category `cat`, its "pizza slice" is `pizza`.
CLICKME_CATEGORIES = (
    "microwave", "golf club", "house plant", "tooth", "cat", "truck", "fireplace", "t-shirt", "carrot", "pizza",
    "snorkel", "megaphone", "boomerang", "cactus", "shorts", "triangle", "suitcase", "pear", "skateboard", "saw",
    "dolphin", "map", "door", "knife", "flashlight",
)


@dataclass
class Stimulus:
    id: str
    category: str
    category_index: int
    source_index: int
    exemplar: bool
    file: str
    practice: bool = False

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d.pop("practice")
        return d


@dataclass
class StimulusSet:
    """A loaded stimuli directory: manifest entries, images on demand, the partner's support."""

    root: Path
    manifest: dict
    stimuli: list[Stimulus]
    practice: list[Stimulus]
    categories: list[str]
    _images: dict = field(default_factory=dict, repr=False)

    @property
    def canvas_size(self) -> int:
        return int(self.manifest["canvas_size"])

    def by_id(self) -> dict[str, Stimulus]:
        return {s.id: s for s in [*self.stimuli, *self.practice]}

    def image(self, stimulus_id: str) -> np.ndarray:
        """uint8 [canvas, canvas], ink 255 (cached after the first read)."""
        if stimulus_id not in self._images:
            entry = self.by_id()[stimulus_id]
            with Image.open(self.root / entry.file) as im:
                self._images[stimulus_id] = np.asarray(im.convert("L"), dtype=np.uint8)
        return self._images[stimulus_id]

    def png_path(self, stimulus_id: str) -> Path:
        return self.root / self.by_id()[stimulus_id].file


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, h, w] -> uint8 [N, size, size] (bilinear, as the original game showed 48 px drawings)."""
    return to_uint8(resize(as_tensor_images(images), size).clamp(0, 1))


def _pick_categories(ds: Dataset, categories: list[str] | None, path) -> list[int]:
    names = [str(c) for c in ds.classes]
    if categories is None:
        return list(range(min(DEFAULT_N_CATEGORIES, len(names))))
    index = {n: i for i, n in enumerate(names)}
    missing = [c for c in categories if c not in index]
    if missing:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise InputError(f"expected categories of the dataset ({shown}), got unknown {missing}", path=path, field="categories")
    if len(set(categories)) != len(categories):
        raise InputError(f"expected distinct categories, got {categories}", field="categories")
    return [index[c] for c in categories]


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def choose_stimuli(ds: Dataset, class_indices: list[int], per_category: int, practice: int, seed: int,
                   path=None) -> tuple[list[tuple[int, int, bool]], list[tuple[int, int]]]:
    """[(class, dataset index, is exemplar)] for the trials and [(class, dataset index)] for practice.

    Per category: the exemplar, then `per_category - 1` other drawings chosen at random (seeded, file order
    kept). Practice drawings: the first unused drawing of the categories in turn.
    """
    rng = np.random.default_rng(seed)
    chosen, leftovers = [], {}
    for c in class_indices:
        members = np.flatnonzero(ds.labels == c)
        exemplar = int(ds.exemplars[c])
        others = members[members != exemplar]
        if len(others) + 1 < per_category:
            raise InputError(
                f"expected at least {per_category} drawings of class {str(ds.classes[c])!r}, found {len(others) + 1}",
                path=path, field="labels")
        picked = np.sort(rng.choice(others, size=per_category - 1, replace=False)) if per_category > 1 else []
        chosen.append((c, exemplar, True))
        chosen.extend((c, int(i), False) for i in picked)
        leftovers[c] = [int(i) for i in others if i not in set(int(p) for p in picked)]
    practice_items = []
    while len(practice_items) < practice and any(leftovers.values()):
        for c in class_indices:
            if leftovers[c] and len(practice_items) < practice:
                practice_items.append((c, leftovers[c].pop(0)))
    if len(practice_items) < practice:
        raise InputError(f"expected {practice} spare drawings for practice, the categories have {len(practice_items)}",
                         path=path, field="practice")
    return chosen, practice_items


def quickdraw_stimuli_dataset(source: str | os.PathLike, categories=CLICKME_CATEGORIES, *, progress: bool = False,
                              workers: int = 1, on_error: str = "skip") -> Dataset:
    """A dataset of Quick, Draw! categories straight from the ndjson files in `source`: one class per category,
    every drawing of its file rendered at 48 px (the official numpy_bitmap recipe, as QuickDraw-FS), its
    exemplar by Eq. 1 on blurred pixels (the critic-free choice of the QuickDraw-FS build). A missing category
    file is an `InputError` naming the folder and the category."""
    from drawgap.data.quickdraw import load_quickdraw

    return load_quickdraw(list(categories), source=source, size=QUICKDRAW_IMAGE_SIZE, on_error=on_error,
                          progress=progress, workers=workers)


def prepare_stimuli(dataset: str | os.PathLike | Dataset, out: str | os.PathLike, *, categories: list[str] | None = None,
                    per_category: int = 10, practice: int = 1, critic: str | os.PathLike = "strokes-protonet",
                    canvas_size: int = 256, seed: int = 0) -> Path:
    """Write a stimuli directory (see the module docstring) for `categories` of a dataset file, or of a
    `Dataset` built in memory (e.g. `quickdraw_stimuli_dataset`), which is then kept in it as `drawings.npz`.

    The directory is built beside `out` and renamed into place at the end, so a failed run leaves nothing.
    """
    from drawgap.critics import load_critic, save_critic
    from drawgap.data.formats import write_dataset

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("expected a new or empty directory", path=out)
    if per_category < 1:
        raise InputError(f"expected at least 1, got {per_category}", field="per_category")
    if practice < 0:
        raise InputError(f"expected 0 or more, got {practice}", field="practice")
    in_memory = isinstance(dataset, Dataset)
    ds = dataset if in_memory else read_dataset(dataset)
    if in_memory:
        dataset = None  # named in errors and the manifest as the drawings.npz it becomes
    class_indices = _pick_categories(ds, categories, dataset)
    chosen, practice_items = choose_stimuli(ds, class_indices, per_category, practice, seed, dataset)
    partner = load_critic(critic)
    torch.manual_seed(seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        category_names = [str(ds.classes[c]) for c in class_indices]
        position = {c: k for k, c in enumerate(class_indices)}
        big = upsample(ds.images[[i for _, i, _ in chosen] + [i for _, i in practice_items]], canvas_size)

        def entry(k: int, c: int, i: int, exemplar: bool, sid: str) -> Stimulus:
            file = f"images/{sid}.png"
            write_bytes_atomic(staging / file, _png_bytes(big[k]))
            return Stimulus(sid, str(ds.classes[c]), position[c], i, exemplar, file)

        if in_memory:
            write_dataset(ds, staging / DRAWINGS)
        stimuli, counts = [], {}
        for k, (c, i, exemplar) in enumerate(chosen):
            n = counts.get(c, 0)
            counts[c] = n + 1
            stimuli.append(entry(k, c, i, exemplar, f"c{position[c]:03d}-{n:02d}"))
        practice_entries = [entry(len(chosen) + k, c, i, False, f"practice-{k:02d}") for k, (c, i) in enumerate(practice_items)]

        # The support: the critic's embedding of each exemplar exactly as the partner will see it when fully
        # revealed (the 256 px stimulus), so a fully revealed exemplar sits on its prototype.
        exemplar_rows = [k for k, (_, _, ex) in enumerate(chosen) if ex]
        support = partner.embed(big[exemplar_rows]).numpy().astype(np.float32)
        critic_dir = save_critic(partner, staging / "partner" / "critic", source=str(critic))
        check = partner_check(Partner(partner, torch.from_numpy(support), category_names), big[: len(chosen)],
                              [category_names[position[c]] for c, _, _ in chosen], [ex for _, _, ex in chosen])
        dataset_path = DRAWINGS if in_memory else str(dataset)  # drawings.npz: relative to the stimuli directory
        config = {"dataset": dataset_path, "categories": category_names, "per_category": per_category,
                  "practice": practice, "critic": str(critic), "canvas_size": canvas_size}
        savez_atomic(staging / "partner" / "support.npz", embeddings=support, classes=np.array(category_names),
                     meta=np.array(json.dumps({"format": SUPPORT_FORMAT, "provenance": provenance(config, seed)})))
        manifest = {
            "format": STIMULI_FORMAT,
            "canvas_size": canvas_size,
            "categories": category_names,
            "stimuli": [s.to_json() for s in stimuli],
            "practice": [s.to_json() for s in practice_entries],
            "dataset": {"path": dataset_path, "in_stimuli_dir": in_memory,
                        "sha256": _file_sha256(staging / DRAWINGS if in_memory else dataset),
                        **{k: ds.meta.get(k) for k in ("name", "split", "source", "image_size")}},
            "critic": {"source": str(critic), "kind": partner.config.get("kind"), "arch": partner.config.get("arch"),
                       "image_size": partner.image_size, "weights_sha256": partner.weights_hash,
                       "dir": str(critic_dir.relative_to(staging))},
            "partner_check": check,
            "provenance": provenance(config, seed),
        }
        write_json_atomic(staging / MANIFEST, manifest)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def partner_check(partner, images: np.ndarray, categories: list[str], exemplar: list[bool]) -> dict:
    """What the partner answers before anyone plays: its top-1 on the fully revealed stimuli (exemplars apart: they
    sit on their own prototypes), how many of those it answers "nothing yet" (never recognized, however much is
    revealed), and its answer on a blank canvas, i.e. before any ink is revealed: "nothing yet" (`guess` null)
    with this partner; a partner that names a category there calls every trial of that category recognized at
    once."""
    guesses = partner.guess(images, categories)
    correct = np.array([g.correct for g in guesses])
    exemplar = np.asarray(exemplar, dtype=bool)
    blank = partner.guess(np.zeros((1, *images.shape[1:]), np.uint8), [""])[0]
    return {"fully_revealed_correct": int(correct.sum()), "stimuli": len(correct),
            "exemplars_correct": int(correct[exemplar].sum()), "exemplars": int(exemplar.sum()),
            "fully_revealed_nothing_yet": sum(g.nothing_yet for g in guesses),
            "blank_canvas": {"guess": blank.category, "probability": round(blank.probability, 4)}}


def load_stimuli(root: str | os.PathLike) -> StimulusSet:
    """Read and check a stimuli directory's manifest (images are read on first use)."""
    root = Path(root)
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("no such file (expected a directory written by `drawgap clickme stimuli`)", path=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"expected JSON ({exc})", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != STIMULI_FORMAT:
        raise InputError(f"expected format {STIMULI_FORMAT!r}", path=path, field="format")
    try:
        stimuli = [Stimulus(**s) for s in manifest["stimuli"]]
        practice = [Stimulus(**s, practice=True) for s in manifest.get("practice", [])]
        categories = [str(c) for c in manifest["categories"]]
    except (KeyError, TypeError) as exc:
        raise InputError(f"expected stimuli entries with id, category, category_index, source_index, exemplar, file ({exc})",
                         path=path, field="stimuli") from None
    if not stimuli:
        raise InputError("expected at least one stimulus", path=path, field="stimuli")
    ids = [s.id for s in [*stimuli, *practice]]
    if len(set(ids)) != len(ids):
        raise InputError("expected unique stimulus ids", path=path, field="stimuli")
    for s in [*stimuli, *practice]:
        if s.category not in categories:
            raise InputError(f"stimulus {s.id!r} has category {s.category!r} not in categories", path=path, field="stimuli")
        if not (root / s.file).is_file():
            raise InputError("no such file", path=root / s.file)
    return StimulusSet(root, manifest, stimuli, practice, categories)
