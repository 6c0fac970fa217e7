"""Rendering Quick, Draw! strokes: drawings per second with one process and with worker processes.

Builds a folder of synthetic category files in the official ndjson format (random-walk strokes with the
point counts of real simplified drawings: 2-6 strokes of 5-25 points), then times
`load_quickdraw(categories, workers=W)` for each W given, several times, and prints the median, the
drawings per second and the speed-up over one process. It also checks that every W gives the same images.
Nothing is downloaded.

    python benchmarks/bench_quickdraw.py                      # 8 categories x 1,500 drawings, W = 1, 2
    python benchmarks/bench_quickdraw.py --categories 16 --per-category 3000 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from drawgap.data.quickdraw import load_quickdraw


def random_strokes(rng: np.random.Generator) -> list:
    """One drawing: 2-6 strokes, each a random walk of 5-25 points in the 0..255 box."""
    strokes = []
    for _ in range(rng.integers(2, 7)):
        n = int(rng.integers(5, 26))
        start = rng.uniform(30, 225, size=2)
        walk = start + np.cumsum(rng.normal(0, 14, size=(n, 2)), axis=0)
        walk = np.clip(np.rint(walk), 0, 255).astype(int)
        strokes.append([walk[:, 0].tolist(), walk[:, 1].tolist()])
    return strokes


def write_categories(folder: Path, n_categories: int, per_category: int, seed: int) -> list[str]:
    names = []
    for c in range(n_categories):
        rng = np.random.default_rng([seed, c])
        name = f"category {c:02d}"
        lines = [json.dumps({"word": name, "countrycode": "US", "recognized": True, "key_id": str(k),
                             "drawing": random_strokes(rng)}) for k in range(per_category)]
        (folder / f"{name}.ndjson").write_text("\n".join(lines) + "\n")
        names.append(name)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--categories", type=int, default=8)
    ap.add_argument("--per-category", type=int, default=1500)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = write_categories(folder, args.categories, args.per_category, args.seed)
        n = args.categories * args.per_category
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"workload: {args.categories} categories x {args.per_category} drawings at {args.size} px")
        reference, baseline = None, None
        for workers in args.workers:
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                ds = load_quickdraw(names, source=folder, size=args.size, progress=False, workers=workers)
                times.append(time.perf_counter() - start)
            if reference is None:
                reference = ds.images
            same = np.array_equal(reference, ds.images)
            median = statistics.median(times)
            baseline = baseline or median
            print(f"workers {workers}: median {median:.2f} s of {args.repeats} "
                  f"({', '.join(f'{t:.2f}' for t in times)}), {n / median:,.0f} drawings/s, "
                  f"speed-up {baseline / median:.2f}x, same images as workers {args.workers[0]}: {same}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
