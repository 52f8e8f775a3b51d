"""Server-side checks on Flask's client-side session: the account's session
version and the idle time.

Flask keeps the session in a signed cookie, so a copied cookie stays valid
until something on the server refuses it.  Two things do:

- ``users.session_version``: stored in the session at login and compared on
  every request; logout, a new password and deactivation bump it.
- the time of the last request, refreshed at most every ``_REFRESH`` seconds
  (so most responses do not rewrite the cookie): past the idle limit the
  session is over.
"""

from __future__ import annotations

import time

from flask import current_app, session

from models import User

VERSION_KEY = "auth_v"
SEEN_KEY = "seen"


def now() -> float:
    return time.time()


def _idle_seconds() -> int:
    return current_app.config["HEMALOOP"].session_idle_minutes * 60


def start(user: User) -> None:
    """Record, in a freshly cleared session, what later requests are checked against."""
    session[VERSION_KEY] = user.session_version
    session[SEEN_KEY] = int(now())


def still_valid(user: User) -> bool:
    """Whether this request's session may act as ``user``; refreshes the idle clock."""
    version = session.get(VERSION_KEY)
    seen = session.get(SEEN_KEY)
    if not isinstance(version, int) or not isinstance(seen, int):
        return False  # a session from before these checks, or a forged shape
    if version != user.session_version:
        return False
    idle = _idle_seconds()
    elapsed = now() - seen
    if elapsed > idle or elapsed < -60:  # a stamp from the future is not ours
        return False
    # Refresh at most every tenth of the idle time (and at least once a minute).
    if elapsed > min(60, idle / 10):
        session[SEEN_KEY] = int(now())
    return True
