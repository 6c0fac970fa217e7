"""Does the fast sampler draw like the reference one? (issue 4: "the fast sampler at 20 steps gives
recognizability and diversity within the 95 % intervals of 500-step ancestral sampling of the same model").

Samples the same exemplars with the same model and seed twice, (a) ancestral over all T = 500 steps (the
paper's sampler) and (b) DPM-Solver++ with `--steps` steps, evaluates both with the dataset's shipped critics
against the human drawings, and prints each metric with its 95 % bootstrap interval and whether (b) falls
inside (a)'s interval. Metrics files and samples stay in --work so the numbers can be re-read.

    python benchmarks/sampler_agreement.py --run strokes-cfgdm --data runs/data/strokes/test.npz \
        --human runs/data/strokes_samples/test_samples.npz --classes 20 --per-exemplar 10 --guidance 0

Cost: ancestral sampling is 25x the work of 20 DPM++ steps; about 10 ms per drawing and step with the lean
denoiser on 2 cores (twice that with guidance g > 0), so 200 drawings take about 17 minutes at g = 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _matching_samples(folder: Path, args, sampler: str) -> Path | None:
    """A samples file already drawn with exactly these settings (ancestral sampling is the costly part)."""
    from drawgap.data.formats import read_samples

    files = sorted(folder.glob("*.npz"))
    if len(files) != 1:
        return None
    s = read_samples(files[0])
    p, run = s.meta.get("params") or {}, s.meta.get("run") or {}
    same = (p.get("sampler") == sampler and p.get("seed") == args.seed and p.get("per_exemplar") == args.per_exemplar
            and p.get("guidance") == args.guidance and s.n_classes == args.classes
            and (sampler == "ancestral" or p.get("steps") == args.steps))
    from drawgap.models.registry import resolve_run_dir

    return files[0] if same and run.get("dir") == str(resolve_run_dir(args.run)) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run directory or shipped generator name")
    ap.add_argument("--data", required=True, help="test dataset file (its exemplars)")
    ap.add_argument("--human", required=True, help="human drawings of the same classes (samples file)")
    ap.add_argument("--critics", default="strokes")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-exemplar", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=0.0)
    ap.add_argument("--sampler", default="dpm++", help="the fast sampler compared (dpm++, dpm++ode, ddim)")
    ap.add_argument("--steps", type=int, default=20, help="its steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--work", default="runs/sampler_agreement")
    args = ap.parse_args()

    from drawgap.metrics.evaluate import evaluate
    from drawgap.metrics.metrics_file import write_metrics
    from drawgap.models.sampling import sample_to_files

    work = Path(args.work)
    results = {}
    for name, sampler, steps in (("ancestral", "ancestral", None), (args.sampler, args.sampler, args.steps)):
        started = time.perf_counter()
        kept = _matching_samples(work / name, args, sampler)
        (path,) = [kept] if kept else sample_to_files(args.run, args.data, work / name, per_exemplar=args.per_exemplar,
                                  guidance=[args.guidance], sampler=sampler, steps=steps, seed=args.seed,
                                  classes=args.classes, progress=True)
        sample_s = time.perf_counter() - started
        if kept:
            print(f"{name}: reusing {kept} (same model, exemplars, sampler, guidance, seed and count)")
        metrics = evaluate(path, critics=args.critics, human=args.human, bootstrap=args.bootstrap, name=name)
        write_metrics(metrics, work / f"{name}.json")
        results[name] = metrics
        print(f"{name}: sampled {args.classes} classes x {args.per_exemplar} in {sample_s:.0f} s -> {work / name}")

    ref, fast = results["ancestral"], results[args.sampler]
    print(f"\nmodel {args.run}, guidance {args.guidance:g}, {args.classes} classes x {args.per_exemplar} drawings, seed {args.seed}")
    print(f"{'metric':<18}{'ancestral x500 [95% CI]':>32}{args.sampler + ' x' + str(args.steps) + ' [95% CI]':>32}  inside")
    verdict = {}
    for key in ("recognizability", "diversity", "originality"):
        lo, hi = ref["ci95"][key]
        flo, fhi = fast["ci95"][key]
        inside = lo <= fast[key] <= hi
        verdict[key] = inside
        print(f"{key:<18}{ref[key]:>12.3f} [{lo:.3f}, {hi:.3f}]{fast[key]:>12.3f} [{flo:.3f}, {fhi:.3f}]  {'yes' if inside else 'NO'}")
    (work / "agreement.json").write_text(json.dumps({"args": vars(args), "inside_ci": verdict}, indent=2))


if __name__ == "__main__":
    main()
