"""Leases: which reader holds which cell for now.

A cell shown to a reader is leased to them until ``expires_at``; a closed tab
simply lets the lease run out.  A cell has as many lease *slots* as it still
needs readers, and (image_id, slot) is unique, so two readers racing for the
last slot cannot both win, on SQLite and PostgreSQL alike: the database
refuses the second insert.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Lease(Base):
    __tablename__ = "leases"
    __table_args__ = (
        UniqueConstraint("image_id", "slot"),
        Index("ix_leases_user_expires", "user_id", "expires_at"),
        Index("ix_leases_expires", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    slot: Mapped[int]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
