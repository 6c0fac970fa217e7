"""The ClickMe server's API, the same tests on SQLite and on PostgreSQL (a throwaway Debian server on
127.0.0.1): sessions and resume, idempotent trials, bad input, admin token, partner, export, status."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from drawgap.clickme.app import create_app
from drawgap.clickme.config import GameConfig
from drawgap.clickme.db import ClickRow, TrialRow
from drawgap.clickme.export import export_clicks, read_clicks
from drawgap.clickme.partner import Partner
from drawgap.clickme.testing import make_test_stimuli
from drawgap.errors import InputError

TOKEN = "s3cret-token"
CONFIG = GameConfig(trials_per_participant=3, practice_trials=1, max_points_per_trial=400, max_body_bytes=20_000,
                    partner_rate_per_s=5, partner_burst=4, effort_min_trial_ms=100)  # trials here claim 300 ms


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    return make_test_stimuli(tmp_path_factory.mktemp("clickme"))


@pytest.fixture(scope="module")
def partner(stimuli):
    return Partner.load(stimuli)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, postgres):
    if request.param == "sqlite":
        return str(tmp_path / "clickme.sqlite3")
    if postgres is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does it)")
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def app(stimuli, partner, db_url):
    return create_app(stimuli, db_url, config=CONFIG, admin_token=TOKEN, partner=partner)


class ParticipantClient(TestClient):
    """A TestClient that sends each participant's token (from their start) as the page does, unless the
    request names its own X-Participant-Token (or `anonymous=True`)."""

    tokens: dict

    def request(self, method, url, *args, anonymous=False, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        body = kwargs.get("json") if isinstance(kwargs.get("json"), dict) else {}
        parts = str(url).split("/")
        ids = (body.get("study_id"), body.get("participant_id")) if body else \
            (tuple(parts[-2:]) if str(url).startswith("/api/participants/") else None)
        if not anonymous and "x-participant-token" not in headers and ids in self.tokens:
            headers["x-participant-token"] = self.tokens[ids]
        response = super().request(method, url, *args, headers=headers, **kwargs)
        if str(url) == "/api/participants" and response.status_code == 200 and "participant_token" in response.json():
            self.tokens[ids] = response.json()["participant_token"]
        return response


@pytest.fixture
def client(app):
    with ParticipantClient(app) as c:
        c.tokens = {}
        yield c


IDS = {"study_id": "study-1", "participant_id": "p-1"}


def start(client, ids=IDS) -> dict:
    r = client.post("/api/participants", json={**ids, "consent": True})
    assert r.status_code == 200, r.text
    return r.json()


def trial_body(state, position, *, practice=False, points=None, ids=IDS, **over) -> dict:
    item = (state["practice"] if practice else state["trials"])[position]
    points = [[10 + i, 20 + i, 10 * i] for i in range(12)] if points is None else points
    body = {**ids, "trial_id": str(uuid.uuid4()), "practice": practice, "position": position,
            "stimulus_id": item["stimulus_id"], "points": points,
            "partner": [{"n_points": 10, "t": 90, "guess": "shape01", "correct": False}],
            "outcome": "timeout", "score": 0, "duration_ms": 300}
    body.update(over)
    return body


def count(app, model) -> int:
    with app.state.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model))


# ------------------------------------------------------------------------------------------ sessions


def signed(app, body: dict) -> dict:
    """`body` with a proof on each correct answer, as the server signs the answers its partner gives."""
    from drawgap.clickme.security import recognition_proof

    key = app.state.store.recognition_key
    body["partner"] = [{**a, "proof": recognition_proof(key, body["study_id"], body["participant_id"], body["trial_id"],
                                                         body["stimulus_id"], a["n_points"], a["guess"])}
                       if a["correct"] else a for a in body["partner"]]
    return body


def test_session_sequence_and_resume(app, client):
    assert client.get("/api/participants/study-1/p-1").status_code == 404
    assert client.post("/api/participants", json={**IDS, "consent": False}).status_code == 422
    state = start(client)
    ids = [t["stimulus_id"] for t in state["trials"]]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert len({t["category"] for t in state["trials"]}) == 3  # spread over categories
    assert [p["stimulus_id"] for p in state["practice"]] == ["practice-00"]
    assert (state["next_trial"], state["next_practice"], state["completed"], state["completion_code"]) == (0, 0, False, None)
    assert start(client)["trials"] == state["trials"]  # starting again is idempotent

    assert client.post("/api/trials", json=trial_body(state, 0, practice=True)).status_code == 201
    for k in range(3):
        # A reload before each trial finds the participant where they stopped.
        resumed = client.get("/api/participants/study-1/p-1").json()
        assert resumed["next_trial"] == k and resumed["next_practice"] == 1
        score = 40.0 if k == 1 else 0
        outcome = "recognized" if k == 1 else "timeout"
        partner = [{"n_points": 10, "t": 90, "guess": resumed["trials"][k]["category"], "correct": k == 1}]
        r = client.post("/api/trials", json=signed(app, trial_body(resumed, k, score=score, outcome=outcome, partner=partner)))
        assert r.status_code == 201, r.text
        assert r.json()["stored"] is True and r.json()["next_trial"] == k + 1
    final = client.get("/api/participants/study-1/p-1").json()
    assert final["completed"] is True and final["score_total"] == 40.0
    assert re.fullmatch(r"[0-9A-F]{10}", final["completion_code"])


def test_a_token_the_page_proposes_is_kept_when_strong_so_a_lost_start_can_be_retried(app, client):
    proposed = "A" * 20 + "b-_9" * 6  # 44 characters of the URL-safe alphabet
    first = client.post("/api/participants", json={**IDS, "consent": True}, headers={"x-participant-token": proposed})
    assert first.status_code == 200 and first.json()["participant_token"] == proposed
    # the page never got that answer: its retry carries the same token and finds the participant
    again = client.post("/api/participants", json={**IDS, "consent": True}, headers={"x-participant-token": proposed})
    assert again.status_code == 200 and "participant_token" not in again.json()
    assert again.json()["trials"] == first.json()["trials"]
    assert client.request("POST", "/api/participants", json={**IDS, "consent": True}, anonymous=True).status_code == 409
    # too short, or outside the alphabet: the server makes the token, as for a page that proposes none
    for k, weak in enumerate(("short-token", "x" * 42, "!" * 50, "A" * 42 + "=", "A" * 129)):
        ids = {"study_id": "study-1", "participant_id": f"weak-{k}"}
        made = client.post("/api/participants", json={**ids, "consent": True},
                           headers={"x-participant-token": weak})
        assert made.status_code == 200 and made.json()["participant_token"] not in (weak, None)
        assert len(made.json()["participant_token"]) >= 43


def test_sequences_are_balanced_across_participants(client):
    # 12 stimuli, 3 per participant: after 4 participants every stimulus was assigned exactly once.
    seen = []
    for k in range(4):
        seen += [t["stimulus_id"] for t in start(client, {"study_id": "s", "participant_id": f"p{k}"})["trials"]]
    assert sorted(seen) == sorted(f"c{c:03d}-{i:02d}" for c in range(4) for i in range(3))


# ------------------------------------------------------------------------------------------ trials


def test_replayed_trial_is_stored_once(app, client):
    state = start(client)
    body = trial_body(state, 0)
    first = client.post("/api/trials", json=body)
    again = client.post("/api/trials", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True and again.json()["next_trial"] == 1
    assert count(app, TrialRow) == 1 and count(app, ClickRow) == 12
    # The same id with other data is refused, and a second id for the same slot too.
    changed = {**body, "points": body["points"][:11]}
    assert client.post("/api/trials", json=changed).status_code == 409
    other_id = {**body, "trial_id": str(uuid.uuid4())}
    r = client.post("/api/trials", json=other_id)
    assert r.status_code == 409 and "already stored" in r.json()["detail"]
    assert count(app, TrialRow) == 1 and count(app, ClickRow) == 12


@pytest.mark.parametrize("mutate, status, says", [
    (lambda b: b.update(points=[[300, 5, 0]]), 422, "outside the 256x256 canvas"),
    (lambda b: b.update(points=[[5, -1, 0]]), 422, "outside"),
    (lambda b: b.update(points=[[i % 256, 1, i] for i in range(401)]), 422, "at most 400 points"),
    (lambda b: b.update(points=[[1.5, 2, 0]]), 422, "points"),
    (lambda b: b.update(points=[[5, 5, 100], [6, 6, 50]]), 422, "earlier than"),
    (lambda b: b.update(trial_id="not-a-uuid"), 422, "trial_id"),
    (lambda b: b.update(position=2), 409, "expected trial 0"),
    (lambda b: b.update(position=7), 409, "past the end"),
    (lambda b: b.update(stimulus_id="c000-01" if b["stimulus_id"] != "c000-01" else "c000-02"), 409, "expected stimulus"),
    (lambda b: b.update(participant_id="nobody"), 404, "unknown participant"),
    (lambda b: b.update(participant_id="bad id!"), 422, "participant_id"),
    (lambda b: b.update(outcome="recognized", score=50), 422, "needs a correct partner answer"),
    (lambda b: b.update(score=50), 422, "expected 0"),
    (lambda b: b.update(duration_ms=60_000), 422, "over the time limit"),
    (lambda b: b.update(extra_field=1), 422, "extra_field"),
    # the partner's answers as the page recorded them: bounded, and within the trial
    (lambda b: b.update(partner=[{"n_points": 10 ** 40, "t": 90, "guess": "x", "correct": False}]), 422, "partner.0.n_points: Input should be less than or equal to 100000"),
    (lambda b: b.update(partner=[{"n_points": 10, "t": 10 ** 40, "guess": "x", "correct": False}]), 422, "partner.0.t: Input should be less than or equal to 602000"),
    (lambda b: b.update(partner=[{"n_points": 13, "t": 90, "guess": "x", "correct": False}]), 422, "more than the trial's 12"),
    (lambda b: b.update(partner=[{"n_points": 10, "t": 2301, "guess": "x", "correct": False}]), 422, "after the trial's end"),
])
def test_bad_trials_are_refused_with_the_reason(app, client, mutate, status, says):
    body = trial_body(start(client), 0)
    mutate(body)
    r = client.post("/api/trials", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert count(app, TrialRow) == 0 and count(app, ClickRow) == 0


def test_malformed_and_oversized_bodies(app, client):
    start(client)
    r = client.post("/api/trials", content=b'{"trial_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"] == "malformed JSON body"
    big = b'{"pad": "' + b"x" * 30_000 + b'"}'
    r = client.post("/api/trials", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "at most 20000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(30):
            yield b"x" * 1000

    r = client.post("/api/trials", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert count(app, TrialRow) == 0


def test_trial_id_of_another_participant_is_refused(app, client):
    a = start(client)
    b = start(client, {"study_id": "study-1", "participant_id": "p-2"})
    body = trial_body(a, 0)
    assert client.post("/api/trials", json=body).status_code == 201
    stolen = trial_body(b, 0, ids={"study_id": "study-1", "participant_id": "p-2"}, trial_id=body["trial_id"])
    r = client.post("/api/trials", json=stolen)
    assert r.status_code == 409 and "another participant" in r.json()["detail"]
    assert count(app, TrialRow) == 1


# ------------------------------------------------------------------------------------------ partner


def test_partner_recognizes_the_fully_revealed_exemplar(client, stimuli):
    state = start(client, {"study_id": "s", "participant_id": "exemplar-fan"})
    exemplar = next(t for t in state["trials"] if t["stimulus_id"].endswith("-00"))
    # Paint the whole canvas on a 14 px grid: the partner sees the exemplar itself, its own prototype.
    points = [[x, y, 0] for y in range(7, 256, 14) for x in range(7, 256, 14)]
    body = {"study_id": "s", "participant_id": "exemplar-fan", "trial_id": str(uuid.uuid4()),
            "stimulus_id": exemplar["stimulus_id"], "points": points}
    r = client.post("/api/partner", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["guess"] == exemplar["category"] and answer["correct"] is True and answer["n_points"] == len(points)
    # Its signed answer makes a recognized trial; a made-up or altered one does not.
    assert len(answer["proof"]) == 32
    for item in state["trials"][:exemplar["position"]]:
        assert client.post("/api/trials", json=trial_body(state, item["position"], ids=body_ids(body))).status_code == 201
    claim = {"n_points": len(points), "t": 0, "guess": exemplar["category"], "correct": True}
    trial = trial_body(state, exemplar["position"], ids=body_ids(body), trial_id=body["trial_id"], points=points,
                       outcome="recognized", score=99.0, duration_ms=100)
    for forged in ({}, {"proof": "0" * 32}, {"proof": answer["proof"], "n_points": len(points) - 1}):
        r = client.post("/api/trials", json={**trial, "partner": [{**claim, **forged}]})
        assert r.status_code == 422 and "signed answer" in r.json()["detail"], r.text
    r = client.post("/api/trials", json={**trial, "partner": [{**claim, "proof": answer["proof"]}]})
    assert r.status_code == 201, r.text
    # Nothing painted: all black; the partner answers "nothing yet" (a null guess), never correct, never signed.
    r = client.post("/api/partner", json={**body, "points": []})
    assert r.status_code == 200, r.text
    assert r.json() == {"guess": None, "probability": r.json()["probability"], "correct": False, "n_points": 0}


def test_a_nothing_yet_answer_is_stored_as_null_and_never_recognizes(app, client):
    state = start(client)
    first = state["trials"][0]
    answer = client.post("/api/partner", json={**IDS, "trial_id": str(uuid.uuid4()), "stimulus_id": first["stimulus_id"],
                                               "points": [[0, 0, 0]]}).json()  # a corner: no ink
    assert answer["guess"] is None and answer["correct"] is False and "proof" not in answer
    nothing = {"n_points": 1, "t": 0, "guess": None, "correct": False}
    claimed = {**nothing, "correct": True, "proof": "0" * 32}
    r = client.post("/api/trials", json=trial_body(state, 0, partner=[claimed], outcome="recognized", score=50))
    assert r.status_code == 422 and "partner[0].guess: a correct answer names a category" in r.json()["detail"], r.text
    body = trial_body(state, 0, partner=[nothing, {"n_points": 10, "t": 90, "guess": "shape01", "correct": False}])
    assert client.post("/api/trials", json=body).status_code == 201
    with app.state.engine.connect() as conn:
        stored = conn.scalar(select(TrialRow.partner).where(TrialRow.id == body["trial_id"]))
    assert stored[0] == {**nothing, "proof": None} and stored[1]["guess"] == "shape01"


def test_the_partner_before_nothing_yet_is_kept_for_its_databases(stimuli, partner, db_url):
    """partner_nothing_yet=False answers a category on a blank canvas, as before; a database made before the
    setting existed was collected that way, so the default partner refuses it."""
    from drawgap.clickme.db import SettingRow

    config = GameConfig(**{**CONFIG.to_dict(), "partner_nothing_yet": False})
    with ParticipantClient(create_app(stimuli, db_url, config=config, partner=partner)) as c:
        c.tokens = {}
        state = start(c)
        r = c.post("/api/partner", json={**IDS, "trial_id": str(uuid.uuid4()),
                                         "stimulus_id": state["trials"][0]["stimulus_id"], "points": []})
        assert r.status_code == 200 and r.json()["guess"] in {"shape00", "shape01", "shape02", "shape03"}, r.text
    with pytest.raises(InputError, match="partner_nothing_yet=False"):
        create_app(stimuli, db_url, config=CONFIG, partner=partner)
    old_app = create_app(stimuli, db_url, config=config, partner=partner)
    with old_app.state.store.WriteSession.begin() as s:  # as a database from before the setting
        game = s.get(SettingRow, "game")
        game.value = {k: v for k, v in game.value.items() if k != "partner_nothing_yet"}
    with pytest.raises(InputError, match="partner_nothing_yet=False"):
        create_app(stimuli, db_url, config=CONFIG, partner=partner)
    create_app(stimuli, db_url, config=config, partner=partner)


def body_ids(body: dict) -> dict:
    return {"study_id": body["study_id"], "participant_id": body["participant_id"]}


def test_partner_is_rate_limited_and_checks_its_input(client):
    state = start(client)
    body = {**IDS, "trial_id": str(uuid.uuid4()), "stimulus_id": state["trials"][0]["stimulus_id"], "points": [[1, 1, 0]]}
    codes = [client.post("/api/partner", json=body).status_code for _ in range(6)]
    assert codes[:4] == [200] * 4 and 429 in codes[4:]  # burst of 4, then 5 per second
    r = client.post("/api/partner", json=body)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1

    other = start(client, {"study_id": "study-1", "participant_id": "p-9"})  # its own bucket
    body9 = {**body, "participant_id": "p-9", "stimulus_id": other["trials"][0]["stimulus_id"]}
    assert client.post("/api/partner", json={**body9, "points": [[999, 1, 0]]}).status_code == 422
    not_mine = next(s for s in [f"c{c:03d}-{i:02d}" for c in range(4) for i in range(3)]
                    if s not in {t["stimulus_id"] for t in other["trials"]})
    assert client.post("/api/partner", json={**body9, "stimulus_id": not_mine}).status_code == 409


# --------------------------------------------------------------------------------------------- admin


def test_admin_routes_need_the_token(client, stimuli, partner, db_url):
    assert client.get("/api/admin/status").status_code == 401
    assert client.get("/api/admin/status", headers={"authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/api/admin/export", headers={"authorization": f"Basic {TOKEN}"}).status_code == 403
    ok = client.get("/api/admin/status", headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and len(ok.json()["stimuli"]) == 12
    # Without a token set at start, the admin routes are disabled whatever the request says.
    with TestClient(create_app(stimuli, db_url, config=CONFIG, partner=partner)) as closed:
        r = closed.get("/api/admin/status", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 404 and "disabled" in r.json()["detail"]


def test_export_and_status_hold_exactly_the_submitted_points(app, client, tmp_path):
    state = start(client)
    few = [{"n_points": 5, "t": 4, "guess": "shape01", "correct": False}]
    bodies = [trial_body(state, k, points=[[k, 2 * k + i, i] for i in range(5 + k)], partner=few) for k in range(2)]
    bodies.append(trial_body(state, 0, practice=True))
    for b in bodies:
        assert client.post("/api/trials", json=b).status_code == 201
    r = client.get("/api/admin/export", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    (tmp_path / "http.npz").write_bytes(r.content)
    export_clicks(app.state.engine, tmp_path / "cli.npz")
    start(client, {"study_id": "study-1", "participant_id": "never-played"})  # counted apart in the totals
    for path in (tmp_path / "http.npz", tmp_path / "cli.npz"):
        arrays, meta = read_clicks(path)
        assert meta["n_trials"] == 2 and meta["n_points"] == 11 and meta["brush_px"] == 14  # practice left out
        assert meta["effort"] == {"min_trial_ms": 100, "min_points": 5, "max_skipped_fraction": 0.5, "practice_required": True}
        for k, b in enumerate(bodies[:2]):
            row = list(arrays["trial_ids"]).index(b["trial_id"])
            mine = arrays["trial"] == row
            got = np.stack([arrays["x"][mine], arrays["y"][mine], arrays["t"][mine]], 1).tolist()
            assert got == b["points"]
            assert arrays["image_ids"][arrays["image"][mine][0]] == b["stimulus_id"]
            assert arrays["categories"][arrays["category"][mine][0]] == state["trials"][k]["category"]
            assert arrays["participant_ids"][arrays["participant"][mine][0]] == "study-1/p-1"
    status = client.get("/api/admin/status", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert status["totals"] == {"participants": 1, "registered": 2, "completed": 0, "trials": 2}
    done = {s["id"]: s for s in status["stimuli"]}
    for k in range(3):
        assert done[state["trials"][k]["stimulus_id"]]["assigned"] == 1
        assert done[state["trials"][k]["stimulus_id"]]["done"] == (1 if k < 2 else 0)
    assert sum(s["assigned"] for s in status["stimuli"]) == 6  # never-played holds 3 too


# ------------------------------------------------------------------------------------------ headers


def test_every_response_carries_the_content_security_policy(client):
    for r in (client.get("/healthz"), client.get("/api/participants/a/b"), client.post("/api/trials", content=b"{")):
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/participants/a/b").headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------------ consent


def test_the_consent_shown_is_served_and_every_version_is_kept_with_the_data(stimuli, partner, db_url, tmp_path):
    from dataclasses import replace

    from drawgap.clickme.export import consent_of_participants

    tokens = {}
    with ParticipantClient(create_app(stimuli, db_url, config=CONFIG, partner=partner)) as c:
        c.tokens = tokens
        first = c.get("/api/consent").json()
        early = start(c, {"study_id": "study-1", "participant_id": "p-0"})
    assert first["title"] == "Consent to take part" and len(first["paragraphs"]) == 3
    # The same database, a revised consent text (as a review board may ask mid-study), served again.
    revised = replace(CONFIG, consent_title="Study 7 consent", consent_paragraphs=("Revised text.", "Agree?"))
    app2 = create_app(stimuli, db_url, config=revised, partner=partner)
    with ParticipantClient(app2) as c:
        c.tokens = tokens
        second = c.get("/api/consent").json()
        assert second["paragraphs"] == ["Revised text.", "Agree?"] and second["sha256"] != first["sha256"]
        late = start(c)
        for state, ids in ((early, {"study_id": "study-1", "participant_id": "p-0"}), (late, IDS)):
            assert c.post("/api/trials", json=trial_body(state, 0, ids=ids)).status_code == 201
    create_app(stimuli, db_url, config=revised, partner=partner)  # a restart with the same text adds nothing
    export_clicks(app2.state.engine, tmp_path / "clicks.npz")
    arrays, meta = read_clicks(tmp_path / "clicks.npz")
    versions = meta["consent_versions"]
    assert [v["sha256"] for v in versions] == [first["sha256"], second["sha256"]]
    assert versions[1]["title"] == "Study 7 consent" and versions[0]["first_served"] <= versions[1]["first_served"]
    # each participant's consent: the text shown when they agreed
    agreed = dict(zip(arrays["participant_ids"], arrays["participant_consent"]))
    assert agreed == {"study-1/p-0": 0, "study-1/p-1": 1}
    future = [{**versions[0], "first_served": "2999-01-01T00:00:00+00:00"}]
    assert list(consent_of_participants(app2.state.engine, ["study-1/p-0"], future)) == [-1]
