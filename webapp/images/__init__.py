"""Serving stored cell images to logged-in users."""

from flask import Blueprint

bp = Blueprint("images", __name__, url_prefix="/images")

from . import routes  # noqa: E402,F401
