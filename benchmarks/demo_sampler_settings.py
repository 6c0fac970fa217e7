"""Which sampler settings give the demo clean drawings? (issue 16 item 6: "choose the demo's sampler settings so
the drawings have clean backgrounds, still within the demo's 10 minutes").

Draws the demo's test exemplars (the first `--classes` of the test split, `--per-exemplar` each, seed 0) with one
model under each sampler setting, and prints per setting and guidance value: the seconds of drawing, how clean
the background is, how much ink the drawings carry against the humans', and recognizability / diversity with
the dataset's shipped critics (95 % bootstrap intervals), next to the same figures for the human drawings of
the same classes.

Cleanliness, in two numbers (drawings in [0, 1], ink high):
- grey background: the share of the non-ink pixels (below 0.5) that are grey (at least 5/255, a visible haze).
  Anti-aliased human strokes have some at their edges (3.5 % on the demo's 20 strokes test classes); the
  strokes CFGDM shipped before issue 16 drew 14.9 % at g = 1 with the demo's 10 DPM-Solver++ steps;
- stray grey: the share of the pixels more than one pixel away from any ink (ink dilated by a 3x3 square)
  that are grey. Edges do not count here, so this is the speckle a reader sees (0 for the human drawings, 9.2 %
  for that CFGDM).

    python benchmarks/demo_sampler_settings.py --run strokes-cfgdm --data runs/data/strokes/test.npz \
        --settings dpm++:10,dpm++:20,dpm++ode:10 --guidance 0,1,2

Samples and metrics stay in --work (one folder per setting), so the numbers can be re-read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

INK = 0.5  # a pixel above it is ink
GREY = 5 / 255  # a non-ink pixel above it is grey: a visible haze (the drawings are stored as uint8)


def cleanliness(drawings: np.ndarray) -> dict:
    """Grey background, stray grey and mean ink of float drawings [..., H, W] in [0, 1]."""
    x = drawings.reshape(-1, *drawings.shape[-2:]).astype(np.float64)
    ink = x > INK
    background = ~ink
    near_ink = np.stack([binary_dilation(m, structure=np.ones((3, 3), bool)) for m in ink])
    far = ~near_ink
    grey = x > GREY
    return {
        "grey_background": float((grey & background).sum() / max(background.sum(), 1)),
        "stray_grey": float((grey & far).sum() / max(far.sum(), 1)),
        "ink_per_drawing": float(x.sum(axis=(1, 2)).mean()),
    }


def _row(name: str, seconds: float | None, clean: dict, human_ink: float, metrics: dict) -> str:
    ci = metrics["ci95"]
    r, d = metrics["recognizability"], metrics["diversity"]
    secs = "" if seconds is None else f"{seconds:.0f}"
    return (f"| {name} | {secs} | {100 * clean['grey_background']:.1f} | {100 * clean['stray_grey']:.2f} | "
            f"{clean['ink_per_drawing'] / human_ink:.2f} | {r:.1f} [{ci['recognizability'][0]:.1f}, "
            f"{ci['recognizability'][1]:.1f}] | {d:.3f} [{ci['diversity'][0]:.3f}, {ci['diversity'][1]:.3f}] |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run directory or shipped generator name")
    ap.add_argument("--data", required=True, help="test dataset file: its exemplars, and its human drawings")
    ap.add_argument("--critics", default="strokes")
    ap.add_argument("--classes", type=int, default=20, help="first N test classes (the demo's 20)")
    ap.add_argument("--per-exemplar", type=int, default=10)
    ap.add_argument("--guidance", default="1", help="comma-separated guidance values (a guided family)")
    ap.add_argument("--settings", default="dpm++:10,dpm++:20,dpm++ode:10",
                    help="comma-separated sampler:steps settings compared")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--work", default="runs/demo_sampler_settings")
    args = ap.parse_args()

    from drawgap.data.formats import read_dataset, read_samples
    from drawgap.metrics.evaluate import evaluate
    from drawgap.metrics.metrics_file import write_metrics
    from drawgap.models.sampling import sample_to_files

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    guidance = [float(g) for g in args.guidance.split(",")]
    human = read_dataset(args.data).to_samples(per_class=args.per_exemplar, classes=args.classes)
    human_metrics = evaluate(human, critics=args.critics, name="human")
    human_clean = cleanliness(human.as_float()[0])
    human_ink = human_clean["ink_per_drawing"]

    lines = [f"model {args.run}, first {args.classes} test classes x {args.per_exemplar} drawings, seed {args.seed}, "
             f"critics {args.critics}", "",
             "| drawings | seconds | grey background % | stray grey % | ink / human | recognizability % | diversity |",
             "|---|---|---|---|---|---|---|",
             _row("humans", None, human_clean, human_ink, human_metrics)]
    results = {"args": vars(args), "human": {**human_clean, "recognizability": human_metrics["recognizability"],
                                             "diversity": human_metrics["diversity"]}, "settings": {}}
    for setting in args.settings.split(","):
        sampler, steps = setting.split(":")
        folder = work / f"{sampler}_{steps}"
        started = time.perf_counter()
        paths = sample_to_files(args.run, args.data, folder, per_exemplar=args.per_exemplar, guidance=guidance,
                                sampler=sampler, steps=int(steps), seed=args.seed, batch_size=args.batch_size,
                                classes=args.classes, progress=True)
        seconds = (time.perf_counter() - started) / len(paths)
        for g, path in zip(guidance, paths):
            metrics = evaluate(path, critics=args.critics, human=human_metrics, name=path.stem)
            write_metrics(metrics, folder / f"{path.stem}.json")
            clean = cleanliness(read_samples(path).as_float()[0])
            name = f"{sampler} x{steps}, g = {g:g}"
            lines.append(_row(name, seconds, clean, human_ink, metrics))
            results["settings"][name] = {**clean, "seconds": seconds, "recognizability": metrics["recognizability"],
                                         "diversity": metrics["diversity"], "ci95": metrics["ci95"]}
            print(lines[-1], flush=True)
    print("\n".join(lines))
    (work / "settings.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
