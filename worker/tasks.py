"""Celery tasks: thin shells that take ids and hand over to plain functions.

Settings travel on the Celery app that runs the task, so a test's in-process
worker and a deployed worker each read their own.
"""

from __future__ import annotations

from celery import shared_task

from .celery_app import RUN_ROUND, SCHEDULE_ROUNDS, SCORE_VERSION


@shared_task(bind=True, name=RUN_ROUND, acks_late=True)
def run_round_task(self, round_id: int) -> str:
    from .rounds import run_round

    status = run_round(self.app.hemaloop_settings, int(round_id),
                       worker=self.request.hostname or "worker")
    return str(status)


@shared_task(bind=True, name=SCORE_VERSION, acks_late=True)
def score_version_task(self, version_id: int) -> int:
    from .scoring import score_version

    return score_version(self.app.hemaloop_settings, int(version_id))


@shared_task(bind=True, name=SCHEDULE_ROUNDS, ignore_result=True)
def schedule_rounds_task(self) -> list[int]:
    from .schedule import schedule_rounds

    return schedule_rounds(self.app.hemaloop_settings, self.app)
