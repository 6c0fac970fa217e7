"""ClickMe on a paid platform, through a real server process: the participant id alone gives nothing (the
token does), a bot gets no completion code, one address cannot flood the server with participants or big
partner queries, and the server's operations (a killed multi-worker server restarts on its port, a port in
use is refused before a database is made, private database files, slow bodies time out)."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from drawgap.clickme.config import GameConfig
from drawgap.clickme.testing import ServerProcess, free_port, make_test_stimuli

TOKEN = "x-participant-token"
JOIN_BURST, PARTNER_BURST, PARTNER_RATE = 10, 40, 20.0  # GameConfig's defaults: one address's starts and partner tokens


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    return make_test_stimuli(tmp_path_factory.mktemp("clickme-security"), n_classes=4, per_class=8, per_category=6,
                             practice=1)


def client_from(server: ServerProcess, address: str) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x.y.z reaches the loopback server)."""
    return httpx.Client(base_url=server.url, timeout=30.0, transport=httpx.HTTPTransport(local_address=address))


def skipped_trial(ids: dict, item: dict, practice: bool = False) -> dict:
    return {**ids, "trial_id": str(uuid.uuid4()), "practice": practice, "position": item["position"],
            "stimulus_id": item["stimulus_id"], "points": [], "partner": [], "outcome": "skipped", "score": 0,
            "duration_ms": 0}


# ------------------------------------------------------------------------------------------ effort


def test_effort_rule_golden():
    from drawgap.clickme.effort import TrialEffort, effort_problem

    assert (GameConfig().address_join_burst, GameConfig().address_partner_burst, GameConfig().partner_cost(3000),
            GameConfig().address_partner_rate_per_s) == (JOIN_BURST, PARTNER_BURST, 5, PARTNER_RATE)
    config = GameConfig(effort_min_trial_ms=1000, effort_min_points=5, effort_max_skipped_fraction=0.5)
    played, skipped = TrialEffort("timeout", 40, 7000), TrialEffort("skipped", 0, 0)
    assert effort_problem([played] * 2 + [skipped] * 2, elapsed_ms=14_000, config=config) is None  # 2 of 4: allowed
    why = effort_problem([played] + [skipped] * 2, elapsed_ms=14_000, config=config)
    assert why.startswith("2 of 3 drawings were skipped or barely played") and "at most 50%" in why
    # too few points, or unrecognized and too short: not played either; a fast recognition is played
    assert effort_problem([played, TrialEffort("timeout", 4, 7000), TrialEffort("timeout", 9, 999)], 30_000, config)
    assert effort_problem([played, TrialEffort("recognized", 5, 60)], 30_000, config) is None
    assert effort_problem([played] + [TrialEffort("recognized", 4, 60)] * 2, 30_000, config) is not None
    short = GameConfig(time_limit_s=0.5, effort_min_trial_ms=1000)  # a time limit under the threshold caps it
    assert effort_problem([TrialEffort("timeout", 9, 500)], 30_000, short) is None
    # claimed 21 s of play in a 10 s session: 21,000 > 10,000 x 1.05 + 2,000
    assert "lasted 10.0 s" in effort_problem([played] * 3, elapsed_ms=10_000, config=config)
    assert effort_problem([played] * 3, elapsed_ms=18_200, config=config) is None  # 21,000 <= 18,200 x 1.05 + 2,000


# ------------------------------------------------------------------------------------- real server


def test_impersonation_without_the_token_fails(stimuli, tmp_path):
    server = ServerProcess(stimuli, str(tmp_path / "c.sqlite3"), tmp_path / "server.log", "--trials", "2",
                           "--practice", "0").start()
    ids = {"study_id": "paid", "participant_id": "worker-1"}
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as victim, httpx.Client(base_url=server.url, timeout=30.0) as attacker:
            started = victim.post("/api/participants", json={**ids, "consent": True}).json()
            token = started.pop("participant_token", "")
            mine = {TOKEN: token}
            # The victim plays both trials and gets a code.
            for item in started["trials"]:
                body = {**skipped_trial(ids, item), "outcome": "timeout", "points": [[5, 5, 0]] * 6, "duration_ms": 1000}
                assert victim.post("/api/trials", json=body, headers=mine).status_code == 201
            code = victim.get("/api/participants/paid/worker-1", headers=mine).json()["completion_code"]
            assert code

            # The attacker knows the ids (they are in the study link), not the token.
            for headers, status in (({}, 401), ({TOKEN: "guess"}, 403), ({TOKEN: token[:-1] + "x"}, 403)):
                r = attacker.get("/api/participants/paid/worker-1", headers=headers)
                assert r.status_code == status and code not in r.text, r.text
            assert len(token) >= 40
            again = attacker.post("/api/participants", json={**ids, "consent": True})
            assert again.status_code == 409 and code not in again.text and "participant_token" not in again.text
            partner = {**ids, "trial_id": str(uuid.uuid4()), "stimulus_id": started["trials"][0]["stimulus_id"], "points": []}
            assert attacker.post("/api/partner", json=partner).status_code == 401
            other = attacker.post("/api/participants", json={"study_id": "paid", "participant_id": "worker-2", "consent": True}).json()
            assert other["participant_token"] != token  # a token is one participant's: no use for another
            r = attacker.get("/api/participants/paid/worker-1", headers={TOKEN: other["participant_token"]})
            assert r.status_code == 403
            bogus = skipped_trial({"study_id": "paid", "participant_id": "worker-2"}, other["trials"][0])
            r = attacker.post("/api/trials", json={**bogus, "participant_id": "worker-1"}, headers={TOKEN: other["participant_token"]})
            assert r.status_code == 403
            # The victim's own retry of the start, with their token, is harmless (no new token).
            r = victim.post("/api/participants", json={**ids, "consent": True}, headers=mine)
            assert r.status_code == 200 and "participant_token" not in r.json() and r.json()["completion_code"] == code
    finally:
        server.stop()


def test_bot_gets_no_completion_code(stimuli, tmp_path):
    server = ServerProcess(stimuli, str(tmp_path / "c.sqlite3"), tmp_path / "server.log", "--trials", "20",
                           "--practice", "1").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as bot:
            states = {}
            for pid in ("bot-1", "bot-2"):
                ids = {"study_id": "paid", "participant_id": pid}
                state = bot.post("/api/participants", json={**ids, "consent": True}).json()
                headers = {TOKEN: state.get("participant_token", "")}
                t0 = time.monotonic()
                for item in state["trials"]:  # 20 skipped trials of 0 points and 0 ms, no practice
                    assert bot.post("/api/trials", json=skipped_trial(ids, item), headers=headers).status_code == 201
                if pid == "bot-2":  # the practice trial too, skipped
                    r = bot.post("/api/trials", json=skipped_trial(ids, state["practice"][0], practice=True), headers=headers)
                    assert r.status_code == 201
                assert time.monotonic() - t0 < 30
                states[pid] = bot.get(f"/api/participants/paid/{pid}", headers=headers).json()
    finally:
        server.stop()
    # bot-1: the practice trial is required; bot-2: all required trials, but no effort in them.
    assert states["bot-1"]["completed"] is False and states["bot-1"]["completion_code"] is None
    assert states["bot-2"]["completed"] is True and states["bot-2"]["completion_code"] is None
    assert "21 of 21 drawings were skipped or barely played" in states["bot-2"]["completion_refused"]


def test_participant_flooding_from_one_address_is_limited(stimuli, tmp_path):
    server = ServerProcess(stimuli, str(tmp_path / "c.sqlite3"), tmp_path / "server.log", "--trials", "2",
                           "--practice", "0").start()
    try:
        with client_from(server, "127.0.0.7") as flood, client_from(server, "127.0.0.8") as honest:
            answers = [flood.post("/api/participants", json={"study_id": "s", "participant_id": f"fake-{k}", "consent": True})
                       for k in range(30)]
            codes = Counter(r.status_code for r in answers)
            assert codes[200] == JOIN_BURST and codes[429] == 30 - JOIN_BURST, codes
            assert int(next(r for r in answers if r.status_code == 429).headers["retry-after"]) >= 1
            # Big partner queries from the fake participants, all at once: each costs 5 tokens (3,000 points).
            # Their own buckets would let 4 + 4/s through each (40+ in all); the address's (40, then 20 a
            # second) lets (40 + 20 t) / 5 through, whichever participant asks.
            from concurrent.futures import ThreadPoolExecutor

            big = [[k % 256, k // 256, k] for k in range(3000)]
            fakes = [r.json() for r in answers if r.status_code == 200]

            def ask(fake):
                return flood.post("/api/partner", headers={TOKEN: fake["participant_token"]},
                                  json={"study_id": "s", "participant_id": fake["participant_id"], "trial_id": str(uuid.uuid4()),
                                        "stimulus_id": fake["trials"][0]["stimulus_id"], "points": big}).status_code

            t0 = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                partner = Counter(pool.map(ask, fakes * 6))
            elapsed = time.monotonic() - t0
            limit = (PARTNER_BURST + PARTNER_RATE * elapsed) / 5
            assert partner[200] <= limit + 1 and partner[429] == 60 - partner[200], (partner, elapsed)
            # Another address still starts, and its partner answers.
            r = honest.post("/api/participants", json={"study_id": "s", "participant_id": "real-1", "consent": True})
            assert r.status_code == 200
            state = r.json()
            r = honest.post("/api/partner", headers={TOKEN: state["participant_token"]},
                            json={"study_id": "s", "participant_id": "real-1", "trial_id": str(uuid.uuid4()),
                                  "stimulus_id": state["trials"][0]["stimulus_id"], "points": [[5, 5, 0]]})
            assert r.status_code == 200
    finally:
        server.stop()


def test_limits_are_set_from_the_command_line(stimuli, tmp_path, cli):
    # a lab behind one router: more starts per address than the default burst of 10
    server = ServerProcess(stimuli, str(tmp_path / "c.sqlite3"), tmp_path / "server.log", "--trials", "2",
                           "--practice", "0", "--limit", "address-join=0.01/13").start()
    try:
        with client_from(server, "127.0.0.9") as lab:
            codes = Counter(lab.post("/api/participants", json={"study_id": "s", "participant_id": f"lab-{k}", "consent": True}
                                     ).status_code for k in range(16))
        assert codes == {200: 13, 429: 3}, codes
    finally:
        server.stop()
    for bad, says in (("address-join", "expected NAME=RATE/BURST with NAME one of partner, address-partner,"),
                      ("per-minute=1/2", "with NAME one of"), ("total-join=0/5", "expected RATE/BURST for total-join"),
                      ("partner=5", "got '5'"), ("partner=5/0", "a bucket of at least 1"), ("partner=nan/3", "got 'nan/3'")):
        r = cli("clickme", "serve", stimuli, "--db", tmp_path / "bad.sqlite3", "--limit", bad)
        assert r.code == 2 and r.err.startswith("drawgap: error: --limit: ") and says in r.err, (bad, r.err)
        assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.sqlite3").exists()


def descendants(pid: int) -> set[int]:
    found = set()
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return found
    for child in map(int, children):
        found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_sigkill_of_the_multi_worker_server_then_restart_on_the_same_port(stimuli, tmp_path):
    db = str(tmp_path / "c.sqlite3")
    server = ServerProcess(stimuli, db, tmp_path / "server.log", "--workers", "2", "--trials", "2", "--practice", "0").start()
    limits = None
    try:
        state = httpx.post(f"{server.url}/api/participants", json={"study_id": "s", "participant_id": "p", "consent": True}).json()
        workers = descendants(server.proc.pid)
        assert len(workers) >= 2
        server.kill(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers), "the workers outlived their killed parent"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=2.0)
        from drawgap.clickme.processes import rate_limit_path

        limits = rate_limit_path("127.0.0.1", server.port)
        stale = limits.stat().st_ino  # left by the killed server: the restart replaces it, not adds one
        server.start()  # the same port
        assert limits.is_file() and limits.stat().st_ino != stale
        assert len(list(limits.parent.glob(f"rate-limits-127.0.0.1-{server.port}*"))) == 1
        r = httpx.get(f"{server.url}/api/participants/s/p", headers={TOKEN: state["participant_token"]})
        assert r.status_code == 200 and r.json()["trials"] == state["trials"]
    finally:
        server.stop()
    assert limits is not None and not limits.exists()  # a server stopped normally removes it


def test_port_in_use_is_refused_before_a_database_is_made(stimuli, tmp_path, cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("clickme", "serve", stimuli, "--db", tmp_path / "new.sqlite3", "--port", port)
    assert r.code == 2 and f"port {port} on 127.0.0.1 is already in use" in r.err and "Traceback" not in r.err
    assert list(tmp_path.iterdir()) == []  # no database, no -wal, nothing


def test_database_files_are_readable_by_their_owner_only(tmp_path):
    from sqlalchemy import text

    from drawgap.clickme.db import make_engine

    old = os.umask(0o022)
    try:
        engine = make_engine(tmp_path / "c.sqlite3")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO settings (key, value) VALUES ('x', '{}')"))
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
        engine.dispose()
    finally:
        os.umask(old)
    assert modes == {"c.sqlite3": "0o600", "c.sqlite3-wal": "0o600", "c.sqlite3-shm": "0o600"}


@pytest.mark.slow
def test_a_slow_request_body_times_out(stimuli, tmp_path):
    server = ServerProcess(stimuli, str(tmp_path / "c.sqlite3"), tmp_path / "server.log").start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"POST /api/trials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"trial_id\": ")
            started = time.monotonic()
            answer = sock.recv(4096)
            waited = time.monotonic() - started
            while chunk := sock.recv(4096):  # the headers and the body may come in separate packets
                answer += chunk
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 10 s" in answer  # the default
    assert 9 < waited < 20


def test_the_participant_cache_is_bounded(stimuli, tmp_path):
    from drawgap.clickme.db import make_engine
    from drawgap.clickme.stimuli import load_stimuli
    from drawgap.clickme.store import ClickMeStore

    store = ClickMeStore(make_engine(tmp_path / "c.sqlite3"), load_stimuli(stimuli),
                         GameConfig(trials_per_participant=2, max_cached_participants=3))
    store.sync_stimuli()
    made = [store.create_participant("s", f"p{k}") for k in range(6)]
    assert len(store._participants) == 3
    assert store.cached_participant("s", "p0") is None and store.cached_participant("s", "p5") is not None
    info = store.authenticate("s", "p0", made[0][1])  # evicted, read back from the database
    assert info.trials == made[0][0].trials and len(store._participants) == 3


def test_an_empty_address_bucket_refuses_before_the_body_is_read():
    """EarlyRefusal (outermost middleware): once an address's bucket is empty its next POST gets 429 without
    the body being read (`receive` never called) or the route run; other addresses and routes pass through,
    and a look spends no token."""
    import asyncio

    from drawgap.clickme.security import EarlyRefusal, RateLimiter

    limiter = RateLimiter({"address_partner": (1e-9, 2.0)})  # two tokens, (practically) no refill
    reached = []

    async def route(scope, receive, send):
        reached.append(scope["client"][0])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = EarlyRefusal(route, limiter, {"/api/partner": ("partner queries from this address", lambda a: [("address_partner", a)])})

    def post(host: str, path: str = "/api/partner") -> tuple[int, dict]:
        sent = []

        async def never_read():
            raise AssertionError("the body was read")

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "client": (host, 5000), "headers": []}
        try:
            asyncio.run(app(scope, never_read, send))
        except AssertionError:
            pass  # the route (a stand-in) does not read bodies either; only a refusal must not
        start = sent[0]
        return start["status"], dict(start["headers"])

    assert post("127.0.0.9")[0] == 200 and post("127.0.0.9")[0] == 200  # looking spends nothing ...
    assert limiter.acquire([("address_partner", "127.0.0.9")], 2.0) == 0.0  # ... the route spends: here, all of it
    status, headers = post("127.0.0.9")
    assert status == 429 and int(headers[b"retry-after"]) >= 1 and reached == ["127.0.0.9"] * 2
    assert post("127.0.0.10")[0] == 200 and post("127.0.0.9", "/api/trials")[0] == 200  # other address, route
