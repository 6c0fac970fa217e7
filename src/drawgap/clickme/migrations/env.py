"""Alembic's environment for the ClickMe database. `drawgap.clickme.migrate` runs it on a connection it has
opened and holds in a transaction (`config.attributes["connection"]`), so that a backup, the recognition of
an unversioned database and every revision happen under one lock and commit or roll back together."""

from alembic import context

from drawgap.clickme.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("ClickMe migrations run through `drawgap clickme migrate --db URL` (drawgap.clickme.migrate)")
# render_as_batch: SQLite alters most things only by copying a table, which Alembic's batch mode does.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
