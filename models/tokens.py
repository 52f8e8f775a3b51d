"""Personal access tokens for the API (``Authorization: Bearer``).

Only a SHA-256 of the token is stored: the token is 32 random bytes, so a
plain hash is as good as a slow one (there is nothing to guess), and a leaked
database yields no usable token.  The first characters are kept in the clear
so a person can tell their tokens apart in the Account page.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow
from .users import Role, User

TOKEN_MARK = "hml_"  # recognisable in logs and by secret scanners
PREFIX_LENGTH = len(TOKEN_MARK) + 8


class Scope(enum.StrEnum):
    READ = "read"  # look at projects, cells, annotations
    LABEL = "label"  # lease cells and record labels, as the token's user
    ADMIN = "admin"  # rounds and model versions; only for admins


# The role a user needs for a token of theirs to carry each scope.  Checked
# at every request, so a demoted admin's tokens lose ``admin`` at once.
SCOPE_ROLE = {Scope.READ: Role.PATHOLOGIST, Scope.LABEL: Role.PATHOLOGIST, Scope.ADMIN: Role.ADMIN}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_MARK + secrets.token_urlsafe(32)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")

    @classmethod
    def issue(cls, user: User, name: str, scopes: list[Scope],
              expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """A new token row and the token itself (shown once, never stored)."""
        token = new_token()
        row = cls(user_id=user.id, name=name, prefix=token[:PREFIX_LENGTH],
                  token_hash=hash_token(token), scopes=sorted(s.value for s in scopes),
                  expires_at=expires_at, created_at=utcnow())
        return row, token

    def usable(self, now: datetime) -> bool:
        return (self.revoked_at is None and self.user.is_active
                and (self.expires_at is None or self.expires_at > now))

    def effective_scopes(self) -> set[Scope]:
        """The token's scopes that its user's current role still allows."""
        out = set()
        for raw in self.scopes or []:
            try:
                scope = Scope(raw)
            except ValueError:
                continue
            if self.user.has_role(SCOPE_ROLE[scope]):
                out.add(scope)
        return out

    def __repr__(self) -> str:
        return f"<ApiToken {self.prefix}… of user {self.user_id}>"
