"""What the server reads from and writes to the database: participants, their sequences, and trials.

Every trial is written in one transaction (the trial row and all its clicks, and the participant's
completion with the last one). The client's trial id is the primary key, so a replayed submission (the
client retries when it saw no answer) is recognised and stored once; a unique constraint on the sequence
slot stops two different trial ids from filling the same place. A participant's next trial is the number
of trials already stored, so a page that reloads resumes at the next stimulus.

A participant is created with a secret token (only its hash is stored) that every later request must carry
(`authenticate`). The completion code is given once every required trial, practice included, is stored and
the trials show plausible effort (effort.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from drawgap.clickme.config import GameConfig
from drawgap.clickme.db import (AssignmentRow, ClickRow, ParticipantRow, SettingRow, StimulusRow, TrialRow, utcnow,
                                writer)
from drawgap.clickme.effort import TrialEffort, effort_problem
from drawgap.clickme.security import acceptable_proposed_token, digest_matches, new_participant_token, token_digest
from drawgap.clickme.sequence import balanced_sequence, participant_seed
from drawgap.clickme.stimuli import StimulusSet
from drawgap.errors import InputError


# Settings that change what a click means (the partner's rule decides when a trial ends as recognized); one
# database holds data of one value of each.
DATA_SHAPING = ("canvas_size", "brush_px", "time_limit_s", "sample_interval_ms", "points_per_query",
                "partner_nothing_yet")
# The value of a data-shaping setting in a database made before the setting existed: the behaviour it had then.
DATA_SHAPING_BEFORE = {"partner_nothing_yet": False}


class StoreError(Exception):
    """A request the store refuses; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ParticipantInfo:
    pk: int
    study_id: str
    participant_id: str
    trials: tuple[str, ...]  # stimulus ids, by position
    practice: tuple[str, ...]
    completion_code: str
    token_sha256: str | None
    consented_at: dt.datetime


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial as the page sends it (already validated against the game's limits)."""

    trial_id: str
    study_id: str
    participant_id: str
    practice: bool
    position: int
    stimulus_id: str
    points: list  # [[x, y, t_ms], ...]
    partner: list  # [{"n_points", "t", "guess", "correct"}, ...]
    outcome: str
    score: float
    duration_ms: int

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def as_utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t  # SQLite returns naive UTC


class LRUCache:
    """At most `size` entries; the least recently used goes first (thread-safe). A server meets every
    participant who ever started: without a bound, fake participants would grow its memory for ever."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class ClickMeStore:
    def __init__(self, engine: Engine, stimuli: StimulusSet, config: GameConfig):
        self.engine = engine
        self.stimuli = stimuli
        self.config = config
        self.Session = sessionmaker(engine, expire_on_commit=False)  # reads
        self.WriteSession = sessionmaker(writer(engine), expire_on_commit=False)
        self._by_id = stimuli.by_id()
        self._participants = LRUCache(config.max_cached_participants)  # sequences never change: cache them

    # ------------------------------------------------------------------------------------------ stimuli

    def sync_stimuli(self) -> None:
        """Copy the manifest's stimuli and the game's settings into the database; refuse a database made for
        other stimuli or other data-shaping settings (DATA_SHAPING)."""
        with self.WriteSession.begin() as s:
            game = {k: v for k, v in self.config.to_dict().items() if k != "completion_code"}
            stored = s.get(SettingRow, "game")
            if stored is None:
                s.add(SettingRow(key="game", value=game))
            else:
                def stored_value(k):
                    return stored.value.get(k, DATA_SHAPING_BEFORE.get(k))

                changed = [k for k in DATA_SHAPING if stored_value(k) != game[k]]
                if changed:
                    was = ", ".join(f"{k}={stored_value(k)}" for k in changed)
                    hint = " (serve --no-partner-nothing-yet: the partner without it)" \
                        if "partner_nothing_yet" in changed and not stored_value("partner_nothing_yet") else ""
                    raise InputError(f"the database was collected with {was}: use the same settings{hint} or a new "
                                     "database", field="db")
                stored.value = game
            # Every consent text a server of this database has shown, oldest first, with when it first did:
            # the consent a participant agreed to is the newest one before their `consented_at`.
            consent = {**self.config.consent(), "first_served": utcnow().isoformat()}
            versions = s.get(SettingRow, "consent_versions")
            if versions is None:
                s.add(SettingRow(key="consent_versions", value={"versions": [consent]}))
            elif consent["sha256"] not in [v["sha256"] for v in versions.value["versions"]]:
                versions.value = {"versions": [*versions.value["versions"], consent]}
            # The key that signs the partner's correct answers (security.recognition_proof): one per database,
            # so that every worker and every restart accepts what the others signed.
            key = s.get(SettingRow, "recognition_key")
            if key is None:
                key = SettingRow(key="recognition_key", value={"hex": secrets.token_hex(32)})
                s.add(key)
            self.recognition_key = bytes.fromhex(key.value["hex"])
            existing = {r.id: r for r in s.scalars(select(StimulusRow))}
            for st in [*self.stimuli.stimuli, *self.stimuli.practice]:
                row = existing.get(st.id)
                if row is None:
                    s.add(StimulusRow(id=st.id, category=st.category, category_index=st.category_index,
                                      source_index=st.source_index, exemplar=st.exemplar, practice=st.practice))
                elif (row.category, row.source_index, row.practice) != (st.category, st.source_index, st.practice):
                    raise InputError(
                        f"the database holds stimulus {st.id!r} as {row.category!r}/{row.source_index}, the stimuli "
                        f"directory as {st.category!r}/{st.source_index}: use a new database for a new stimuli set",
                        field="db")

    # -------------------------------------------------------------------------------------- participants

    def _load_info(self, s: Session, row: ParticipantRow) -> ParticipantInfo:
        rows = s.execute(select(AssignmentRow.practice, AssignmentRow.position, AssignmentRow.stimulus_id)
                         .where(AssignmentRow.participant_pk == row.pk)).all()
        trials = tuple(sid for _, _, sid in sorted((r for r in rows if not r[0]), key=lambda r: r[1]))
        practice = tuple(sid for _, _, sid in sorted((r for r in rows if r[0]), key=lambda r: r[1]))
        return ParticipantInfo(row.pk, row.study_id, row.participant_id, trials, practice, row.completion_code,
                               row.token_sha256, as_utc(row.consented_at))

    def cached_participant(self, study_id: str, participant_id: str) -> ParticipantInfo | None:
        """The participant if already in memory (no database access), else None."""
        return self._participants.get((study_id, participant_id))

    def participant(self, study_id: str, participant_id: str) -> ParticipantInfo | None:
        key = (study_id, participant_id)
        info = self._participants.get(key)
        if info is None:
            with self.Session() as s:
                row = s.scalar(select(ParticipantRow).where(ParticipantRow.study_id == study_id,
                                                            ParticipantRow.participant_id == participant_id))
                if row is None:
                    return None
                info = self._load_info(s, row)
            self._participants.put(key, info)
        return info

    def authenticate(self, study_id: str, participant_id: str, token: str | None,
                     info: ParticipantInfo | None = None) -> ParticipantInfo:
        """The participant, if `token` is theirs: else 404 (unknown), 401 (no token) or 403 (another token)."""
        info = info or self.participant(study_id, participant_id)
        if info is None:
            raise StoreError(404, "unknown participant: start the session (POST /api/participants) first")
        if not token:
            raise StoreError(401, "participant token required: send the token the server gave at the start "
                                  "as the X-Participant-Token header")
        if info.token_sha256 is None or not digest_matches(info.token_sha256, token):
            raise StoreError(403, "wrong participant token")
        return info

    def create_participant(self, study_id: str, participant_id: str, token: str | None = None
                           ) -> tuple[ParticipantInfo, str | None]:
        """(the participant, their new token) for new ids: made with a balanced sequence and a token (the one
        the page proposes, `token`, when it is as strong as ours: then a start whose answer was lost can be
        retried). For known ids, only with their token: (the participant, None), so that a retried start is
        harmless (else 409: the ids are taken, and the id alone gives nothing)."""
        info = self.participant(study_id, participant_id)
        if info is not None:
            return self._existing(info, token), None
        seed = participant_seed(self.config.seed, study_id, participant_id)
        new_token = token if acceptable_proposed_token(token) else new_participant_token()
        try:
            with self.WriteSession.begin() as s:
                if self.engine.dialect.name == "postgresql":
                    # Serialise sequence assignment so that concurrent participants see each other's counts.
                    s.execute(select(func.pg_advisory_xact_lock(0x636C69636B6D65)))
                shown = dict(s.execute(select(AssignmentRow.stimulus_id, func.count())
                                       .where(AssignmentRow.practice.is_(False))
                                       .group_by(AssignmentRow.stimulus_id)).all())
                pairs = [(st.id, st.category) for st in self.stimuli.stimuli]
                trials = balanced_sequence(pairs, shown, self.config.trials_per_participant, seed)
                practice = [p.id for p in self.stimuli.practice]
                practice = [practice[i % len(practice)] for i in range(self.config.practice_trials)] if practice else []
                code = self.config.completion_code or secrets.token_hex(5).upper()
                row = ParticipantRow(study_id=study_id, participant_id=participant_id, seed=str(seed),
                                     completion_code=code, token_sha256=token_digest(new_token))
                s.add(row)
                s.flush()
                s.add_all([AssignmentRow(participant_pk=row.pk, practice=False, position=i, stimulus_id=sid)
                           for i, sid in enumerate(trials)])
                s.add_all([AssignmentRow(participant_pk=row.pk, practice=True, position=i, stimulus_id=sid)
                           for i, sid in enumerate(practice)])
        except IntegrityError:
            # created at the same moment by a concurrent request: theirs, and its token is theirs
            info = self.participant(study_id, participant_id)
            assert info is not None
            return self._existing(info, token), None
        info = self.participant(study_id, participant_id)
        assert info is not None
        return info, new_token

    def _existing(self, info: ParticipantInfo, token: str | None) -> ParticipantInfo:
        if token and info.token_sha256 is not None and digest_matches(info.token_sha256, token):
            return info
        raise StoreError(409, "this participant has already started: continue in the browser that started "
                              "(it holds the participant's token)")

    def state(self, info: ParticipantInfo, session: Session | None = None) -> dict:
        """Where the participant stands: the sequence, the next trial and practice trial, the score so far
        (read in `session` when given, so that a trial's answer needs no second transaction)."""
        if session is None:
            with self.Session() as s:
                return self.state(info, s)
        rows = session.execute(select(TrialRow.practice, func.count(), func.coalesce(func.sum(TrialRow.score), 0.0))
                               .where(TrialRow.participant_pk == info.pk).group_by(TrialRow.practice)).all()
        done = {bool(practice): n for practice, n, _ in rows}
        score = next((total for practice, _, total in rows if not practice), 0.0)
        next_trial = int(done.get(False, 0))
        completed = next_trial >= len(info.trials) and int(done.get(True, 0)) >= len(info.practice)
        refused = self._effort_problem(info, session) if completed else None

        def items(ids):
            return [{"position": i, "stimulus_id": sid, "category": self._by_id[sid].category,
                     "image_url": f"/stimuli/{sid}.png"} for i, sid in enumerate(ids)]

        return {
            "study_id": info.study_id,
            "participant_id": info.participant_id,
            "trials": items(info.trials),
            "practice": items(info.practice),
            "next_trial": next_trial,
            "next_practice": int(done.get(True, 0)),
            "score_total": round(float(score or 0.0), 1),
            "completed": completed,
            "completion_code": info.completion_code if completed and refused is None else None,
            "completion_refused": refused,
            "config": self.config.public(),
        }

    def _effort_problem(self, info: ParticipantInfo, session: Session) -> str | None:
        rows = session.execute(select(TrialRow.outcome, TrialRow.n_points, TrialRow.duration_ms, TrialRow.received_at)
                               .where(TrialRow.participant_pk == info.pk)).all()
        last = max((as_utc(r.received_at) for r in rows), default=info.consented_at)
        elapsed_ms = (last - info.consented_at).total_seconds() * 1000
        return effort_problem([TrialEffort(r.outcome, r.n_points, r.duration_ms) for r in rows], elapsed_ms, self.config)

    def stimulus_of(self, info: ParticipantInfo, stimulus_id: str) -> str:
        """The category of `stimulus_id`, which must be in the participant's sequence (else a 409)."""
        if stimulus_id not in info.trials and stimulus_id not in info.practice:
            raise StoreError(409, f"stimulus {stimulus_id!r} is not in this participant's sequence")
        return self._by_id[stimulus_id].category

    # ------------------------------------------------------------------------------------------- trials

    def record_trial(self, rec: TrialRecord, info: ParticipantInfo) -> tuple[bool, dict]:
        """Store a finished trial of `info` (authenticated) once. Returns (stored now, the participant's state
        after it); (False, ...) for a replay."""
        digest = rec.sha256()
        for attempt in range(2):
            try:
                with self.WriteSession.begin() as s:
                    existing = s.get(TrialRow, rec.trial_id)
                    if existing is not None:
                        if existing.participant_pk != info.pk:
                            raise StoreError(409, f"trial id {rec.trial_id} belongs to another participant")
                        if existing.payload_sha256 != digest:
                            raise StoreError(409, f"trial id {rec.trial_id} is already stored with different data")
                        return False, self.state(info, s)
                    self._check_slot(s, info, rec)
                    s.add(TrialRow(id=rec.trial_id, participant_pk=info.pk, practice=rec.practice,
                                   position=rec.position, stimulus_id=rec.stimulus_id, outcome=rec.outcome,
                                   score=rec.score, duration_ms=rec.duration_ms, n_points=len(rec.points),
                                   partner=rec.partner, payload_sha256=digest))
                    s.flush()
                    if rec.points:  # Core executemany: the ORM's bulk path costs several times more here
                        s.connection().execute(ClickRow.__table__.insert(), [
                            {"trial_id": rec.trial_id, "idx": i, "x": p[0], "y": p[1], "t_ms": p[2]}
                            for i, p in enumerate(rec.points)])
                    s.flush()
                    state = self.state(info, s)
                    if state["completed"]:  # every required trial stored (whether the effort earns the code or not)
                        s.get(ParticipantRow, info.pk).completed_at = utcnow()
                return True, state
            except IntegrityError:
                if attempt:  # the second look found no replay, so the slot was taken by another trial id
                    raise StoreError(409, f"position {rec.position} already holds another trial") from None
        raise AssertionError("unreachable")

    def _check_slot(self, s: Session, info: ParticipantInfo, rec: TrialRecord) -> None:
        sequence = info.practice if rec.practice else info.trials
        track = "practice trial" if rec.practice else "trial"
        stored = s.scalar(select(func.count()).select_from(TrialRow).where(
            TrialRow.participant_pk == info.pk, TrialRow.practice.is_(rec.practice)))
        if rec.position >= len(sequence):
            raise StoreError(409, f"position {rec.position} is past the end of the sequence ({len(sequence)} {track}s)")
        if rec.position < stored:
            raise StoreError(409, f"{track} {rec.position} is already stored under another trial id")
        if rec.position > stored:
            raise StoreError(409, f"expected {track} {stored} next, got {rec.position}")
        if sequence[rec.position] != rec.stimulus_id:
            raise StoreError(409, f"expected stimulus {sequence[rec.position]!r} at {track} {rec.position}, "
                                  f"got {rec.stimulus_id!r}")
