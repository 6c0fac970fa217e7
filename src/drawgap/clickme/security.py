"""The server's guards: body size limit, security headers (CSP), per-participant rate limit (shared by the
server's processes), admin token.

Admin routes (status, export) need the token given at start (`--admin-token` or the environment variable
DRAWGAP_CLICKME_ADMIN_TOKEN) as `Authorization: Bearer <token>`, compared in constant time. With no token set
(the default) they are disabled: they answer 404 and say how to enable them, so a forgotten setting never
leaves the data open.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import mmap
import os
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
    """ASGI middleware: refuses bodies over `max_body_bytes` with 413 (declared or streamed), adds the
    security headers to every response and `cache-control: no-store` to API answers. Pure ASGI, so a
    too-large body is never held in memory beyond the limit."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

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
        while True:
            message = await receive()
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


def _take_token(tokens: float, last: float, now: float, rate: float, burst: float) -> tuple[float, float]:
    """One request against a token bucket: (tokens left, seconds to wait: 0.0 when allowed)."""
    tokens = min(burst, tokens + (now - last) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


class RateLimiter:
    """Token bucket per key: `rate` requests per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000):
        self.rate, self.burst, self.max_keys = float(rate), float(burst), max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float | None = None) -> float:
        """0.0 when allowed (a token is spent), else the seconds to wait before the next token."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens, allowed = _take_token(tokens, last, now, self.rate, self.burst)
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:  # forget full buckets: they hold no state worth keeping
                full = [k for k, (t, seen) in self._buckets.items() if t + (now - seen) * self.rate >= self.burst]
                for k in full:
                    del self._buckets[k]
            return allowed


class SharedRateLimiter:
    """`RateLimiter`'s buckets in a memory-mapped file that every server process maps, so that
    `serve --workers N` gives a participant the budget one process gives (a limiter per process would allow
    N times the rate, as requests spread over the processes).

    Keys hash (blake2b: the same in every process, unlike `hash`) into a fixed number of buckets; two
    participants that share one only ever get a stricter limit. `flock` on the file serializes updates
    across processes, a threading lock across one process's threads. The file is made once by `create`
    (before the workers start) and then only mapped.
    """

    SLOTS = 1 << 16  # 1 MiB of buckets

    def __init__(self, path: str | os.PathLike, rate: float, burst: int):
        self.path, self.rate, self.burst = Path(path), float(rate), float(burst)
        self._file = open(self.path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), 0)
        self._buckets = np.frombuffer(self._map, dtype=np.float64).reshape(-1, 2)  # (tokens, last refill)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: str | os.PathLike, rate: float, burst: int, slots: int = SLOTS) -> "SharedRateLimiter":
        buckets = np.empty((slots, 2), np.float64)
        buckets[:, 0], buckets[:, 1] = burst, -np.inf  # full, refilled "long ago"
        buckets.tofile(path)
        return cls(path, rate, burst)

    def _slot(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % len(self._buckets)

    def acquire(self, key: str, now: float | None = None) -> float:
        """0.0 when allowed (a token is spent), else the seconds to wait before the next token."""
        now = time.monotonic() if now is None else now  # CLOCK_MONOTONIC: one clock for all processes
        slot = self._slot(key)
        with self._lock:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                tokens, last = self._buckets[slot]
                tokens, wait = _take_token(float(tokens), float(last), now, self.rate, self.burst)
                self._buckets[slot] = (tokens, now)
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        return wait

    def close(self) -> None:
        del self._buckets  # the array's view of the map must go before the map
        self._map.close()
        self._file.close()


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries `expected` (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
