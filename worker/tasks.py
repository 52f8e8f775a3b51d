"""Celery tasks: thin shells that take ids and hand over to plain functions.

Settings travel on the Celery app that runs the task, so a test's in-process
worker and a deployed worker each read their own.
"""

from __future__ import annotations

from celery import shared_task

from .celery_app import (
    BUILD_REVIEW_QUEUE, DESCRIBE_CELLS, FINISH_SCORING, PREDICT, RECOVER_ROUNDS, RUN_IMPORT,
    RUN_ROUND, RUN_SIMULATION,
    SCHEDULE_ROUNDS,
    SCORE_CHUNK, SCORE_VERSION,
)
from .celery_app import RUN_PRETRAINING


@shared_task(bind=True, name=RUN_ROUND, acks_late=True)
def run_round_task(self, round_id: int) -> str:
    from .rounds import run_round

    status = run_round(self.app.hemaloop_settings, int(round_id),
                       worker=self.request.hostname or "worker")
    return str(status)


@shared_task(bind=True, name=SCORE_VERSION, acks_late=True)
def score_version_task(self, version_id: int) -> int:
    """Split the pool into chunks and score them as a chord; returns the chunk count."""
    from celery import chord, group

    from .scoring import finish_scoring, plan_chunks

    settings = self.app.hemaloop_settings
    chunks = plan_chunks(settings, int(version_id))
    if not chunks:
        finish_scoring(settings, int(version_id), [])
        return 0
    header = group(score_chunk_task.s(int(version_id), lo, hi) for lo, hi in chunks)
    chord(header)(finish_scoring_task.s(int(version_id)))
    return len(chunks)


# Results kept (ignore_result=False): the chord's callback receives them.
@shared_task(bind=True, name=SCORE_CHUNK, acks_late=True, ignore_result=False)
def score_chunk_task(self, version_id: int, lo: int, hi: int) -> int:
    from .scoring import score_chunk

    return score_chunk(self.app.hemaloop_settings, int(version_id), int(lo), int(hi))


@shared_task(bind=True, name=FINISH_SCORING, acks_late=True)
def finish_scoring_task(self, counts: list[int], version_id: int) -> int:
    from .scoring import finish_scoring

    return finish_scoring(self.app.hemaloop_settings, int(version_id), counts)


@shared_task(bind=True, name=SCHEDULE_ROUNDS, ignore_result=True)
def schedule_rounds_task(self) -> list[int]:
    from .schedule import schedule_rounds

    return schedule_rounds(self.app.hemaloop_settings, self.app)


@shared_task(bind=True, name=RECOVER_ROUNDS, ignore_result=True)
def recover_rounds_task(self) -> int:
    """Rounds whose worker is gone (stale heartbeat): queued again once, or failed."""
    from .rounds import fail_lost_rounds

    return fail_lost_rounds(self.app.hemaloop_settings, celery=self.app)


@shared_task(bind=True, name=BUILD_REVIEW_QUEUE, acks_late=True)
def build_review_queue_task(self, project_id: int, trigger: str = "admin") -> int | None:
    from worker.ml.selection import SelectionError

    from .review_queue import build_review_queue

    try:
        return build_review_queue(self.app.hemaloop_settings, int(project_id), trigger=trigger)
    except SelectionError:
        return None  # recorded on the queue row for the admin


@shared_task(bind=True, name=RUN_SIMULATION, acks_late=True)
def run_simulation_task(self, run_id: int) -> str:
    from .simulation_runs import run_simulation_row

    return str(run_simulation_row(self.app.hemaloop_settings, int(run_id)))


@shared_task(bind=True, name=RUN_IMPORT, acks_late=True)
def run_import_task(self, job_id: int) -> str:
    """A browser upload, imported from disk (worker/imports.py)."""
    from .imports import run_import_job

    status = run_import_job(self.app.hemaloop_settings, int(job_id))
    if status == "succeeded":
        from .describe import describe_after_import

        # The new cells' measurements for the curator's page, on a default worker.
        describe_after_import(self.app.hemaloop_settings, self.app, int(job_id))
    return status


@shared_task(bind=True, name=DESCRIBE_CELLS, acks_late=True)
def describe_cells_task(self, run_id: int) -> str:
    """Measurements of the project's unmeasured cells (worker/describe.py)."""
    from .describe import run_describe

    return run_describe(self.app.hemaloop_settings, int(run_id))


@shared_task(bind=True, name=RUN_PRETRAINING, acks_late=True)
def run_pretraining_task(self, run_id: int) -> str:
    """Self-supervised backbone pretraining on a project's pool (worker/pretraining.py)."""
    from .pretraining import run_pretraining_row

    return str(run_pretraining_row(self.app.hemaloop_settings, int(run_id)))


# The answer goes back through the result backend (the web request waits on
# it).  Acknowledged on receipt: a prediction that killed its worker is not
# worth a second worker's life, and the request has given up by then.
@shared_task(bind=True, name=PREDICT, ignore_result=False, acks_late=False)
def predict_task(self, version_id: int, batch: str, files: list[str]) -> dict:
    """Spooled uploads (worker/predict_spool.py) through a model version (worker/prediction.py)."""
    from .prediction import predict_batch

    return predict_batch(self.app.hemaloop_settings, int(version_id), str(batch),
                         [str(f) for f in files])
