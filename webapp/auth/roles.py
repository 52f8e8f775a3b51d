"""Role gates for views."""

from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required

from models import Role


def role_required(role: Role):
    """Logged in, and at least ``role`` (admins may do what curators may, and so on)."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.has_role(role):
                abort(403, description=f"This page is for {role.value}s.")
            return view(*args, **kwargs)

        return wrapped

    return decorator
