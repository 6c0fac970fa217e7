"""Which pixels drive a critic's decision about a drawing: attribution maps for the critics.

The decision attributed is the one-shot classification of an episode: a drawing is scored against a
support set of one exemplar per class, and the target is the class of the drawing.
- ProtoNet critic: logits = -squared distances of the drawing's metric embedding to the exemplars' (SPEC 3.2).
- SimCLR critic (no classifier of its own): logits = cosine similarity of the drawing's features to the
  exemplars' features, the similarity its metrics use.
`EpisodeLogits` is that function of the prepared drawing [N, 1, S, S] (the critic's size, binarized by
`critic.prepare`); gradients flow through the critic's `forward`. The exemplars' embeddings are fixed.

Methods (`METHODS`), all with captum's `attribute(inputs, target=...)`:
- "saliency": |d logit / d pixel| (captum Saliency);
- "integrated_gradients": captum IntegratedGradients from a blank canvas (baseline 0 = background), 32 steps;
- "smoothgrad": captum NoiseTunnel over Saliency, 16 noisy copies with sigma 0.15 (15 % of the [0, 1] range,
  Smilkov et al.'s recommended 10-20 %);
- "occlusion": captum Occlusion with a 6 x 6 window (an eighth of a 48 px drawing, about a stroke's width
  and a corner) and stride 3, occluding to background 0;
- "rise", "sobol": the black-box methods written in `rise.py` and `sobol.py`.
Every map is the magnitude |attribution| (importance, whichever direction it pushes), as maps files require.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drawgap.critics.protonet import squared_distances
from drawgap.errors import InputError

METHODS = ("saliency", "integrated_gradients", "smoothgrad", "occlusion", "rise", "sobol")
RANDOM_METHODS = ("smoothgrad", "rise", "sobol")  # their maps depend on the seed: reliability seed to seed
DEFAULT_OPTIONS = {
    "saliency": {},
    "integrated_gradients": {"n_steps": 32, "baseline": 0.0},
    "smoothgrad": {"nt_samples": 16, "stdevs": 0.15},
    "occlusion": {"window": 6, "stride": 3},
    "rise": {"n_masks": 1000, "grid": 6, "p": 0.5},
    "sobol": {"grid": 8, "n_design": 32},
}


class EpisodeLogits(nn.Module):
    """Prepared drawings [N, 1, S, S] -> logits [N, W] against a fixed support of W exemplars.

    metric: "sqeuclidean" (ProtoNet: -squared distance) or "cosine" (SimCLR); "auto" picks by critic kind.
    """

    def __init__(self, critic: nn.Module, support_images, metric: str = "auto"):
        super().__init__()
        if metric == "auto":
            metric = "cosine" if getattr(critic, "kind", "") == "simclr" else "sqeuclidean"
        if metric not in ("sqeuclidean", "cosine"):
            raise InputError(f"expected metric sqeuclidean or cosine, got {metric!r}", field="metric")
        self.critic = critic.eval()  # BatchNorm must use its running statistics
        self.metric = metric
        with torch.no_grad():
            support = critic.prepare(support_images) if hasattr(critic, "prepare") else support_images
            self.register_buffer("prototypes", critic(support.to(_device(critic))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.critic(x)
        if self.metric == "cosine":
            return F.normalize(emb, dim=1) @ F.normalize(self.prototypes, dim=1).T
        return -squared_distances(emb, self.prototypes)


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return torch.device("cpu") if p is None else p.device


class CriticAttribution:
    """CriticAttribution(forward_func, method="saliency", **options): one attribution method over a
    differentiable forward function (e.g. `EpisodeLogits`); options override `DEFAULT_OPTIONS[method]`, and
    `batch_size` bounds the images per forward pass (256)."""

    def __init__(self, forward_func: Callable[[torch.Tensor], torch.Tensor], method: str = "saliency", **options):
        if method not in METHODS:
            raise InputError(f"expected method one of {', '.join(METHODS)}, got {method!r}", field="method")
        unknown = set(options) - set(DEFAULT_OPTIONS[method]) - {"batch_size"}
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(sorted(unknown))} for {method} "
                             f"(expected {', '.join(DEFAULT_OPTIONS[method]) or 'none'})", field="options")
        self.forward_func = forward_func
        self.method = method
        self.options = {**DEFAULT_OPTIONS[method], **options}

    def attribute(self, inputs: torch.Tensor, target, seed: int = 0) -> torch.Tensor:
        """[N, 1, H, W] importance (>= 0) of each pixel of `inputs` for the logit `target` (int or [N])."""
        o = dict(self.options)
        batch_size = int(o.pop("batch_size", 256))
        f = self.forward_func
        target = torch.as_tensor(target).reshape(-1) if not isinstance(target, int) else target
        inputs = inputs.detach().clone().float()
        if self.method in ("rise", "sobol"):
            from drawgap.importance.rise import RISE
            from drawgap.importance.sobol import SobolAttribution

            method = RISE(f) if self.method == "rise" else SobolAttribution(f)
            return method.attribute(inputs, target, batch_size=batch_size, seed=seed, **o).abs()

        import captum.attr as ca

        inputs.requires_grad_(True)
        if self.method == "saliency":
            out = ca.Saliency(f).attribute(inputs, target=target, abs=True)
        elif self.method == "integrated_gradients":
            out = ca.IntegratedGradients(f).attribute(inputs, baselines=float(o["baseline"]), target=target,
                                                      n_steps=int(o["n_steps"]), internal_batch_size=batch_size)
        elif self.method == "smoothgrad":
            # captum draws the noise from torch's global generator: fork it so the seed fixes the map
            # without disturbing the caller's random state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = ca.NoiseTunnel(ca.Saliency(f)).attribute(
                    inputs, nt_type="smoothgrad", nt_samples=int(o["nt_samples"]), stdevs=float(o["stdevs"]),
                    target=target, nt_samples_batch_size=batch_size)
        else:  # occlusion
            w, s = int(o["window"]), int(o["stride"])
            # captum evaluates len(inputs) x perturbations_per_eval images at once: keep that near batch_size
            out = ca.Occlusion(f).attribute(inputs, sliding_window_shapes=(1, w, w), strides=(1, s, s), baselines=0.0,
                                            target=target, perturbations_per_eval=max(1, batch_size // len(inputs)))
        return out.detach().abs()


def critic_maps(critic: nn.Module, drawings, support_images, targets, method: str = "saliency", *,
                metric: str = "auto", seed: int = 0, batch_size: int = 64, **options) -> np.ndarray:
    """Maps float32 [N, S, S] of `drawings` (any size; prepared by the critic) for the class `targets[i]`
    among `support_images` (one exemplar per class), at the critic's input size S."""
    forward = EpisodeLogits(critic, support_images, metric)
    explainer = CriticAttribution(forward, method, **options)
    x = critic.prepare(drawings).to(_device(critic)) if hasattr(critic, "prepare") else torch.as_tensor(drawings)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if len(targets) != len(x):
        raise InputError(f"expected one target per drawing ({len(x)}), got {len(targets)}", field="targets")
    if len(targets) and (targets.min() < 0 or targets.max() >= len(forward.prototypes)):
        raise InputError(f"expected targets in 0..{len(forward.prototypes) - 1}", field="targets")
    out = [explainer.attribute(x[s: s + batch_size], targets[s: s + batch_size], seed=seed + s)
           for s in range(0, len(x), batch_size)]
    return torch.cat(out)[:, 0].cpu().numpy().astype(np.float32) if out else np.zeros((0, *x.shape[-2:]), np.float32)


def episode_queries(source, per_class: int = 1, seed: int = 0, classes: int = 0):
    """The drawings to explain in a dataset or samples file, with their episode.

    Returns (drawings float [N, H, W], targets [N], support float [C, H, W], image ids [N], categories [N]).
    Dataset: `per_class` drawings of each class chosen at random (seeded), never its exemplar (a drawing
    scored against itself has a zero gradient); support = the exemplars. Samples: the first `per_class`
    samples of each row; support = the row's exemplars. `classes` > 0 explains only the drawings of the
    first ones, picked as without it; the support keeps every exemplar, so the decision is the same.
    """
    from drawgap.data.formats import Dataset, to_unit_float

    if per_class < 1:
        raise InputError(f"expected per_class >= 1, got {per_class}", field="per_class")
    if classes < 0:
        raise InputError(f"expected a number of classes >= 0 (0: all), got {classes}", field="classes")
    n = min(classes or source.n_classes, source.n_classes)
    rng = np.random.default_rng(seed)
    if isinstance(source, Dataset):
        picks = []
        for c in range(n):
            pool = np.setdiff1d(np.flatnonzero(source.labels == c), source.exemplars[c:c + 1])
            if len(pool) < per_class:
                raise InputError(f"class {source.classes[c]!r} has {len(pool)} drawing(s) besides its exemplar, "
                                 f"expected at least per_class = {per_class}", field="per_class")
            picks.append(np.sort(rng.choice(pool, per_class, replace=False)))
        idx = np.concatenate(picks)
        return (to_unit_float(source.images[idx]), source.labels[idx], to_unit_float(source.exemplar_images()),
                idx.astype(str), source.classes[source.labels[idx]])
    samples, exemplars = source.as_float()
    if per_class > source.per_class:
        raise InputError(f"expected per_class <= {source.per_class} samples per row, got {per_class}", field="per_class")
    rows = np.repeat(np.arange(n), per_class)
    cols = np.tile(np.arange(per_class), n)
    ids = np.array([f"{r}:{k}" for r, k in zip(rows, cols)])
    return samples[rows, cols], rows, exemplars, ids, source.classes[rows]


def critic_importance(critic, source, method: str = "saliency", *, per_class: int = 1, seed: int = 0,
                      classes: int = 0, batch_size: int = 64, **options) -> "ImportanceMaps":
    """Attribution maps of `critic` for drawings of a dataset or samples file (see `episode_queries`)."""
    from drawgap.importance import reliability
    from drawgap.importance.maps_file import ImportanceMaps, make_meta

    drawings, targets, support, ids, cats = episode_queries(source, per_class, seed, classes)
    maps = critic_maps(critic, drawings, support, targets, method, seed=seed, batch_size=batch_size, **options)
    if method in RANDOM_METHODS:  # seed-to-seed: the same drawings again with the next seed (twice the time)
        again = critic_maps(critic, drawings, support, targets, method, seed=seed + 1, batch_size=batch_size, **options)
        reliable = reliability.summary("seed-to-seed (seeds s and s + 1), Spearman over pixels",
                                       reliability.spearman_per_map(maps, again))
    else:
        reliable = reliability.deterministic(len(maps), f"{method} has no randomness")
    prepared = critic.prepare(drawings)[:, 0].numpy() if hasattr(critic, "prepare") else drawings
    used = {**DEFAULT_OPTIONS[method], **options}
    meta = make_meta(f"critic-{method}", {**used, "per_class": per_class, "classes": classes, "episode_way": int(len(support))}, seed,
                     critic={"name": getattr(critic, "name", None), "kind": getattr(critic, "kind", None),
                             "weights_hash": getattr(critic, "weights_hash", None)},
                     source=getattr(source, "meta", {}).get("name"), reliability=reliable)
    return ImportanceMaps(maps, ids, cats, meta, images=prepared.astype(np.float32))


def parse_options(pairs: list[str], method: str) -> dict:
    """["n_steps=64", "baseline=0.1"] -> {"n_steps": 64, "baseline": 0.1}: method options from the command
    line, each converted to the type of its default."""
    if method not in METHODS:
        raise InputError(f"expected method one of {', '.join(METHODS)}, got {method!r}", field="method")
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in DEFAULT_OPTIONS[method]:
            raise InputError(f"expected KEY=VALUE with KEY among {', '.join(DEFAULT_OPTIONS[method]) or '(none)'}, got {pair!r}",
                             field="--option")
        kind = type(DEFAULT_OPTIONS[method][key])
        try:
            out[key] = kind(value)
        except ValueError:
            raise InputError(f"expected a {kind.__name__} for {key}, got {value!r}", field="--option") from None
    return out
