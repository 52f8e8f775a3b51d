"""Bearer tokens for API v1: who is calling, and with which scopes.

The token is looked up once per request (by its SHA-256) and kept in `g`:
`webapp.limits.gate` asks before reading a request body (anonymous bodies
are refused unread), the view's `auth_required` asks again.
"""

from __future__ import annotations

from datetime import timedelta

from apiflask import HTTPTokenAuth
from flask import g, request
from sqlalchemy import select, update

from models import ApiToken, User, utcnow
from models.tokens import hash_token

from ...db import get_db

# last_used_at is a hint for the Account page, not an audit log: written at
# most once a minute per token, so a busy script does not write on every call.
LAST_USED_EVERY = timedelta(minutes=1)

token_auth = HTTPTokenAuth(
    scheme="Bearer",
    description="A personal access token from the Account page (/auth/account): "
                "`Authorization: Bearer hml_…`.",
)


def _presented() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > 200:
        return None
    return value


def bearer_token() -> ApiToken | None:
    """This request's usable token, or None (missing, unknown, expired, revoked,
    or its user deactivated)."""
    if "api_token" in g:
        return g.api_token
    token = None
    presented = _presented()
    if presented is not None:
        db = get_db()
        row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(presented)))
        now = utcnow()
        if row is not None and row.usable(now):
            token = row
            if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
                db.execute(update(ApiToken).where(ApiToken.id == row.id)
                           .values(last_used_at=now))
                db.commit()
    g.api_token = token
    return token


def acting_user() -> User:
    """The token's user (only inside a view protected by `token_auth`)."""
    return g.api_token.user


@token_auth.verify_token
def _verify(_value: str) -> User | None:
    token = bearer_token()
    return token.user if token is not None else None


@token_auth.get_user_roles
def _scopes(_user: User) -> list[str]:
    token = bearer_token()
    return sorted(s.value for s in token.effective_scopes()) if token else []


MESSAGES = {
    401: "Send a valid token: Authorization: Bearer <token> (made in the Account page). "
         "It may be unknown, expired or revoked, or its account deactivated.",
    403: "This token does not carry the scope this call needs, or its user's role "
         "does not allow it.",
}


@token_auth.error_processor
def _auth_error(error):
    headers = {"WWW-Authenticate": 'Bearer realm="hemaloop"'} if error.status_code == 401 else {}
    return ({"error": error.message, "message": MESSAGES.get(error.status_code, error.message)},
            error.status_code, headers)
