"""Request-body limits, per route, and nothing parsed for anonymous clients.

Ordinary forms and htmx posts are small, so every route gets
HEMALOOP_MAX_FORM_BYTES; a view that takes file uploads says so with
``accepts_upload`` and gets HEMALOOP_MAX_UPLOAD_BYTES.  An anonymous client
may send a body only to the login form (and API v1 with a valid token): anywhere else it is refused with 401
before a byte of the body is read (so before CSRF or anything else parses it).

``gate`` must be the app's first before_request function: CSRFProtect and
Flask-Limiter read ``request.form`` in theirs.
"""

from __future__ import annotations

from flask import abort, current_app, request
from flask_login import current_user

# Views that anonymous clients may send a body to.
ANONYMOUS_BODY_ENDPOINTS = {"auth.login"}
# The login form is two short fields and a token.
LOGIN_FORM_BYTES = 16 * 1024


def accepts_upload(view):
    """Mark a view that takes file uploads: it gets the large body limit."""
    view._hemaloop_accepts_upload = True
    return view


def _view_takes_uploads() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, "_hemaloop_accepts_upload", False))


def _has_body() -> bool:
    return bool(request.content_length) or request.headers.get("Transfer-Encoding", "") != ""


def _api_token() -> bool:
    """API v1 is authenticated by a bearer token, not the session (webapp/api/v1/auth.py)."""
    # By path, not blueprint: a URL under /api/v1 that matches no route is a 404
    # for a caller with a token, as anywhere else.
    if not request.path.startswith("/api/v1/"):
        return False
    from .api.v1.auth import bearer_token

    return bearer_token() is not None


def gate() -> None:
    settings = current_app.config["HEMALOOP"]
    if request.endpoint in ANONYMOUS_BODY_ENDPOINTS:
        request.max_content_length = LOGIN_FORM_BYTES
        return
    if not _has_body():
        return
    if not current_user.is_authenticated and not _api_token():
        # Refused unread: no multipart parser, no CSRF check, no spooled file.
        abort(401, description="Log in first (your session may have ended); nothing was read or saved.")
    if _view_takes_uploads():
        from .uploads import MAX_UPLOAD_PARTS

        request.max_content_length = settings.max_upload_bytes
        request.max_form_parts = MAX_UPLOAD_PARTS  # a folder upload is one part per file
    else:
        request.max_content_length = settings.max_form_bytes
