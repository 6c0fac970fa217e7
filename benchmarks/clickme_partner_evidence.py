"""What the ClickMe partner answers from little evidence, with and without "nothing yet" (partner.py), on a
stimuli folder written by `drawgap clickme stimuli`; and its per-query latency.

For every stimulus: the blank canvas, K random ink points revealed (each a `--brush` square around a pixel
of the drawing's ink, chosen at random, seeded) for each K of `--points`, and the whole drawing. Prints, per
condition and rule, how many of the stimuli the partner names correctly, how many it names as the category
that the partner without the rule names on a blank canvas (golf club on the real stimuli), and how many it
answers "nothing yet"; the median fraction of the drawing's ink revealed; whether the fully revealed drawings
it recognizes are the same with both rules; then the median and p95 time of one query (one participant's painted points, revealed and classified alone, as under light load) with each rule.

    python benchmarks/clickme_partner_evidence.py runs/clickme_qd        # the real stimuli (README)
    python benchmarks/clickme_partner_evidence.py DIR --points 5,10,20,40,80 --queries 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from drawgap.clickme.partner import Partner, reveal
from drawgap.clickme.stimuli import load_stimuli


def random_ink_points(image: np.ndarray, k: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    ys, xs = np.nonzero(image > 0)
    chosen = rng.choice(len(xs), size=min(k, len(xs)), replace=False)
    return [(int(xs[i]), int(ys[i]), 0) for i in chosen]


def summary(guesses, watched: str) -> str:
    names = [g.category for g in guesses]
    return (f"right {sum(g.correct for g in guesses):3d}  {watched!r} {names.count(watched):3d}  "
            f"nothing yet {names.count(None):3d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stimuli", type=Path)
    ap.add_argument("--points", default="5,10,20,40,80", help="comma-separated numbers of random ink points")
    ap.add_argument("--brush", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=200, help="timed single queries per rule")
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)

    s = load_stimuli(args.stimuli)
    partner = Partner.load(args.stimuli)
    images = np.stack([s.image(x.id) for x in s.stimuli])
    truth = [x.category for x in s.stimuli]
    ink = images.reshape(len(images), -1).sum(axis=1).astype(np.float64)
    rules = {"before": False, "nothing yet": True}
    print(f"{args.stimuli}: {len(images)} stimuli, {len(s.categories)} categories")

    blank = np.zeros_like(images)
    watched = partner.guess(blank[:1], truth[:1], nothing_yet=False)[0].category  # the old partner's blank answer
    for rule, on in rules.items():
        print(f"blank canvas         {rule:12s} {summary(partner.guess(blank, truth, nothing_yet=on), watched)}")
    rng = np.random.default_rng(args.seed)
    for k in [int(p) for p in args.points.split(",")]:
        revealed = np.stack([reveal(im, random_ink_points(im, k, rng), args.brush) for im in images])
        fraction = np.median(revealed.reshape(len(images), -1).sum(axis=1) / ink)
        for rule, on in rules.items():
            print(f"{k:3d} ink points ({fraction:4.0%}) {rule:12s} {summary(partner.guess(revealed, truth, nothing_yet=on), watched)}")
    full = {rule: partner.guess(images, truth, nothing_yet=on) for rule, on in rules.items()}
    for rule, guesses in full.items():
        print(f"fully revealed       {rule:12s} {summary(guesses, watched)}")
    recognized = {rule: [i for i, g in enumerate(guesses) if g.correct] for rule, guesses in full.items()}
    same = recognized["before"] == recognized["nothing yet"]
    print(f"fully revealed drawings recognized: the same {len(recognized['nothing yet'])} with both rules: {same}")

    # Latency of one query alone: a trial's painted points (a random walk of 60 points on a stimulus).
    walks = [np.clip(128 + np.cumsum(rng.integers(-5, 6, size=(60, 2)), axis=0), 0, s.canvas_size - 1) for _ in range(20)]
    queries = [(images[i % len(images)], [(int(x), int(y), 0) for x, y in walks[i % len(walks)]], truth[i % len(images)])
               for i in range(args.queries)]
    for on in rules.values():  # the first query of each rule embeds the blank canvas: not timed
        partner.guess_points(queries[:1], args.brush, nothing_yet=on)
    for rule, on in rules.items():
        times = []
        for q in queries:
            start = time.perf_counter()
            partner.guess_points([q], args.brush, nothing_yet=on)
            times.append((time.perf_counter() - start) * 1000)
        print(f"one query, {rule:12s}: median {np.median(times):.1f} ms, p95 {np.percentile(times, 95):.1f} ms "
              f"({args.queries} queries, {args.torch_threads} thread)")


if __name__ == "__main__":
    main()
