"""ClickMe schema versions (drawgap.clickme.migrate): a database made by an earlier drawgap version, from that
version's own DDL, is refused by serve/export, upgraded by `drawgap clickme migrate` on SQLite (after a backup)
and PostgreSQL, and exports every trial unchanged; the shipped revisions build exactly the models."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
import sys
import uuid

import numpy as np
import pytest
from sqlalchemy import MetaData, create_engine, inspect, text

from drawgap.clickme import migrate as migrations
from drawgap.clickme.config import GameConfig
from drawgap.clickme.export import read_clicks
from drawgap.clickme.stimuli import load_stimuli
from drawgap.clickme.testing import make_test_stimuli
from drawgap.errors import InputError

# The DDL that drawgap's ClickMe server ran before schema versions existed (SQLAlchemy's create_all of
# db.py at 1bc9ab8, the first ClickMe commit, printed for each backend; the tables did not change until
# migrations came). Kept here as text so that this test keeps building the old schema whatever db.py becomes.
LEGACY_DDL = {
    "sqlite": """
CREATE TABLE participants (pk INTEGER NOT NULL, study_id VARCHAR(64) NOT NULL, participant_id VARCHAR(64) NOT NULL,
    seed VARCHAR(24) NOT NULL, completion_code VARCHAR(64) NOT NULL, consented_at DATETIME NOT NULL,
    completed_at DATETIME, PRIMARY KEY (pk), CONSTRAINT uq_participant UNIQUE (study_id, participant_id));
CREATE TABLE settings ("key" VARCHAR(64) NOT NULL, value JSON NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE stimuli (id VARCHAR(64) NOT NULL, category VARCHAR(256) NOT NULL, category_index INTEGER NOT NULL,
    source_index INTEGER NOT NULL, exemplar BOOLEAN NOT NULL, practice BOOLEAN NOT NULL, PRIMARY KEY (id));
CREATE TABLE assignments (participant_pk INTEGER NOT NULL, practice BOOLEAN NOT NULL, position INTEGER NOT NULL,
    stimulus_id VARCHAR(64) NOT NULL, PRIMARY KEY (participant_pk, practice, position),
    FOREIGN KEY(participant_pk) REFERENCES participants (pk), FOREIGN KEY(stimulus_id) REFERENCES stimuli (id));
CREATE INDEX ix_assignments_stimulus_id ON assignments (stimulus_id);
CREATE TABLE trials (id VARCHAR(36) NOT NULL, participant_pk INTEGER NOT NULL, practice BOOLEAN NOT NULL,
    position INTEGER NOT NULL, stimulus_id VARCHAR(64) NOT NULL, outcome VARCHAR(16) NOT NULL, score FLOAT NOT NULL,
    duration_ms INTEGER NOT NULL, n_points INTEGER NOT NULL, partner JSON NOT NULL, payload_sha256 VARCHAR(64) NOT NULL,
    received_at DATETIME NOT NULL, PRIMARY KEY (id), CONSTRAINT uq_trial_slot UNIQUE (participant_pk, practice, position),
    FOREIGN KEY(participant_pk) REFERENCES participants (pk), FOREIGN KEY(stimulus_id) REFERENCES stimuli (id));
CREATE INDEX ix_trials_stimulus_id ON trials (stimulus_id);
CREATE INDEX ix_trials_participant_pk ON trials (participant_pk);
CREATE TABLE clicks (trial_id VARCHAR(36) NOT NULL, idx INTEGER NOT NULL, x INTEGER NOT NULL, y INTEGER NOT NULL,
    t_ms INTEGER NOT NULL, PRIMARY KEY (trial_id, idx), FOREIGN KEY(trial_id) REFERENCES trials (id));
""",
    "postgresql": """
CREATE TABLE participants (pk SERIAL NOT NULL, study_id VARCHAR(64) NOT NULL, participant_id VARCHAR(64) NOT NULL,
    seed VARCHAR(24) NOT NULL, completion_code VARCHAR(64) NOT NULL, consented_at TIMESTAMP WITH TIME ZONE NOT NULL,
    completed_at TIMESTAMP WITH TIME ZONE, PRIMARY KEY (pk), CONSTRAINT uq_participant UNIQUE (study_id, participant_id));
CREATE TABLE settings (key VARCHAR(64) NOT NULL, value JSON NOT NULL, PRIMARY KEY (key));
CREATE TABLE stimuli (id VARCHAR(64) NOT NULL, category VARCHAR(256) NOT NULL, category_index INTEGER NOT NULL,
    source_index INTEGER NOT NULL, exemplar BOOLEAN NOT NULL, practice BOOLEAN NOT NULL, PRIMARY KEY (id));
CREATE TABLE assignments (participant_pk INTEGER NOT NULL, practice BOOLEAN NOT NULL, position INTEGER NOT NULL,
    stimulus_id VARCHAR(64) NOT NULL, PRIMARY KEY (participant_pk, practice, position),
    FOREIGN KEY(participant_pk) REFERENCES participants (pk), FOREIGN KEY(stimulus_id) REFERENCES stimuli (id));
CREATE INDEX ix_assignments_stimulus_id ON assignments (stimulus_id);
CREATE TABLE trials (id VARCHAR(36) NOT NULL, participant_pk INTEGER NOT NULL, practice BOOLEAN NOT NULL,
    position INTEGER NOT NULL, stimulus_id VARCHAR(64) NOT NULL, outcome VARCHAR(16) NOT NULL, score FLOAT NOT NULL,
    duration_ms INTEGER NOT NULL, n_points INTEGER NOT NULL, partner JSON NOT NULL, payload_sha256 VARCHAR(64) NOT NULL,
    received_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_trial_slot UNIQUE (participant_pk, practice, position),
    FOREIGN KEY(participant_pk) REFERENCES participants (pk), FOREIGN KEY(stimulus_id) REFERENCES stimuli (id));
CREATE INDEX ix_trials_stimulus_id ON trials (stimulus_id);
CREATE INDEX ix_trials_participant_pk ON trials (participant_pk);
CREATE TABLE clicks (trial_id VARCHAR(36) NOT NULL, idx INTEGER NOT NULL, x INTEGER NOT NULL, y INTEGER NOT NULL,
    t_ms INTEGER NOT NULL, PRIMARY KEY (trial_id, idx), FOREIGN KEY(trial_id) REFERENCES trials (id));
""",
}
CONFIG = GameConfig(trials_per_participant=3, practice_trials=1)


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    return make_test_stimuli(tmp_path_factory.mktemp("clickme"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, postgres):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.sqlite3'}"
    if postgres is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does it)")
    return postgres.create_database(f"m_{uuid.uuid4().hex[:12]}")


def make_legacy_database(url: str, stimuli_dir) -> list[dict]:
    """A database as the server before schema versions left it, from its DDL, holding three participants (one
    finished with practice, one midway, one who has not started) and their trials; returns the trials."""
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    engine = create_engine(url)
    s = load_stimuli(stimuli_dir)
    rng = np.random.default_rng(7)
    with engine.begin() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # as the server set it
        for statement in LEGACY_DDL[backend].split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    tables = MetaData()
    tables.reflect(engine)
    t = tables.tables
    start = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)
    trials, clicks = [], []
    with engine.begin() as conn:
        conn.execute(t["stimuli"].insert(), [
            {"id": st.id, "category": st.category, "category_index": st.category_index, "source_index": st.source_index,
             "exemplar": st.exemplar, "practice": st.practice} for st in [*s.stimuli, *s.practice]])
        # The settings of that version: the game only (consent versions came later).
        conn.execute(t["settings"].insert(), [{"key": "game", "value": {**CONFIG.to_dict(), "canvas_size": s.canvas_size}}])
        for p, done in enumerate((3, 1, 0)):
            pk = conn.execute(t["participants"].insert().returning(t["participants"].c.pk), {
                "study_id": "study-1", "participant_id": f"p-{p}", "seed": str(1000 + p), "completion_code": f"CODE{p}",
                "consented_at": start + dt.timedelta(minutes=p),
                "completed_at": start + dt.timedelta(minutes=30) if done == 3 else None}).scalar_one()
            sequence = [st.id for st in s.stimuli[p:p + 3]]
            conn.execute(t["assignments"].insert(), [
                *({"participant_pk": pk, "practice": False, "position": i, "stimulus_id": sid} for i, sid in enumerate(sequence)),
                {"participant_pk": pk, "practice": True, "position": 0, "stimulus_id": s.practice[0].id}])
            slots = ([(True, 0, s.practice[0].id)] if done == 3 else []) + [(False, i, sequence[i]) for i in range(done)]
            for practice, position, sid in slots:
                n = int(rng.integers(0, 6))
                points = [[int(rng.integers(0, s.canvas_size)), int(rng.integers(0, s.canvas_size)), 40 * k + 7]
                          for k in range(n)]
                trial = {"id": str(uuid.uuid4()), "participant_pk": pk, "practice": practice, "position": position,
                         "stimulus_id": sid, "outcome": ("recognized", "timeout", "skipped")[len(trials) % 3],
                         "score": round(float(rng.uniform(0, 100)), 1), "duration_ms": int(rng.integers(500, 7000)),
                         "n_points": n, "partner": [{"n_points": n, "t": 1.5, "guess": "shape00", "correct": False}],
                         "payload_sha256": "0" * 64, "received_at": start + dt.timedelta(minutes=5 + len(trials))}
                trials.append({**trial, "participant": f"study-1/p-{p}", "points": points})
                conn.execute(t["trials"].insert(), [trial])
                clicks += [{"trial_id": trial["id"], "idx": k, "x": x, "y": y, "t_ms": tm} for k, (x, y, tm) in enumerate(points)]
        conn.execute(t["clicks"].insert(), clicks)
    engine.dispose()
    return trials


def exported_trials(path) -> list[dict]:
    arrays, _ = read_clicks(path)
    out = []
    for k, trial_id in enumerate(arrays["trial_ids"]):
        mine = arrays["trial"] == k
        out.append({"id": str(trial_id), "participant": str(arrays["participant_ids"][arrays["trial_participant"][k]]),
                    "stimulus_id": str(arrays["image_ids"][arrays["trial_image"][k]]),
                    "outcome": str(arrays["trial_outcome"][k]), "score": float(arrays["trial_score"][k]),
                    "duration_ms": int(arrays["trial_duration_ms"][k]), "n_points": int(arrays["trial_n_points"][k]),
                    "practice": bool(arrays["trial_practice"][k]),
                    "points": np.stack([arrays["x"][mine], arrays["y"][mine], arrays["t"][mine]], 1).tolist()})
    return out


def expected_trials(trials: list[dict]) -> list[dict]:
    keys = ("id", "participant", "stimulus_id", "outcome", "duration_ms", "n_points", "practice", "points")
    return [{**{k: t[k] for k in keys}, "score": float(np.float32(t["score"]))} for t in trials]


def snapshot(url: str) -> dict:
    """Every table's rows and columns (and the SQLite file's full dump), to tell an untouched database."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return {"dump": list(conn.iterdump())}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = sorted(inspect(conn).get_table_names())
            return {name: ([c["name"] for c in inspect(conn).get_columns(name)],
                           sorted(map(repr, conn.execute(text(f'SELECT * FROM "{name}"')).all()))) for name in names}
    finally:
        engine.dispose()


def test_a_database_of_the_previous_schema_is_migrated_and_exports_every_trial_unchanged(stimuli, db_url, tmp_path, cli):
    trials = make_legacy_database(db_url, stimuli)
    assert len(trials) == 5 and sum(t["n_points"] for t in trials) > 0
    before = snapshot(db_url)

    # Refused, one line, exit 2, untouched: export, status and (in-process) the server's database set-up.
    for verb in (("export", "--out", tmp_path / "early.npz"), ("status",)):
        r = cli("clickme", verb[0], "--db", db_url, *verb[1:])
        assert r.code == 2 and "drawgap clickme migrate" in r.err and len(r.err.strip().splitlines()) == 1, r
    from drawgap.clickme.db import make_engine
    with pytest.raises(InputError, match="made before schema versions.*drawgap clickme migrate"):
        make_engine(db_url)
    assert snapshot(db_url) == before and not (tmp_path / "early.npz").exists()

    r = cli("clickme", "migrate", "--db", db_url)
    assert r.code == 0, r
    head = migrations.head()
    assert "recognised a database made before schema versions as 0001_baseline" in r.out
    assert f"now at schema revision {head}" in r.out
    if db_url.startswith("sqlite"):
        db = tmp_path / "study.sqlite3"
        (backup,) = tmp_path.glob("study.sqlite3.*.bak")
        assert f"backup: {backup}" in r.out
        with sqlite3.connect(backup) as conn:  # the backup is the database as it was before the upgrade
            assert list(conn.iterdump()) == before["dump"]
        assert backup.stat().st_mode & 0o777 == db.stat().st_mode & 0o777
    else:
        assert "no backup made (PostgreSQL" in r.out

    r = cli("clickme", "export", "--db", db_url, "--out", tmp_path / "clicks.npz", "--include-practice")
    assert r.code == 0, r
    assert exported_trials(tmp_path / "clicks.npz") == expected_trials(trials)

    # Idempotent: a second run changes nothing and makes no second backup.
    after = snapshot(db_url)
    r = cli("clickme", "migrate", "--db", db_url)
    assert r.code == 0 and "nothing to do" in r.out and "backup" not in r.out, r
    assert snapshot(db_url) == after and len(list(tmp_path.glob("*.bak"))) == (1 if db_url.startswith("sqlite") else 0)

    # The data go on: a server's store takes the next trial of the participant who was midway (over HTTP that
    # participant, made before tokens existed, can no longer authenticate: see 0002_participant_token).
    from drawgap.clickme.store import ClickMeStore, TrialRecord

    store = ClickMeStore(make_engine(db_url), load_stimuli(stimuli), CONFIG)
    store.sync_stimuli()
    info = store.participant("study-1", "p-1")
    stored, state = store.record_trial(TrialRecord(str(uuid.uuid4()), "study-1", "p-1", False, 1, info.trials[1],
                                                   [[3, 4, 50]], [], "skipped", 0.0, 900), info)
    assert stored and state["next_trial"] == 2
    store.engine.dispose()


def test_serve_refuses_a_database_of_the_previous_schema(stimuli, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    make_legacy_database(url, stimuli)
    before = snapshot(url)
    r = subprocess.run([sys.executable, "-m", "drawgap.cli", "clickme", "serve", str(stimuli), "--db", url, "--port", "9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") <= 2, r  # the "serving on" notice, then the error
    assert r.stderr.strip().splitlines()[-1].startswith("drawgap: error: ") and "drawgap clickme migrate --db" in r.stderr
    assert snapshot(url) == before


def test_a_new_database_is_made_at_head_and_stamped(stimuli, db_url, cli):
    from alembic.runtime.migration import MigrationContext

    from drawgap.clickme.db import make_engine

    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == migrations.head()
    engine.dispose()
    r = cli("clickme", "migrate", "--db", db_url)
    assert r.code == 0 and "nothing to do" in r.out


def test_migrations_build_exactly_the_models(db_url):
    """The shipped revisions, applied from nothing, give the tables of db.py (a revision that forgets a model
    change, or a model change without a revision, fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from drawgap.clickme.db import Base

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn)
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert MigrationContext.configure(conn).get_current_revision() == migrations.head()
    finally:
        engine.dispose()
    assert len(migrations.script_directory().get_heads()) == 1


def test_databases_this_version_cannot_upgrade_are_refused_untouched(stimuli, tmp_path, cli):
    from drawgap.clickme.db import make_engine

    # A revision this version does not have (a newer drawgap made the database).
    newer = f"sqlite:///{tmp_path / 'newer.sqlite3'}"
    make_engine(newer).dispose()
    with sqlite3.connect(tmp_path / "newer.sqlite3") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_future'")
    before = snapshot(newer)
    for args in (("migrate",), ("export", "--out", tmp_path / "x.npz"), ("status",)):
        r = cli("clickme", *args, "--db", newer)
        assert r.code == 2 and "'0099_future' is not one this drawgap version knows" in r.err, r
    assert snapshot(newer) == before and not list(tmp_path.glob("*.bak"))

    # Tables no drawgap version made, and a database without ClickMe tables.
    odd = tmp_path / "odd.sqlite3"
    make_legacy_database(f"sqlite:///{odd}", stimuli)
    with sqlite3.connect(odd) as conn:
        conn.execute("ALTER TABLE clicks ADD COLUMN pressure REAL")
    r = cli("clickme", "migrate", "--db", odd)
    assert r.code == 2 and "table 'clicks' has columns no drawgap version made: ['pressure']" in r.err, r
    sqlite3.connect(tmp_path / "empty.sqlite3").close()
    r = cli("clickme", "migrate", "--db", tmp_path / "empty.sqlite3")
    assert r.code == 2 and "not a ClickMe database" in r.err, r
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database\n" * 500)
    r = cli("clickme", "migrate", "--db", tmp_path / "junk.sqlite3")
    assert r.code == 2 and "could not read the database (file is not a database)" in r.err, r
    assert (tmp_path / "junk.sqlite3").read_bytes() == b"not a database\n" * 500
    r = cli("clickme", "migrate", "--db", tmp_path / "missing.sqlite3")
    assert r.code == 2 and "no such database file" in r.err and not (tmp_path / "missing.sqlite3").exists()
    assert not list(tmp_path.glob("*.bak"))


def _with_revision(tmp_path, monkeypatch, name: str, body: str) -> None:
    """Ship one more revision after the current head: a copy of the migrations with the new file added, which
    is all that adding a revision takes."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / f"{name}.py").write_text(
        f'"""{name}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\nrevision = "{name}"\n'
        f'down_revision = "{migrations.head()}"\n\n\ndef upgrade():\n{body}')
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", folder)
    migrations.script_directory.cache_clear()


@pytest.fixture
def fresh_script_directory(monkeypatch):
    """Forgets the revisions read under a patched MIGRATIONS_DIR (before monkeypatch restores it)."""
    yield
    migrations.script_directory.cache_clear()


def test_a_new_revision_alters_the_tables_of_an_old_database(stimuli, db_url, tmp_path, monkeypatch,
                                                             fresh_script_directory, cli):
    trials = make_legacy_database(db_url, stimuli)
    shipped_head = migrations.head()
    _with_revision(tmp_path, monkeypatch, "9001_note", '    with op.batch_alter_table("participants") as batch:\n'
                   '        batch.add_column(sa.Column("note", sa.String(16), nullable=False, server_default="old"))\n')
    r = cli("clickme", "migrate", "--db", db_url)
    assert r.code == 0 and f"upgraded {shipped_head} -> 9001_note: 9001_note" in r.out, r
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT note FROM participants").scalars().all() == ["old"] * 3
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == "9001_note"
    engine.dispose()
    r = cli("clickme", "export", "--db", db_url, "--out", tmp_path / "clicks.npz", "--include-practice")
    assert r.code == 0 and exported_trials(tmp_path / "clicks.npz") == expected_trials(trials), r


def test_a_failing_revision_rolls_everything_back(stimuli, db_url, tmp_path, monkeypatch, fresh_script_directory, cli):
    make_legacy_database(db_url, stimuli)
    before = snapshot(db_url)
    _with_revision(tmp_path, monkeypatch, "9001_broken",
                   '    op.add_column("trials", sa.Column("extra", sa.Integer(), nullable=True))\n'
                   '    op.execute("UPDATE no_such_table SET x = 1")\n')
    r = cli("clickme", "migrate", "--db", db_url)
    assert r.code == 2 and "9001_broken" in r.err and "rolled back" in r.err and len(r.err.strip().splitlines()) == 1, r
    assert snapshot(db_url) == before  # no version table, no new column: as it was
