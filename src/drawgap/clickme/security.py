"""The server's guards: body size and time limits, security headers (CSP), rate limits per participant, per
client address and for the whole server (shared by the server's processes), participant tokens, admin token.

A participant gets a secret token when created (the page's own, proposed with the start when it is as strong
as `new_participant_token`'s, so that a start whose answer was lost can be retried; else a new one; the
database keeps only its sha256) and sends it with every later request as `X-Participant-Token`: knowing a participant's id (it is in
the study link) is not enough to read their state, submit their trials, ask their partner or see their
completion code.

Admin routes (status, export) need the token given at start (`--admin-token` or the environment variable
DRAWGAP_CLICKME_ADMIN_TOKEN) as `Authorization: Bearer <token>`, compared in constant time. With no token set
(the default) they are disabled: they answer 404 and say how to enable them, so a forgotten setting never
leaves the data open.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import ipaddress
import json
import mmap
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# No inline scripts or event handlers anywhere (script-src 'self' only). jsPsych's plugins write `style="..."`
# attributes into their markup, so inline style *attributes* are allowed; <style> elements are not.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",  # jspsych.css embeds its font as a data: URL
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               *SECURITY_HEADERS, *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """ASGI middleware: refuses bodies over `max_body_bytes` with 413 (declared or streamed) and bodies that
    take longer than `body_timeout_s` to arrive with 408 (a client trickling bytes would hold a connection and
    its memory for ever: uvicorn has no body timeout), adds the security headers to every response and
    `cache-control: no-store` to API answers. Pure ASGI, so a too-large body is never held in memory beyond
    the limit."""

    def __init__(self, app, max_body_bytes: int, body_timeout_s: float = 10.0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        too_large = {"detail": f"request body too large: at most {limit} bytes"}
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return await _send_json(send, 413, too_large)
            except ValueError:
                return await _send_json(send, 400, {"detail": "invalid Content-Length header"})
        arrived = time.perf_counter()
        # Read the whole body first (it is small by construction), counting: a body streamed without a
        # Content-Length is refused as soon as it passes the limit, before any route sees it.
        chunks, received = [], 0
        deadline = arrived + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.perf_counter()))
            except asyncio.TimeoutError:
                return await _send_json(send, 408, {"detail": f"request body not received within {self.body_timeout_s:g} s"},
                                        [(b"connection", b"close")])
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > limit:
                return await _send_json(send, 413, too_large)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def buffered_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        api = scope.get("path", "").startswith("/api/")

        async def secured_send(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [h for h in SECURITY_HEADERS if h[0] not in names]
                if api and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                # Server-Timing "app": the whole request inside the server, body read to answer (for load tests).
                app_timing = f"app;dur={(time.perf_counter() - arrived) * 1000:.1f}".encode()
                timing = [v for k, v in headers if k.lower() == b"server-timing"]
                headers = [(k, v) for k, v in headers if k.lower() != b"server-timing"]
                extra.append((b"server-timing", b", ".join([*timing, app_timing])))
                message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, buffered_receive, secured_send)


class EarlyRefusal:
    """ASGI middleware, outermost: a POST to a rate-limited route whose address (or server) bucket is already
    empty gets its 429 before its body is read, parsed or validated. A flood of starts, or of 3,000-point
    partner queries, from one address then costs the server a header lookup each instead of a JSON parse (the
    route still spends the exact tokens of a request that passes: this only looks)."""

    def __init__(self, app, limiter, routes: dict):
        # routes: path -> (what, buckets(address) -> [Bucket])
        self.app, self.limiter, self.routes = app, limiter, routes

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if route is not None:
            what, buckets = route
            host = (scope.get("client") or (None, None))[0]
            wait = self.limiter.acquire(buckets(client_address(host)), 1.0, spend=False)
            if wait > 0:
                return await _send_json(send, 429, {"detail": f"too many {what}: try again in a moment"},
                                        [(b"retry-after", str(max(1, round(wait))).encode())])
        return await self.app(scope, receive, send)


def _refill(tokens: float, last: float, now: float, rate: float, burst: float) -> float:
    return min(burst, tokens + max(0.0, now - last) * rate)


def _wait(tokens: float, cost: float, rate: float, burst: float) -> float:
    """Seconds until a bucket holding `tokens` holds `cost` (capped at the bucket's size): 0.0 when it does."""
    need = min(cost, burst)
    return 0.0 if tokens >= need else (need - tokens) / rate


Bucket = tuple[str, "str | None"]  # (limit name, key); key None: the limit's one bucket for the whole server


class RateLimiter:
    """Token buckets: for each named limit (rate, burst), one bucket per key, `rate` tokens per second on
    average and at most `burst` at once. `acquire` takes a request's tokens from several buckets at once
    (its participant's, its address's, the server's), all or none, so a refused request spends nothing."""

    def __init__(self, limits: dict[str, tuple[float, float]], max_keys: int = 100_000):
        self.limits = {name: (float(rate), float(burst)) for name, (rate, burst) in limits.items()}
        self.max_keys = max_keys
        self._buckets: dict[Bucket, tuple[float, float]] = {}  # (limit, key) -> (tokens, last refill time)
        self._lock = threading.Lock()

    def acquire(self, buckets: list[Bucket], cost: float = 1.0, now: float | None = None, spend: bool = True) -> float:
        """0.0 when allowed (`cost` tokens spent from every bucket, unless `spend` is False: a look only), else
        the seconds to wait (nothing spent)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            levels = []
            for bucket in buckets:
                rate, burst = self.limits[bucket[0]]
                tokens, last = self._buckets.get(bucket, (burst, now))
                levels.append(_refill(tokens, last, now, rate, burst))
            wait = max((_wait(t, cost, *self.limits[b[0]]) for b, t in zip(buckets, levels)), default=0.0)
            if wait == 0.0 and spend:
                for bucket, tokens in zip(buckets, levels):
                    self._buckets[bucket] = (tokens - min(cost, self.limits[bucket[0]][1]), now)
            if len(self._buckets) > self.max_keys:  # forget full buckets: they hold no state worth keeping
                full = [b for b, (t, seen) in self._buckets.items()
                        if _refill(t, seen, now, *self.limits[b[0]]) >= self.limits[b[0]][1]]
                for b in full:
                    del self._buckets[b]
            return wait


class SharedRateLimiter:
    """`RateLimiter`'s buckets in a memory-mapped file that every server process maps, so that
    `serve --workers N` gives a participant (an address, the server) the budget one process gives (a limiter
    per process would allow N times the rate, as requests spread over the processes).

    The first rows hold the whole-server buckets, one per limit; keyed buckets hash (blake2b of the limit's
    name and the key: the same in every process, unlike `hash`) into the rest; two keys that share a row only
    ever get a stricter limit. `flock` on the file serializes updates across processes, a threading lock
    across one process's threads. The file is made once by `create` (before the workers start; a restart
    overwrites it) and then only mapped.
    """

    SLOTS = 1 << 16  # 1 MiB of buckets

    def __init__(self, path: str | os.PathLike, limits: dict[str, tuple[float, float]]):
        self.path = Path(path)
        self.limits = {name: (float(rate), float(burst)) for name, (rate, burst) in limits.items()}
        self._names = sorted(self.limits)  # the whole-server rows, in this order
        self._file = open(self.path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), 0)
        self._buckets = np.frombuffer(self._map, dtype=np.float64).reshape(-1, 2)  # (tokens, last refill)
        if len(self._buckets) <= len(self._names):
            raise ValueError(f"{self.path}: {len(self._buckets)} buckets, expected more than {len(self._names)}")
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: str | os.PathLike, limits: dict[str, tuple[float, float]], slots: int = SLOTS) -> "SharedRateLimiter":
        """A new file at `path` (written beside it, then renamed: a process still mapping an old file keeps it)."""
        path = Path(path)
        buckets = np.empty((slots, 2), np.float64)
        buckets[:, 0], buckets[:, 1] = np.inf, -np.inf  # full (refill caps at each limit's burst), refilled "long ago"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                buckets.tofile(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return cls(path, limits)

    def _slot(self, bucket: Bucket) -> int:
        name, key = bucket
        if key is None:
            return self._names.index(name)
        digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
        reserved = len(self._names)
        return reserved + int.from_bytes(digest, "little") % (len(self._buckets) - reserved)

    def acquire(self, buckets: list[Bucket], cost: float = 1.0, now: float | None = None, spend: bool = True) -> float:
        """0.0 when allowed (`cost` tokens spent from every bucket, unless `spend` is False: a look only), else
        the seconds to wait (nothing spent)."""
        now = time.monotonic() if now is None else now  # CLOCK_MONOTONIC: one clock for all processes
        slots = [self._slot(b) for b in buckets]
        with self._lock:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                levels = [_refill(float(self._buckets[s, 0]), float(self._buckets[s, 1]), now, *self.limits[b[0]])
                          for s, b in zip(slots, buckets)]
                wait = max((_wait(t, cost, *self.limits[b[0]]) for b, t in zip(buckets, levels)), default=0.0)
                if wait == 0.0 and spend:
                    for s, b, tokens in zip(slots, buckets, levels):
                        self._buckets[s] = (tokens - min(cost, self.limits[b[0]][1]), now)
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        return wait

    def close(self) -> None:
        del self._buckets  # the array's view of the map must go before the map
        self._map.close()
        self._file.close()


def client_address(host: str | None) -> str:
    """The rate-limit key of a client address: the address itself, or its /64 network for IPv6 (one
    household or server gets a whole /64, so single IPv6 addresses cost an attacker nothing)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


PARTICIPANT_TOKEN_HEADER = "x-participant-token"


def new_participant_token() -> str:
    """A participant's secret: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


# A token the page proposes for a new participant: as long as ours (256 bits as URL-safe base64 at least) and
# of the same alphabet, so that it is as hard to guess.
_PROPOSED_TOKEN = re.compile(r"[A-Za-z0-9_-]{43,128}")


def acceptable_proposed_token(token: str | None) -> bool:
    """Whether the page's own token for a participant it is starting can be theirs: a page that proposes one
    can retry a start whose answer was lost (the retry carries it), where a server-made token would be lost
    with that answer and the participant locked out."""
    return bool(token) and _PROPOSED_TOKEN.fullmatch(token) is not None


def token_digest(token: str) -> str:
    """What the database keeps of a participant token (sha256 hex: the token is random, so no slow hash is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def digest_matches(expected_digest: str, token: str | None) -> bool:
    """Whether `token` hashes to `expected_digest` (constant-time comparison)."""
    return bool(token) and hmac.compare_digest(token_digest(token), expected_digest)


def recognition_proof(key: bytes, study_id: str, participant_id: str, trial_id: str, stimulus_id: str,
                      n_points: int, guess: str) -> str:
    """The server's signature on "the partner recognized this drawing from these first `n_points` points of
    this trial": the page returns it with the trial, so a recognition (and its score) cannot be made up."""
    message = "\0".join([study_id, participant_id, str(trial_id), stimulus_id, str(n_points), guess]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries `expected` (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
