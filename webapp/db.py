"""One database session per request, closed at teardown."""

from __future__ import annotations

from typing import TypeVar

from flask import Flask, abort, current_app, g
from sqlalchemy.orm import Session

from models.db import get_sessionmaker

from .routing import MAX_ID


def get_db() -> Session:
    if "db" not in g:
        g.db = get_sessionmaker(current_app.config["HEMALOOP"].database_url)()
    return g.db


T = TypeVar("T")


def get_or_404(model: type[T], ident: int, noun: str, options=()) -> T:
    """The row with this id (loaded with ``options``), or a 404 page naming what is
    missing.

    Ids from forms and query strings get the bound URLs get from the ``int``
    converter: a value no id column can hold is no row, not a driver error."""
    if ident > MAX_ID:
        abort(404, description=f"There is no {noun} {ident}.")
    row = get_db().get(model, ident, options=list(options))
    if row is None:
        abort(404, description=f"There is no {noun} {ident}.")
    return row


def _close_db(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close_db)
