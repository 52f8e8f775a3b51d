"""Role gates for views."""

from __future__ import annotations

from functools import wraps

from flask import abort, request
from flask_login import current_user, login_required

from models import Role


def role_required(role: Role):
    """Logged in, and at least ``role`` (admins may do what curators may, and so on)."""

    def decorator(view):
        @wraps(view)
        @login_required
        def checked(*args, **kwargs):
            if not current_user.has_role(role):
                abort(403, description=f"This page is for {role.value}s.")
            return view(*args, **kwargs)

        @wraps(view)
        def wrapped(*args, **kwargs):
            # A program calling /api gets a 401 it can read, not a login page.
            if request.blueprint == "api" and not current_user.is_authenticated:
                abort(401, description="Log in first; programs use /api/v1 with a token.")
            return checked(*args, **kwargs)

        return wrapped

    return decorator
