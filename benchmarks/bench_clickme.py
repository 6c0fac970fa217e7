"""Load benchmark of the ClickMe server, on loopback only: N simulated participants play T trials each,
concurrently, against one `drawgap clickme serve` process; then the database is checked.

Prints: trials acknowledged, lost and duplicated (from the database), the partner's latency (client-side
round trip: p50/p95/p99/max), trial submission latency, and throughput (trials, partner queries, points per
second). Exits 1 when a trial was lost or duplicated, or the partner's p95 is 100 ms or more.

Pace "human" (default): before each drawing 0.5-1.5 s to read the category and press Start, then one painted
point every 10 ms (the game's sampling) for 30-120 points, the partner asked every 10 points, as in the
original game. Pace "none": no waiting at all (a stress test, not a model of people).

Each honest participant connects from its own loopback address (127.0.1.k), as people on the internet do.
`--abusive N` adds an abusive client on 127.0.0.66 for the whole run: it starts fresh participants as fast as
the server lets it (up to N) and sends each one's partner 3,000-point queries in a tight loop; it prints what
the server let through. The PASS line is about the honest participants only.

    python benchmarks/bench_clickme.py                       # 50 participants x 20 trials, SQLite
    python benchmarks/bench_clickme.py --abusive 200         # ... beside an abusive client
    python benchmarks/bench_clickme.py --db postgresql       # a throwaway PostgreSQL server on 127.0.0.1
    python benchmarks/bench_clickme.py --stimuli DIR         # on stimuli of `drawgap clickme stimuli` (real drawings,
                                                             # a trained partner) instead of generated ones
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from drawgap.clickme.simulate import Pace, SimulatedParticipant
from drawgap.clickme.testing import ServerProcess, TemporaryPostgres, make_test_stimuli

PACES = {"human": Pace(view_s=(0.5, 1.5), point_ms=10.0, points=(30, 120)), "none": Pace(points=(30, 120))}


def stored_trials(db_url: str) -> list[tuple[str, str, int, int]]:
    """(trial id, participant, position, clicks) of every stored trial."""
    query = ("SELECT t.id, p.participant_id, t.position, (SELECT count(*) FROM clicks c WHERE c.trial_id = t.id) "
             "FROM trials t JOIN participants p ON p.pk = t.participant_pk")
    if db_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            return list(conn.execute(query).fetchall())
    with sqlite3.connect(db_url) as conn:
        return list(conn.execute(query).fetchall())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (uvicorn's workers)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += process_tree_cpu(int(child))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def honest_address(k: int) -> str:
    return f"127.0.{1 + k // 250}.{1 + k % 250}"


async def drive(url: str, ids: list[int], pace: Pace, max_seconds: float):
    clients = [httpx.AsyncClient(base_url=url, timeout=30.0, transport=httpx.AsyncHTTPTransport(local_address=honest_address(k)))
               for k in ids]
    try:
        sims = [SimulatedParticipant(c, "bench", f"p{k:03d}", seed=k, pace=pace, retry_for_s=30) for c, k in zip(clients, ids)]
        return await asyncio.wait_for(asyncio.gather(*(s.play() for s in sims)), timeout=max_seconds)
    finally:
        for c in clients:
            await c.aclose()


def drive_process(url: str, ids: list[int], pace_name: str, max_seconds: float):
    return asyncio.run(drive(url, ids, PACES[pace_name], max_seconds))


def drive_all(url: str, participants: int, pace_name: str, max_seconds: float, processes: int):
    """Participants split over `processes` client processes (one Python event loop cannot keep up with
    many chatty clients and would add its own delays to the latencies it measures)."""
    from concurrent.futures import ProcessPoolExecutor

    groups = [list(range(participants))[k::processes] for k in range(processes)]
    start = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(drive_process, [url] * processes, groups, [pace_name] * processes,
                                [max_seconds] * processes))
    return [log for logs in results for log in logs], time.perf_counter() - start


async def abuse(url: str, participants: int, stop_at: float) -> Counter:
    """Fresh participants as fast as the server allows, each asking its partner about 3,000 points in a loop."""
    big = [[k % 256, (k // 256) % 256, k] for k in range(3000)]
    counts: Counter = Counter()
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.66")
    async with httpx.AsyncClient(base_url=url, timeout=30.0, transport=transport) as client:
        async def one(k: int) -> None:
            ids = {"study_id": "abuse", "participant_id": f"fake{k:05d}"}
            while time.monotonic() < stop_at:
                r = await client.post("/api/participants", json={**ids, "consent": True})
                counts[f"start {r.status_code}"] += 1
                if r.status_code == 200:
                    state = r.json()
                    break
                await asyncio.sleep(0.2)
            else:
                return
            body = {**ids, "trial_id": str(uuid.uuid4()), "stimulus_id": state["trials"][0]["stimulus_id"], "points": big}
            while time.monotonic() < stop_at:
                r = await client.post("/api/partner", json=body, headers={"x-participant-token": state["participant_token"]})
                counts[f"partner {r.status_code}"] += 1
                if r.status_code == 429:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one(k) for k in range(participants)))
    return counts


def abuse_process(url: str, participants: int, seconds: float) -> Counter:
    # An attacker's client runs on its own machine. Here it shares the server's 2 cores, where at full speed
    # it takes most of one core from the server and the honest clients: at the lowest priority it still
    # sends as many requests as the server answers (printed), but no longer stands in for CPU they lose.
    os.nice(19)
    return asyncio.run(abuse(url, participants, time.monotonic() + seconds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=50)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--pace", choices=sorted(PACES), default="human")
    ap.add_argument("--db", default="sqlite", help="sqlite, postgresql (a throwaway local server) or a database URL")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    ap.add_argument("--client-processes", type=int, default=4, help="processes simulating the participants")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long")
    ap.add_argument("--abusive", type=int, default=0, help="fresh participants an abusive client tries to start")
    ap.add_argument("--abuse-seconds", type=float, default=60.0, help="how long the abusive client runs")
    ap.add_argument("--stimuli", type=Path, help="a stimuli folder written by `drawgap clickme stimuli` (default: 25 "
                    "generated categories x 10 drawings with a random-init partner)")
    args = ap.parse_args(argv)
    if not (1 <= args.participants <= 500 and 1 <= args.trials <= 100):
        ap.error("keep it bounded: 1..500 participants, 1..100 trials")

    with tempfile.TemporaryDirectory(prefix="bench-clickme-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        if args.stimuli is None:
            stimuli = make_test_stimuli(tmp, n_classes=25, per_class=12, per_category=10, practice=0)
            print(f"stimuli: 25 categories x 10 drawings (random-init ProtoNet partner, 48 px) in {time.perf_counter() - t:.1f} s")
        else:
            from drawgap.clickme.stimuli import load_stimuli

            stimuli, loaded = args.stimuli, load_stimuli(args.stimuli)
            print(f"stimuli: {args.stimuli}: {len(loaded.categories)} categories, {len(loaded.stimuli)} drawings; partner "
                  f"{loaded.manifest['critic']['source']} ({loaded.manifest['critic']['arch']}, {loaded.manifest['critic']['image_size']} px)")
        postgres = None
        if args.db == "sqlite":
            db_url = str(tmp / "clickme.sqlite3")
        elif args.db == "postgresql":
            postgres = TemporaryPostgres().start()
            db_url = postgres.create_database("bench")
        else:
            db_url = args.db
        server = ServerProcess(stimuli, db_url, tmp / "server.log", "--trials", str(args.trials), "--practice", "0",
                               "--torch-threads", str(args.torch_threads), "--workers", str(args.workers)).start()
        try:
            cpu_before = process_tree_cpu(server.proc.pid)
            load_before = os.getloadavg()[0]
            abuser = None
            if args.abusive:
                from concurrent.futures import ProcessPoolExecutor

                abuse_pool = ProcessPoolExecutor(1)
                abuser = abuse_pool.submit(abuse_process, server.url, args.abusive, args.abuse_seconds)
            logs, wall = drive_all(server.url, args.participants, args.pace, args.max_seconds, args.client_processes)
            abused = abuser.result() if abuser else None
            if abuser:
                abuse_pool.shutdown()
            server_cpu = process_tree_cpu(server.proc.pid) - cpu_before
            load_after = os.getloadavg()[0]
        finally:
            server.stop()
            rows = stored_trials(db_url)
            if postgres is not None:
                postgres.stop()

    acknowledged = {tid: (log.participant_id, pos, n) for log in logs for tid, (pos, n) in log.acknowledged.items()}
    stored = {tid: (pid, pos, n) for tid, pid, pos, n in rows}
    slots = [(pid, pos) for pid, pos, _ in stored.values()]
    lost = [tid for tid in acknowledged if tid not in stored]
    wrong = [tid for tid, v in acknowledged.items() if tid in stored and stored[tid] != v]
    duplicated = len(rows) - len(stored) + len(slots) - len(set(slots))
    extra = len(stored) - len(acknowledged)
    partner_ms = [ms for log in logs for ms in log.partner_ms]
    refused = sum(log.partner_refused for log in logs)
    points = sum(n for _, _, n in stored.values())
    expected = args.participants * args.trials

    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before / {load_after:.1f} after; server: {args.workers} "
          f"process(es), torch threads {args.torch_threads}; db: {args.db}; pace: {args.pace}; "
          f"{args.client_processes} client processes")
    print(f"trials: {len(acknowledged)}/{expected} acknowledged, {len(stored)} stored; lost {len(lost)}, "
          f"duplicated {duplicated}, mismatched {len(wrong)}, unacknowledged extra {extra}")
    print(f"partner: {len(partner_ms)} answers, {refused} rate-limited; latency ms p50 {percentile(partner_ms, 50):.1f} "
          f"p95 {percentile(partner_ms, 95):.1f} p99 {percentile(partner_ms, 99):.1f} max {max(partner_ms, default=float('nan')):.1f}")
    server_ms = [ms for log in logs for ms in log.partner_server_ms]
    print(f"partner, inside the server (body read to answer; Server-Timing app): ms p50 {percentile(server_ms, 50):.1f} "
          f"p95 {percentile(server_ms, 95):.1f} max {max(server_ms, default=float('nan')):.1f}")
    submit_ms = [ms for log in logs for ms in log.submit_ms]
    print(f"trial submission: latency ms p50 {percentile(submit_ms, 50):.1f} p95 {percentile(submit_ms, 95):.1f} "
          f"max {max(submit_ms, default=float('nan')):.1f}")
    print(f"throughput: {len(stored) / wall:.1f} trials/s, {len(partner_ms) / wall:.1f} partner queries/s, "
          f"{points / wall:.0f} points/s stored, wall {wall:.1f} s")
    requests = len(partner_ms) + len(submit_ms)
    print(f"server CPU: {server_cpu:.1f} s ({100 * server_cpu / wall:.0f}% of one core), "
          f"{1000 * server_cpu / max(requests, 1):.2f} ms per request")
    if abused is not None:
        print(f"abusive client (127.0.0.66, {args.abusive} fresh participants tried, 3,000-point partner queries, "
              f"{args.abuse_seconds:g} s): " + ", ".join(f"{k}: {v}" for k, v in sorted(abused.items())))
    ok = not lost and not duplicated and not wrong and len(stored) == expected and percentile(partner_ms, 95) < 100
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
