"""Login, logout, the Account page (API tokens), and the role checks every other
blueprint uses."""

from flask import Blueprint

bp = Blueprint("auth", __name__, url_prefix="/auth")

from . import routes, tokens  # noqa: E402,F401
