"""Play ClickMe once in a real browser on a stimuli folder: a `drawgap clickme serve` process on 127.0.0.1 (SQLite
in a temporary folder), Debian's Chromium driven by Playwright through consent, instructions, the practice
drawing and T drawings (a zigzag drag over each, as tests/test_clickme_browser.py does), then the database is read.

Prints, per drawing: its stimulus id and category, the points stored, the partner's answers the page showed,
and the outcome; then the completion code, and whether every point the page sent is stored. Screenshots of
the first trial and of the debrief go to --screenshots. Exits 1 when a trial the page sent is missing or differs.

    python benchmarks/play_clickme_in_browser.py STIMULI --trials 3 --screenshots shots/
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from drawgap.clickme.testing import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def paint(page, stroke_offset: int) -> None:
    """Press Start and drag a zigzag over the drawing's canvas."""
    page.get_by_role("button", name="Start").click()
    box = page.locator("canvas.clickme-canvas").bounding_box()
    x0, y0 = box["x"] + 30, box["y"] + 30 + stroke_offset
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 45):
        page.mouse.move(x0 + (k * 9) % 190, y0 + k * 3)
        page.wait_for_timeout(8)
    page.mouse.up()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stimuli", type=Path)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=7.0)
    ap.add_argument("--screenshots", type=Path)
    args = ap.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clickme-browser-") as tmp:
        db = Path(tmp) / "clickme.sqlite3"
        server = ServerProcess(args.stimuli, str(db), Path(tmp) / "server.log", "--trials", str(args.trials),
                               "--time-limit", str(args.time_limit)).start()
        sent: dict[str, dict] = {}
        problems: list[str] = []
        started = time.perf_counter()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("request", lambda req: sent.__setitem__(json.loads(req.post_data)["trial_id"], json.loads(req.post_data))
                        if req.url.endswith("/api/trials") and req.method == "POST" else None)
                page.goto(f"{server.url}/?PROLIFIC_PID=browser-1&STUDY_ID=real-stimuli")
                page.get_by_role("button", name="I agree").click()
                for _ in range(3):
                    page.get_by_role("button", name="Next").click()
                expect(page.locator(".clickme-progress")).to_have_text("Practice")
                paint(page, 0)
                page.get_by_role("button", name="Begin").click(timeout=20_000)
                for k in range(args.trials):
                    expect(page.locator(".clickme-progress")).to_have_text(f"Drawing {k + 1} of {args.trials}", timeout=20_000)
                    paint(page, 10 * k)
                    if k == 0 and args.screenshots:
                        page.screenshot(path=str(args.screenshots / "clickme_trial.png"))
                code = page.locator("#clickme-code")
                expect(code).not_to_have_text("", timeout=20_000)
                if args.screenshots:
                    page.screenshot(path=str(args.screenshots / "clickme_debrief.png"))
                shown_code = code.text_content()
                browser.close()
        finally:
            server.stop()
        wall = time.perf_counter() - started
        with sqlite3.connect(db) as conn:
            trials = conn.execute("SELECT id, practice, position, stimulus_id, outcome, n_points FROM trials "
                                  "ORDER BY practice DESC, position").fetchall()
            clicks = conn.execute("SELECT trial_id, x, y, t_ms FROM clicks ORDER BY trial_id, idx").fetchall()
            code_db = conn.execute("SELECT completion_code FROM participants").fetchone()[0]
    categories = {s["id"]: s["category"] for s in json.loads((args.stimuli / "manifest.json").read_text())["stimuli"]}
    bad = 0
    for tid, practice, position, stimulus, outcome, n_points in trials:
        stored = [[x, y, t] for t_id, x, y, t in clicks if t_id == tid]
        same = tid in sent and stored == sent[tid]["points"]
        bad += not same
        answers = [(a["n_points"], a["guess"], a["correct"]) for a in sent.get(tid, {}).get("partner", [])]
        print(f"{'practice' if practice else f'drawing {position + 1}'}: {stimulus} ({categories.get(stimulus, 'practice')}), "
              f"{n_points} points stored{'' if same else ' (DIFFER from what the page sent)'}, outcome {outcome}; "
              f"partner answers (points, guess, correct): {answers}")
    print(f"completion code shown {shown_code!r}, stored {code_db!r}; page errors: {problems or 'none'}; wall {wall:.1f} s")
    ok = not bad and not problems and shown_code == code_db and len(trials) == args.trials + 1 and set(sent) == {t[0] for t in trials}
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
