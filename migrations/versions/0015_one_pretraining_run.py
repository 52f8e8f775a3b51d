"""At most one queued or running pretraining run per project (a partial unique index).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: Union[str, None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    # Two starts that raced before this index: keep each project's running run
    # (its worker is busy with it), else its oldest queued one; fail the others
    # with a message the admin sees on their pages.
    op.execute(sa.text(
        "UPDATE pretraining_runs SET status = 'failed', finished_at = CURRENT_TIMESTAMP, "
        "error = 'Started twice at once; the other run carries on.' "
        "WHERE status IN ('queued', 'running') AND EXISTS ("
        "  SELECT 1 FROM pretraining_runs AS o "
        "  WHERE o.project_id = pretraining_runs.project_id AND o.id <> pretraining_runs.id "
        "  AND o.status IN ('queued', 'running') "
        "  AND ((o.status = 'running' AND pretraining_runs.status = 'queued') "
        "       OR (o.status = pretraining_runs.status AND o.id < pretraining_runs.id)))"))
    op.create_index("uq_pretraining_runs_one_active", "pretraining_runs", ["project_id"],
                    unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("uq_pretraining_runs_one_active", table_name="pretraining_runs")
