"""JSON API: the same facts the pages show, for scripts and dashboards."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import routes  # noqa: E402,F401
