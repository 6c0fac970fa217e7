"""Human importance maps from clicks (SPEC.md 5.1): clicks (x, y, time, participant, image) -> one map per
image, averaged over participants, and the split-half reliability of those maps (the human ceiling).

Per participant and image, each click becomes importance on a canvas (256 px, the ClickMe canvas):
- rule "box", the paper's: +1 in a box of +-`radius` px (9) around each click ([CD] `train_model.py`);
- rule "gaussian": the click counts blurred by a Gaussian of `blur_size` px (33) and `sigma` px (11), the
  lab's later ClickMe processing (SPEC.md 5.1);
then max-normalised (so each participant weighs the same), downsampled (antialiased) to `resolution`
(48, the comparison size) and averaged over the participants of the image. Participant-image pairs with
fewer than `min_clicks` clicks are dropped, then images with fewer than `min_participants` participants.

Reliability: participants of an image are split at random into two halves (`n_splits` seeded splits); the
Spearman rho between the two half-maps is corrected by Spearman-Brown (2r / (1 + r)) for the full set;
`ceiling` is the mean over splits and `ceiling_std` its spread.

Click files: the `.npz` of `drawgap clickme export` (`drawgap.clicks/1`), a plain `.npz` with per-click `x`,
`y`, `t`, `participant`, `image` and per-image `image_ids`, `categories` (optional `images`), or a CSV with
columns x, y, time, participant, image (and optionally category).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from drawgap.errors import InputError
from drawgap.importance.compare import standardized_ranks, resize_maps, spearman_brown
from drawgap.importance.maps_file import ImportanceMaps, make_meta

RULES = ("box", "gaussian")


@dataclass
class Clicks:
    """One row per click: x, y (px on a `canvas` x `canvas` board), t (ms), participant and image (str ids);
    per image: image_ids, categories and, optionally, the drawings (float [M, h, w] in [0, 1])."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    participant: np.ndarray
    image: np.ndarray
    image_ids: np.ndarray
    categories: np.ndarray
    images: np.ndarray | None = None
    canvas: int = 256
    meta: dict = field(default_factory=dict)
    source_index: np.ndarray | None = None  # per image: its index in the dataset file it came from

    def with_images_from(self, dataset) -> "Clicks":
        """These clicks with `images` taken from a dataset (through `source_index`, or image ids that are
        indices into the dataset), for figures and ink masks."""
        from drawgap.data.formats import to_unit_float

        index = self.source_index
        if index is None:
            try:
                index = self.image_ids.astype(np.int64)
            except ValueError:
                raise InputError("the clicks file has no image_source_index and its image ids are not dataset indices",
                                 field="image_source_index") from None
        if len(index) and (index.min() < 0 or index.max() >= len(dataset.images)):
            raise InputError(f"expected dataset indices in 0..{len(dataset.images) - 1}", field="image_source_index")
        return dataclasses.replace(self, images=to_unit_float(dataset.images[index]))


# ------------------------------------------------------------------------------------------ reading


def read_clicks(path, canvas: int | None = None, exclude_skipped: bool = True) -> Clicks:
    """Read a clicks `.npz` or `.csv`; `canvas` overrides the file's canvas size.

    `.npz`: the `drawgap.clicks/1` export of `drawgap clickme export` (indices into `participant_ids`,
    `image_ids` and, through `image_category`, `categories`; trials the participant skipped as strange or
    mislabelled are left out unless `exclude_skipped` is False), or a plain file with per-click `x`, `y`, `t`,
    `participant`, `image` (ids, or indices into `image_ids`) and per-image `image_ids`, `categories`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, canvas)
    from drawgap.data.formats import _load_npz

    z = _load_npz(path)
    meta = _meta(z.get("meta"), path)
    try:
        x = _field(z, path, "x").astype(np.float64)
        y = _field(z, path, "y").astype(np.float64)
        t = _field(z, path, "t", "time").astype(np.float64)
    except ValueError as exc:
        raise InputError(f"expected numbers ({exc})", path=path, field="x/y/t") from None
    participant = _field(z, path, "participant")
    image = _field(z, path, "image")
    image_ids = _field(z, path, "image_ids").astype(str)
    categories = _field(z, path, "categories").astype(str)
    if "image_category" in z:  # the export: categories is the table, image_category indexes it per image
        index = z["image_category"]
        if index.shape != image_ids.shape or (len(index) and (index.min() < 0 or index.max() >= len(categories))):
            raise InputError(f"expected one index into categories (0..{len(categories) - 1}) per image id", path=path, field="image_category")
        categories = categories[index]
    if categories.shape != image_ids.shape:
        raise InputError(f"expected one category per image id ({len(image_ids)}), got {len(categories)}", path=path, field="categories")
    n = len(x)
    for name, a in (("y", y), ("t", t), ("participant", participant), ("image", image)):
        if a.shape != (n,):
            raise InputError(f"expected one value per click ({n}), got shape {list(a.shape)}", path=path, field=name)
    if "participant_ids" in z and participant.dtype.kind in "iu":
        ids = z["participant_ids"].astype(str)
        if n and (participant.min() < 0 or participant.max() >= len(ids)):
            raise InputError(f"expected indices into participant_ids (0..{len(ids) - 1})", path=path, field="participant")
        participant = ids[participant]
    participant = participant.astype(str)
    as_index = meta.get("format") == "drawgap.clicks/1"
    image = _image_ids_of_clicks(image, image_ids, path, as_index)
    keep = np.ones(n, dtype=bool)
    if exclude_skipped and "trial_outcome" in z and "trial" in z:
        trial = z["trial"]
        if trial.shape != (n,) or (n and (trial.min() < 0 or trial.max() >= len(z["trial_outcome"]))):
            raise InputError("expected one index into the trials per click", path=path, field="trial")
        keep = z["trial_outcome"].astype(str)[trial] != "skipped"
        meta = {**meta, "clicks_in_skipped_trials": int((~keep).sum())}
    images = z.get("images")
    if images is not None:
        from drawgap.data.formats import to_unit_float

        if images.ndim != 3 or len(images) != len(image_ids):
            raise InputError(f"expected [{len(image_ids)}, h, w] (one drawing per image id), got {list(images.shape)}", path=path, field="images")
        images = to_unit_float(images)
    size = canvas or meta.get("canvas_size", meta.get("canvas", 256))
    c = Clicks(x[keep], y[keep], t[keep], participant[keep], image[keep], image_ids, categories, images, int(size), meta,
               z.get("image_source_index"))
    return _check_clicks(c, path)


def _read_csv(path: Path, canvas: int | None) -> Clicks:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = set(rows[0]) if rows else set()
    for need in ("x", "y", "participant", "image"):
        if need not in cols:
            raise InputError(f"missing column (expected x, y, time, participant, image; found {', '.join(sorted(cols)) or 'none'})", path=path, field=need)
    tcol = "time" if "time" in cols else "t" if "t" in cols else None
    if tcol is None:
        raise InputError("missing column (expected x, y, time, participant, image)", path=path, field="time")
    try:
        x = np.array([float(r["x"]) for r in rows])
        y = np.array([float(r["y"]) for r in rows])
        t = np.array([float(r[tcol]) for r in rows])
    except ValueError as exc:
        raise InputError(f"expected numbers ({exc})", path=path, field="x/y/time") from None
    image = np.array([r["image"] for r in rows], dtype=str)
    image_ids, first = np.unique(image, return_index=True)
    category = "category" if "category" in cols else "image"
    categories = np.array([rows[i][category] for i in first], dtype=str)
    c = Clicks(x, y, t, np.array([r["participant"] for r in rows], dtype=str), image, image_ids, categories,
               None, int(canvas or 256), {"source": str(path)})
    return _check_clicks(c, path)


def _field(z: dict, path, key: str, *alternatives: str) -> np.ndarray:
    for k in (key, *alternatives):
        if k in z:
            return z[k]
    raise InputError("missing field (a clicks file holds x, y, t, participant, image, image_ids, categories)", path=path, field=key)


def _meta(raw, path) -> dict:
    if raw is None:
        return {}
    try:
        meta = json.loads(str(raw[()]))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"expected a JSON string ({exc})", path=path, field="meta") from None
    return meta if isinstance(meta, dict) else {}


def _image_ids_of_clicks(image: np.ndarray, image_ids: np.ndarray, path, as_index: bool = False) -> np.ndarray:
    """The `image` of each click as an image id: integers are indices into `image_ids` when `as_index` (the
    export's convention) or when they are not ids themselves; other values are ids."""
    as_str = image.astype(str)
    if not as_index and np.isin(as_str, image_ids).all():
        return as_str
    if image.dtype.kind in "iu" and (not len(image) or (image.min() >= 0 and image.max() < len(image_ids))):
        return image_ids[image]
    bad = as_str[~np.isin(as_str, image_ids)][0]
    raise InputError(f"expected image ids from image_ids (or indices into it), got {bad!r}", path=path, field="image")


def _check_clicks(c: Clicks, path) -> Clicks:
    for name in ("x", "y", "t"):
        if not np.isfinite(getattr(c, name)).all():
            raise InputError("expected finite numbers", path=path, field=name)
    if c.canvas < 2:
        raise InputError(f"expected a canvas of at least 2 px, got {c.canvas}", path=path, field="canvas")
    if not np.isin(c.image, c.image_ids).all():
        bad = c.image[~np.isin(c.image, c.image_ids)][0]
        raise InputError(f"click on image {bad!r}, which is not in the image list", path=path, field="image")
    return c


# ------------------------------------------------------------------------------------------ maps


def click_map(x: np.ndarray, y: np.ndarray, canvas: int = 256, rule: str = "box", radius: int = 9,
              blur_size: int = 33, sigma: float = 11.0) -> np.ndarray:
    """One participant's clicks on one image -> max-normalised map [canvas, canvas] (see module doc)."""
    counts = np.zeros((canvas, canvas), dtype=np.float64)
    col = np.clip(np.rint(x).astype(int), 0, canvas - 1)
    row = np.clip(np.rint(y).astype(int), 0, canvas - 1)
    np.add.at(counts, (row, col), 1.0)
    if rule == "box":
        side = 2 * int(radius) + 1
        m = ndi.uniform_filter(counts, size=side, mode="constant") * side * side  # box sum = mean x area
    elif rule == "gaussian":
        m = ndi.gaussian_filter(counts, sigma=float(sigma), mode="constant", radius=(int(blur_size) - 1) // 2)
    else:
        raise InputError(f"expected rule one of {', '.join(RULES)}, got {rule!r}", field="rule")
    top = m.max()
    return m / top if top > 0 else m


def participant_maps(clicks: Clicks, *, rule: str = "box", radius: int = 9, blur_size: int = 33,
                     sigma: float = 11.0, resolution: int = 48, min_clicks: int = 1) -> tuple[dict[str, np.ndarray], dict]:
    """{image id: maps [P, resolution, resolution], one per participant with >= min_clicks clicks on the
    canvas} and counts of what was dropped."""
    inside = (clicks.x >= 0) & (clicks.x < clicks.canvas) & (clicks.y >= 0) & (clicks.y < clicks.canvas)
    out: dict[str, list[np.ndarray]] = {}
    dropped_pairs = 0
    rows = np.flatnonzero(inside)
    order = rows[np.lexsort((clicks.participant[rows], clicks.image[rows]))]  # by image, then participant
    image, who = clicks.image[order], clicks.participant[order]
    starts = np.flatnonzero(np.r_[True, (image[1:] != image[:-1]) | (who[1:] != who[:-1])])
    for idx in np.split(order, starts[1:]) if len(order) else []:  # one participant's clicks on one image
        if len(idx) < min_clicks:
            dropped_pairs += 1
            continue
        m = click_map(clicks.x[idx], clicks.y[idx], clicks.canvas, rule, radius, blur_size, sigma)
        out.setdefault(clicks.image[idx[0]], []).append(m)
    resized = {k: resize_maps(np.stack(v), resolution) for k, v in out.items()}
    return resized, {"clicks_outside_canvas": int((~inside).sum()), "participant_images_below_min_clicks": dropped_pairs}


def split_half_reliability(maps: np.ndarray, n_splits: int = 50, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over random splits of the Spearman-Brown-corrected correlation between the mean maps of
    two halves of the participants' maps [P, H, W]; (NaN, NaN) with fewer than 2 participants."""
    p = len(maps)
    if p < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    halves = [rng.permutation(p) for _ in range(n_splits)]
    a = np.stack([maps[order[: p // 2]].mean(0) for order in halves])
    b = np.stack([maps[order[p // 2:]].mean(0) for order in halves])
    rho = (standardized_ranks(a) * standardized_ranks(b)).mean(axis=1)  # Spearman of each pair, at once
    values = spearman_brown(rho)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())


def build_human_maps(clicks: Clicks, *, rule: str = "box", radius: int = 9, blur_size: int = 33, sigma: float = 11.0,
                     resolution: int = 48, min_participants: int = 1, min_clicks: int = 1,
                     n_splits: int = 50, seed: int = 0) -> ImportanceMaps:
    """Human maps of every image that passes the filters (module doc), with their split-half ceiling."""
    if rule not in RULES:
        raise InputError(f"expected rule one of {', '.join(RULES)}, got {rule!r}", field="rule")
    if resolution < 2:
        raise InputError(f"expected a resolution of at least 2, got {resolution}", field="resolution")
    per_image, dropped = participant_maps(clicks, rule=rule, radius=radius, blur_size=blur_size, sigma=sigma,
                                          resolution=resolution, min_clicks=min_clicks)
    kept = [i for i, img in enumerate(clicks.image_ids) if len(per_image.get(img, ())) >= max(1, min_participants)]
    if not kept:
        raise InputError(f"no image has {min_participants} participant(s) with >= {min_clicks} click(s)", field="clicks")
    ids = clicks.image_ids[kept]
    # Each image's split seed depends on the seed and the image's position, so results do not depend on
    # which other images pass the filters.
    reliab = [split_half_reliability(per_image[img], n_splits, seed + i) for i, img in zip(kept, ids)]
    options = {"rule": rule, "radius": radius, "blur_size": blur_size, "sigma": sigma, "canvas": clicks.canvas,
               "resolution": resolution, "min_participants": min_participants, "min_clicks": min_clicks,
               "n_splits": n_splits}
    n_participants = [len(per_image[img]) for img in ids]
    ceilings = np.array([r[0] for r in reliab])
    median = float(np.nanmedian(ceilings)) if np.isfinite(ceilings).any() else None
    from drawgap.importance.reliability import from_ceilings

    meta = make_meta(f"human-{rule}", options, seed, n_participants=n_participants, ceiling_median=median,
                     reliability=from_ceilings(ceilings),
                     dropped={**dropped, "images_below_min_participants": int(len(clicks.image_ids) - len(kept))},
                     clicks_meta=clicks.meta)
    return ImportanceMaps(
        maps=np.stack([per_image[img].mean(0) for img in ids]).astype(np.float32),
        image_ids=ids,
        categories=clicks.categories[kept],
        meta=meta,
        images=None if clicks.images is None else clicks.images[kept].astype(np.float32),
        ceiling=ceilings.astype(np.float32),
        ceiling_std=np.array([r[1] for r in reliab], dtype=np.float32),
    )
