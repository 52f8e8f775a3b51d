"""The webapp's handle on Celery: it sends tasks by name and never imports TensorFlow.

The web process only sends: it never reads a task's result, and a request
whose broker is down must answer quickly with a clear message rather than
wait on Celery's reconnection loops. So its Celery app (not the worker's) has

- no result backend: with Redis as the backend, every ``send_task`` would
  subscribe this process to the task's result channel, and with Redis down
  that subscription retries for about 19 s before giving up;
- a bounded broker connection: a short connect timeout and one quick retry
  of a failed publish, where the defaults wait up to 4 s per attempt and
  retry three times.
"""

from __future__ import annotations

from celery import Celery
from flask import Flask, current_app

from worker.celery_app import make_celery

# Worst case for a broker that does not answer at all: two attempts of
# CONNECT_TIMEOUT_S plus the pause between them.
CONNECT_TIMEOUT_S = 1.5
SEND_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2,
                     "interval_max": 0.2}


def sending_celery(settings) -> Celery:
    app = make_celery(settings)
    app.conf.update(
        result_backend="disabled",
        broker_connection_timeout=CONNECT_TIMEOUT_S,
        task_publish_retry_policy=SEND_RETRY_POLICY,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # The Redis client's own timeouts (the SQLAlchemy transport would hand
        # these to create_engine, which refuses them).
        app.conf.broker_transport_options = {"socket_connect_timeout": CONNECT_TIMEOUT_S,
                                             "socket_timeout": 5}
    return app


def init_celery(app: Flask) -> None:
    app.extensions["celery"] = sending_celery(app.config["HEMALOOP"])


def celery() -> Celery:
    return current_app.extensions["celery"]
