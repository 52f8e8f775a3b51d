"""Rejections from the bulk-verification grid (annotation kind ``reject``), and a
project threshold below which a model's suggestions show as tentative.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Written out, not imported: later model changes must not change this revision.
OLD_SHAPE = ("(kind = 'retract' AND label_class_id IS NULL AND flag IS NULL "
             "AND retracts_id IS NOT NULL) OR (kind <> 'retract' AND retracts_id IS NULL "
             "AND (label_class_id IS NULL) <> (flag IS NULL))")
NEW_SHAPE = (
    "(kind = 'retract' AND label_class_id IS NULL AND flag IS NULL AND retracts_id IS NOT NULL) "
    "OR (kind = 'reject' AND label_class_id IS NULL AND flag IS NULL AND retracts_id IS NULL "
    "AND suggested_class_id IS NOT NULL AND model_version_id IS NOT NULL) "
    "OR (kind NOT IN ('retract', 'reject') AND retracts_id IS NULL "
    "AND (label_class_id IS NULL) <> (flag IS NULL))")
ACCURACY_CHECK = "suggestion_min_accuracy >= 0 AND suggestion_min_accuracy <= 1"


def upgrade() -> None:
    with op.batch_alter_table("annotations") as batch_op:
        batch_op.drop_constraint(op.f("ck_annotations_decision_shape"), type_="check")
        batch_op.create_check_constraint(op.f("ck_annotations_decision_shape"), NEW_SHAPE)
    with op.batch_alter_table("projects") as batch_op:
        batch_op.add_column(sa.Column("suggestion_min_accuracy", sa.Double(), nullable=False,
                                      server_default="0.7"))
        batch_op.create_check_constraint(op.f("ck_projects_suggestion_min_accuracy_range"),
                                         ACCURACY_CHECK)
    with op.batch_alter_table("projects") as batch_op:
        batch_op.alter_column("suggestion_min_accuracy", server_default=None)


def downgrade() -> None:
    # Rejections have no place in the old shape: they go (they were never votes).
    op.execute("DELETE FROM annotations WHERE kind = 'reject'")
    with op.batch_alter_table("annotations") as batch_op:
        batch_op.drop_constraint(op.f("ck_annotations_decision_shape"), type_="check")
        batch_op.create_check_constraint(op.f("ck_annotations_decision_shape"), OLD_SHAPE)
    with op.batch_alter_table("projects") as batch_op:
        batch_op.drop_constraint(op.f("ck_projects_suggestion_min_accuracy_range"), type_="check")
        batch_op.drop_column("suggestion_min_accuracy")
