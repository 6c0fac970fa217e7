"""The game's database: tables (SQLAlchemy 2 ORM) and the engine for SQLite or PostgreSQL.

A URL without a scheme is a SQLite file path. SQLite runs in WAL mode with full fsync; a writing
transaction (on `writer(engine)`) starts with BEGIN IMMEDIATE so that concurrent writers queue on the busy
timeout instead of failing when a read lock cannot be upgraded, while readers never wait. PostgreSQL is reached through psycopg 3
(`postgresql+psycopg://user@host:port/db`).

Tables: `stimuli` (copied from the stimuli manifest at server start), `settings` (the game's config),
`participants`, `assignments` (each participant's sequence, practice included), `trials` (one row per
finished trial, keyed by the client's trial id) and `clicks` (every painted point of a trial, in order).
Schema versions (Alembic revisions, `drawgap clickme migrate`) are in migrate.py.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint,
                        create_engine, event)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from drawgap.errors import InputError

DEFAULT_DB = "clickme.sqlite3"
WRITE_OPTION = "clickme_write"


def writer(engine: Engine) -> Engine:
    """The engine for transactions that write (BEGIN IMMEDIATE on SQLite; the same engine elsewhere)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class StimulusRow(Base):
    __tablename__ = "stimuli"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str] = mapped_column(String(256))
    category_index: Mapped[int] = mapped_column(Integer)
    source_index: Mapped[int] = mapped_column(Integer)
    exemplar: Mapped[bool] = mapped_column(Boolean)
    practice: Mapped[bool] = mapped_column(Boolean, default=False)


class ParticipantRow(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("study_id", "participant_id", name="uq_participant"),)
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(String(64))
    participant_id: Mapped[str] = mapped_column(String(64))
    seed: Mapped[str] = mapped_column(String(24))  # 63-bit; as text, portable across backends
    completion_code: Mapped[str] = mapped_column(String(64))
    # sha256 of the participant's secret token (security.py); NULL only in rows made before tokens existed
    token_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    consented_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AssignmentRow(Base):
    __tablename__ = "assignments"
    participant_pk: Mapped[int] = mapped_column(ForeignKey("participants.pk"), primary_key=True)
    practice: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    stimulus_id: Mapped[str] = mapped_column(ForeignKey("stimuli.id"), index=True)


class TrialRow(Base):
    __tablename__ = "trials"
    # One trial per sequence slot: a second trial id for a filled slot is refused.
    __table_args__ = (UniqueConstraint("participant_pk", "practice", "position", name="uq_trial_slot"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the client's UUID
    participant_pk: Mapped[int] = mapped_column(ForeignKey("participants.pk"), index=True)
    practice: Mapped[bool] = mapped_column(Boolean)
    position: Mapped[int] = mapped_column(Integer)
    stimulus_id: Mapped[str] = mapped_column(ForeignKey("stimuli.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # recognized | timeout | skipped
    score: Mapped[float] = mapped_column(Float)
    duration_ms: Mapped[int] = mapped_column(Integer)
    n_points: Mapped[int] = mapped_column(Integer)
    partner: Mapped[list] = mapped_column(JSON)  # the partner's answers as the page saw them
    payload_sha256: Mapped[str] = mapped_column(String(64))  # tells a replay from a different trial
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SettingRow(Base):
    """Settings that shape the data (the game's config under key `game`), kept with the data they shaped."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)


class ClickRow(Base):
    __tablename__ = "clicks"
    trial_id: Mapped[str] = mapped_column(ForeignKey("trials.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    t_ms: Mapped[int] = mapped_column(Integer)


def normalize_url(url: str | os.PathLike | None) -> str:
    """A database URL; a bare path (or None: `clickme.sqlite3` here) means a SQLite file."""
    if url is None:
        url = DEFAULT_DB
    url = os.fspath(url)
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    return url


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin hook below emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front (see the module docstring); readers never wait (WAL).
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")


def create_private_file(path: Path) -> None:
    """Make an empty SQLite database file readable by its owner only (0600), unless it exists: SQLite gives
    its -wal and -shm files the database file's permissions, and the data (participant ids) is nobody
    else's business."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str | os.PathLike | None = None, create: bool = True) -> Engine:
    """An engine for `url` (see `normalize_url`); with `create`, the tables are made if missing."""
    text = normalize_url(url)
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise InputError(f"expected a database URL such as sqlite:///file.db or postgresql+psycopg://host/db ({exc})",
                         field="db") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and create:
            create_private_file(Path(parsed.database))
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8,
                               max_overflow=8)
        _sqlite_setup(engine)
    elif parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True)
    else:
        raise InputError(f"expected a sqlite or postgresql URL, got {parsed.get_backend_name()!r}", field="db")
    if create:
        from drawgap.clickme.migrate import prepare

        prepare(engine)  # a new database at the newest schema revision; any other refused, left as it was
    return engine


def check_schema(bind: Engine | Connection) -> None:
    """Refuse a database whose tables lack columns this version writes, although its schema revision says
    otherwise (changed by hand, or revisions that disagree with the models), rather than fail on the first
    trial."""
    from sqlalchemy import inspect

    inspector = inspect(bind)
    tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            raise InputError(f"table {table.name!r} is missing", path=bind.engine.url.render_as_string(hide_password=True),
                             field="db")
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise InputError(f"table {table.name!r} lacks columns {missing} that this drawgap version writes",
                             path=bind.engine.url.render_as_string(hide_password=True), field="db")


def open_existing(url: str | os.PathLike | None) -> Engine:
    """An engine for a database a ClickMe server has already written (for export and status), which must be at
    the newest schema revision (else: run `drawgap clickme migrate`)."""
    from sqlalchemy.exc import DatabaseError  # OperationalError, and "file is not a database"

    from drawgap.clickme.migrate import require_current

    text = normalize_url(url)
    parsed = make_url(text)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise InputError("no such database file", path=parsed.database, field="db")
    engine = make_engine(text, create=False)
    try:
        require_current(engine)
    except DatabaseError as exc:
        where = parsed.database if parsed.get_backend_name() == "sqlite" else None
        raise InputError(f"could not open the database ({str(exc.orig).strip().splitlines()[0]})", path=where, field="db") from None
    return engine
