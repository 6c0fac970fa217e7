"""Simulated participants: HTTP clients that play the game as the page does (for load and fault tests).

Each one starts (or resumes) a session, keeping the token the server gives it for every later request,
plays the practice trials and then each of its stimuli: paints a random walk of points, asks the partner
every `points_per_query` points, and submits the trial. Like the page, it keeps a finished trial
until the server acknowledges it and re-sends it with the same trial id after any failure; after a lost
connection it "reloads": re-sends the pending trial, then asks the server where to resume.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class Pace:
    """Timing of a simulated participant. Zeros: as fast as the server answers."""

    view_s: tuple[float, float] = (0.0, 0.0)  # reading the category and pressing Start, uniform range
    point_ms: float = 0.0  # real time per painted point (10 ms in the game)
    points: tuple[int, int] = (20, 60)  # painted points per trial unless recognized first, uniform range


@dataclass
class ParticipantLog:
    study_id: str
    participant_id: str
    acknowledged: dict = field(default_factory=dict)  # trial id -> (position, n_points)
    duplicates: int = 0  # submissions answered "already stored"
    partner_ms: list = field(default_factory=list)  # round-trip latency of each answered partner query
    partner_server_ms: list = field(default_factory=list)  # the server's part of it (Server-Timing "app")
    partner_refused: int = 0  # 429 answers
    submit_ms: list = field(default_factory=list)  # time from sending a trial to its acknowledgement
    reconnects: int = 0
    resume_checks: list = field(default_factory=list)  # (expected next trial, server's next trial) per reload
    completion_code: str | None = None
    completion_refused: str | None = None


class SimulatedParticipant:
    def __init__(self, client: httpx.AsyncClient, study_id: str, participant_id: str, *, seed: int, pace: Pace | None = None,
                 retry_for_s: float = 120.0):
        self.client = client
        self.ids = {"study_id": study_id, "participant_id": participant_id}
        self.rng = np.random.default_rng(seed)
        self.pace = pace or Pace()
        self.retry_for_s = retry_for_s
        self.log = ParticipantLog(study_id, participant_id)
        self.pending: dict | None = None
        self.state: dict | None = None
        self.token: str | None = None  # the participant's secret, from the server's answer to the start
        self._reloaded = False

    async def _call(self, method: str, path: str, body: dict | None = None, retry: bool = True) -> httpx.Response:
        """One request; with `retry`, connection failures and 5xx are retried (with backoff) until the
        deadline, and the participant then reloads (pending trial first, then the state)."""
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.05
        failed = False
        while True:
            try:
                resp = await self.client.request(method, path, json=body, headers=self._headers())
                if resp.status_code == 429 and retry and time.monotonic() < deadline:
                    await asyncio.sleep(float(resp.headers.get("retry-after", 1)))  # too many starts just now
                    continue
                if resp.status_code < 500:
                    if failed:
                        await self._reload_after_failure()
                    return resp
            except httpx.TransportError:
                pass
            if not retry or time.monotonic() > deadline:
                raise ConnectionError(f"{method} {path}: no answer after {self.retry_for_s} s")
            failed = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _headers(self) -> dict:
        return {"x-participant-token": self.token} if self.token else {}

    async def _reload_after_failure(self) -> None:
        self.log.reconnects += 1
        self._reloaded = True
        self.state = None  # the page reloads: it forgets everything but the pending trial

    async def _ensure_state(self) -> dict:
        while self.state is None:
            if self.pending is not None:
                await self._submit(self.pending)
                continue
            expected = len(self.log.acknowledged)
            self._reloaded = False
            if self.token is None:
                resp = await self._call("POST", "/api/participants", {**self.ids, "consent": True})
            else:
                resp = await self._call("GET", f"/api/participants/{self.ids['study_id']}/{self.ids['participant_id']}")
            resp.raise_for_status()
            data = resp.json()
            self.token = data.pop("participant_token", None) or self.token
            if self._reloaded:
                continue  # the connection failed on the way: reload again
            self.state = data
            if self.log.reconnects:  # a reload: the server must resume right after the acknowledged trials
                self.log.resume_checks.append((expected, self.state["next_trial"]))
        return self.state

    async def _submit(self, body: dict) -> None:
        self.pending = body
        self._reloaded = False
        sent = time.perf_counter()
        resp = await self._call("POST", "/api/trials", body)
        self.log.submit_ms.append((time.perf_counter() - sent) * 1000)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"trial refused: {resp.status_code} {resp.text}")
        data = resp.json()
        if data["duplicate"]:
            self.log.duplicates += 1
        self.log.acknowledged[body["trial_id"]] = (body["position"], len(body["points"]))
        self.pending = None
        self.state = None if self._reloaded else data

    def _walk(self, n: int, size: int) -> np.ndarray:
        start = self.rng.integers(size // 4, 3 * size // 4, size=2)
        steps = self.rng.integers(-5, 6, size=(n, 2))
        return np.clip(start + np.cumsum(steps, axis=0), 0, size - 1)

    async def play(self, max_trials: int | None = None) -> ParticipantLog:
        """Play trials until the sequence is done (or `max_trials` more have been stored)."""
        played = 0
        while True:
            state = await self._ensure_state()
            if state["next_practice"] < len(state["practice"]):  # as the page: the practice trials first
                await self._play_trial(state["practice"][state["next_practice"]], state["config"], practice=True)
                continue
            if state["next_trial"] >= len(state["trials"]) or (max_trials is not None and played >= max_trials):
                self.log.completion_code = state.get("completion_code")
                self.log.completion_refused = state.get("completion_refused")
                return self.log
            item = state["trials"][state["next_trial"]]
            await self._play_trial(item, state["config"])
            played += 1

    async def _play_trial(self, item: dict, config: dict, practice: bool = False) -> None:
        pace = self.pace
        if pace.view_s[1] > 0:
            await asyncio.sleep(float(self.rng.uniform(*pace.view_s)))
        trial_id = str(uuid.uuid4())
        n_points = int(self.rng.integers(pace.points[0], pace.points[1] + 1))
        xy = self._walk(n_points, config["canvas_size"])
        step_ms = max(1.0, pace.point_ms)
        points = [[int(x), int(y), int(round(i * step_ms))] for i, (x, y) in enumerate(xy)]
        limit_ms = int(config["time_limit_s"] * 1000)
        points = [p for p in points if p[2] <= limit_ms]
        answers, outcome, score, end_ms = [], "timeout", 0.0, limit_ms
        every = config["points_per_query"]
        t0 = time.monotonic()
        for k in range(every, len(points) + 1, every):
            if pace.point_ms > 0:
                await asyncio.sleep(max(0.0, points[k - 1][2] / 1000 - (time.monotonic() - t0)))
            sent = time.perf_counter()
            try:
                resp = await self.client.post("/api/partner", headers=self._headers(),
                                              json={**self.ids, "trial_id": trial_id, "stimulus_id": item["stimulus_id"],
                                                    "points": points[:k]})
            except httpx.TransportError:
                continue  # like the page: a lost answer only delays the partner
            if resp.status_code == 429:
                self.log.partner_refused += 1
                continue
            if resp.status_code != 200:
                continue
            self.log.partner_ms.append((time.perf_counter() - sent) * 1000)
            timing = dict(part.strip().split(";dur=") for part in resp.headers.get("server-timing", "").split(",") if ";dur=" in part)
            if "app" in timing:
                self.log.partner_server_ms.append(float(timing["app"]))
            answer = resp.json()
            t = points[k - 1][2]
            answers.append({"n_points": k, "t": t, "guess": answer["guess"], "correct": answer["correct"],
                            **({"proof": answer["proof"]} if "proof" in answer else {})})
            if answer["correct"]:
                outcome, score, end_ms, points = "recognized", round(max(0.0, 1 - t / limit_ms) * 100, 1), t, points[:k]
                break
        if outcome == "timeout":
            # It ran out of points, not of time: claim the time it took (the server checks that the claimed
            # durations fit in the session), not the time limit.
            end_ms = min(limit_ms, max(points[-1][2] if points else 0, int((time.monotonic() - t0) * 1000)))
        if outcome == "timeout" and self.rng.random() < 0.1:
            outcome, end_ms = "skipped", points[-1][2] if points else 0
        body = {**self.ids, "trial_id": trial_id, "practice": practice, "position": item["position"],
                "stimulus_id": item["stimulus_id"], "points": points, "partner": answers, "outcome": outcome,
                "score": score, "duration_ms": max(end_ms, points[-1][2] if points else 0)}
        await self._submit(body)
