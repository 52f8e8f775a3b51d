"""Failed-login limits, per account and per client address (Flask-Limiter).

Only failed attempts count (a 401 answer); once an account or an address
has used its allowance, further attempts are refused with 429 before the
password is even checked, right password or not, until the window moves on.
The counts live in the storage named by HEMALOOP_RATELIMIT_STORAGE_URL (the
broker's Redis in production, so every web process shares them).
"""

from __future__ import annotations

from flask import request
from flask_limiter.util import get_remote_address

from ..extensions import limiter

# Per account: a person who mistypes a few times is never stopped; a guesser
# gets 10 tries per quarter hour (about 1,000 a day) instead of thousands a minute.
ACCOUNT_LIMIT = "10 per 15 minutes"
# Per address: a little more than one account's worth, so a shared office
# address is not locked out by one user, yet spraying many usernames is slow.
ADDRESS_LIMIT = "30 per 15 minutes"
WINDOW_MINUTES = 15


def _account_key() -> str:
    # Usernames are compared exactly, but "Admin" and "admin " share a count,
    # so varying case or spaces buys a guesser nothing.
    name = (request.form.get("username") or "").strip().lower()[:80]
    return f"login-account:{name}"


def _address_key() -> str:
    return f"login-address:{get_remote_address()}"


def _failed(response) -> bool:
    return response.status_code == 401


TOO_MANY = (f"Too many failed logins. Wait {WINDOW_MINUTES} minutes and try again, "
            "or ask an admin to check the account.")


def limit_failed_logins(view):
    """Both limits on the login view, counted on failed POSTs only."""
    for limit, key in ((ACCOUNT_LIMIT, _account_key), (ADDRESS_LIMIT, _address_key)):
        view = limiter.limit(limit, key_func=key, methods=["POST"], deduct_when=_failed,
                             error_message=TOO_MANY, scope="login")(view)
    return view
