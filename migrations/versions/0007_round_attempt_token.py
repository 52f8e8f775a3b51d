"""Each attempt at a training round has its own token on the row: only the attempt
that holds it may write progress, the round's end or its model (issue 11).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch_op:
        batch_op.add_column(sa.Column("attempt_token", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch_op:
        batch_op.drop_column("attempt_token")
