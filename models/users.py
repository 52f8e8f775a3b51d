"""Accounts and their roles."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from functools import cache

from sqlalchemy import Enum, String, false
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from .base import Base, utcnow


class Role(enum.StrEnum):
    PATHOLOGIST = "pathologist"
    CURATOR = "curator"
    ADMIN = "admin"


# Who may do what: an admin can do everything a curator can, a curator
# everything a pathologist can.
ROLE_RANK = {Role.PATHOLOGIST: 1, Role.CURATOR: 2, Role.ADMIN: 3}


@cache
def dummy_password_hash() -> str:
    """A hash of a random password, made the way real ones are (same method and cost).

    A login for an unknown or inactive account checks the password against it,
    so it costs the same as a login for a real account and the answer time does
    not tell which usernames exist.
    """
    return generate_password_hash(secrets.token_urlsafe(16))


def verify_login(user: User | None, password: str) -> bool:
    """True when ``user`` exists, is active and ``password`` is its password.

    Exactly one hash verification either way (see dummy_password_hash).
    """
    if user is None:
        check_password_hash(dummy_password_hash(), password)
        return False
    matches = user.check_password(password)
    return matches and user.is_active


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=20)
    )
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Sessions carry the value they were opened with; bumping it ends every
    # session of this account at its next request (logout, a new password,
    # deactivation).  Flask's session is a signed cookie, so this column is
    # what makes "log out" hold on the server.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # Set by an admin's password reset (a one-time password): until the user
    # chooses a new one, every page sends them to the account page.
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())

    def set_password(self, password: str) -> None:
        if self.password_hash:
            self.end_sessions()  # a new password ends sessions opened with the old one
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def end_sessions(self) -> None:
        self.session_version = (self.session_version or 0) + 1

    def deactivate(self) -> None:
        self.is_active = False
        self.end_sessions()

    def has_role(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    # Flask-Login's user protocol, kept here so the webapp needs no wrapper.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def __repr__(self) -> str:
        return f"<User {self.username} ({self.role})>"
