"""Project membership, browser imports, one-time passwords.

- project_members: pathologists and curators see only their projects.  Every
  existing pathologist and curator becomes a member of every existing
  project, so nothing changes for a lab that upgrades.
- import_jobs: uploads imported by a worker, with progress and the report.
- users.must_change_password: set by an admin's password reset.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "project_members",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name="fk_project_members_project_id_projects", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name="fk_project_members_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "user_id", name="pk_project_members"),
    )
    op.create_index("ix_project_members_user_id", "project_members", ["user_id"])
    # Backfill: every reader keeps seeing what they saw before the upgrade.
    op.execute(
        "INSERT INTO project_members (project_id, user_id, added_at) "
        "SELECT projects.id, users.id, CURRENT_TIMESTAMP FROM projects CROSS JOIN users "
        "WHERE users.role IN ('pathologist', 'curator')")

    op.create_table(
        "import_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Enum("queued", "running", "succeeded", "failed",
                                    name="import_status", native_enum=False, length=10),
                  nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("upload_dir", sa.String(length=500), nullable=False),
        sa.Column("trust_labels", sa.Boolean(), nullable=False),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name="fk_import_jobs_created_by_id_users", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name="fk_import_jobs_project_id_projects", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_import_jobs"),
    )
    op.create_index("ix_import_jobs_project_id", "import_jobs", ["project_id"])

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("must_change_password", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("must_change_password")
    op.drop_index("ix_import_jobs_project_id", table_name="import_jobs")
    op.drop_table("import_jobs")
    op.drop_index("ix_project_members_user_id", table_name="project_members")
    op.drop_table("project_members")
