"""The pathologists' labeling page: one cell at a time, keyboard first."""

from flask import Blueprint

bp = Blueprint("label", __name__, url_prefix="/label")

from . import routes  # noqa: E402,F401
