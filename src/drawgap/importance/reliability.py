"""How far a source of importance maps can be trusted to say the same thing twice: its reliability, recorded
in every maps file's `meta["reliability"]` and shown beside the source in the report.

- Diffusion maps: split-half over trajectories. The trajectories of each exemplar are split into even and
  odd ones, a map is made from each half, and the two are compared by Spearman rank correlation over pixels
  (one value per exemplar), then Spearman-Brown corrected (2r / (1 + r)) to estimate the agreement of two
  maps of all n trajectories, as the human maps' ceiling is (`spearman_half` keeps the raw value).
- Human maps: split-half over participants, Spearman-Brown corrected (the maps' `ceiling`).
- Critic attributions with no randomness (saliency, integrated gradients, occlusion, ...): deterministic,
  the same drawing gives the same map (Spearman 1 between seeds), which says nothing about whether the map
  is meaningful, only that it is not noise of the method.

A source whose mean reliability is below `NOISE_SPEARMAN` is at noise level: its maps rank pixels about as
consistently as independent noise does (the SPEC.md 5.2 guided-score map of the strokes CFGDM: split-half
0.02, seed-to-seed 0.01; the implicit-classifier map: 0.7-0.8), and the report flags it instead of ranking it.
"""

from __future__ import annotations

import numpy as np

NOISE_SPEARMAN = 0.2


def spearman_per_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation over pixels of each pair of maps a[i], b[i] ([N, H, W] each); NaN where a
    map is constant (no ranking to compare)."""
    from drawgap.importance.compare import spearman

    return np.array([spearman(x, y) for x, y in zip(a, b)], dtype=float)


def summary(method: str, per_map, **extra) -> dict:
    """The `meta["reliability"]` record: method, mean / min Spearman over maps, per-map values, noise flag."""
    per_map = np.asarray(per_map, dtype=float)
    known = per_map[np.isfinite(per_map)]
    mean = float(known.mean()) if known.size else None
    return {"method": method, "spearman": mean, "spearman_min": float(known.min()) if known.size else None,
            "per_map": [None if not np.isfinite(v) else round(float(v), 4) for v in per_map],
            "noise_level": mean is not None and mean < NOISE_SPEARMAN, "noise_threshold": NOISE_SPEARMAN, **extra}


def split_half(half_a: np.ndarray, half_b: np.ndarray, unit: str, per_half: int) -> dict:
    """Reliability from two half maps per image: `unit` what was split (trajectories)."""
    from drawgap.importance.compare import spearman_brown

    raw = spearman_per_map(half_a, half_b)
    known = raw[np.isfinite(raw)]
    return summary(f"split-half over {unit} (even vs odd), Spearman over pixels, Spearman-Brown corrected",
                   spearman_brown(raw), per_half=int(per_half),
                   spearman_half=float(known.mean()) if known.size else None)


def from_ceilings(ceilings: np.ndarray) -> dict:
    """Reliability of human maps from their per-image ceilings (split-half over participants)."""
    return summary("split-half over participants (random halves), Spearman over pixels, Spearman-Brown corrected",
                   ceilings)


def deterministic(n_maps: int, why: str) -> dict:
    """Reliability of a method that gives the same map for the same input."""
    return summary(f"deterministic ({why}): the same input gives the same map", np.ones(n_maps))


def unknown(n_maps: int, why: str) -> dict:
    """Reliability that could not be measured (e.g. one trajectory: no halves)."""
    return summary(f"not measured: {why}", np.full(n_maps, np.nan))
