"""One database session per request, closed at teardown."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from models.db import get_sessionmaker


def get_db() -> Session:
    if "db" not in g:
        g.db = get_sessionmaker(current_app.config["HEMALOOP"].database_url)()
    return g.db


def _close_db(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close_db)
