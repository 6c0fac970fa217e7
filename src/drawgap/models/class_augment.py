"""The paper's class augmentation for QuickDraw-FS (`--augment_class`, SPEC.md 1.2), on tensor batches.

Each training item draws one transform, with probabilities [0.2, 0.2, 0.2, 0.4]:
horizontal flip, vertical flip, identity, or RandomAffine(degrees (-90, 90), translate (0.3, 0.3),
scale (0.5, 1.5), shear (-30, 30, -30, 30)). The **same** transform and parameters apply to every drawing
of the item (the drawing and its exemplar, or a whole set), which makes a new "class" on the fly.

[DAA] used torchvision's RandomAffine on PIL images, whose default resampling is nearest-neighbour with a
zero fill; kornia's RandomAffine with `resample="nearest"` does the same on tensors, so binary drawings
stay binary. Randomness comes from torch's global generator (the training loop seeds it per step).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

PROBABILITIES = (0.2, 0.2, 0.2, 0.4)  # hflip, vflip, identity, affine
HFLIP, VFLIP, IDENTITY, AFFINE = range(4)

_affine = K.RandomAffine(
    degrees=(-90.0, 90.0),
    translate=(0.3, 0.3),
    scale=(0.5, 1.5),
    shear=(-30.0, 30.0, -30.0, 30.0),
    resample="nearest",
    padding_mode="zeros",
    p=1.0,
)


def augment_drawings(x: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, K, H, W]: K drawings per item transformed alike; choice [B] in 0..3 (drawn if None)."""
    b = x.shape[0]
    if choice is None:
        choice = torch.multinomial(torch.tensor(PROBABILITIES), b, replacement=True).to(x.device)
    out = x.clone()
    sel = choice == HFLIP
    out[sel] = x[sel].flip(-1)
    sel = choice == VFLIP
    out[sel] = x[sel].flip(-2)
    sel = choice == AFFINE
    if sel.any():
        out[sel] = _affine(x[sel])
    return out


def augment_class(batch: dict, keys: tuple[str, ...]) -> dict:
    """Apply `augment_drawings` to the batch entries `keys` (each [B, ..., H, W]), jointly per item."""
    parts = [batch[k] for k in keys]
    b, (h, w) = parts[0].shape[0], parts[0].shape[-2:]
    flat = [p.reshape(b, -1, h, w) for p in parts]
    joint = augment_drawings(torch.cat(flat, dim=1))
    out, start = dict(batch), 0
    for k, p, f in zip(keys, parts, flat):
        out[k] = joint[:, start : start + f.shape[1]].reshape(p.shape)
        start += f.shape[1]
    return out
