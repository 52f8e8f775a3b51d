"""Error pages and fragments that say what went wrong without leaking internals.

An error page must render whatever failed, the database included: the page
header shows the logged-in user, whom Flask-Login loads from the database on
first use. When that load is what failed (or would fail again), the page is
shown as to a visitor who is not logged in, and if rendering fails anyway a
plain page built without templates is the last resort, never Werkzeug's bare
"Internal Server Error".
"""

from __future__ import annotations

import logging

from flask import Flask, g, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from .extensions import login_manager

log = logging.getLogger(__name__)

# Failures of the database itself (unreachable, refused, timed out), as opposed
# to a bad query: the request may succeed later, so 503 rather than 500.
DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def _database_down(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_DOWN) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)


def _settle_user(database_failed: bool) -> None:
    """Make sure rendering the page header will not need the database."""
    if "_login_user" in g:
        return  # loaded earlier in this request; its attributes are in memory
    if not database_failed:
        try:
            # Loads the user if the session names one; a session left unusable
            # by the error (or a database gone since) ends in the except.
            current_user.is_authenticated  # noqa: B018 - the load is the point
            return
        except Exception:  # noqa: BLE001 - any failure: show the page without the user
            log.warning("could not load the user for the error page", exc_info=True)
    # Where Flask-Login keeps the request's user: an anonymous one stops it
    # from trying the database again while the page renders.
    g._login_user = login_manager.anonymous_user()


def _plain_page(status: int, title: str, message: str):
    # No template, no url_for, no database: what is left when rendering failed.
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)} · hemaloop</title></head><body>"
            f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
            f"<p><a href=\"/\">Back to hemaloop</a></p></body></html>")
    return body, status, {"Content-Type": "text/html; charset=utf-8"}


def _render(status: int, title: str, message: str, database_failed: bool = False):
    if request.path.startswith("/api/"):
        return {"error": title, "message": message}, status
    try:
        _settle_user(database_failed)
        if request.headers.get("HX-Request"):
            return render_template("_error.html", title=title, message=message), status
        return render_template("error.html", title=title, message=message), status
    except Exception:  # noqa: BLE001 - the error page itself must not fail
        log.exception("could not render the error page for %s", request.path)
        return _plain_page(status, title, message)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return _render(400, "Form expired", "The page was open too long or came from elsewhere. "
                       "Reload it and try again; nothing was saved.")

    @app.errorhandler(RateLimitExceeded)
    def too_many(exc: RateLimitExceeded):
        if request.endpoint == "auth.login":
            # The login form again, with the reason where the form's errors go.
            from .auth.forms import LoginForm

            return render_template("auth/login.html", form=LoginForm(),
                                   refusal=exc.description), 429
        return _render(429, "Too many requests", exc.description or "")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _render(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # The traceback goes to the log, never to the page.
        log.exception("unhandled error on %s %s", request.method, request.path)
        if _database_down(exc):
            return _render(503, "Database unavailable",
                           "hemaloop cannot reach its database just now; nothing was saved. "
                           "Try again in a minute; if it persists, tell your administrator.",
                           database_failed=True)
        return _render(500, "Something went wrong",
                       "The server hit an unexpected error; nothing was saved. "
                       "The details are in the server log.")
