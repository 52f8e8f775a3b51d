"""Reading: k readers per cell, contested classes, blind reading, leases,
undo (retractions), bulk verification and curator resolutions.

Also renames the two project check constraints 0002 created with a doubled
prefix (the naming convention prefixed an already prefixed name).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_SHAPE = "(label_class_id IS NULL) <> (flag IS NULL)"
NEW_SHAPE = ("(kind = 'retract' AND label_class_id IS NULL AND flag IS NULL "
             "AND retracts_id IS NOT NULL) OR (kind <> 'retract' AND retracts_id IS NULL "
             "AND (label_class_id IS NULL) <> (flag IS NULL))")

PROJECT_CHECKS = {
    "ck_projects_readers_per_cell_positive": "readers_per_cell >= 1",
    "ck_projects_contested_readers_positive": "contested_readers IS NULL OR contested_readers >= 1",
    "ck_projects_agreement_share_range": "agreement_share >= 0 AND agreement_share <= 1",
    "ck_projects_lease_minutes_positive": "lease_minutes >= 1",
}
RENAMED_CHECKS = {
    "ck_projects_fine_tune_blocks_range": "fine_tune_blocks >= 0 AND fine_tune_blocks <= 11",
    "ck_projects_retrain_after_positive":
        "retrain_after_new_labels IS NULL OR retrain_after_new_labels >= 1",
}


def _check_names(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_check_constraints(table)}


def upgrade() -> None:
    existing = _check_names("projects")
    with op.batch_alter_table("projects") as batch_op:
        for name, condition in RENAMED_CHECKS.items():
            doubled = "ck_projects_" + name
            if doubled in existing:
                batch_op.drop_constraint(op.f(doubled), type_="check")
                batch_op.create_check_constraint(op.f(name), condition)
        batch_op.add_column(sa.Column("readers_per_cell", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("contested_readers", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("contested_class_ids", sa.JSON(), nullable=False,
                                      server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column("agreement_share", sa.Double(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("blind_reading", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("lease_minutes", sa.Integer(), nullable=False,
                                      server_default="10"))
        for name, condition in PROJECT_CHECKS.items():
            batch_op.create_check_constraint(op.f(name), condition)
    with op.batch_alter_table("projects") as batch_op:
        for column in ("readers_per_cell", "contested_class_ids", "agreement_share",
                       "blind_reading", "lease_minutes"):
            batch_op.alter_column(column, server_default=None)

    checks = _check_names("annotations")
    with op.batch_alter_table("annotations") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=10), nullable=False,
                                      server_default="label"))
        batch_op.add_column(sa.Column("retracts_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("note", sa.String(length=2000), nullable=True))
        batch_op.create_foreign_key(op.f("fk_annotations_retracts_id_annotations"),
                                    "annotations", ["retracts_id"], ["id"])
        batch_op.create_index(op.f("ix_annotations_retracts_id"), ["retracts_id"])
        batch_op.create_index("ix_annotations_user_created", ["user_id", "created_at"])
        if "ck_annotations_class_xor_flag" in checks:
            batch_op.drop_constraint(op.f("ck_annotations_class_xor_flag"), type_="check")
        batch_op.create_check_constraint(op.f("ck_annotations_decision_shape"), NEW_SHAPE)
    with op.batch_alter_table("annotations") as batch_op:
        batch_op.alter_column("kind", server_default=None)

    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE",
                                name=op.f("fk_leases_image_id_images")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_leases_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
        sa.UniqueConstraint("image_id", "slot", name=op.f("uq_leases_image_id_slot")),
    )
    op.create_index("ix_leases_user_expires", "leases", ["user_id", "expires_at"])
    op.create_index("ix_leases_expires", "leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_leases_expires", table_name="leases")
    op.drop_index("ix_leases_user_expires", table_name="leases")
    op.drop_table("leases")

    # Undo rows and curator rows cannot be expressed in the old schema.
    op.execute("DELETE FROM annotations WHERE kind = 'retract' OR origin = 'curator'")
    checks = _check_names("annotations")
    with op.batch_alter_table("annotations") as batch_op:
        if "ck_annotations_decision_shape" in checks:
            batch_op.drop_constraint(op.f("ck_annotations_decision_shape"), type_="check")
        batch_op.create_check_constraint(op.f("ck_annotations_class_xor_flag"), OLD_SHAPE)
        batch_op.drop_index("ix_annotations_user_created")
        batch_op.drop_index(op.f("ix_annotations_retracts_id"))
        batch_op.drop_constraint(op.f("fk_annotations_retracts_id_annotations"),
                                 type_="foreignkey")
        batch_op.drop_column("note")
        batch_op.drop_column("retracts_id")
        batch_op.drop_column("kind")

    checks = _check_names("projects")
    with op.batch_alter_table("projects") as batch_op:
        for name in PROJECT_CHECKS:
            if name in checks:
                batch_op.drop_constraint(op.f(name), type_="check")
        # Back to the names 0002's downgrade expects.
        for name, condition in RENAMED_CHECKS.items():
            if name in checks:
                batch_op.drop_constraint(op.f(name), type_="check")
                batch_op.create_check_constraint(op.f("ck_projects_" + name), condition)
        for column in ("lease_minutes", "blind_reading", "agreement_share",
                       "contested_class_ids", "contested_readers", "readers_per_cell"):
            batch_op.drop_column(column)
