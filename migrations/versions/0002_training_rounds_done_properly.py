"""Training rounds done properly: two-phase fine-tuning settings, scheduling,
calibration, one active round and one active model per project.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ACTIVE = sa.text("status IN ('queued', 'running')")
IS_ACTIVE = sa.text("is_active")

# New NOT NULL columns get a server default so existing rows are filled in;
# the default is dropped afterwards, leaving exactly the models' schema.
FILLED = {
    "model_versions": [
        sa.Column("temperature", sa.Double(), nullable=False, server_default="1.0"),
        sa.Column("n_train", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("config", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("feature_key", sa.String(length=120), nullable=False, server_default=""),
    ],
    "projects": [
        sa.Column("fine_tune_blocks", sa.Integer(), nullable=False, server_default="2"),
        sa.Column("warm_start", sa.Boolean(), nullable=False, server_default=sa.true()),
    ],
    "training_rounds": [
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    ],
}


def upgrade() -> None:
    for table, columns in FILLED.items():
        with op.batch_alter_table(table) as batch_op:
            for column in columns:
                batch_op.add_column(column)
    for table, columns in FILLED.items():
        with op.batch_alter_table(table) as batch_op:
            for column in columns:
                batch_op.alter_column(column.name, server_default=None)

    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.add_column(sa.Column("parent_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            "fk_model_versions_parent_version_id_model_versions", "model_versions",
            ["parent_version_id"], ["id"])
        batch_op.create_index("uq_model_versions_one_active", ["project_id"], unique=True,
                              sqlite_where=IS_ACTIVE, postgresql_where=IS_ACTIVE)

    with op.batch_alter_table("projects") as batch_op:
        batch_op.add_column(sa.Column("retrain_after_new_labels", sa.Integer(), nullable=True))
        batch_op.create_check_constraint(
            "ck_projects_fine_tune_blocks_range", "fine_tune_blocks >= 0 AND fine_tune_blocks <= 11")
        batch_op.create_check_constraint(
            "ck_projects_retrain_after_positive",
            "retrain_after_new_labels IS NULL OR retrain_after_new_labels >= 1")

    with op.batch_alter_table("training_rounds") as batch_op:
        batch_op.add_column(sa.Column("labels_at_start", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("eta_seconds", sa.Double(), nullable=True))
        batch_op.create_index("uq_training_rounds_one_active", ["project_id"], unique=True,
                              sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch_op:
        batch_op.drop_index("uq_training_rounds_one_active")
        batch_op.drop_column("eta_seconds")
        batch_op.drop_column("labels_at_start")
        batch_op.drop_column("attempts")

    with op.batch_alter_table("projects") as batch_op:
        batch_op.drop_constraint("ck_projects_retrain_after_positive", type_="check")
        batch_op.drop_constraint("ck_projects_fine_tune_blocks_range", type_="check")
        batch_op.drop_column("retrain_after_new_labels")
        batch_op.drop_column("warm_start")
        batch_op.drop_column("fine_tune_blocks")

    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_index("uq_model_versions_one_active")
        batch_op.drop_constraint("fk_model_versions_parent_version_id_model_versions",
                                 type_="foreignkey")
        batch_op.drop_column("activated_at")
        batch_op.drop_column("parent_version_id")
        batch_op.drop_column("feature_key")
        batch_op.drop_column("config")
        batch_op.drop_column("n_train")
        batch_op.drop_column("temperature")
