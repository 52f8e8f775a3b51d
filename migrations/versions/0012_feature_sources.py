"""feature_sources: which features a project's classifier head reads (issue 15).

Existing projects keep "backbone" (what their models were trained on); new
projects get models.feature_sources.DEFAULT_FEATURE_SOURCES from the model.
The review strategy's server default moves from "margin" to "class_balanced"
(measured on descriptors, docs/benchmarks.md); existing projects keep theirs.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: Union[str, None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch_op:
        batch_op.add_column(sa.Column("feature_sources", sa.String(length=20), nullable=False,
                                      server_default="backbone"))
        batch_op.create_check_constraint(
            "feature_sources_known", "feature_sources IN ('backbone', 'descriptors', 'both')")
        batch_op.alter_column("al_strategy", existing_type=sa.String(length=30),
                              existing_nullable=False, server_default="class_balanced")


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch_op:
        batch_op.alter_column("al_strategy", existing_type=sa.String(length=30),
                              existing_nullable=False, server_default="margin")
        batch_op.drop_constraint("feature_sources_known", type_="check")
        batch_op.drop_column("feature_sources")
