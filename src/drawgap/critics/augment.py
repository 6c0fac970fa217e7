"""SimCLR's views of a drawing (SPEC.md 3.1, the reference's "light" / "normal" / "strong" strengths).

Each image gets ONE transform drawn uniformly from: random resized crop, random affine, random perspective
(p = 0.5), then per-image min-max scaling and binarization, as the reference applies to PIL images. Here
the whole batch is transformed at once with kornia (CPU or GPU); randomness comes from torch's global RNG,
so `torch.manual_seed` fixes the views.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn

from drawgap.data.transforms import binarize, scale_0_1

# degrees, scale range, translate fraction, shear degrees, perspective distortion. The crop's area range is
# the affine scale range and its aspect range (0.8, 1.2) in all strengths, as for "normal" in the reference.
STRENGTHS = {
    "light": dict(degrees=7.0, scale=(0.9, 1.1), translate=0.05, shear=5.0, distortion=0.25),
    "normal": dict(degrees=15.0, scale=(0.75, 1.33), translate=0.1, shear=10.0, distortion=0.5),
    "strong": dict(degrees=30.0, scale=(0.5, 1.5), translate=0.2, shear=20.0, distortion=0.75),
}


class SimCLRAugment(nn.Module):
    """[N, 1, S, S] binary drawings -> [N, 1, S, S] binary views, one random transform per image."""

    def __init__(self, image_size: int, strength: str = "normal", threshold: float = 0.5):
        super().__init__()
        if strength not in STRENGTHS:
            from drawgap.errors import InputError

            raise InputError(f"expected strength one of {', '.join(STRENGTHS)}, got {strength!r}", field="strength")
        p = STRENGTHS[strength]
        self.threshold = threshold
        self.transforms = nn.ModuleList(
            [
                K.RandomResizedCrop((image_size, image_size), scale=p["scale"], ratio=(0.8, 1.2)),
                K.RandomAffine(p["degrees"], translate=(p["translate"], p["translate"]), scale=p["scale"], shear=p["shear"], p=1.0),
                K.RandomPerspective(p["distortion"], p=0.5),
            ]
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        choice = torch.randint(len(self.transforms), (x.shape[0],))
        out = torch.empty_like(x)
        for k, transform in enumerate(self.transforms):
            rows = torch.nonzero(choice == k).flatten()
            if len(rows):
                out[rows] = transform(x[rows])
        return binarize(scale_0_1(out), self.threshold)
