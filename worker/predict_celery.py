"""The predict worker's Celery app (worker/predict_main.py runs it; tests build it too).

Kombu's virtual transports (the SQLite broker) poll for messages, every second
by default; a person waiting on the Predict page should not wait for that, so
this worker's broker connection polls every 50 ms, a cost only it pays.  The
SQLAlchemy transport hands its transport options to ``create_engine`` (which
refuses ``polling_interval``), hence a transport class of its own, under its
own URL prefix.  Redis pushes, and needs none of this.
"""

from __future__ import annotations

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SqlTransport

from models.settings import Settings

from .celery_app import make_celery

SQL_BROKER_POLL_SECONDS = 0.05
FAST_POLL_PREFIX = "sqlafastpoll"


class FastPollSqlTransport(SqlTransport):
    polling_interval = SQL_BROKER_POLL_SECONDS


TRANSPORT_ALIASES.setdefault(FAST_POLL_PREFIX, f"{__name__}:FastPollSqlTransport")


def make_predict_celery(settings: Settings) -> Celery:
    app = make_celery(settings)
    if settings.broker_url.startswith("sqla+"):
        # The same database, read by the faster-polling transport.
        app.conf.broker_url = FAST_POLL_PREFIX + settings.broker_url[len("sqla"):]
    return app
