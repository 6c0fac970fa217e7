"""Class exemplars ("prototypes"): the drawing of each class that the one-shot generators are shown.

NeurIPS 2022 Eq. 1 (SPEC.md 1.1): the exemplar of class j is the drawing whose feature is closest, in L2,
to the mean feature of its class,

    i* = argmin_i || f(x_i^j) - (1/N) sum_i f(x_i^j) ||_2 .

The papers take f from a SimCLR critic. Two ways to get f here:
  * with a critic: f = `critic.features(images)` (any object with that method, e.g. from
    `drawgap.critics.load_critic`);
  * critic-free (`pixel_space_exemplars`): f = the pixels after a Gaussian blur (sigma 1.5 px by default
    at 48-50 px). Raw binary pixels would make the choice hinge on one-pixel stroke shifts; the blur turns
    "same stroke, slightly moved" into "nearly the same feature", so the pick is the drawing whose strokes
    sit where most drawers put them. It is what a build without a trained critic uses, and it is recorded
    as such in the dataset's meta so it can be recomputed later with a critic (`drawgap data exemplars`).

Ties are broken by the lowest index, so the choice is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from drawgap.errors import InputError

PIXEL_BLUR_SIGMA = 1.5


def _class_members(labels, n_classes: int | None) -> tuple[int, list[np.ndarray]]:
    """Indices of each class's drawings (ascending), for labels 0..C-1; every class must have one."""
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"expected integer labels [N], got {labels.dtype} {list(labels.shape)}", field="labels")
    if labels.size and labels.min() < 0:
        raise InputError(f"expected labels >= 0, got {labels.min()}", field="labels")
    n = int(labels.max()) + 1 if n_classes is None and labels.size else int(n_classes or 0)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    groups = [order[bounds[c] : bounds[c + 1]] for c in range(n)]
    empty = [c for c, g in enumerate(groups) if len(g) == 0]
    if empty:
        raise InputError(f"expected every class to have a drawing, class {empty[0]} has none", field="labels")
    return n, groups


def eq1_index(features) -> int:
    """Row of `features` [n, D] closest (L2) to their mean: Eq. 1 within one class."""
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    f = f.reshape(len(f), -1)
    # float64 so that the argmin does not depend on summation order; argmin returns the first minimum
    return int(np.argmin(((f - f.mean(axis=0)) ** 2).sum(axis=1)))


def eq1_exemplars(features, labels, n_classes: int | None = None) -> np.ndarray:
    """Eq. 1 for every class: int64 [C], index into `features` [N, D] of each class's exemplar."""
    if features.shape[0] != len(labels):
        raise InputError(f"expected one label per feature row ({features.shape[0]}), got {len(labels)}", field="labels")
    rows = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    _, groups = _class_members(labels, n_classes)
    return np.array([idx[eq1_index(rows[idx])] for idx in groups], dtype=np.int64)


def blur(images: np.ndarray, sigma: float = PIXEL_BLUR_SIGMA) -> np.ndarray:
    """uint8 [n, H, W] (ink 255) -> float32 [n, H, W] in [0, 1], Gaussian-blurred within each image."""
    x = images.astype(np.float32) / 255.0
    # zero padding: outside the frame is background, not a mirror of the strokes near the edge
    return gaussian_filter(x, sigma=(0, sigma, sigma), mode="constant", cval=0.0)


def pixel_space_exemplars(images: np.ndarray, labels, sigma: float = PIXEL_BLUR_SIGMA, n_classes: int | None = None) -> np.ndarray:
    """Critic-free Eq. 1: int64 [C], the exemplar of each class with f = blurred pixels (see module doc)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise InputError(f"expected images [N, H, W], got {list(images.shape)}", field="images")
    if len(images) != len(labels):
        raise InputError(f"expected one label per image ({len(images)}), got {len(labels)}", field="labels")
    _, groups = _class_members(labels, n_classes)
    # class by class: blurred float features of a whole split would take hundreds of MB
    return np.array([idx[eq1_index(blur(images[idx], sigma))] for idx in groups], dtype=np.int64)


@torch.no_grad()
def critic_features(critic, images: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    """`critic.features` over uint8 images [N, H, W], in batches -> float [N, D] on the CPU."""
    out = [critic.features(torch.from_numpy(images[i : i + batch_size])).detach().float().cpu() for i in range(0, len(images), batch_size)]
    features = torch.cat(out).flatten(1)
    if features.shape[0] != len(images):
        raise InputError(f"critic returned {features.shape[0]} feature rows for {len(images)} images", field="critic")
    return features


def critic_exemplars(critic, images: np.ndarray, labels, n_classes: int | None = None, batch_size: int = 1024) -> np.ndarray:
    """Eq. 1 with a critic's features: int64 [C]."""
    return eq1_exemplars(critic_features(critic, images, batch_size), labels, n_classes)


def load_feature_critic(name_or_path: str):
    """A critic by name or path via `drawgap.critics.load_critic` (imported here: it pulls in the models)."""
    try:
        from drawgap.critics import load_critic
    except ImportError as exc:
        raise InputError(f"cannot load critics in this install ({exc})", field="--critic") from None
    critic = load_critic(name_or_path)
    if not callable(getattr(critic, "features", None)):
        raise InputError(f"expected a critic with a .features(images) method, got {type(critic).__name__}", path=str(name_or_path), field="--critic")
    return critic


def with_exemplars(ds, critic=None, *, critic_name: str | None = None, sigma: float = PIXEL_BLUR_SIGMA):
    """A copy of Dataset `ds` with Eq. 1 exemplars, and meta["exemplars"] saying how they were chosen."""
    from drawgap.data.formats import Dataset

    if critic is None:
        exemplars = pixel_space_exemplars(ds.images, ds.labels, sigma, n_classes=ds.n_classes)
        how = {"method": "eq1-pixel-blur", "sigma": sigma}
    else:
        exemplars = critic_exemplars(critic, ds.images, ds.labels, n_classes=ds.n_classes)
        how = {"method": "eq1-critic-features", "critic": critic_name or type(critic).__name__, "critic_class": type(critic).__name__}
        if getattr(critic, "weights_hash", None):  # drawgap critics loaded from disk know their weights
            how["critic_weights_sha256"] = critic.weights_hash
    return Dataset(ds.images, ds.labels, ds.classes, exemplars, {**ds.meta, "exemplars": how})


def recompute_exemplars(path, critic: str | None = None, out=None):
    """Re-choose the exemplars of the dataset file `path` (with the named critic, or blurred pixels) and
    write it to `out` (default: `path`, replaced atomically). Returns (written path, Dataset)."""
    from drawgap.data.formats import read_dataset, write_dataset
    from drawgap.provenance import provenance

    ds = read_dataset(path)
    model = None if critic is None else load_feature_critic(critic)
    ds = with_exemplars(ds, model, critic_name=critic)
    ds.meta["exemplars"]["provenance"] = provenance({"dataset": str(path), "critic": critic}, seed=None)
    return write_dataset(ds, path if out is None else out), ds
