"""The Celery application.

One factory serves both sides: the webapp builds an instance to *send* tasks
by name (it never imports TensorFlow), the worker process runs
``celery -A worker.main worker``, which builds one from the environment.
Queues are split by purpose so GPU workers can take ``train`` alone.
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from models.settings import Settings

TRAIN_QUEUE = "train"
SCORE_QUEUE = "score"
DEFAULT_QUEUE = "default"
# Strategy comparisons: minutes to hours of simulated rounds, on a worker of
# their own so a training round never waits behind one.
SIMULATE_QUEUE = "simulate"
RUN_ROUND = "hemaloop.run_round"
SCORE_VERSION = "hemaloop.score_version"
SCORE_CHUNK = "hemaloop.score_chunk"
FINISH_SCORING = "hemaloop.finish_scoring"
SCHEDULE_ROUNDS = "hemaloop.schedule_rounds"
RECOVER_ROUNDS = "hemaloop.recover_rounds"
BUILD_REVIEW_QUEUE = "hemaloop.build_review_queue"
RUN_SIMULATION = "hemaloop.run_simulation"
RUN_IMPORT = "hemaloop.run_import"
# Predictions for the Predict page and API: a worker of its own keeps the
# models loaded between requests while the web request waits for the answer
# (worker/predict_main.py, webapp/predict/client.py).
PREDICT_QUEUE = "predict"
PREDICT = "hemaloop.predict"
# Cell measurements for the curator (worker/describe.py): CPU, no TensorFlow.
DESCRIBE_CELLS = "hemaloop.describe_cells"

# Self-supervised backbone pretraining (issue 15): on the train queue, a GPU worker's job.
RUN_PRETRAINING = "hemaloop.run_pretraining"


def _ensure_sqlite_dir(url: str) -> None:
    """Celery's database backend creates its tables as soon as any task is sent
    (the webapp too), so the SQLite file's folder must exist by then."""
    prefix = "db+sqlite:///"
    if url.startswith(prefix) and url != prefix:
        Path(url[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)


def make_celery(settings: Settings) -> Celery:
    app = Celery("hemaloop", include=["worker.tasks"])
    _ensure_sqlite_dir(settings.result_backend)
    app.conf.update(
        broker_url=settings.broker_url,
        # Tasks record their outcome on database rows.  The one exception is
        # pool scoring, a chord: its chunk tasks keep their results (counts)
        # so Celery can call the callback when the last one ends.  A chord
        # rather than a counter on a row: Celery already does the join (with
        # retries and the Redis backend's native chord support), and each
        # chunk is an ordinary task any free worker on the `score` queue
        # takes.  The default backend is SQLite beside the SQLite broker.
        task_ignore_result=True,
        result_backend=settings.result_backend or None,
        result_expires=24 * 3600,
        result_extended=False,
        task_default_queue=DEFAULT_QUEUE,
        task_routes={
            RUN_ROUND: {"queue": TRAIN_QUEUE},
            RUN_PRETRAINING: {"queue": TRAIN_QUEUE},
            SCORE_VERSION: {"queue": SCORE_QUEUE},
            SCORE_CHUNK: {"queue": SCORE_QUEUE},
            FINISH_SCORING: {"queue": SCORE_QUEUE},
            # The chord's join (for result backends without native chords).
            "celery.chord_unlock": {"queue": SCORE_QUEUE},
            SCHEDULE_ROUNDS: {"queue": DEFAULT_QUEUE},
            RECOVER_ROUNDS: {"queue": DEFAULT_QUEUE},
            BUILD_REVIEW_QUEUE: {"queue": SCORE_QUEUE},
            RUN_SIMULATION: {"queue": SIMULATE_QUEUE},
            # Imports decode images (CPU, no TensorFlow): any default worker.
            RUN_IMPORT: {"queue": DEFAULT_QUEUE},
            PREDICT: {"queue": PREDICT_QUEUE},
            DESCRIBE_CELLS: {"queue": DEFAULT_QUEUE},
        },
        # Celery beat checks for projects due a scheduled round, and for rounds
        # whose worker is gone (pages only read; recovery writes happen here).
        beat_schedule={
            "schedule-rounds": {"task": SCHEDULE_ROUNDS, "schedule": settings.schedule_seconds},
            "recover-rounds": {"task": RECOVER_ROUNDS, "schedule": settings.schedule_seconds},
        },
        # Long jobs: take one at a time, acknowledge when done.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    # The tasks read their settings from the app that runs them.
    app.hemaloop_settings = settings  # type: ignore[attr-defined]
    return app
