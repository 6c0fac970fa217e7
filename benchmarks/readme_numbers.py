"""Rerun the README's cheap numbers and say, for each, whether the rerun reproduces it.

Every number covered here sits in a README table row; the script runs the commands printed beside that table
(the same CLI, seeded), reads the metrics files they write, formats each value as the README does and prints
the README value, the rerun value and OK or DIFFERS. It then lists the README numbers it does not rerun, and
why (too slow for a check, or timings of a particular machine). Run it before every README change that quotes
a result:

    python benchmarks/readme_numbers.py                # human references (strokes; Omniglot when its archives
                                                       # are in ../shared/data/omniglot) and `make demo`'s table
    python benchmarks/readme_numbers.py --slow         # also the strokes CFGDM table (60 classes, 20 steps)
    python benchmarks/readme_numbers.py --only demo    # one group

Exit code 0 when every number it reran matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OMNIGLOT = (ROOT / ".." / "shared" / "data" / "omniglot").resolve()

# Columns of the README's metrics tables: (metrics key, scale, format). Each README cell's first number is
# compared with the metric formatted this way.
HUMAN_COLUMNS = [("diversity", 1, ".3f"), ("diversity_raw", 1, ".3f"), ("recognizability", 1, ".1f"),
                 ("originality", 1, ".3f"), ("vendi", 1, ".2f")]
SYSTEM_COLUMNS = [("diversity", 1, ".3f"), ("recognizability", 1, ".1f"), ("originality", 1, ".3f")]


@dataclass
class Row:
    """A README table row (found by its first cell) and the metrics file whose values it quotes."""

    label: str
    metrics: str  # path of the metrics file, relative to the work folder
    columns: list = field(default_factory=lambda: HUMAN_COLUMNS)


@dataclass
class Group:
    """Commands that write metrics files (run in the work folder), and the README rows they reproduce."""

    name: str
    commands: list[str]
    rows: list[Row]
    slow: bool = False
    needs: Path | None = None  # a path that must exist (e.g. the Omniglot archives)


def groups(omniglot: Path) -> list[Group]:
    o = shlex.quote(str(omniglot))
    demo = [Row(f"`make demo`: {name}", f"demo/metrics/{stem}.json", SYSTEM_COLUMNS)
            for name, stem in (("human", "human"), ("DDPM", "ddpm"), ("CFGDM g = 0", "cfgdm_g0"),
                               ("CFGDM g = 0.5", "cfgdm_g0.5"), ("CFGDM g = 1", "cfgdm_g1"), ("CFGDM g = 2", "cfgdm_g2"),
                               ("VAE-STN", "vae-stn"), ("VAE-NS", "vae-ns"), ("DA-GAN-UN", "dagan-un"), ("DA-GAN-RN", "dagan-rn"))]
    return [
        Group("strokes-human", [
            "drawgap data strokes --out strokes_human --as-samples",
            "drawgap evaluate strokes_human/test_samples.npz --critics strokes --out strokes_human.json",
            "drawgap data strokes --out strokes_human_noex --as-samples --exclude-exemplar",
            "drawgap evaluate strokes_human_noex/test_samples.npz --critics strokes --out strokes_human_noex.json",
        ], [Row("strokes test, 60 x 20, exemplar included", "strokes_human.json"),
            Row("strokes test, 60 x 19, exemplar excluded", "strokes_human_noex.json")]),
        Group("omniglot-human", [
            f"drawgap data omniglot --source {o} --split weak --size 50 --as-samples --out omniglot50_human",
            "drawgap evaluate omniglot50_human/test_samples.npz --critics omniglot --out omniglot_human.json",
            f"drawgap data omniglot --source {o} --split weak --size 50 --as-samples --exclude-exemplar --out omniglot50_human_noex",
            "drawgap evaluate omniglot50_human_noex/test_samples.npz --critics omniglot --out omniglot_human_noex.json",
        ], [Row("Omniglot weak test, 150 x 20, exemplar included", "omniglot_human.json"),
            Row("Omniglot weak test, 150 x 19, exemplar excluded", "omniglot_human_noex.json")], needs=omniglot),
        Group("demo", ["drawgap demo --out demo"], demo),
        Group("strokes-cfgdm", [
            "drawgap data strokes --out strokes",
            "drawgap sample strokes-cfgdm --exemplars strokes/test.npz --per-exemplar 10 --guidance 0,1,2 --sampler dpm++ "
            "--steps 20 --seed 0 --batch-size 64 --out strokes_samples",
            *(f"drawgap evaluate strokes_samples/cfgdm_g{g}.npz --critics strokes --out cfgdm_g{g}.json" for g in (0, 1, 2)),
        ], [Row(f"strokes-cfgdm g = {g} (60 x 10, dpm++ 20 steps)", f"cfgdm_g{g}.json", SYSTEM_COLUMNS) for g in (0, 1, 2)],
            slow=True),
    ]


# README numbers this script does not rerun, and why (printed so that a reader knows what was not checked).
NOT_RERUN = [
    ("wall times (`make demo` 125 s, data builds, training minutes, benchmarks)", "timings of a quiet machine; rerun the "
     "benchmark scripts in benchmarks/ on a quiet machine"),
    ("critic validation (97.16 %, 91.4 %, 94.27 %, 81.8 %) and the SimCLR training curve", "`drawgap critics check` "
     "and hours of training"),
    ("Omniglot CFGDM / DDPM table (150 classes x 10, 20 steps) and `demo --data omniglot`", "minutes of sampling 1,500 "
     "drawings per system; the commands are printed beside the table"),
    ("`demo --train --budget 10` (recognizability 9-11 %)", "10 minutes of training"),
    ("the sampler table (ancestral 500 steps)", "`benchmarks/sampler_agreement.py`, about 20 minutes"),
    ("strokes pixel 1-NN accuracy (81 %, 58 %)", "not a CLI output"),
    ("importance-map reliabilities", "`benchmarks/guided_map_reliability.py` (minutes)"),
    ("the two Omniglot critic pairs (omniglot vs omniglot-b: humans, omniglot-cfgdm g = 1, agreement)", "console lines "
     "with their commands beside them; the CFGDM one needs the Omniglot table's samples (16 minutes of sampling on one core)"),
    ("QuickDraw-FS from the real drawings (455 / 95 classes, 550 sub-categories, cluster sizes)", "3.5 to 5 minutes of "
     "building from ../shared/data/quickdraw; the command is printed beside them"),
    ("training and serving speeds (bench_training on this CPU and on an H200, bench_clickme with --abusive)", "timings: "
     "rerun the benchmark scripts, on a quiet machine (and a GPU for the H200 row)"),
    ("the ClickMe partner's answers with and without \"nothing yet\" (the table of 250 real stimuli)", "not a CLI "
     "output: `benchmarks/clickme_partner_evidence.py` on the folder of `drawgap clickme stimuli --source "
     "../shared/data/quickdraw/simplified` (2 minutes)"),
    ("the Omniglot guidance cloud (g = 0 to 2, 40 classes x 10, both critic pairs)", "31 minutes of sampling and "
     "evaluating; the `drawgap sweep` and `compare` commands are printed beside the table"),
    ("the Omniglot baselines' table and learning curves, the VAE-NS context sweeps", "hours of training; the commands "
     "are printed beside them and in each TRAINING.md"),
]


def readme_row(text: str, label: str) -> list[str] | None:
    """The cells of the README table row whose first cell is `label` (None if there is none)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and cells[0] == label:
            return cells[1:]
    return None


def first_number(cell: str) -> str | None:
    m = re.search(r"-?\d[\d,]*\.?\d*", cell)
    return None if m is None else m.group(0).replace(",", "")


def run_group(group: Group, work: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for command in group.commands:
        args = shlex.split(command)
        print(f"  $ {command}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "drawgap.cli", *args[1:]], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = (done.stdout.strip().splitlines() or [""])[-1]
        print(f"    ({time.perf_counter() - started:.0f} s) {last[:160]}", flush=True)
        if done.returncode != 0:
            print(f"    failed with exit code {done.returncode}:\n{done.stdout[-3000:]}")
            return False
    return True


def compare_rows(group: Group, work: Path, text: str) -> list[tuple[str, str, str | None, str | None, str]]:
    """[(row, column, README value, rerun value, OK | DIFFERS | NOT IN README)]."""
    out = []
    for row in group.rows:
        cells = readme_row(text, row.label)
        path = work / row.metrics
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        for i, (key, scale, spec) in enumerate(row.columns):
            value = metrics.get(key)
            rerun = None if value is None else format(value * scale, spec)
            quoted = None if cells is None or i >= len(cells) else first_number(cells[i])
            status = "NOT IN README" if quoted is None else ("OK" if quoted == rerun else "DIFFERS")
            out.append((row.label, key, quoted, rerun, status))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "readme_numbers", help="folder for the files")
    parser.add_argument("--slow", action="store_true", help="also the groups that take minutes of sampling")
    parser.add_argument("--only", action="append", help="run only these groups (repeatable)")
    parser.add_argument("--omniglot", type=Path, default=OMNIGLOT, help="the Omniglot archives (default ../shared/data/omniglot)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for group in groups(args.omniglot.resolve()):
        if args.only and group.name not in args.only:
            continue
        if group.slow and not args.slow and not args.only:
            skipped.append((group.name, "slow: pass --slow"))
            continue
        if group.needs is not None and not group.needs.exists():
            skipped.append((group.name, f"{group.needs} not found"))
            continue
        print(f"{group.name}:", flush=True)
        if not run_group(group, args.work.resolve()):
            skipped.append((group.name, "a command failed"))
            continue
        results += compare_rows(group, args.work, README.read_text())  # the README as it is now

    width = max([len(r[0]) for r in results] + [10])
    print(f"\n{'README row':<{width}}  {'metric':<16} {'README':>8} {'rerun':>8}  status")
    for label, key, quoted, rerun, status in results:
        print(f"{label:<{width}}  {key:<16} {quoted or '-':>8} {rerun or '-':>8}  {status}")
    for name, why in skipped:
        print(f"not rerun: group {name} ({why})")
    print("\nREADME numbers this script does not reproduce:")
    for what, why in NOT_RERUN:
        print(f"- {what}: {why}")
    bad = [r for r in results if r[4] != "OK"]
    print(f"\n{len(results) - len(bad)} of {len(results)} README numbers reproduced" + (f"; {len(bad)} not" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
