"""Celery tasks: thin shells that take ids and hand over to plain functions."""

from __future__ import annotations

from celery import shared_task

from .celery_app import RUN_ROUND


@shared_task(bind=True, name=RUN_ROUND, acks_late=True)
def run_round_task(self, round_id: int) -> str:
    from .rounds import run_round

    # Settings travel on the Celery app that runs the task, so a test's
    # in-process worker and a deployed worker read their own.
    status = run_round(self.app.hemaloop_settings, int(round_id),
                       worker=self.request.hostname or "worker")
    return str(status)
