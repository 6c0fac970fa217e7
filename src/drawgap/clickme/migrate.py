"""Schema versions of the ClickMe database: Alembic revisions shipped in `migrations/versions/`.

Every database a server creates is made at the newest revision (head) and stamped with it (`alembic_version`).
A database made before migrations existed (drawgap 0.1.0: the same tables in every version, no
`alembic_version`) is recognised by its columns (UNVERSIONED_COLUMNS) as the baseline revision. `serve`,
`export` and `status` work only on a database at head and otherwise say to run `drawgap clickme migrate`;
`migrate` upgrades in place, in one transaction, after a timestamped backup copy for SQLite.

Adding a revision is one new file, `migrations/versions/NNNN_what.py` (see `0001_baseline.py`): `revision`,
`down_revision` = the previous file's `revision`, and `upgrade()` with Alembic's `op` (use
`op.batch_alter_table` so that SQLite can alter; new NOT NULL columns need a `server_default` or a backfill
of the rows already there). The models in db.py change beside it; the test
`test_migrations_build_exactly_the_models` fails until the revisions and the models agree.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event, func, inspect, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DatabaseError, SQLAlchemyError

from drawgap.clickme.db import Base, check_schema, make_engine, normalize_url, writer
from drawgap.errors import InputError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BASELINE = "0001_baseline"
VERSION_TABLE = "alembic_version"
# The columns of every table that drawgap made before migrations existed; a database with exactly these
# tables and no version table is at BASELINE.
UNVERSIONED_COLUMNS = {
    "stimuli": {"id", "category", "category_index", "source_index", "exemplar", "practice"},
    "settings": {"key", "value"},
    "participants": {"pk", "study_id", "participant_id", "seed", "completion_code", "consented_at", "completed_at"},
    "assignments": {"participant_pk", "practice", "position", "stimulus_id"},
    "trials": {"id", "participant_pk", "practice", "position", "stimulus_id", "outcome", "score", "duration_ms",
               "n_points", "partner", "payload_sha256", "received_at"},
    "clicks": {"trial_id", "idx", "x", "y", "t_ms"},
}
_PG_LOCK = 0x636C69636B6D66  # serialises creators and migrators of one PostgreSQL database


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: `kind` is empty (no ClickMe table), unversioned (made before migrations, at
    BASELINE), behind (an older revision), current (head), or unknown (a revision this version does not have,
    or tables no drawgap version made; `problem` says which)."""

    kind: str
    revision: str | None
    problem: str = ""


@functools.cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def head() -> str:
    return script_directory().get_current_head()


def schema_state(conn: Connection) -> SchemaState:
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    revision = MigrationContext.configure(conn).get_current_revision() if VERSION_TABLE in tables else None
    if revision is None:
        ours = tables & set(UNVERSIONED_COLUMNS)
        if not ours:
            return SchemaState("empty", None)
        if missing := sorted(set(UNVERSIONED_COLUMNS) - ours):
            return SchemaState("unknown", None, f"missing tables {missing}")
        for table, columns in UNVERSIONED_COLUMNS.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            if have != columns:
                lacks, extra = sorted(columns - have), sorted(have - columns)
                return SchemaState("unknown", None, f"table {table!r} lacks columns {lacks}" if lacks
                                   else f"table {table!r} has columns no drawgap version made: {extra}")
        return SchemaState("unversioned", None)
    if revision == head():
        return SchemaState("current", revision)
    try:
        script_directory().get_revision(revision)
    except CommandError:
        return SchemaState("unknown", revision, f"schema revision {revision!r} is not one this drawgap version knows "
                                                f"(a newer drawgap made it?)")
    return SchemaState("behind", revision)


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _refusal(engine: Engine, state: SchemaState) -> InputError:
    if state.kind in ("unversioned", "behind"):
        was = "made before schema versions" if state.kind == "unversioned" else f"at schema revision {state.revision}"
        return InputError(f"the database was {was}; this drawgap needs schema revision {head()}: run `drawgap clickme "
                          f"migrate --db {_where(engine)}` (with its server stopped)", path=_where(engine), field="db")
    return InputError(f"not a ClickMe database of this drawgap version: {state.problem}", path=_where(engine), field="db")


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK)))


def prepare(engine: Engine) -> None:
    """For a server: make the tables at head and stamp them in a new database; refuse any database not at head
    (leaving it as it was)."""
    with writer(engine).begin() as conn:  # BEGIN IMMEDIATE on SQLite: two creators do not race
        _lock(conn)
        state = schema_state(conn)
        if state.kind == "empty":
            Base.metadata.create_all(conn)
            MigrationContext.configure(conn).stamp(script_directory(), "head")
            return
        if state.kind != "current":
            raise _refusal(engine, state)
    check_schema(engine)


def require_current(engine: Engine) -> None:
    """For readers (export, status): refuse a database not at head."""
    with engine.connect() as conn:
        state = schema_state(conn)
    if state.kind == "empty":
        raise InputError(f"not a ClickMe database: missing tables {sorted(UNVERSIONED_COLUMNS)}", path=_where(engine),
                         field="db")
    if state.kind != "current":
        raise _refusal(engine, state)
    check_schema(engine)


def backup_sqlite(path: Path, now: dt.datetime | None = None) -> Path:
    """A copy of the SQLite database at `path` beside it, `<name>.<UTC time>.bak`, made with SQLite's backup
    API (which includes what is still in the WAL file), written under a temporary name and then renamed."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.{stamp}-{n}.bak"), n + 1
    tmp = target.with_name(f".tmp-{target.name}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # participant ids: never world-readable
    src = sqlite3.connect(path)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, target)
    finally:
        src.close()
        tmp.unlink(missing_ok=True)
    return target


def upgrade(conn: Connection) -> list[str]:
    """Apply, in `conn`'s transaction, every revision after the stamped one (all of them in an empty database),
    one at a time; return a line per revision. A revision the database rejects raises an InputError naming it
    (the caller's transaction then rolls back)."""
    current = MigrationContext.configure(conn).get_current_revision()
    steps = list(reversed(list(script_directory().iterate_revisions(head(), current))))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = conn
    lines = []
    for step in steps:
        try:
            command.upgrade(config, step.revision)
        except SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise InputError(f"the upgrade to {step.revision} failed ({first}); rolled back: the database is as it was",
                             path=_where(conn.engine), field="db") from None
        lines.append(f"upgraded {step.down_revision} -> {step.revision}: {(step.doc or '').strip().splitlines()[0]}")
    return lines


def _foreign_keys_off(dbapi_conn, _record) -> None:
    # Batch migrations copy and drop tables that others reference; SQLite checks foreign keys only when this
    # is off before the transaction begins, so `migrate` checks them itself (PRAGMA foreign_key_check).
    dbapi_conn.execute("PRAGMA foreign_keys=OFF")


def migrate(url: str | os.PathLike | None, now: dt.datetime | None = None) -> list[str]:
    """Upgrade the database at `url` to head in one transaction; return what was done, one line each."""
    text = normalize_url(url)
    parsed = make_url(text)
    sqlite_path = Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None
    if sqlite_path is not None and not sqlite_path.is_file():
        raise InputError("no such database file", path=sqlite_path, field="db")
    engine = make_engine(text, create=False)
    if sqlite_path is not None:
        event.listen(engine, "connect", _foreign_keys_off)
    where = _where(engine)
    try:
        return _migrate(engine, sqlite_path, now)
    except DatabaseError as exc:  # connecting, locking or reading (a revision's own errors are InputErrors)
        raise InputError(f"could not read the database ({str(exc.orig).strip().splitlines()[0]})", path=where,
                         field="db") from None
    finally:
        engine.dispose()


def _migrate(engine: Engine, sqlite_path: Path | None, now: dt.datetime | None) -> list[str]:
    where = _where(engine)
    with writer(engine).begin() as conn:  # holds the write lock from the backup to the commit
        _lock(conn)
        state = schema_state(conn)
        if state.kind == "current":
            return [f"{where}: already at schema revision {state.revision}: nothing to do"]
        if state.kind == "empty":
            raise InputError("not a ClickMe database (no ClickMe tables): `drawgap clickme serve` makes a new one",
                             path=where, field="db")
        if state.kind == "unknown":
            raise _refusal(engine, state)
        lines = []
        if sqlite_path is not None:
            lines.append(f"backup: {backup_sqlite(sqlite_path, now)}")
        else:
            lines.append("no backup made (PostgreSQL: use pg_dump for one); the upgrade is one transaction")
        if state.kind == "unversioned":
            MigrationContext.configure(conn).stamp(script_directory(), BASELINE)
            lines.append(f"recognised a database made before schema versions as {BASELINE}")
        lines += upgrade(conn)
        if sqlite_path is not None and (bad := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
            raise InputError(f"the upgrade left rows whose foreign keys point nowhere ({bad[:3]}); rolled back",
                             path=where, field="db")
        check_schema(conn)  # revisions that disagree with the models roll back here
        lines.append(f"{where}: now at schema revision {head()}")
        return lines

