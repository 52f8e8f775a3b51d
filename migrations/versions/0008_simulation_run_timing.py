"""Strategy comparisons: when a run started, its estimated time left, and when its
worker last reported, so the admin page can say how long it has to go and fail a
run whose worker was lost (a cancel needs no schema change: the ``cancelled``
status fits the plain string column).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("simulation_runs") as batch_op:
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("eta_seconds", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("simulation_runs") as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("eta_seconds")
        batch_op.drop_column("started_at")
