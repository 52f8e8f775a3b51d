"""Login, logout, and the role checks every other blueprint uses."""

from flask import Blueprint

bp = Blueprint("auth", __name__, url_prefix="/auth")

from . import routes  # noqa: E402,F401
