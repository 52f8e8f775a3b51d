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
    # Two starts that raced before this index: keep each project's oldest active
    # run, fail the others with a message the admin sees on their pages.
    op.execute(sa.text(
        "UPDATE pretraining_runs SET status = 'failed', finished_at = CURRENT_TIMESTAMP, "
        "error = 'Started twice at once; the earlier run carries on.' "
        "WHERE status IN ('queued', 'running') AND id > ("
        "  SELECT MIN(o.id) FROM pretraining_runs AS o "
        "  WHERE o.project_id = pretraining_runs.project_id "
        "  AND o.status IN ('queued', 'running'))"))
    op.create_index("uq_pretraining_runs_one_active", "pretraining_runs", ["project_id"],
                    unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("uq_pretraining_runs_one_active", table_name="pretraining_runs")
