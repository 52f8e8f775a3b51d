"""Active learning: strategy settings, frozen review queues, simulation runs,
prediction indexes for ranking in SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

IS_CURRENT = sa.text("is_current")


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch_op:
        # Server defaults stay (the models declare them): existing projects get
        # the default strategy, chosen in docs/benchmarks.md.
        batch_op.add_column(sa.Column("al_strategy", sa.String(length=30), nullable=False,
                                      server_default="hybrid"))
        batch_op.add_column(sa.Column("al_round_size", sa.Integer(), nullable=False,
                                      server_default="50"))
        batch_op.add_column(sa.Column("review_random_share", sa.Double(), nullable=False,
                                      server_default="0.1"))

    op.create_table(
        "review_queues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("strategy", sa.String(length=30), nullable=False),
        sa.Column("round_size", sa.Integer(), nullable=False),
        sa.Column("random_share", sa.Double(), nullable=False),
        sa.Column("status", sa.Enum("building", "ready", "failed", name="queue_status",
                                    native_enum=False, length=10), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"],
                                name="fk_review_queues_model_version_id_model_versions",
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name="fk_review_queues_project_id_projects", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_review_queues"),
    )
    op.create_index("ix_review_queues_project_id", "review_queues", ["project_id"])
    op.create_index("uq_review_queues_one_current", "review_queues", ["project_id"], unique=True,
                    sqlite_where=IS_CURRENT, postgresql_where=IS_CURRENT)
    op.create_table(
        "review_queue_items",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("is_random", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"],
                                name="fk_review_queue_items_image_id_images", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["queue_id"], ["review_queues.id"],
                                name="fk_review_queue_items_queue_id_review_queues",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("queue_id", "position", name="pk_review_queue_items"),
    )
    op.create_index("ix_review_queue_items_image_queue", "review_queue_items",
                    ["image_id", "queue_id"], unique=True)
    op.create_table(
        "simulation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Enum("queued", "running", "succeeded", "failed",
                                    name="simulation_status", native_enum=False, length=10),
                  nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Double(), nullable=False),
        sa.Column("phase", sa.String(length=200), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("output_dir", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name="fk_simulation_runs_created_by_id_users"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name="fk_simulation_runs_project_id_projects",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_simulation_runs"),
    )
    op.create_index("ix_simulation_runs_project_id", "simulation_runs", ["project_id"])
    op.create_index("ix_predictions_version_margin", "predictions",
                    ["model_version_id", "margin"])
    op.create_index("ix_predictions_version_least_confidence", "predictions",
                    ["model_version_id", "least_confidence"])


def downgrade() -> None:
    op.drop_index("ix_predictions_version_least_confidence", table_name="predictions")
    op.drop_index("ix_predictions_version_margin", table_name="predictions")
    op.drop_index("ix_simulation_runs_project_id", table_name="simulation_runs")
    op.drop_table("simulation_runs")
    op.drop_index("ix_review_queue_items_image_queue", table_name="review_queue_items")
    op.drop_table("review_queue_items")
    op.drop_index("uq_review_queues_one_current", table_name="review_queues")
    op.drop_index("ix_review_queues_project_id", table_name="review_queues")
    op.drop_table("review_queues")
    with op.batch_alter_table("projects") as batch_op:
        batch_op.drop_column("review_random_share")
        batch_op.drop_column("al_round_size")
        batch_op.drop_column("al_strategy")
