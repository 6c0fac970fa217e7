"""Comparing systems (models and humans) from their metrics: the table behind `drawgap compare`.

Distance to human is z-scored over every system given (SPEC.md 4.4), on the ICML normalised diversity
(`diversity`) and recognizability. The per-class variant (median over classes) is added when every system
was evaluated on the same classes; the curve gap of each system against the human curve is added too.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from drawgap.errors import InputError
from drawgap.metrics.distance import curve_gap, distance_to_human, per_class_distance_to_human
from drawgap.metrics.evaluate import SCALARS


def _is_human(m: dict) -> bool:
    return m.get("system") == "human" or (m.get("samples_meta") or {}).get("generator") == "human"


def _unique_names(metrics: Sequence[dict], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(metrics):
            raise InputError(f"expected {len(metrics)} names (one per metrics file), got {len(names)}", field="names")
        if len(set(names)) != len(names):
            raise InputError("expected distinct names", field="names")
        return list(names)
    from drawgap.models.naming import system_name

    bases = [str(m.get("system") or f"system{i + 1}") for i, m in enumerate(metrics)]
    # Files named after their generator alone (metrics written before names said more) get the name their
    # samples' meta gives (guidance, sampler, steps), so two CFGDMs are told apart by what differs, not by order.
    shared = {b for b in bases if bases.count(b) > 1}
    for i, m in enumerate(metrics):
        described = system_name(m.get("samples_meta"))
        if described and bases[i] in shared and bases[i] == (m.get("samples_meta") or {}).get("generator"):
            bases[i] = described
    out: list[str] = []
    for base in bases:
        name, k = base, 2
        while name in out:  # still the same: the same system evaluated twice
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def reference_mismatch(m: dict, human: dict) -> str | None:
    """How a system's evaluation differs from the human reference's in classes or drawings per class, in
    words (None when it does not): distances and curve gaps between them compare different things."""
    problems = []
    classes, human_classes = (m.get("per_class") or {}).get("classes"), (human.get("per_class") or {}).get("classes")
    if classes is not None and human_classes is not None and list(classes) != list(human_classes):
        shared = len(set(map(str, classes)) & set(map(str, human_classes)))
        problems.append(f"{len(classes)} classes against the human reference's {len(human_classes)} ({shared} shared)")
    n, human_n = m.get("samples_per_class"), human.get("samples_per_class")
    if n is not None and human_n is not None and n != human_n:
        problems.append(f"{n} drawings per class against the human reference's {human_n}")
    return "; ".join(problems) or None


def _critics_key(m: dict) -> tuple:
    critics = m.get("critics") or {}
    return tuple((critics.get(k) or {}).get("weights_hash") for k in ("simclr", "protonet"))


def critic_pair_rows(m: dict) -> dict[str, dict]:
    """{critic pair: its scalars, ci95 and curve gap to the human reference evaluated with it (if any)} of a
    metrics file evaluated with several critic pairs (`by_critics`); its top level is the first pair's."""
    return {pair: {**{k: entry.get(k) for k in SCALARS}, "ci95": {k: (entry.get("ci95") or {}).get(k) for k in SCALARS},
                   "curve_gap": (entry.get("curve_gap") or {}).get("gap")}
            for pair, entry in (m.get("by_critics") or {}).items()}


def compare(metrics: Sequence[dict], names: Sequence[str] | None = None, human: str | None = None) -> dict:
    """Rows of scalars for each system, with distance to human z-scored over all of them.

    `metrics`: metrics dicts (from `evaluate` or `read_metrics`); `names`: display names (default: each
    file's `system`); `human`: which one is the human reference (default: the one whose generator is
    "human"; without one, no distances). All must come from the same critics (weights hashes).
    """
    metrics = list(metrics)
    if not metrics:
        raise InputError("expected at least one metrics file", field="metrics")
    names = _unique_names(metrics, names)
    keys = {_critics_key(m) for m in metrics}
    if len(keys) > 1:
        raise InputError("expected metrics made with the same critics; their weights hashes differ", field="critics")
    if human is None:
        humans = [n for n, m in zip(names, metrics) if _is_human(m)]
        if len(humans) > 1:
            raise InputError(f"several human systems ({', '.join(humans)}): name the reference with --human", field="human")
        human = humans[0] if humans else None
    elif human not in names:
        raise InputError(f"expected --human to be one of {', '.join(names)}, got {human!r}", field="human")

    rows = []
    for n, m in zip(names, metrics):
        rows.append({"name": n, "is_human": n == human, **{k: m.get(k) for k in SCALARS},
                     "ci95": {k: (m.get("ci95") or {}).get(k) for k in SCALARS},
                     "generalization_curve": m.get("generalization_curve"),
                     "curve_ci95": (m.get("ci95") or {}).get("generalization_curve"),
                     "n_classes": m.get("n_classes"), "samples_per_class": m.get("samples_per_class"),
                     **({"by_critics": critic_pair_rows(m), "agreement": m.get("agreement")} if "by_critics" in m else {})})
    result = {"systems": rows, "human": human, "zscored_over": names}
    if human is None:
        return result

    by_name = dict(zip(names, metrics))
    for row in rows:
        row["reference_mismatch"] = None if row["is_human"] else reference_mismatch(by_name[row["name"]], by_name[human])
        if row["reference_mismatch"]:
            warnings.warn(f"{row['name']} was evaluated on {row['reference_mismatch']}: its distance to human and "
                          "curve gap compare different sets (marked ! in the table)", stacklevel=2)
    distances = distance_to_human({n: (m["diversity"], m["recognizability"]) for n, m in by_name.items()}, human)
    same_classes = len({tuple(m["per_class"]["classes"]) for m in metrics}) == 1
    per_class = None
    if same_classes:
        per_class = per_class_distance_to_human(
            {n: (m["per_class"]["diversity"], m["per_class"]["recognizability"]) for n, m in by_name.items()}, human)
    for row in rows:
        row["distance_to_human"] = distances[row["name"]]
        row["per_class_distance_median"] = None if per_class is None else float(np.median(per_class[row["name"]]))
        gap = curve_gap(by_name[row["name"]]["generalization_curve"], by_name[human]["generalization_curve"])
        row["curve_gap"] = gap["gap"]
        row["curve_overlap"] = gap["overlap"]
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _with_ci(value, ci, spec: str) -> str:
    if value is None:
        return "-"
    text = format(value, spec)
    return text if not ci else f"{text} [{format(ci[0], spec)}, {format(ci[1], spec)}]"


def format_agreement(a: dict) -> str:
    """`omniglot vs omniglot-b over 150 classes (Pearson/Spearman): diversity 0.86/0.85, ...` from one
    entry of metrics.json's `agreement`."""
    from drawgap.metrics.agreement import AGREEMENT_SCORES

    n = (a.get(AGREEMENT_SCORES[0]) or {}).get("n")
    return (f"{' vs '.join(a['critics'])} over {n} classes (Pearson/Spearman): "
            + ", ".join(f"{k} {_fmt(a[k]['pearson'], '.2f')}/{_fmt(a[k]['spearman'], '.2f')}" for k in AGREEMENT_SCORES if k in a))


def format_table(result: dict) -> str:
    """The comparison as a plain-text table (one line per system, humans marked with *)."""
    header = ["system", "diversity [95% CI]", "div. raw", "recognizability % [95% CI]", "originality", "vendi",
              "dist. to human", "per-class median", "curve gap (pp)"]
    lines = [header]

    def scores(r: dict) -> list[str]:
        return [_with_ci(r["diversity"], r["ci95"].get("diversity"), ".3f"), _fmt(r["diversity_raw"], ".3f"),
                _with_ci(r["recognizability"], r["ci95"].get("recognizability"), ".1f"),
                _fmt(r["originality"], ".3f"), _fmt(r["vendi"], ".2f")]

    for r in result["systems"]:
        lines.append([
            r["name"] + (" *" if r["is_human"] else "") + (" !" if r.get("reference_mismatch") else ""),
            *scores(r),
            _fmt(r.get("distance_to_human"), ".3f"),
            _fmt(r.get("per_class_distance_median"), ".3f"),
            _fmt(r.get("curve_gap"), "+.2f"),
        ])
        for pair, p in (r.get("by_critics") or {}).items():  # the same drawings scored by each critic pair
            lines.append([f"  critics {pair}", *scores(p), "-", "-", _fmt(None if r["is_human"] else p["curve_gap"], "+.2f")])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    if any(r.get("by_critics") for r in result["systems"]):
        text.append("critics PAIR: the system's drawings scored by that critic pair (the system's line is the first "
                    "pair's); curve gap against the human reference evaluated with the same pair")
        for r in result["systems"]:
            for a in r.get("agreement") or []:
                text.append(f"critic agreement of {r['name']}, {format_agreement(a)}")
    if result["human"] is None:
        text.append("no human reference among the systems: no distance to human (mark one with --human)")
    else:
        text.append(f"* human reference; distances z-scored over {len(result['zscored_over'])} systems; "
                    "curve gap = mean human - system recognizability over the shared originality range")
        for r in result["systems"]:
            if r.get("reference_mismatch"):
                text.append(f"! {r['name']}: evaluated on {r['reference_mismatch']}")
    return "\n".join(text)
