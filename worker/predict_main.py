"""Entry point of the predict worker: ``celery -A worker.predict_main worker -Q predict
--pool solo`` (``hemaloop worker --queues predict`` builds the command line).

It answers the Predict page and API while the web request waits, so:

- the solo pool: tasks run in this process, where the models stay loaded
  between requests (worker/model_cache.py);
- on start it loads the active models and runs one prediction through each
  (worker/prediction.py ``warm``) before taking the first request;
- on the SQLite broker it polls every 50 ms (worker/predict_celery.py).
"""

import logging

from celery.signals import worker_ready

from models.settings import load_settings

from .predict_celery import make_predict_celery

log = logging.getLogger(__name__)

app = make_predict_celery(load_settings())


@worker_ready.connect
def _warm_models(sender=None, **_kwargs) -> None:
    if getattr(sender, "app", None) is not app:
        return
    from .prediction import warm

    warmed = warm(app.hemaloop_settings)
    log.info("predict worker ready; models warm: %s", warmed or "none active")
