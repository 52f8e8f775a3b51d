"""Entry point for ``celery -A worker.main worker``: the app built from HEMALOOP_* settings."""

from models.settings import load_settings

from .celery_app import make_celery

app = make_celery(load_settings())

from . import signals  # noqa: E402,F401  (worker start-up clean-up)
