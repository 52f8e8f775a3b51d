"""Helpers for API v1 tests: tokens made the way the Account page makes them."""

from __future__ import annotations

from datetime import datetime

from models import ApiToken, Scope, User
from models.db import session_scope


def make_token(settings, user_id: int, scopes: list[str], expires_at: datetime | None = None,
               name: str = "test") -> str:
    with session_scope(settings.database_url) as s:
        user = s.get(User, user_id)
        row, token = ApiToken.issue(user, name, [Scope(x) for x in scopes], expires_at)
        s.add(row)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
