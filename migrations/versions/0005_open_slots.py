"""Readers a cell still needs, on the cell row (images.open_slots), for a fast queue;
an index for "has this reader decided on this cell"; margin as the default strategy
for new projects (docs/benchmarks.md; existing projects keep theirs).

The backfill computes, for each pool cell, the rules of revision 0004 (see
models/labels.py as of this revision): k readers (a project's
``contested_readers`` for the agreement sample and for cells with a vote in a
contested class), minus live reader votes; 0 when a curator resolved the
cell, a live vote flags it ambiguous, or it has its votes.  It is written out
here, not imported, so that later changes to the models cannot change what
this revision did.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OPEN = sa.text("open_slots > 0")
SAMPLE_MULTIPLIER = 2654435761
SAMPLE_BUCKETS = 1000

# A reader's vote that no undo has voided.
LIVE = ("a.origin = 'reader' AND a.kind <> 'retract' AND NOT EXISTS "
        "(SELECT 1 FROM annotations u WHERE u.retracts_id = a.id)")
VOTES = f"(SELECT count(*) FROM annotations a WHERE a.image_id = images.id AND {LIVE})"


def _needed(k: int, contested: int | None, classes: list[int], share: float) -> str:
    if not contested or contested <= k:
        return str(k)
    threshold = round(share * SAMPLE_BUCKETS)
    ids = ", ".join(str(int(c)) for c in classes) or "-1"
    sampled = (f"((CAST(images.id AS BIGINT) * {SAMPLE_MULTIPLIER}) % {SAMPLE_BUCKETS}) "
               f"< {threshold}")
    voted = (f"EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = images.id AND {LIVE} "
             f"AND a.label_class_id IN ({ids}))")
    return f"(CASE WHEN {sampled} OR {voted} THEN {int(contested)} ELSE {k} END)"


def upgrade() -> None:
    with op.batch_alter_table("images") as batch_op:
        batch_op.add_column(sa.Column("open_slots", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.create_index("ix_images_open_queue", ["project_id", "shuffle_key", "id"],
                              unique=False, sqlite_where=OPEN, postgresql_where=OPEN)
    with op.batch_alter_table("annotations") as batch_op:
        batch_op.create_index("ix_annotations_user_image", ["user_id", "image_id"], unique=False)
    with op.batch_alter_table("projects") as batch_op:
        batch_op.alter_column("al_strategy", existing_type=sa.String(length=30),
                              existing_nullable=False, server_default="margin")
    conn = op.get_bind()
    projects = conn.execute(sa.text(
        "SELECT id, readers_per_cell, contested_readers, contested_class_ids, agreement_share "
        "FROM projects")).all()
    for pid, k, contested, classes, share in projects:
        if isinstance(classes, str):  # SQLite hands JSON back as text
            classes = json.loads(classes)
        needed = _needed(k, contested, classes or [], share)
        conn.execute(sa.text(
            f"UPDATE images SET open_slots = CASE WHEN images.split = 'pool' "
            "AND NOT EXISTS (SELECT 1 FROM annotations c WHERE c.image_id = images.id "
            "AND c.origin = 'curator') "
            f"AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = images.id AND {LIVE} "
            "AND a.flag = 'ambiguous') "
            f"AND {VOTES} < {needed} THEN {needed} - {VOTES} ELSE 0 END "
            "WHERE images.project_id = :pid"), {"pid": pid})


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch_op:
        batch_op.alter_column("al_strategy", existing_type=sa.String(length=30),
                              existing_nullable=False, server_default="hybrid")
    with op.batch_alter_table("annotations") as batch_op:
        batch_op.drop_index("ix_annotations_user_image")
    with op.batch_alter_table("images") as batch_op:
        batch_op.drop_index("ix_images_open_queue", sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.drop_column("open_slots")
