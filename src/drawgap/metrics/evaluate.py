"""The evaluation pipeline: a samples file -> the metrics dict of DESIGN.md (`metrics.json`).

    >>> from drawgap.metrics import evaluate
    >>> m = evaluate("samples.npz", simclr="omniglot-simclr", protonet="omniglot-protonet")  # doctest: +SKIP
    >>> m["diversity"], m["recognizability"]                                                # doctest: +SKIP

Each drawing (samples and exemplars) goes through each critic exactly once, in batches of whole classes;
every metric then works on those features. Which `diversity` is which: `diversity` is the ICML 2023
s-normalised value (`diversity_normalized`, the 0-1 axis of ICML Fig. 2); `diversity_raw` is the
NeurIPS 2022 value (Eq. 2, the 0-3 axis of NeurIPS Fig. 3a). Recognizability values are in percent.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from drawgap.data.formats import Samples, read_samples, validate_samples
from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.metrics._checks import check_critic, check_positive_int
from drawgap.metrics.bootstrap import bootstrap_ci, ratio_of_means
from drawgap.metrics.distance import curve_gap, distance_to_human, per_class_distance_to_human
from drawgap.metrics.diversity import Diversity
from drawgap.metrics.originality import Originality
from drawgap.metrics.recognizability import Recognizability, effective_ways
from drawgap.metrics.vendi import Vendi
from drawgap.provenance import provenance

METRICS_FORMAT = "drawgap.metrics/1"
PRECISIONS = ("fp32", "bf16")
# A critic sees drawings resized to its own size (SPEC.md 4: Omniglot 105 -> 50). Beyond this factor
# either way the drawings are not what the critic was trained on, and the numbers would mean little.
MAX_RESIZE_FACTOR = 2.0
# Drawings per critic forward pass. On a CPU, small batches keep a layer's activations in the caches
# (32 x 64 x 50 x 50 floats = 20 MB at the first layer): 1,270 drawings per CPU-second at 32 against 760
# at 128 and 650 at 512 (Omniglot critic, one AVX-512 core). GPUs want large batches.
CRITIC_BATCH = {"cpu": 32}
DEFAULT_CRITIC_BATCH = 1024
DIVERSITY_DEFINITION = ("diversity = diversity_normalized: ICML 2023, per-class mean over dims of the Bessel std "
                        "of SimCLR features divided by the system's feature scale s; diversity_raw: NeurIPS 2022 Eq. 2")
SCALARS = ("diversity", "diversity_raw", "recognizability", "originality", "vendi")


# ------------------------------------------------------------------------------------------------ inputs


def resolve_critics(critics: str | None = None, simclr=None, protonet=None):
    """(SimCLR critic, ProtoNet critic) from a name prefix (`omniglot` -> `omniglot-simclr` +
    `omniglot-protonet`), or from names / directories / critic objects given one by one."""
    from drawgap.critics import load_critic

    if critics is not None:
        if simclr is not None or protonet is not None:
            raise InputError("expected either a critics name or --simclr and --protonet, not both", field="critics")
        simclr, protonet = f"{critics}-simclr", f"{critics}-protonet"
    if simclr is None or protonet is None:
        raise InputError("expected a critics name (e.g. omniglot) or both --simclr and --protonet", field="critics")
    if isinstance(simclr, (str, os.PathLike)):
        simclr = load_critic(simclr)
    if isinstance(protonet, (str, os.PathLike)):
        protonet = load_critic(protonet)
    return check_critic(simclr, "features", "SimCLR"), check_critic(protonet, "embed", "ProtoNet")


def check_critic_size(critic, image_size: int, path=None) -> None:
    """Refuse drawings more than MAX_RESIZE_FACTOR smaller or larger than the critic's input size."""
    size = int(getattr(critic, "image_size", image_size))
    if not size / MAX_RESIZE_FACTOR <= image_size <= size * MAX_RESIZE_FACTOR:
        name = getattr(critic, "name", None) or type(critic).__name__
        raise InputError(
            f"expected drawings within {MAX_RESIZE_FACTOR:g}x of the critic {name}'s {size}x{size} input, got "
            f"{image_size}x{image_size}; use critics trained on drawings of this size",
            path=path, field="samples",
        )


def load_samples(samples) -> tuple[Samples, str | None]:
    """A Samples object (validated) from a Samples or a path; and the path, if any."""
    if isinstance(samples, Samples):
        return validate_samples(samples), None
    if isinstance(samples, (str, os.PathLike)):
        return read_samples(samples), os.fspath(samples)
    raise TypeError(f"expected a Samples object or a samples file path, got {type(samples).__name__}")


def _check_samples_for_metrics(s: Samples, path) -> None:
    if s.per_class < 2:
        raise InputError(f"expected at least 2 samples per class, got {s.per_class}", path=path, field="samples")
    if s.n_classes < 2:
        raise InputError(f"expected at least 2 classes, got {s.n_classes}", path=path, field="samples")


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in a Sequential into the conv
    (`torch.nn.utils.fusion.fuse_conv_bn_eval`); same function up to float rounding, one full-resolution
    pass over the activations fewer. In place; returns the module."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in module.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = torch.nn.Identity()
    return module


def inference_copy(critic):
    """A copy of the critic for fast CPU inference: eval mode, BatchNorms folded into the convolutions,
    channels-last memory layout (oneDNN's fast path for convolutions and pooling). The caller's critic is
    left as it is; the copy keeps its name and weights hash. Non-module critics are returned unchanged."""
    if not isinstance(critic, torch.nn.Module):
        return critic
    fast = fold_batch_norms(copy.deepcopy(critic).eval())
    return fast.to(memory_format=torch.channels_last)


def _critic_batch(critic) -> int:
    device = getattr(critic, "device", torch.device("cpu"))
    return CRITIC_BATCH.get(torch.device(device).type, DEFAULT_CRITIC_BATCH)


def _critic_record(critic) -> dict:
    return {
        "name": getattr(critic, "name", None),
        "weights_hash": getattr(critic, "weights_hash", None),
        "data_hash": getattr(critic, "data_hash", None),
        "image_size": getattr(critic, "image_size", None),
        "threshold": getattr(critic, "threshold", None),
        "config": getattr(critic, "config", None),
    }


# ---------------------------------------------------------------------------------------------- pipeline


class CriticRunner:
    """Runs both critics on batches of drawings: `with CriticRunner(...) as run: features, embeddings = run(images)`.

    On the CPU the drawings are split over `workers` Python threads, each running the critics with one
    intra-op thread (torch releases the GIL inside its ops), instead of one stream of ops each split over
    the cores: small convolutions scale better that way, and far better on a shared machine where
    OpenMP's barriers wait on descheduled threads (2,048 drawings, 2 cores, loaded machine: 386-875
    drawings/s against 100-141). The process's intra-op thread count is set to 1 inside the `with` block
    and restored after it. Inference mode and autocast are thread-local, so each worker enters them.
    The critics run as `inference_copy`s: in eval mode, which also makes the threads safe (a critic's
    `features` switches it to eval and back, and a shared critic in training mode would see its batch
    norms flip to batch statistics under another thread). A critic that is not a torch module is used as
    it is and must be safe to call from several threads.
    """

    def __init__(self, simclr, protonet, precision: str = "fp32", workers: int | None = None):
        self.simclr, self.protonet, self.precision = inference_copy(simclr), inference_copy(protonet), precision
        self.device_type = torch.device(getattr(simclr, "device", "cpu")).type
        on_cpu = all(torch.device(getattr(c, "device", "cpu")).type == "cpu" for c in (simclr, protonet))
        self.workers = max(1, workers or torch.get_num_threads()) if on_cpu else 1
        self._pool: ThreadPoolExecutor | None = None
        self._threads = torch.get_num_threads()

    def __enter__(self) -> "CriticRunner":
        if self.workers > 1:
            torch.set_num_threads(1)
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="drawgap-critic")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
            torch.set_num_threads(self._threads)

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bf16 = self.precision == "bf16"
        autocast = torch.autocast(self.device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            features = self.simclr.features(images, batch_size=_critic_batch(self.simclr))
            embeddings = self.protonet.embed(images, batch_size=_critic_batch(self.protonet))
        return features.float(), embeddings.float()

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pool is None or len(images) < 2 * self.workers:
            return self._embed(images)
        parts = list(self._pool.map(self._embed, torch.tensor_split(images, self.workers)))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _embed_all(s: Samples, simclr, protonet, accumulators, precision: str, batch_images: int, progress: bool,
               label: str) -> None:
    """Embed every drawing once per critic, in batches of whole classes, and feed the accumulators."""
    c, n = s.n_classes, s.per_class
    per_batch = max(1, batch_images // (n + 1))
    diversity, vendi, recog, orig = accumulators
    with CriticRunner(simclr, protonet, precision) as run, \
            tqdm(total=c * (n + 1), unit="drawing", desc=label, disable=not progress, leave=False) as bar:
        for start in range(0, c, per_batch):
            rows = torch.from_numpy(np.ascontiguousarray(s.samples[start : start + per_batch]))
            exemplars = torch.from_numpy(np.ascontiguousarray(s.exemplars[start : start + per_batch]))
            k = rows.shape[0]
            # samples and exemplars in one call per critic: every drawing embedded once
            features, embeddings = run(torch.cat([rows.reshape(k * n, *rows.shape[2:]), exemplars]))
            f_samples, f_exemplars = features[: k * n].reshape(k, n, -1), features[k * n :]
            e_samples, e_exemplars = embeddings[: k * n].reshape(k, n, -1), embeddings[k * n :]
            diversity.update_features(f_samples)
            vendi.update_features(f_samples)
            recog.update_features(e_samples, e_exemplars)
            orig.update_features(f_samples, f_exemplars, e_samples, e_exemplars)
            bar.update(k * (n + 1))


def evaluate_system(s: Samples, simclr, protonet, *, queries: int = 500, ways: int = 20, seed: int = 44,
                    bins: int = 10, bootstrap: int = 1000, precision: str = "fp32", batch_images: int = 8192,
                    progress: bool = False, name: str | None = None, path=None) -> dict:
    """The metrics of one system (model or humans), without comparison to humans or provenance."""
    _check_samples_for_metrics(s, path)
    ways_used = effective_ways(s.n_classes, ways)
    accumulators = (
        Diversity(),
        Vendi(),
        Recognizability(nb_test=queries, ways=ways_used, seed=seed),
        Originality(n_bins=bins, nb_test=queries, ways=ways_used, seed=seed),
    )
    _embed_all(s, simclr, protonet, accumulators, precision, batch_images, progress, name or "evaluate")
    div, ven, rec, ori = (a.compute() for a in accumulators)

    spread = div["per_class_spread"]
    per_class = {
        "classes": [str(c) for c in s.classes],
        "diversity": div["per_class_normalized"],
        "diversity_raw": div["per_class_raw"],
        "recognizability": rec["per_class"],
        "originality": ori["per_class"],
        "vendi": ven["per_class"],
        "curve_originality": ori["per_class_curve_originality"],
        "curve_recognizability": ori["per_class_curve_recognizability"],
    }
    ci = lambda *a, **k: bootstrap_ci(*a, n_resamples=bootstrap, seed=seed, **k)  # noqa: E731
    # normalised values re-estimate the scale s on each resample of classes (bootstrap.ratio_of_means)
    curve_orig_raw = ori["per_class_curve_originality"] * ori["feature_scale"]
    ci95 = {
        "diversity": ci(div["per_class_raw"], spread, statistic=ratio_of_means),
        "diversity_raw": ci(div["per_class_raw"]),
        "recognizability": ci(rec["per_class"]),
        "originality": ci(ori["per_class_distance_raw"], spread, statistic=ratio_of_means),
        "vendi": ci(ven["per_class"]),
        "generalization_curve": {
            "originality": [ci(column, spread, statistic=ratio_of_means) for column in curve_orig_raw.T],
            "recognizability": [ci(column) for column in ori["per_class_curve_recognizability"].T],
        },
    }
    return {
        "format": METRICS_FORMAT,
        "system": name,
        "diversity": div["diversity_normalized"],
        "diversity_normalized": div["diversity_normalized"],
        "diversity_raw": div["diversity_raw"],
        "diversity_definition": DIVERSITY_DEFINITION,
        "feature_scale": div["feature_scale"],
        "recognizability": rec["recognizability"],
        "originality": ori["originality"],
        "originality_density": ori["density"],
        "generalization_curve": ori["generalization_curve"],
        "vendi": ven["vendi"],
        "per_class": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in per_class.items()},
        "ci95": ci95,
        "n_classes": s.n_classes,
        "samples_per_class": s.per_class,
        "image_size": s.image_size,
        "critics": {"simclr": _critic_record(simclr), "protonet": _critic_record(protonet)},
        "protocol": {
            "ways": ways_used,
            "ways_requested": ways,
            "nb_test": queries,
            "seed": seed,
            "task_list": "DVR generate_evaluation_task: seeded randperm of chunks of (C // ways) * ways labels",
            "queries": "one sample per class and episode, uniform with replacement from the class's samples "
                       "(per bin: from the class's bin), drawn from the task list's generator after the list",
            "distance": "squared Euclidean in the ProtoNet metric space, support = the exemplars (1 shot)",
            "thresholds": {k: getattr(c, "threshold", None) for k, c in (("simclr", simclr), ("protonet", protonet))},
            "critic_image_size": {k: getattr(c, "image_size", None) for k, c in (("simclr", simclr), ("protonet", protonet))},
            "bins": len(ori["bin_edges"]) - 1,
            "bin_edges": ori["bin_edges"],
            "bin_rule": "samples sorted by raw SimCLR distance to the exemplar; "
                        "bin b = sorted positions floor(b*S/B) .. floor((b+1)*S/B)-1",
            "bootstrap": {"resamples": bootstrap, "level": 0.95, "method": "percentile", "unit": "class", "seed": seed},
            "precision": precision,
        },
        "samples_meta": s.meta,
    }


def _load_human(human, simclr, protonet):
    """The human reference, checked before any work: (its metrics, None) for a metrics dict / .json made
    with the same critics, or (None, (Samples, path)) for drawings to evaluate here."""
    if isinstance(human, dict) or (isinstance(human, (str, os.PathLike)) and Path(human).suffix == ".json"):
        metrics = human if isinstance(human, dict) else read_metrics(human)
        _check_same_critics({"simclr": _critic_record(simclr), "protonet": _critic_record(protonet)}, metrics)
        return metrics, None
    s, path = load_samples(human)
    for critic in (simclr, protonet):
        check_critic_size(critic, s.image_size, path)
    _check_samples_for_metrics(s, path)
    return None, (s, path)


def _check_same_critics(critics: dict, human: dict) -> None:
    hashes = lambda c: [(c or {}).get(k, {}).get("weights_hash") for k in ("simclr", "protonet")]  # noqa: E731
    if hashes(critics) != hashes(human.get("critics")):
        raise InputError("expected the human reference to be evaluated with the same critics (weights hashes differ)",
                         field="human")


def compare_to_human(metrics: dict, human: dict) -> dict:
    """distance_to_human of a system's metrics against the human metrics (same critics)."""
    _check_same_critics(metrics["critics"], human)
    names = [metrics.get("system") or "model", "human"]
    if names[0] == "human":
        names[0] = "model"
    points = {names[0]: (metrics["diversity"], metrics["recognizability"]),
              "human": (human["diversity"], human["recognizability"])}
    result = {
        "value": distance_to_human(points, "human")[names[0]],
        "zscored_over": names,
        "note": "z-scored over two systems, so each coordinate is +-1 and the value is 2*sqrt(2) whenever both "
                "differ; use `drawgap compare` over many systems for a meaningful distance",
        "delta": {"diversity": metrics["diversity"] - human["diversity"],
                  "recognizability": metrics["recognizability"] - human["recognizability"]},
    }
    if metrics["per_class"]["classes"] == human["per_class"]["classes"]:
        per_class = per_class_distance_to_human(
            {names[0]: (metrics["per_class"]["diversity"], metrics["per_class"]["recognizability"]),
             "human": (human["per_class"]["diversity"], human["per_class"]["recognizability"])}, "human")[names[0]]
        result["per_class"] = per_class.tolist()
        result["per_class_median"] = float(np.median(per_class))
    return result


def human_summary(human: dict) -> dict:
    return {k: human.get(k) for k in ("system", *SCALARS, "generalization_curve", "ci95", "n_classes",
                                      "samples_per_class", "samples_meta")}


def evaluate(samples, *, simclr=None, protonet=None, critics: str | None = None, human=None, queries: int = 500,
             ways: int = 20, seed: int = 44, bins: int = 10, bootstrap: int = 1000, precision: str = "fp32",
             batch_images: int = 8192, progress: bool = False, name: str | None = None) -> dict:
    """Metrics of a samples file or `Samples`, as the dict written to metrics.json.

    Critics: `critics="omniglot"` (the pair omniglot-simclr + omniglot-protonet), or `simclr=` and `protonet=`
    (names, directories or critic objects). `human`: a human samples file / `Samples` (evaluated with the same
    critics and protocol) or its metrics (dict or .json); adds `distance_to_human`, `curve_gap` and `human`.
    `queries`: queries per class (nb_test); `bins`: originality bins; `bootstrap`: resamples for `ci95`;
    `precision="bf16"` runs the critics under bfloat16 autocast (faster on recent CPUs, features differ
    from fp32 in the third significant digit). On the CPU the critics run on `torch.get_num_threads()`
    worker threads on copies of the critics (see `CriticRunner`); the caller's critics are not modified.
    """
    queries = check_positive_int(queries, "queries")
    ways = check_positive_int(ways, "ways", 2)
    bins = check_positive_int(bins, "bins")
    bootstrap = check_positive_int(bootstrap, "bootstrap")
    batch_images = check_positive_int(batch_images, "batch_images")
    if precision not in PRECISIONS:
        raise InputError(f"expected precision one of {', '.join(PRECISIONS)}, got {precision!r}", field="precision")
    s, path = load_samples(samples)
    simclr, protonet = resolve_critics(critics, simclr, protonet)
    for critic in (simclr, protonet):
        check_critic_size(critic, s.image_size, path)
    _check_samples_for_metrics(s, path)
    if name is None:  # what distinguishes the file: "cfgdm g=2", "human (exemplar excluded)", ...
        from drawgap.models.naming import system_name

        name = system_name(s.meta) or (Path(path).stem if path else None)
    options = dict(queries=queries, ways=ways, seed=seed, bins=bins, bootstrap=bootstrap, precision=precision,
                   batch_images=batch_images, progress=progress)
    human_metrics, human_samples = (None, None) if human is None else _load_human(human, simclr, protonet)
    metrics = evaluate_system(s, simclr, protonet, name=name, path=path, **options)
    if human_samples is not None:
        hs, hpath = human_samples
        human_metrics = evaluate_system(hs, simclr, protonet, name="human", path=hpath, **options)
    if human_metrics is not None:
        metrics["distance_to_human"] = compare_to_human(metrics, human_metrics)
        metrics["curve_gap"] = curve_gap(metrics["generalization_curve"], human_metrics["generalization_curve"])
        metrics["human"] = human_summary(human_metrics)
    if human is None or isinstance(human, (str, os.PathLike)):
        human_source = None if human is None else os.fspath(human)
    else:
        human_source = "in memory"
    config = {"samples": path, "critics": critics, "simclr": metrics["critics"]["simclr"]["name"],
              "protonet": metrics["critics"]["protonet"]["name"], "human": human_source,
              **{k: v for k, v in options.items() if k != "progress"}}
    metrics["provenance"] = provenance(config, seed)
    return metrics


# ----------------------------------------------------------------------------------------------- the file


REQUIRED_KEYS = ("diversity", "recognizability", "originality", "generalization_curve", "per_class", "ci95",
                 "n_classes", "samples_per_class", "critics", "protocol")


def write_metrics(metrics: dict, path: str | os.PathLike) -> Path:
    """Write a metrics dict as JSON, atomically (a reader never sees half a file)."""
    write_json_atomic(path, metrics)
    return Path(path)


def read_metrics(path: str | os.PathLike) -> dict:
    """A metrics.json file, checked for the keys of DESIGN.md; InputError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"expected a metrics JSON file ({exc})", path=path) from None
    if not isinstance(metrics, dict):
        raise InputError("expected a JSON object", path=path)
    if metrics.get("format") != METRICS_FORMAT:
        raise InputError(f"expected format {METRICS_FORMAT!r}, got {metrics.get('format')!r}", path=path, field="format")
    for key in REQUIRED_KEYS:
        if key not in metrics:
            raise InputError("missing key", path=path, field=key)
    return metrics
