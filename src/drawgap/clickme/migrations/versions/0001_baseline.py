"""Baseline: the tables of drawgap 0.1.0 (the same in every version before migrations, 1bc9ab8 to 4a64bc3).

A database made before migrations existed has exactly these tables and no `alembic_version`; `drawgap clickme
migrate` recognises it (drawgap.clickme.migrate.UNVERSIONED_COLUMNS) and stamps it with this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.String(64), nullable=False),
        sa.Column("participant_id", sa.String(64), nullable=False),
        sa.Column("seed", sa.String(24), nullable=False),
        sa.Column("completion_code", sa.String(64), nullable=False),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("study_id", "participant_id", name="uq_participant"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
    )
    op.create_table(
        "stimuli",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("category", sa.String(256), nullable=False),
        sa.Column("category_index", sa.Integer(), nullable=False),
        sa.Column("source_index", sa.Integer(), nullable=False),
        sa.Column("exemplar", sa.Boolean(), nullable=False),
        sa.Column("practice", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "assignments",
        sa.Column("participant_pk", sa.Integer(), sa.ForeignKey("participants.pk"), primary_key=True),
        sa.Column("practice", sa.Boolean(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("stimulus_id", sa.String(64), sa.ForeignKey("stimuli.id"), nullable=False),
    )
    op.create_index("ix_assignments_stimulus_id", "assignments", ["stimulus_id"])
    op.create_table(
        "trials",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("participant_pk", sa.Integer(), sa.ForeignKey("participants.pk"), nullable=False),
        sa.Column("practice", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("stimulus_id", sa.String(64), sa.ForeignKey("stimuli.id"), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("n_points", sa.Integer(), nullable=False),
        sa.Column("partner", sa.JSON(), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("participant_pk", "practice", "position", name="uq_trial_slot"),
    )
    op.create_index("ix_trials_stimulus_id", "trials", ["stimulus_id"])
    op.create_index("ix_trials_participant_pk", "trials", ["participant_pk"])
    op.create_table(
        "clicks",
        sa.Column("trial_id", sa.String(36), sa.ForeignKey("trials.id"), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("t_ms", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in ("clicks", "trials", "assignments", "stimuli", "settings", "participants"):
        op.drop_table(table)
