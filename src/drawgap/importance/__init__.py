"""Feature importance (SPEC.md 5): what critics and diffusion models attend to, human importance maps from
ClickMe clicks, and how the two compare ("humans rely on fewer and more localized features").

- `critic_attribution`: captum Saliency / IntegratedGradients / SmoothGrad / Occlusion, RISE and Sobol on a
  critic's one-shot episode (target = the drawing's class among the exemplars);
- `rise`, `sobol`: the two black-box methods captum lacks, with captum's `attribute(inputs, target=...)`;
- `diffusion_maps`: guided-score, implicit-classifier and loss-gradient maps along sampling trajectories;
- `human_maps`: clicks -> per-image maps (box or Gaussian rule) and their split-half reliability;
- `compare`: Spearman vs human (with ceiling and null), localization, ink mass, Wilcoxon tests;
- `maps_file`: the `.npz` format every producer writes (`drawgap.importance_maps/1`).
Every map is a magnitude (>= 0).
"""

from drawgap.importance.compare import (
    compare_sources,
    compare_to_human,
    count_regions,
    entropy,
    ink_report,
    localization,
    mass_fraction,
    paired_test,
    spearman,
)
from drawgap.importance.critic_attribution import METHODS, CriticAttribution, EpisodeLogits, critic_importance, critic_maps
from drawgap.importance.diffusion_maps import KINDS, DiffusionImportance, diffusion_importance
from drawgap.importance.human_maps import build_human_maps, read_clicks, split_half_reliability
from drawgap.importance.maps_file import ImportanceMaps, read_maps, write_maps
from drawgap.importance.rise import RISE
from drawgap.importance.sobol import SobolAttribution

__all__ = [
    "KINDS",
    "METHODS",
    "RISE",
    "CriticAttribution",
    "DiffusionImportance",
    "EpisodeLogits",
    "ImportanceMaps",
    "SobolAttribution",
    "build_human_maps",
    "compare_sources",
    "compare_to_human",
    "count_regions",
    "critic_importance",
    "critic_maps",
    "diffusion_importance",
    "entropy",
    "ink_report",
    "localization",
    "mass_fraction",
    "paired_test",
    "read_clicks",
    "read_maps",
    "spearman",
    "split_half_reliability",
    "write_maps",
]
