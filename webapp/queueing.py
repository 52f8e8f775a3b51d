"""The webapp's handle on Celery: it sends tasks by name and never imports TensorFlow."""

from __future__ import annotations

from celery import Celery
from flask import Flask, current_app

from worker.celery_app import make_celery


def init_celery(app: Flask) -> None:
    app.extensions["celery"] = make_celery(app.config["HEMALOOP"])


def celery() -> Celery:
    return current_app.extensions["celery"]
