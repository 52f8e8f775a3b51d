"""Worker start-up: rounds whose worker is gone (a stale heartbeat) are recovered.

Only a stale heartbeat counts: a worker starting says nothing about another's
round, even when both run on one host (their names differ anyway, webapp/cli.py
worker_command).  Celery beat runs the same check every minute (worker/tasks.py).
"""

from __future__ import annotations

import logging

from celery.signals import worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def _recover_lost_rounds(sender=None, **_kwargs) -> None:
    from .rounds import fail_lost_rounds

    app = sender.app
    settings = getattr(app, "hemaloop_settings", None)
    if settings is None:
        return
    lost = fail_lost_rounds(settings, celery=app)
    if lost:
        log.warning("found %d round(s) left running by a lost worker: queued again or failed",
                    lost)
