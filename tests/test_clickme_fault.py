"""Fault test: the server process is killed with SIGKILL while simulated participants play; after a restart
every trial the server had acknowledged is in the database exactly once, every participant resumes right
after its last acknowledged trial, and all of them finish with complete, gap-free sequences. On SQLite and
on PostgreSQL (a throwaway server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import create_engine, text

from drawgap.clickme.db import normalize_url
from drawgap.clickme.simulate import Pace, SimulatedParticipant
from drawgap.clickme.testing import ServerProcess, TemporaryPostgres, make_test_stimuli

N_PARTICIPANTS, N_TRIALS, KILL_AFTER = 8, 5, 12


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "clickme.sqlite3")
        return
    if TemporaryPostgres.find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does it)")
    postgres = TemporaryPostgres().start()
    try:
        yield postgres.create_database(f"f_{uuid.uuid4().hex[:12]}")
    finally:
        postgres.stop()


@pytest.mark.slow
def test_sigkill_mid_run_loses_and_duplicates_nothing(tmp_path, db_url):
    stimuli = make_test_stimuli(tmp_path, n_classes=4, per_class=8, per_category=5, practice=0)
    # The simulated participants play fast (1 ms a point) and skip at random: effort is not what is tested here.
    server = ServerProcess(stimuli, db_url, tmp_path / "server.log", "--trials", str(N_TRIALS), "--practice", "0",
                           "--min-trial-ms", "0", "--max-skipped", "1").start()

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
            sims = [SimulatedParticipant(client, "fault", f"p{k}", seed=k, pace=Pace(points=(15, 40)), retry_for_s=90)
                    for k in range(N_PARTICIPANTS)]
            tasks = [asyncio.create_task(s.play()) for s in sims]
            while sum(len(s.log.acknowledged) for s in sims) < KILL_AFTER:
                await asyncio.sleep(0.005)
            server.kill(signal.SIGKILL)
            acked_before_kill = {tid for s in sims for tid in s.log.acknowledged}
            await asyncio.to_thread(server.start)
            logs = await asyncio.gather(*tasks)
            return logs, acked_before_kill

    try:
        logs, acked_before_kill = asyncio.run(run())
    finally:
        server.stop()

    assert len(acked_before_kill) >= KILL_AFTER
    assert sum(log.reconnects for log in logs) >= 1, "the kill interrupted nobody"
    engine = create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        stored = {tid: (pid, pos, n) for tid, pid, pos, n in conn.execute(text(
            "SELECT t.id, p.participant_id, t.position, t.n_points FROM trials t JOIN participants p ON p.pk = t.participant_pk"))}
        clicks = Counter(tid for (tid,) in conn.execute(text("SELECT trial_id FROM clicks")))
    engine.dispose()
    for log in logs:
        # Every reload resumed right after the trials the server had acknowledged.
        assert all(expected == got for expected, got in log.resume_checks), log.resume_checks
        assert len(log.acknowledged) == N_TRIALS and log.completion_code
        positions = sorted(stored[tid][1] for tid in log.acknowledged)
        assert positions == list(range(N_TRIALS))
        for tid, (position, n_points) in log.acknowledged.items():
            assert stored[tid] == (log.participant_id, position, n_points)
            assert clicks[tid] == n_points
    assert acked_before_kill <= set(stored)
    assert len(stored) == N_PARTICIPANTS * N_TRIALS  # nothing beyond the acknowledged trials, nothing twice
    assert sum(clicks.values()) == sum(n for _, _, n in stored.values())


@pytest.mark.slow
def test_worker_processes_share_each_participants_partner_budget(tmp_path):
    # `serve --workers 2`: requests on fresh connections spread over both processes; the rate limit is one
    # budget for the participant (burst 20, then 20 per second), not one per process (which allows 40 at once).
    import time

    stimuli = make_test_stimuli(tmp_path, n_classes=4, per_class=8, per_category=5, practice=0)
    server = ServerProcess(stimuli, str(tmp_path / "clickme.sqlite3"), tmp_path / "server.log", "--workers", "2",
                           "--trials", "3", "--practice", "0").start()
    ids = {"study_id": "w", "participant_id": "p1"}
    try:
        state = httpx.post(f"{server.url}/api/participants", json={**ids, "consent": True}).json()
        body = {**ids, "trial_id": str(uuid.uuid4()), "stimulus_id": state["trials"][0]["stimulus_id"], "points": [[5, 5, 0]]}

        async def burst(n):
            limits = httpx.Limits(max_keepalive_connections=0)  # a new connection, and so any worker, each time
            async with httpx.AsyncClient(base_url=server.url, timeout=30.0, limits=limits,
                                         headers={"x-participant-token": state["participant_token"]}) as client:
                return await asyncio.gather(*[client.post("/api/partner", json=body) for _ in range(n)])

        started = time.monotonic()
        codes = Counter(r.status_code for r in asyncio.run(burst(60)))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert set(codes) <= {200, 429} and codes[200] >= 20
    assert codes[200] <= 20 + 20 * elapsed + 1, (codes, elapsed)
