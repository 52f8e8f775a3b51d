"""Settings of pool scoring's chord: the result backend and the chunk size, parsed strictly."""

from __future__ import annotations

import pytest

from models.settings import SettingsError, load_settings
from tests.helpers import base_env
from worker.celery_app import make_celery


def _load(tmp_path, **extra: str):
    return load_settings(base_env(tmp_path, **extra))


def test_defaults_keep_results_in_sqlite_beside_the_instance(tmp_path):
    s = _load(tmp_path)
    assert s.result_backend == f"db+sqlite:///{(tmp_path / 'instance').resolve()}/celery-results.sqlite"
    assert s.score_chunk_cells == 5000
    app = make_celery(s)
    assert app.conf.result_backend == s.result_backend and app.conf.task_ignore_result


@pytest.mark.parametrize("url", ["redis://r:6379/1", "db+postgresql+psycopg://u@h/db"])
def test_production_backends_are_accepted(tmp_path, url):
    assert _load(tmp_path, HEMALOOP_RESULT_BACKEND=url).result_backend == url


@pytest.mark.parametrize("name, value", [
    ("HEMALOOP_RESULT_BACKEND", "rpc://"), ("HEMALOOP_RESULT_BACKEND", "sqlite:///x"),
    ("HEMALOOP_SCORE_CHUNK_CELLS", "0"), ("HEMALOOP_SCORE_CHUNK_CELLS", "lots"),
])
def test_bad_values_stop_start_up_naming_the_setting(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        _load(tmp_path, **{name: value})
