"""cell_measurements, describe_runs, projects.microns_per_pixel (issue 15: the curator's
measurements panel).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: Union[str, None] = "0013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "cell_measurements",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("descriptor_version", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("nucleus_found", sa.Boolean(), nullable=True),
        sa.Column("cytoplasm_found", sa.Boolean(), nullable=True),
        sa.Column("nucleus_area_px", sa.Double(), nullable=True),
        sa.Column("cell_area_px", sa.Double(), nullable=True),
        sa.Column("nucleus_lobes", sa.Integer(), nullable=True),
        sa.Column("nucleus_to_cell", sa.Double(), nullable=True),
        sa.Column("nucleus_circularity", sa.Double(), nullable=True),
        sa.Column("nucleus_solidity", sa.Double(), nullable=True),
        sa.Column("chromatin_density", sa.Double(), nullable=True),
        sa.Column("chromatin_contrast", sa.Double(), nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE",
                                name=op.f("fk_cell_measurements_image_id_images")),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name=op.f("fk_cell_measurements_project_id_projects")),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_cell_measurements")),
    )
    op.create_index(op.f("ix_cell_measurements_project_id"), "cell_measurements", ["project_id"])

    op.create_table(
        "describe_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Enum("queued", "running", "succeeded", "failed",
                                    name="describe_status", native_enum=False, length=10),
                  nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("descriptor_version", sa.Integer(), nullable=True),
        sa.Column("cells_total", sa.Integer(), nullable=False),
        sa.Column("cells_done", sa.Integer(), nullable=False),
        sa.Column("cells_failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], ondelete="SET NULL",
                                name=op.f("fk_describe_runs_created_by_id_users")),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name=op.f("fk_describe_runs_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_describe_runs")),
    )
    op.create_index(op.f("ix_describe_runs_project_id"), "describe_runs", ["project_id"])

    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("microns_per_pixel", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("microns_per_pixel")
    op.drop_index(op.f("ix_describe_runs_project_id"), table_name="describe_runs")
    op.drop_table("describe_runs")
    op.drop_index(op.f("ix_cell_measurements_project_id"), table_name="cell_measurements")
    op.drop_table("cell_measurements")
