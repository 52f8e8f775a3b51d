"""Curators: the cells readers flagged or disagree on."""

from flask import Blueprint

bp = Blueprint("curate", __name__, url_prefix="/curate")

from . import routes  # noqa: E402,F401
