"""Asking the predict worker and waiting for its answer.

The rest of the web process only sends tasks (webapp/queueing.py); this is
the one place it waits for a result, so it has a Celery app of its own with
the result backend switched on (Redis: the answer is pushed; the SQLite
default: polled every ``POLL_SECONDS``).  A request waits at most
``HEMALOOP_PREDICT_TIMEOUT_SECONDS``; the task expires then too, so a worker
that comes back later does not work for nobody.
"""

from __future__ import annotations

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from flask import current_app

from worker.celery_app import PREDICT, make_celery

from ..queueing import CONNECT_TIMEOUT_S, SEND_RETRY_POLICY

POLL_SECONDS = 0.02


class PredictUnavailable(RuntimeError):
    """No answer: no predict worker, or the broker is down.  The message is for the user."""


class PredictFailed(RuntimeError):
    """The worker refused or failed; the message is for the user."""


def _celery() -> Celery:
    app = current_app.extensions.get("predict_celery")
    if app is None:
        settings = current_app.config["HEMALOOP"]
        app = make_celery(settings)
        app.conf.update(broker_connection_timeout=CONNECT_TIMEOUT_S,
                        task_publish_retry_policy=SEND_RETRY_POLICY)
        if settings.broker_url.startswith(("redis://", "rediss://")):
            app.conf.broker_transport_options = {"socket_connect_timeout": CONNECT_TIMEOUT_S,
                                                 "socket_timeout": 5}
        current_app.extensions["predict_celery"] = app
    return app


def predict(version_id: int, batch: str, files: list[str]) -> dict:
    """The worker's answer (worker/prediction.py predict_batch)."""
    timeout = current_app.config["HEMALOOP"].predict_timeout_seconds
    try:
        result = _celery().send_task(PREDICT, args=[version_id, batch, files], expires=timeout)
    except Exception:  # noqa: BLE001 - any broker failure ends the same way
        current_app.logger.exception("could not send a prediction")
        raise PredictUnavailable("The task queue could not be reached; is the broker "
                                 "running? Nothing was predicted.") from None
    try:
        answer = result.get(timeout=timeout, interval=POLL_SECONDS, propagate=True)
    except CeleryTimeout:
        raise PredictUnavailable(
            f"No predict worker answered within {timeout} s. Start one "
            "('hemaloop worker --queues predict', or 'hemaloop run' starts it) and send the "
            "images again.") from None
    except Exception:  # noqa: BLE001 - the worker's own failure: logged there and here
        current_app.logger.exception("prediction %s failed on the worker", result.id)
        raise PredictFailed("The prediction failed on the worker; the worker's log says "
                            "why. Nothing was added to the project.") from None
    finally:
        try:
            result.forget()  # the answer is in hand (or abandoned): no need to keep it
        except Exception:  # noqa: BLE001 - a backend that cannot forget keeps it until expiry
            pass
    if answer.get("error"):
        raise PredictFailed(answer["error"])
    return answer
