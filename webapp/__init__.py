"""hemaloop's web application: the app factory.

create_app never migrates the database (``hemaloop migrate`` does) and never
invents a secret key (settings keep one generated per instance).
"""

from __future__ import annotations

import hashlib
import logging
import time

from apiflask import APIFlask
from flask import Flask, g
from werkzeug.middleware.proxy_fix import ProxyFix

from models.settings import Settings, load_settings

from .extensions import csrf, limiter, login_manager


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    # APIFlask is Flask plus an OpenAPI generator: API v1's document is built
    # from its routes and schemas (webapp/api/v1).  Pages keep their own error
    # handlers (json_errors off); APIFlask serves no document or docs page of
    # its own (API v1 serves both, under the app's CSP).
    app = APIFlask(__name__, instance_path=str(settings.instance_dir), title="hemaloop API",
                   version="1", spec_path=None, docs_path=None, json_errors=False)
    from .routing import install_id_bounds

    install_id_bounds(app)
    from .uploads import HemaloopRequest

    app.request_class = HemaloopRequest  # uploads stream to the instance's disk
    app.config.update(
        SECRET_KEY=settings.secret_key,
        HEMALOOP=settings,
        # Per route in webapp/limits.py; this is the ceiling for anything it misses.
        MAX_CONTENT_LENGTH=settings.max_form_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        # The session cookie lasts as long as the browser; the server ends it
        # sooner (webapp/auth/sessions.py).  Remember-me cookies are never issued.
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_url,
        RATELIMIT_STRATEGY="moving-window",
        # One count per database: two instances on one Redis do not share counts.
        RATELIMIT_KEY_PREFIX="hemaloop-" + hashlib.sha256(
            settings.database_url.encode()).hexdigest()[:12],
        # A Redis outage must not lock everyone out: count in memory meanwhile.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_HEADERS_ENABLED=False,
        WTF_CSRF_TIME_LIMIT=None,  # a labeling session can last all day
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        OPENAPI_VERSION="3.0.3",
        AUTO_SERVERS=False,
        DESCRIPTION="hemaloop's API: projects, cells, labels, rounds and model versions. "
                    "Authenticate with a personal access token from the Account page: "
                    "`Authorization: Bearer <token>`.",
    )
    logging.basicConfig(level=settings.log_level)
    # Made now, not at the first unknown-user login, which would otherwise
    # cost two hash computations and stand out (models/users.py).
    from models.users import dummy_password_hash

    dummy_password_hash()

    if settings.trusted_proxies:
        # Behind a TLS proxy: the client's address (for the login limits) and
        # the https scheme come from the proxy's X-Forwarded-* headers.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)

    from . import db, headers, limits

    db.init_app(app)
    login_manager.init_app(app)
    # First: anonymous bodies are refused, and body limits set, before
    # CSRFProtect or Flask-Limiter parse a form in their own before_request.
    app.before_request(limits.gate)
    csrf.init_app(app)
    limiter.init_app(app)
    headers.init_app(app)

    from .queueing import init_celery

    init_celery(app)

    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .api.v1 import TAGS as API_TAGS
    from .api.v1 import bp as api_v1_bp
    from .api.v1.docs import only_v1
    from .api.v1.errors import error_processor
    from .api.v1.schemas import ErrorOut
    from .auth import bp as auth_bp
    from .curate import bp as curate_bp
    from .exports.routes import bp as exports_bp
    from .images import bp as images_bp
    from .label import bp as label_bp
    from .predict import bp as predict_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(label_bp)
    app.register_blueprint(curate_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(api_v1_bp)
    # Tokens only, never the session cookie: nothing for a forged form to ride on.
    csrf.exempt(api_v1_bp)
    app.config.update(HTTP_ERROR_SCHEMA=ErrorOut, VALIDATION_ERROR_SCHEMA=ErrorOut, TAGS=API_TAGS)
    app.error_processor(error_processor)
    app.spec_processor(only_v1)
    app.register_blueprint(images_bp)
    app.register_blueprint(exports_bp)
    app.register_blueprint(predict_bp)

    from .errors import register_error_handlers

    register_error_handlers(app)

    @app.get("/")
    def index():
        from flask import redirect, url_for
        from flask_login import current_user

        if not current_user.is_authenticated:
            return redirect(url_for("auth.login"))
        # Each role starts where its work is: admins on Admin, curators with the
        # cells waiting for them, pathologists labeling.
        if current_user.has_role("admin"):
            return redirect(url_for("admin.index"))
        if current_user.has_role("curator"):
            return redirect(url_for("curate.index"))
        return redirect(url_for("label.index"))

    # The app's own time per request, for browsers' dev tools and bench/label_latency.py.
    @app.before_request
    def _start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def _server_timing(response):
        started = g.get("started")
        if started is not None:
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return response

    from .health import register_health

    register_health(app)

    return app
