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

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from drawgap.critics.inference import CriticRunner
from drawgap.data.formats import Samples, read_samples, validate_samples
from drawgap.errors import InputError
from drawgap.metrics._checks import check_critic, check_positive_int
from drawgap.metrics.agreement import AGREEMENT_SCORES, critic_agreement
from drawgap.metrics.base import CriticOutputs, Metric, Protocol, Report
from drawgap.metrics.bootstrap import bootstrap_ci
from drawgap.metrics.distance import curve_gap, distance_to_human, per_class_distance_to_human
from drawgap.metrics.diversity import Diversity
from drawgap.metrics.metrics_file import METRICS_FORMAT, read_metrics
from drawgap.metrics.originality import Originality
from drawgap.metrics.recognizability import Recognizability, effective_ways
from drawgap.metrics.vendi import Vendi
from drawgap.provenance import provenance

PRECISIONS = ("fp32", "bf16")
# A critic sees drawings resized to its own size (SPEC.md 4: Omniglot 105 -> 50). Beyond this factor
# either way the drawings are not what the critic was trained on, and the numbers would mean little.
MAX_RESIZE_FACTOR = 2.0
# The metrics `evaluate` runs, in their order in metrics.json; a new metric is one class added here.
METRICS: tuple[type[Metric], ...] = (Diversity, Recognizability, Originality, Vendi)
SCALARS = tuple(key for metric in METRICS for key in metric.scalars)


# ------------------------------------------------------------------------------------------------ inputs


def _shipped_pair_prefixes() -> list[str]:
    from drawgap.critics.registry import SHIPPED

    return [n.removesuffix("-simclr") for n in SHIPPED
            if n.endswith("-simclr") and n.removesuffix("-simclr") + "-protonet" in SHIPPED]


def critic_pair_names(critics: str) -> list[str]:
    """The prefixes of `--critics omniglot,omniglot-b`, each checked to name a shipped pair (or two critic
    directories <prefix>-simclr and <prefix>-protonet) before any critic is loaded."""
    names = [c.strip() for c in str(critics).split(",")]
    if not all(names):
        raise InputError(f"expected comma-separated critic pair names, got {critics!r}", field="critics")
    if len(set(names)) != len(names):
        raise InputError(f"expected distinct critic pairs, got {critics!r}", field="critics")
    shipped = _shipped_pair_prefixes()
    for name in names:
        if name not in shipped and not (Path(f"{name}-simclr").is_dir() and Path(f"{name}-protonet").is_dir()):
            raise InputError(f"expected a shipped critic pair ({', '.join(shipped)}) or directories {name}-simclr and "
                             f"{name}-protonet, got {name!r} (no critic {name}-simclr)", field="critics")
    return names


def resolve_critic_pairs(critics=None, simclr=None, protonet=None) -> list[tuple[str | None, object, object]]:
    """[(pair name, SimCLR critic, ProtoNet critic)], the first pair the one metrics.json's top level reports.

    `critics`: one prefix (`omniglot`), several (`"omniglot,omniglot-b"` or a list), or a dict
    {name: (simclr, protonet)} of names / directories / critic objects; or `simclr=` and `protonet=` for one
    pair (name None)."""
    if critics is None or isinstance(critics, str) and "," not in critics:
        return [(critics, *resolve_critics(critics, simclr, protonet))]
    if simclr is not None or protonet is not None:
        raise InputError("expected either critics names or --simclr and --protonet, not both", field="critics")
    if isinstance(critics, dict):
        if not critics:
            raise InputError("expected at least one critic pair", field="critics")
        return [(str(n), *resolve_critics(None, *pair)) for n, pair in critics.items()]
    names = critic_pair_names(critics if isinstance(critics, str) else ",".join(critics))
    return [(n, *resolve_critics(n)) for n in names]


def resolve_critics(critics: str | None = None, simclr=None, protonet=None):
    """(SimCLR critic, ProtoNet critic) from a name prefix (`omniglot` -> `omniglot-simclr` +
    `omniglot-protonet`), or from names / directories / critic objects given one by one."""
    from drawgap.critics import load_critic

    if critics is not None:
        if simclr is not None or protonet is not None:
            raise InputError("expected either a critics name or --simclr and --protonet, not both", field="critics")
        critic_pair_names(critics)  # a prefix that names no pair is refused by its name
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


def _embed_all(s: Samples, simclr, protonet, metrics: list[Metric], precision: str, batch_images: int,
               progress: bool, label: str) -> None:
    """Embed every drawing once per critic, in batches of whole classes, and feed every metric."""
    c, n = s.n_classes, s.per_class
    per_batch = max(1, batch_images // (n + 1))
    with CriticRunner(simclr, protonet, precision) as run, \
            tqdm(total=c * (n + 1), unit="drawing", desc=label, disable=not progress, leave=False) as bar:
        for start in range(0, c, per_batch):
            rows = torch.from_numpy(np.ascontiguousarray(s.samples[start : start + per_batch]))
            exemplars = torch.from_numpy(np.ascontiguousarray(s.exemplars[start : start + per_batch]))
            k = rows.shape[0]
            # samples and exemplars in one call per critic: every drawing embedded once
            features, embeddings = run(torch.cat([rows.reshape(k * n, *rows.shape[2:]), exemplars]))
            outputs = CriticOutputs(features[: k * n].reshape(k, n, -1), features[k * n :],
                                    embeddings[: k * n].reshape(k, n, -1), embeddings[k * n :])
            for metric in metrics:
                metric.update(outputs)
            bar.update(k * (n + 1))


def evaluate_system(s: Samples, simclr, protonet, *, queries: int = 500, ways: int = 20, seed: int = 44,
                    bins: int = 10, bootstrap: int = 1000, precision: str = "fp32", batch_images: int = 8192,
                    progress: bool = False, name: str | None = None, path=None,
                    metrics: tuple[type[Metric], ...] = METRICS) -> dict:
    """The metrics of one system (model or humans), without comparison to humans or provenance."""
    _check_samples_for_metrics(s, path)
    ways_used = effective_ways(s.n_classes, ways)
    protocol = Protocol(queries=queries, ways=ways_used, seed=seed, bins=bins)
    running = [metric.for_protocol(protocol) for metric in metrics]
    _embed_all(s, simclr, protonet, running, precision, batch_images, progress, name or "evaluate")
    ci = lambda *a, **k: bootstrap_ci(*a, n_resamples=bootstrap, seed=seed, **k)  # noqa: E731
    report = Report()
    for metric in running:
        part = metric.report(metric.compute(), ci)
        for mine, theirs in ((report.values, part.values), (report.per_class, part.per_class),
                             (report.ci95, part.ci95), (report.protocol, part.protocol)):
            mine.update(theirs)
    per_class = {"classes": [str(c) for c in s.classes], **report.per_class}
    return {
        "format": METRICS_FORMAT,
        "system": name,
        **report.values,
        "per_class": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in per_class.items()},
        "ci95": report.ci95,
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
            **report.protocol,
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
        record = {"simclr": _critic_record(simclr), "protonet": _critic_record(protonet)}
        # its top level, or the entry of its by_critics (a file evaluated with several critic pairs) made
        # with these critics
        for candidate in (metrics, *(metrics.get("by_critics") or {}).values()):
            if _critics_hashes(candidate.get("critics")) == _critics_hashes(record):
                return candidate, None
        _check_same_critics(record, metrics)
    s, path = load_samples(human)
    for critic in (simclr, protonet):
        check_critic_size(critic, s.image_size, path)
    _check_samples_for_metrics(s, path)
    return None, (s, path)


def _critics_hashes(critics: dict | None) -> list:
    return [((critics or {}).get(k) or {}).get("weights_hash") for k in ("simclr", "protonet")]


def _check_same_critics(critics: dict, human: dict) -> None:
    if _critics_hashes(critics) != _critics_hashes(human.get("critics")):
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


def _evaluate_with(s: Samples, simclr, protonet, human, name, path, metrics, options) -> dict:
    """The metrics of the drawings with one critic pair, compared to the human reference if any."""
    human_metrics, human_samples = (None, None) if human is None else human
    result = evaluate_system(s, simclr, protonet, name=name, path=path, metrics=metrics, **options)
    if human_samples is not None:
        hs, hpath = human_samples
        human_metrics = evaluate_system(hs, simclr, protonet, name="human", path=hpath, metrics=metrics, **options)
    if human_metrics is not None:
        result["distance_to_human"] = compare_to_human(result, human_metrics)
        result["curve_gap"] = curve_gap(result["generalization_curve"], human_metrics["generalization_curve"])
        result["human"] = human_summary(human_metrics)
    return result


def _pair_summary(m: dict) -> dict:
    """What metrics.json's `by_critics` keeps of one critic pair's result: its scalars, curve, intervals,
    critics and the per-class scores the agreement is computed from (and a human reference reads)."""
    out = {k: m[k] for k in (*SCALARS, "generalization_curve", "ci95", "critics")}
    out["per_class"] = {k: m["per_class"][k] for k in ("classes", *AGREEMENT_SCORES)}
    if "distance_to_human" in m:
        out["curve_gap"] = m["curve_gap"]
        out["distance_to_human"] = {k: v for k, v in m["distance_to_human"].items() if k != "per_class"}
        out["human"] = {k: m["human"][k] for k in SCALARS}
    return out


def evaluate(samples, *, simclr=None, protonet=None, critics=None, human=None, queries: int = 500,
             ways: int = 20, seed: int = 44, bins: int = 10, bootstrap: int = 1000, precision: str = "fp32",
             batch_images: int = 8192, progress: bool = False, name: str | None = None,
             metrics: tuple[type[Metric], ...] = METRICS) -> dict:
    """Metrics of a samples file or `Samples`, as the dict written to metrics.json.

    Critics: `critics="omniglot"` (the pair omniglot-simclr + omniglot-protonet), or `simclr=` and `protonet=`
    (names, directories or critic objects). Several critic pairs: `critics="omniglot,omniglot-b"` (or a list
    of prefixes, or a dict {name: (simclr, protonet)}): each pair scores the same drawings with the same
    protocol; the top level is the first pair's result, exactly as with that pair alone, and `by_critics`
    (each pair's scalars, curve, ci95, critics and per-class scores) and `agreement` (Pearson and Spearman
    of the per-class scores of each two pairs, `metrics.agreement`) are added. `human`: a human samples file / `Samples` (evaluated with the same
    critics and protocol) or its metrics (dict or .json); adds `distance_to_human`, `curve_gap` and `human`.
    `queries`: queries per class (nb_test); `bins`: originality bins; `bootstrap`: resamples for `ci95`;
    `precision="bf16"` runs the critics under bfloat16 autocast (faster on recent CPUs, features differ
    from fp32 in the third significant digit). On the CPU the critics run on `torch.get_num_threads()`
    worker threads on copies of the critics (see `CriticRunner`); the caller's critics are not modified.
    `metrics`: the `Metric` classes to run (default `METRICS`), each reporting its own entries and intervals.
    """
    queries = check_positive_int(queries, "queries")
    ways = check_positive_int(ways, "ways", 2)
    bins = check_positive_int(bins, "bins")
    bootstrap = check_positive_int(bootstrap, "bootstrap")
    batch_images = check_positive_int(batch_images, "batch_images")
    if precision not in PRECISIONS:
        raise InputError(f"expected precision one of {', '.join(PRECISIONS)}, got {precision!r}", field="precision")
    s, path = load_samples(samples)
    pairs = resolve_critic_pairs(critics, simclr, protonet)
    for _, *pair in pairs:
        for critic in pair:
            check_critic_size(critic, s.image_size, path)
    _check_samples_for_metrics(s, path)
    if name is None:  # what distinguishes the file: "cfgdm g=2", "human (exemplar excluded)", ...
        from drawgap.models.naming import system_name

        name = system_name(s.meta) or (Path(path).stem if path else None)
    options = dict(queries=queries, ways=ways, seed=seed, bins=bins, bootstrap=bootstrap, precision=precision,
                   batch_images=batch_images, progress=progress)
    humans = [None if human is None else _load_human(human, simclr, protonet) for _, simclr, protonet in pairs]
    # each critic pair over the same drawings and protocol; the first pair's result is the file's top level
    results = [_evaluate_with(s, simclr, protonet, h, name, path, metrics, options)
               for (_, simclr, protonet), h in zip(pairs, humans)]
    metrics = results[0]
    if len(pairs) > 1:
        metrics["by_critics"] = {n: _pair_summary(m) for (n, _, _), m in zip(pairs, results)}
        metrics["agreement"] = critic_agreement(metrics["by_critics"])
    if human is None or isinstance(human, (str, os.PathLike)):
        human_source = None if human is None else os.fspath(human)
    else:
        human_source = "in memory"
    config = {"samples": path, "critics": critics if critics is None or isinstance(critics, str) else
              ",".join(n for n, _, _ in pairs), "simclr": metrics["critics"]["simclr"]["name"],
              "protonet": metrics["critics"]["protonet"]["name"], "human": human_source,
              **{k: v for k, v in options.items() if k != "progress"}}
    metrics["provenance"] = provenance(config, seed)
    return metrics
