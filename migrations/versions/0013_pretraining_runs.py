"""pretraining_runs and project_backbones: self-supervised pretraining of a
project's backbone on its own pool, and which backbone its rounds use (issue 15).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: Union[str, None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "pretraining_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Enum("queued", "running", "succeeded", "failed", "cancelled",
                                    name="pretraining_status", native_enum=False, length=10),
                  nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Double(), nullable=False),
        sa.Column("phase", sa.String(length=200), nullable=False),
        sa.Column("loss_history", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("weights_path", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("eta_seconds", sa.Double(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name=op.f("fk_pretraining_runs_created_by_id_users")),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name=op.f("fk_pretraining_runs_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pretraining_runs")),
    )
    op.create_index(op.f("ix_pretraining_runs_project_id"), "pretraining_runs", ["project_id"])
    op.create_table(
        "project_backbones",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.Enum("setting", "random", "imagenet", "pretrained",
                                    name="backbone_choice", native_enum=False, length=10),
                  nullable=False),
        sa.Column("pretraining_run_id", sa.Integer(), nullable=True),
        sa.Column("chosen_by_id", sa.Integer(), nullable=True),
        sa.Column("chosen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["chosen_by_id"], ["users.id"],
                                name=op.f("fk_project_backbones_chosen_by_id_users")),
        sa.ForeignKeyConstraint(["pretraining_run_id"], ["pretraining_runs.id"],
                                ondelete="SET NULL",
                                name=op.f("fk_project_backbones_pretraining_run_id_pretraining_runs")),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name=op.f("fk_project_backbones_project_id_projects")),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_project_backbones")),
    )


def downgrade() -> None:
    op.drop_table("project_backbones")
    op.drop_index(op.f("ix_pretraining_runs_project_id"), table_name="pretraining_runs")
    op.drop_table("pretraining_runs")
