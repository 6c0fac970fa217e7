"""The ClickMe server (FastAPI): the experiment page, the participant's sequence, the partner, the trials.

Routes
    GET  /                                   the experiment page (jsPsych; built from web/ into web/dist/)
    GET  /static/...                         the page's scripts and styles
    GET  /stimuli/<id>.png                   a stimulus
    GET  /api/consent                        the consent page's text (plain text: title, paragraphs, sha256)
    GET  /api/participants/<study>/<pid>     where a participant stands (404 if unknown): resume on reload  } token
    POST /api/participants                   start a participant after consent: answers its token (rate-limited)
    POST /api/partner                        the partner's guess from the points painted so far (rate-limited) } token
                                             {"guess": category, or null for "nothing yet", "probability",
                                              "correct", "n_points"[, "proof" when correct]}
    POST /api/trials                         store a finished trial (idempotent by trial id)                   } token
    GET  /api/admin/status                   progress per stimulus      } Bearer token; disabled without one
    GET  /api/admin/export                   the clicks file (.npz)     } (see security.py)
    GET  /healthz                            liveness

"token": the participant's secret, given once by POST /api/participants (`participant_token`: the one the page
proposed with the start as `X-Participant-Token` when it is strong enough, so that a lost answer can be retried),
sent with every later request for that participant as `X-Participant-Token` (security.py).

Errors are JSON `{"detail": "<why>"}`: 400 malformed JSON, 401/403 admin or participant token, 404 unknown
participant, 408 body too slow, 409 a trial that does not fit the participant's sequence or reuses a trial
id, or a start for ids already taken, 413 body too large, 422 a value out of range (with the field), 429 too
many partner queries or new participants (per participant, per client address or in total; with Retry-After).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import tempfile
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from drawgap.clickme.batcher import PartnerBatcher
from drawgap.clickme.config import GameConfig
from drawgap.clickme.db import make_engine, normalize_url
from drawgap.clickme.partner import Partner
from drawgap.clickme.processes import check_port_free, exit_with_parent, rate_limit_path
from drawgap.clickme.schemas import TIME_SLACK_MS, ParticipantIn, PartnerIn, TrialIn, point_problems, trial_problems
from drawgap.clickme.security import (PARTICIPANT_TOKEN_HEADER, EarlyRefusal, GuardMiddleware, RateLimiter, SharedRateLimiter,
                                      client_address, recognition_proof, token_matches)
from drawgap.clickme.status import stimulus_progress, totals
from drawgap.clickme.stimuli import load_stimuli
from drawgap.clickme.store import ClickMeStore, StoreError, TrialRecord
from drawgap.errors import InputError

PAGE_DIR = Path(__file__).parent / "web" / "dist"
SERVE_ENV = "DRAWGAP_CLICKME_SERVE"  # settings handed to worker processes
TOKEN_ENV = "DRAWGAP_CLICKME_ADMIN_TOKEN"
NOT_BUILT = "the experiment page is not built: run `make clickme-web` (npm ci && npm run build in src/drawgap/clickme/web)"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers or {}


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed JSON body"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(parts) + more


def create_app(stimuli_dir: str | os.PathLike, db: str | os.PathLike | None = None, *, config: GameConfig | None = None,
               admin_token: str | None = None, page_dir: str | os.PathLike | None = None, partner: Partner | None = None,
               limiter: RateLimiter | SharedRateLimiter | None = None) -> FastAPI:
    """The server for one stimuli directory and database. Everything that can fail on bad input (stimuli,
    partner, database, settings) is checked here, before the server listens."""
    config = config or GameConfig()
    stimuli = load_stimuli(stimuli_dir)
    if stimuli.canvas_size != config.canvas_size:
        config = GameConfig.from_dict({**config.to_dict(), "canvas_size": stimuli.canvas_size})
    partner = partner or Partner.load(stimuli_dir)
    engine = make_engine(db)
    store = ClickMeStore(engine, stimuli, config)
    store.sync_stimuli()
    batcher = PartnerBatcher(partner, config.brush_px, config.partner_max_batch, config.partner_nothing_yet)
    limiter = limiter or RateLimiter(config.rate_limits())
    page = Path(page_dir) if page_dir is not None else PAGE_DIR
    admin_token = admin_token or None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            engine.dispose()

    app = FastAPI(title="drawgap ClickMe", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.engine, app.state.config, app.state.partner = store, engine, config, partner
    app.add_middleware(GuardMiddleware, max_body_bytes=config.max_body_bytes, body_timeout_s=config.body_timeout_s)
    app.add_middleware(EarlyRefusal, limiter=limiter, routes={  # outermost: before the body is read
        "/api/participants": ("new participants", lambda a: [("address_join", a), ("total_join", None)]),
        "/api/partner": ("partner queries from this address", lambda a: [("address_partner", a)]),
    })

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_req, exc: RequestValidationError):
        status, message = _validation_message(exc)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(StoreError)
    async def _on_store(_req, exc: StoreError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(ApiError)
    async def _on_api(_req, exc: ApiError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    # ------------------------------------------------------------------------------------------ page

    @app.get("/", include_in_schema=False)
    def index():
        if not (page / "index.html").is_file():
            raise ApiError(503, NOT_BUILT)
        return FileResponse(page / "index.html", headers={"cache-control": "no-store"})

    if page.is_dir():
        app.mount("/static", StaticFiles(directory=page), name="static")

    known = stimuli.by_id()

    @app.get("/stimuli/{stimulus_id}.png", include_in_schema=False)
    def stimulus_png(stimulus_id: str):
        if stimulus_id not in known:
            raise ApiError(404, f"unknown stimulus {stimulus_id!r}")
        return FileResponse(stimuli.png_path(stimulus_id), media_type="image/png",
                            headers={"cache-control": "public, max-age=3600"})

    @app.get("/healthz", include_in_schema=False)
    def healthz():
        return {"ok": True}

    # -------------------------------------------------------------------------------------- participants

    consent = config.consent()

    @app.get("/api/consent")
    def get_consent():
        return consent

    def limit(buckets, what: str, cost: int = 1) -> None:
        wait = limiter.acquire(buckets, cost)
        if wait > 0:
            raise ApiError(429, f"too many {what}: try again in a moment", headers={"retry-after": str(max(1, round(wait)))})

    def address(request: Request) -> str:
        return client_address(request.client.host if request.client else None)

    ParticipantToken = Header(default=None, alias=PARTICIPANT_TOKEN_HEADER)

    @app.get("/api/participants/{study_id}/{participant_id}")
    def get_participant(study_id: str, participant_id: str, token: str | None = ParticipantToken):
        return store.state(store.authenticate(study_id, participant_id, token))

    @app.post("/api/participants")
    def post_participant(body: ParticipantIn, request: Request, token: str | None = ParticipantToken):
        # Every start costs its address and the server a token, so that nobody can make participants by the
        # thousand (each one is rows in the database and an entry in the server's memory).
        limit([("address_join", address(request)), ("total_join", None)], "new participants")
        info, new_token = store.create_participant(body.study_id, body.participant_id, token)
        state = store.state(info)
        return {**state, "participant_token": new_token} if new_token else state

    # ------------------------------------------------------------------------------------------ partner

    @app.post("/api/partner")
    async def post_partner(body: PartnerIn, request: Request, response: Response,
                           token: str | None = ParticipantToken):
        started = time.perf_counter()
        cost = config.partner_cost(len(body.points))
        # The address's budget first: it bounds what an address spends on looking up participants.
        limit([("address_partner", address(request))], "partner queries from this address", cost)
        info = store.cached_participant(body.study_id, body.participant_id) or \
            await run_in_threadpool(store.participant, body.study_id, body.participant_id)
        info = store.authenticate(body.study_id, body.participant_id, token, info)
        limit([("partner", f"{body.study_id}/{body.participant_id}"), ("total_partner", None)],
              f"partner queries: at most {config.partner_rate_per_s:g} per second", cost)
        category = store.stimulus_of(info, body.stimulus_id)
        problem = point_problems(body.points, config, config.time_limit_ms + TIME_SLACK_MS)
        if problem:
            raise ApiError(422, problem)
        guess = await batcher.guess(stimuli.image(body.stimulus_id), body.points, category)
        # The server's share of the latency (queue + batch), for load tests: Server-Timing is a standard header.
        response.headers["server-timing"] = f"partner;dur={(time.perf_counter() - started) * 1000:.1f}"
        answer = {**guess.to_json(), "n_points": len(body.points)}
        if guess.correct:
            answer["proof"] = recognition_proof(store.recognition_key, body.study_id, body.participant_id, str(body.trial_id),
                                                body.stimulus_id, len(body.points), guess.category)
        return answer

    # ------------------------------------------------------------------------------------------- trials

    @app.post("/api/trials")
    def post_trial(body: TrialIn, response: Response, token: str | None = ParticipantToken):
        problem = trial_problems(body, config)
        if problem:
            raise ApiError(422, problem)
        info = store.authenticate(body.study_id, body.participant_id, token)
        if body.outcome == "recognized" and not any(
                a.correct and a.proof and hmac.compare_digest(a.proof, recognition_proof(
                    store.recognition_key, body.study_id, body.participant_id, str(body.trial_id), body.stimulus_id,
                    a.n_points, a.guess)) for a in body.partner):
            raise ApiError(422, "outcome: 'recognized' needs the partner's signed answer (its 'proof') for this trial")
        record = TrialRecord(
            trial_id=str(body.trial_id), study_id=body.study_id, participant_id=body.participant_id,
            practice=body.practice, position=body.position, stimulus_id=body.stimulus_id,
            points=[list(p) for p in body.points], partner=[a.model_dump() for a in body.partner],
            outcome=body.outcome, score=round(float(body.score), 2), duration_ms=body.duration_ms)
        created, state = store.record_trial(record, info)
        response.status_code = 201 if created else 200
        return {"stored": created, "duplicate": not created, "trial_id": record.trial_id, **state}

    # -------------------------------------------------------------------------------------------- admin

    def require_admin(authorization: str | None = Header(default=None)):
        if admin_token is None:
            raise ApiError(404, "admin routes are disabled: start the server with --admin-token "
                                "(or DRAWGAP_CLICKME_ADMIN_TOKEN) to enable them")
        if not authorization:
            raise ApiError(401, "admin token required: send 'Authorization: Bearer <token>'",
                           headers={"www-authenticate": "Bearer"})
        if not token_matches(admin_token, authorization):
            raise ApiError(403, "wrong admin token")

    @app.get("/api/admin/status", dependencies=[Depends(require_admin)])
    def admin_status():
        return {"totals": totals(engine), "stimuli": stimulus_progress(engine)}

    @app.get("/api/admin/export", dependencies=[Depends(require_admin)])
    def admin_export(include_practice: bool = False):
        from drawgap.clickme.export import export_clicks

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clicks.npz"
            export_clicks(engine, path, include_practice=include_practice)
            data = path.read_bytes()
        return Response(data, media_type="application/octet-stream",
                        headers={"content-disposition": 'attachment; filename="clicks.npz"', "cache-control": "no-store"})

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of `serve(workers > 1)`, from the settings it left in the environment."""
    import torch

    spec = json.loads(os.environ[SERVE_ENV])
    exit_with_parent(spec["parent_pid"])  # a supervisor killed by SIGKILL must not leave workers serving on
    torch.set_num_threads(spec["torch_threads"])
    config = GameConfig.from_dict(spec["config"])
    limiter = SharedRateLimiter(spec["rate_limits"], config.rate_limits())
    return create_app(spec["stimuli"], spec["db"], config=config, admin_token=os.environ.get(TOKEN_ENV) or None,
                      limiter=limiter)


def serve(stimuli_dir: str | os.PathLike, db: str | os.PathLike | None, *, config: GameConfig, admin_token: str | None,
          host: str = "127.0.0.1", port: int = 8000, workers: int = 1, torch_threads: int = 1) -> None:
    """Run the server until interrupted. Everything is checked (the port first, then the stimuli and the
    database, whose tables are made) in this process first.

    With `workers` > 1, uvicorn runs that many processes on the port, each with its own partner: the partner
    then uses that many cores. Each process keeps its own batches; the database and the rate limits (a
    `SharedRateLimiter` file per host and port, rewritten at each start and removed at exit) are shared; the
    workers exit when this process dies, however it dies (processes.py).
    """
    import torch
    import uvicorn

    if not (PAGE_DIR / "index.html").is_file():
        raise InputError(NOT_BUILT, path=PAGE_DIR)
    if workers < 1:
        raise InputError(f"expected 1 or more, got {workers}", field="workers")
    check_port_free(host, port)  # before the database: a server that cannot listen makes nothing
    torch.set_num_threads(max(1, torch_threads))
    app = create_app(stimuli_dir, db, config=config, admin_token=admin_token)
    # A request still running at shutdown gets this long; then the connection is closed.
    options = dict(host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    if workers == 1:
        uvicorn.run(app, **options)
        return
    del app
    limits = rate_limit_path(host, port)
    SharedRateLimiter.create(limits, config.rate_limits()).close()
    try:
        os.environ[SERVE_ENV] = json.dumps({"stimuli": str(Path(stimuli_dir).resolve()), "db": normalize_url(db),
                                            "config": config.to_dict(), "torch_threads": max(1, torch_threads),
                                            "rate_limits": str(limits), "parent_pid": os.getpid()})
        if admin_token:
            os.environ[TOKEN_ENV] = admin_token
        uvicorn.run("drawgap.clickme.app:app_from_environment", factory=True, workers=workers, **options)
    finally:
        limits.unlink(missing_ok=True)
