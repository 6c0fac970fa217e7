"""The papers' own points on the diversity-recognizability plane, to draw beside a user's systems.

ICML 2023 Fig. 2 (normalised diversity, recognizability in %), read off the figure as recorded in SPEC.md 6.2;
the large markers of that figure, i.e. each family's representative (base) model. They were measured with the
authors' critics on the authors' data (Omniglot weak split; their QuickDraw-FS of 665 classes x 500), so a
drawgap number next to one is a comparison of settings, not a reproduction check.
"""

from __future__ import annotations

from drawgap.errors import InputError

SOURCE = "ICML 2023 Fig. 2 (SPEC.md 6.2)"

PAPER_POINTS: dict[str, dict[str, tuple[float, float]]] = {
    "omniglot": {
        "human": (0.390, 97.6), "CFGDM (g=1)": (0.365, 96.8), "FSDM": (0.487, 94.9), "DDPM": (0.502, 89.9),
        "VAE-NS": (0.561, 85.1), "VAE-STN": (0.644, 75.0), "DA-GAN-UN": (0.092, 88.4), "DA-GAN-RN": (0.108, 83.1),
    },
    "quickdraw": {
        "human": (0.485, 97.4), "CFGDM (g=1)": (0.412, 96.9), "FSDM": (0.342, 96.9), "DDPM": (0.553, 87.9),
        "VAE-NS": (0.539, 78.3), "VAE-STN": (0.675, 61.3), "DA-GAN-UN": (0.235, 84.1), "DA-GAN-RN": (0.106, 88.4),
    },
}


def paper_points(dataset: str) -> dict[str, tuple[float, float]]:
    """{system: (diversity, recognizability %)} of the paper for `dataset` (omniglot or quickdraw)."""
    if dataset not in PAPER_POINTS:
        raise InputError(f"expected one of {', '.join(PAPER_POINTS)}, got {dataset!r}", field="--paper")
    return PAPER_POINTS[dataset]
