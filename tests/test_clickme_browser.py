"""ClickMe in a real browser: Debian's Chromium driven by Playwright against a real server process.

A participant reads the study's own consent text (markup in it shown as text), consents, reads the
instructions, plays the practice drawing and three drawings by dragging the mouse over them (one reload in
the middle, one skip), sees the partner's answers, and gets the completion code; every point the page
painted is then found in the database.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from drawgap.clickme.app import PAGE_DIR
from drawgap.clickme.testing import ServerProcess, make_test_stimuli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed "
                                 "(apt-get install chromium; .ci/run does it)")]


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


def test_participant_plays_the_game_in_chromium(tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    assert (PAGE_DIR / "index.html").is_file(), "page not built: run `make clickme-web`"
    stimuli = make_test_stimuli(tmp_path)
    db = tmp_path / "clickme.sqlite3"
    consent = tmp_path / "consent.txt"  # the study's own text; markup in it must show as text, not run
    consent.write_text("# Lab 7 drawing study\n\nYou will paint over drawings.\n\n<img src=x onerror=alert(1)> is text.\n")
    server = ServerProcess(stimuli, str(db), tmp_path / "server.log", "--trials", "3", "--time-limit", "3",
                           "--points-per-query", "5", "--consent", str(consent)).start()
    sent: dict[str, dict] = {}  # trial id -> the body the page posted
    api_tokens: list[tuple] = []  # (method, route, the participant token it carried) of each API request
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)

            def on_request(req):
                if req.url.endswith("/api/trials") and req.method == "POST":
                    body = json.loads(req.post_data)
                    sent[body["trial_id"]] = body
                if "/api/" in req.url and "/api/consent" not in req.url:
                    api_tokens.append((req.method, req.url.split("/api/")[1], req.headers.get("x-participant-token")))

            page.on("request", on_request)
            # Record every text the partner line shows (a slow machine may leave a screen before we look).
            partner_texts: list[str] = []
            page.expose_function("recordPartnerText", lambda text: partner_texts.append(text))
            page.add_init_script("""
                let last = null;
                new MutationObserver(() => {
                  const el = document.querySelector('.clickme-partner');
                  const text = el ? el.textContent : null;
                  if (text !== last) { last = text; if (text) window.recordPartnerText(text); }
                }).observe(document, {subtree: true, childList: true, characterData: true});
            """)
            page.goto(f"{server.url}/?PROLIFIC_PID=prolific-p1&STUDY_ID=study-1")
            expect(page.get_by_role("heading", name="Lab 7 drawing study")).to_be_visible()
            expect(page.get_by_text("<img src=x onerror=alert(1)> is text.")).to_be_visible()
            assert page.locator("#experiment img").count() == 0
            page.get_by_role("button", name="I agree").click()
            for _ in range(3):
                page.get_by_role("button", name="Next").click()

            # Practice: the partner answers while the participant paints.
            expect(page.locator(".clickme-progress")).to_have_text("Practice")
            paint(page, 0)
            page.get_by_role("button", name="Begin").click(timeout=10_000)

            # Drawing 1, then a reload: the page resumes at drawing 2.
            expect(page.locator(".clickme-progress")).to_have_text("Drawing 1 of 3")
            paint(page, 10)
            expect(page.locator(".clickme-progress")).to_have_text("Drawing 2 of 3", timeout=10_000)
            page.reload()
            page.get_by_role("button", name="Continue").click()
            expect(page.locator(".clickme-progress")).to_have_text("Drawing 2 of 3")
            paint(page, 20)
            page.screenshot(path=str(tmp_path / "clickme_trial.png"))
            expect(page.locator(".clickme-progress")).to_have_text("Drawing 3 of 3", timeout=10_000)

            # Drawing 3: painted a little, then skipped.
            paint(page, 30)
            skip = page.get_by_role("button", name="Skip this drawing")
            if skip.is_enabled():
                try:  # the 3 s trial may end between the check and the click (a loaded machine): then no skip
                    skip.click(timeout=2000)
                except PlaywrightTimeout:
                    pass
            code = page.locator("#clickme-code")
            expect(code).not_to_have_text("", timeout=10_000)
            page.screenshot(path=str(tmp_path / "clickme_debrief.png"))
            shown_code = code.text_content()
            browser.close()
    finally:
        server.stop()

    assert problems == []
    # The page made the participant's token and proposed it with the start, then sent it with every request after.
    assert api_tokens[0][:2] == ("POST", "participants") and len(api_tokens[0][2] or "") >= 43, api_tokens[:1]
    later = [token for _, _, token in api_tokens[1:]]
    assert later and set(later) == {api_tokens[0][2]}, api_tokens[:5]
    assert {route.split("/")[0] for _, route, _ in api_tokens[1:]} >= {"participants", "partner", "trials"}
    answers_shown = [t for t in partner_texts if t.startswith("Partner: “") or t == "Partner: nothing yet…"]
    answered = sum(1 for body in sent.values() if body["partner"])
    assert answered >= 3 and len(answers_shown) >= answered  # the participant saw the partner's answers
    # The strokes start in a corner, away from the ink: the partner first sees nothing, and says so.
    assert "Partner: nothing yet…" in partner_texts and any(a["guess"] is None for b in sent.values() for a in b["partner"])
    assert (tmp_path / "clickme_trial.png").stat().st_size > 1000
    with sqlite3.connect(db) as conn:
        code_db, = conn.execute("SELECT completion_code FROM participants WHERE participant_id='prolific-p1' "
                                "AND study_id='study-1'").fetchone()
        trials = conn.execute("SELECT id, practice, position, outcome, n_points FROM trials").fetchall()
        clicks = conn.execute("SELECT trial_id, idx, x, y, t_ms FROM clicks ORDER BY trial_id, idx").fetchall()
    assert shown_code == code_db
    assert sorted((bool(pr), pos) for _, pr, pos, _, _ in trials) == [(False, 0), (False, 1), (False, 2), (True, 0)]
    assert set(sent) == {t[0] for t in trials}, "every trial the page sent is stored, and nothing else"
    for trial_id, body in sent.items():
        stored = [[x, y, t] for tid, _, x, y, t in clicks if tid == trial_id]
        assert stored == body["points"], f"points of trial {trial_id} differ from what the page painted"
        assert len(stored) >= 5  # each drag painted points...
        assert all(0 <= x < 256 and 0 <= y < 256 for x, y, _ in stored)
        assert body["partner"] or body["outcome"] == "skipped"  # ...and the partner answered: a category, or
        for a in body["partner"]:  # null for "nothing yet", which is never correct
            assert (a["guess"] in {"shape00", "shape01", "shape02", "shape03"}) or (a["guess"] is None and not a["correct"])


def test_a_start_whose_answer_is_lost_is_retried_with_the_same_token(tmp_path):
    """The server stores the start but its answer never reaches the page (a connection reset): the page's retry
    carries the token it proposed, so the server recognizes the participant instead of refusing a second start
    (a server-made token would have been lost with the answer, and the participant locked out)."""
    import hashlib

    from playwright.sync_api import expect, sync_playwright

    stimuli = make_test_stimuli(tmp_path)
    db = tmp_path / "clickme.sqlite3"
    server = ServerProcess(stimuli, str(db), tmp_path / "server.log", "--trials", "2").start()
    starts: list[tuple[int, str | None]] = []  # (status the server answered, the token the start carried)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 900})

            def start(route):
                if route.request.method != "POST":
                    return route.fallback()
                answer = route.fetch()  # the server gets the start and answers...
                starts.append((answer.status, route.request.headers.get("x-participant-token")))
                if len(starts) == 1:
                    route.abort("connectionreset")  # ...and the page never sees the first answer
                else:
                    route.fulfill(response=answer)

            page.route("**/api/participants", start)
            page.goto(f"{server.url}/?PROLIFIC_PID=lost-start&STUDY_ID=study-1")
            page.get_by_role("button", name="I agree").click()
            expect(page.get_by_role("button", name="Next")).to_be_visible(timeout=15_000)  # the instructions
            browser.close()
    finally:
        server.stop()

    assert [status for status, _ in starts] == [200, 200], starts
    token = starts[0][1]
    assert token and len(token) >= 43 and starts[1][1] == token
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT token_sha256 FROM participants WHERE participant_id='lost-start'").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(),)]
