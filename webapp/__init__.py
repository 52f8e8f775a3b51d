"""hemaloop's web application: the app factory.

create_app never migrates the database (``hemaloop migrate`` does) and never
invents a secret key (settings keep one generated per instance).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, g

from models.settings import Settings, load_settings

from .extensions import csrf, login_manager


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    from .routing import install_id_bounds

    install_id_bounds(app)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        HEMALOOP=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # a labeling session can last all day
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    logging.basicConfig(level=settings.log_level)

    from . import db

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)

    from .queueing import init_celery

    init_celery(app)

    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .auth import bp as auth_bp
    from .curate import bp as curate_bp
    from .images import bp as images_bp
    from .label import bp as label_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(label_bp)
    app.register_blueprint(curate_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(images_bp)

    from .errors import register_error_handlers

    register_error_handlers(app)

    @app.get("/")
    def index():
        from flask import redirect, url_for
        from flask_login import current_user

        if not current_user.is_authenticated:
            return redirect(url_for("auth.login"))
        # Curators (and admins) start with the cells waiting for them.
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
