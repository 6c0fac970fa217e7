"""Input checks and the one embedding helper shared by the metrics (one place, one wording)."""

from __future__ import annotations

import numpy as np
import torch

from drawgap.errors import InputError


def check_critic(critic, method: str, kind: str):
    """The critic if it has `method` (SimCLR: features, ProtoNet: embed), else a TypeError saying so."""
    if not callable(getattr(critic, method, None)):
        raise TypeError(f"expected a {kind} critic with a .{method}(images) method, got {type(critic).__name__}")
    return critic


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected {name} as a numpy array or torch tensor, got {type(x).__name__}")
    return x


def check_sample_images(samples, exemplars=None):
    """(samples [C, S, H, W], exemplars [C, H, W] or None) as tensors, checked; InputError naming the field."""
    samples = _as_tensor(samples, "samples")
    if samples.dim() == 5 and samples.shape[2] == 1:  # [C, S, 1, H, W], the Generator's output
        samples = samples[:, :, 0]
    if samples.dim() != 4:
        raise InputError(f"expected samples [C, S, H, W], got {list(samples.shape)}", field="samples")
    if samples.shape[1] < 2:
        raise InputError(f"expected at least 2 samples per class, got {samples.shape[1]}", field="samples")
    if samples.is_floating_point() and not torch.isfinite(samples).all():
        raise InputError("expected finite values, found NaN or inf", field="samples")
    if exemplars is None:
        return samples, None
    exemplars = _as_tensor(exemplars, "exemplars")
    if exemplars.dim() == 4 and exemplars.shape[1] == 1:
        exemplars = exemplars[:, 0]
    if exemplars.dim() != 3 or exemplars.shape[0] != samples.shape[0]:
        raise InputError(f"expected exemplars [{samples.shape[0]}, H, W] (one per class), got {list(exemplars.shape)}", field="exemplars")
    if exemplars.shape[-2:] != samples.shape[-2:]:
        raise InputError(
            f"expected exemplars of the samples' size {tuple(samples.shape[-2:])}, got {tuple(exemplars.shape[-2:])}",
            field="exemplars",
        )
    if exemplars.is_floating_point() and not torch.isfinite(exemplars).all():
        raise InputError("expected finite values, found NaN or inf", field="exemplars")
    return samples, exemplars


def as_class_features(features, name: str = "features") -> torch.Tensor:
    """Features [C, S, D] as a tensor; a single class [S, D] becomes [1, S, D]."""
    features = _as_tensor(features, name)
    if features.dim() == 2:
        features = features.unsqueeze(0)
    if features.dim() != 3:
        raise ValueError(f"expected {name} [C, S, D], got {list(features.shape)}")
    if features.shape[1] < 2:
        raise ValueError(f"expected at least 2 samples per class in {name}, got {features.shape[1]}")
    return features


def as_exemplar_features(features, n_classes: int, name: str = "exemplar features") -> torch.Tensor:
    features = _as_tensor(features, name)
    if features.dim() == 1:
        features = features.unsqueeze(0)
    if features.dim() != 2 or features.shape[0] != n_classes:
        raise ValueError(f"expected {name} [{n_classes}, D], got {list(features.shape)}")
    return features


def embed_classes(embed, samples: torch.Tensor) -> torch.Tensor:
    """Run a critic's `embed`/`features` on samples [C, S, H, W] once, flattened -> [C, S, D]."""
    c, s = samples.shape[:2]
    out = embed(samples.reshape(c * s, *samples.shape[2:]))
    return out.reshape(c, s, -1)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"expected an integer >= {minimum}, got {value!r}", field=name)
    return int(value)
