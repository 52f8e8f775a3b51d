"""Error pages and fragments that say what went wrong without leaking internals."""

from __future__ import annotations

import logging

from flask import Flask, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def _render(status: int, title: str, message: str):
    if request.headers.get("HX-Request") or request.path.startswith("/api/"):
        if request.path.startswith("/api/"):
            return {"error": title, "message": message}, status
        return render_template("_error.html", title=title, message=message), status
    return render_template("error.html", title=title, message=message), status


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
        return _render(500, "Something went wrong",
                       "The server hit an unexpected error; nothing was saved. "
                       "The details are in the server log.")
