"""Worker start-up: rounds a previous incarnation of this worker left running are recovered."""

from __future__ import annotations

import logging

from celery.signals import worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def _fail_rounds_left_running(sender=None, **_kwargs) -> None:
    from .rounds import fail_lost_rounds

    app = sender.app
    settings = getattr(app, "hemaloop_settings", None)
    if settings is None:
        return
    lost = fail_lost_rounds(settings, worker=sender.hostname, celery=app)
    if lost:
        log.warning("found %d round(s) left running by a lost worker: queued again or failed",
                    lost)
