"""Participant tokens: each participant's secret token, stored as its sha256 (the id alone no longer opens a
participant's state, trials, partner queries or completion code).

Participants made before this revision have no token (NULL): they can no longer be continued, and their trials
export unchanged. The data-only changes of the same release need no DDL: the `settings` row `recognition_key`
is made at a server's first start, and the `game` row holds the new effort thresholds.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_participant_token"
down_revision = "0001_baseline"


def upgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.add_column(sa.Column("token_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("token_sha256")
