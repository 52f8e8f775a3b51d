"""Liveness and readiness.

``/healthz`` says the web process answers; it touches nothing else, so a
process supervisor never restarts the web server for another service's outage.
``/readyz`` says whether requests can be served: the database answers a query
and the broker accepts a connection, each within a short timeout, so a load
balancer asking it is never held up by what it is asking about.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from .queueing import celery

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2  # per dependency; libpq's connect_timeout takes whole seconds (at least 2)


@lru_cache(maxsize=4)
def _probe_engine(url: str) -> Engine:
    """An engine for the readiness query alone: a fresh connection each time (the
    app's pool could hand over a connection that is already dead) and short
    timeouts, where the app's own engine waits for slow locks."""
    if url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": CHECK_TIMEOUT_S})
    return create_engine(url, poolclass=NullPool, connect_args={
        "connect_timeout": CHECK_TIMEOUT_S,
        "options": f"-c statement_timeout={CHECK_TIMEOUT_S * 1000}"})


def _check_database() -> None:
    with _probe_engine(current_app.config["HEMALOOP"].database_url).connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_broker() -> None:
    app = celery()
    options = dict(app.conf.broker_transport_options or {})
    if "socket_timeout" in options:  # Redis: a broker that accepts but never answers
        options["socket_timeout"] = CHECK_TIMEOUT_S
    with app.connection_for_write(connect_timeout=CHECK_TIMEOUT_S,
                                  transport_options=options) as conn:
        # One attempt, no retry: readiness reports, it does not wait for recovery.
        conn.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT_S)


def _run(check) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        # The reason goes to the log; the answer names only the kind of failure.
        log.warning("readiness: %s failed: %s", check.__name__, exc)
        result = {"ok": False, "error": type(exc).__name__}
    else:
        result = {"ok": True}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def healthz():
    return {"status": "ok"}


def readyz():
    checks = {"database": _run(_check_database), "broker": _run(_check_broker)}
    ready = all(c["ok"] for c in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def register_health(app: Flask) -> None:
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
