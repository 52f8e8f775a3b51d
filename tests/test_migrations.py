"""Alembic's migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text

import models.tables  # noqa: F401  (registers every table on Base.metadata)
from migrations.runner import downgrade, upgrade
from models.base import Base
from tests.helpers import fresh_postgres_database

from alembic.script import ScriptDirectory

from migrations.runner import alembic_config

TABLES = set(Base.metadata.tables)
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _diff(url: str) -> list:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _state(url: str) -> tuple[set[str], str | None]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            version = None
            if "alembic_version" in tables:
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return tables - {"alembic_version"}, version
    finally:
        engine.dispose()


def test_metadata_has_every_table():
    assert {"annotations", "images", "label_classes", "model_versions", "predictions",
            "projects", "training_rounds", "users"} <= TABLES


def _check_round_trip(url: str) -> None:
    upgrade(url)
    assert _state(url) == (TABLES, HEAD)
    assert _diff(url) == []

    downgrade(url, "base")
    tables, version = _state(url)
    assert tables == set() and version is None

    upgrade(url)
    assert _state(url) == (TABLES, HEAD)
    assert _diff(url) == []
    upgrade(url)  # already at head: a no-op
    assert _diff(url) == []


def test_sqlite_upgrade_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    assert _state(url) == (set(), None)
    _check_round_trip(url)


@pytest.mark.postgres
def test_postgres_upgrade_matches_models():
    with fresh_postgres_database(migrate=False) as url:
        assert _state(url) == (set(), None)
        _check_round_trip(url)


@pytest.mark.postgres
def test_postgres_fixture_database_matches_models():
    with fresh_postgres_database(migrate=True) as url:
        assert _diff(url) == []


def test_sqlite_template_matches_models(sqlite_url):
    """The migrated template every SQLite test copies is the models' schema too."""
    assert _diff(sqlite_url) == []


def test_the_comparison_sees_drift(sqlite_url):
    """Guard against a vacuous check: a schema that lacks an index is reported."""
    engine = create_engine(sqlite_url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_images_queue"))
    engine.dispose()
    diff = _diff(sqlite_url)
    assert [d[0] for d in diff] == ["add_index"]
    assert diff[0][1].name == "ix_images_queue"


def test_url_with_percent_sign(tmp_path):
    """Alembic's config file syntax treats '%' specially; the runner must pass URLs intact."""
    folder = tmp_path / "50%x off"  # no %XX escape in it, so the URL keeps it as is
    folder.mkdir()
    url = f"sqlite:///{folder / 'db.sqlite'}"
    upgrade(url)
    assert (folder / "db.sqlite").is_file()
    assert _state(url) == (TABLES, HEAD)


def _upgrade_with_rows(url: str) -> None:
    """Each migration applies to a database that already holds data."""
    upgrade(url, "0001")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, description, test_share, "
                          "train_on_reference, min_labels_per_class, created_at) VALUES "
                          "(1, 'p', '', 0.1, false, 1, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO training_rounds (id, project_id, status, progress, phase, "
                          "trigger, created_at, warnings, config, timings) VALUES "
                          "(1, 1, 'succeeded', 1.0, 'done', 'cli', CURRENT_TIMESTAMP, '[]', '{}', '{}')"))
        conn.execute(text("INSERT INTO model_versions (id, project_id, round_id, artifact_path, "
                          "class_ids, input_size, backbone_weights, metrics, is_active, created_at) "
                          "VALUES (1, 1, 1, 'm.keras', '[1, 2]', 75, 'none', '{}', true, "
                          "CURRENT_TIMESTAMP)"))
    engine.dispose()
    upgrade(url)
    assert _diff(url) == []
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT temperature, n_train, feature_key FROM model_versions")).one()
    engine.dispose()
    assert tuple(row) == (1.0, 0, "")


def test_sqlite_upgrade_keeps_existing_rows(tmp_path):
    _upgrade_with_rows(f"sqlite:///{tmp_path / 'rows.sqlite'}")


@pytest.mark.postgres
def test_postgres_upgrade_keeps_existing_rows():
    with fresh_postgres_database(migrate=False) as url:
        _upgrade_with_rows(url)


def _upgrade_with_racing_pretraining_runs(url: str) -> None:
    """0015's index: two active runs left by a race before it are resolved, not refused."""
    upgrade(url, "0001")  # the project row as 0001 knew it; later columns get defaults
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, description, test_share, "
                          "train_on_reference, min_labels_per_class, created_at) VALUES "
                          "(1, 'p', '', 0.1, false, 1, CURRENT_TIMESTAMP)"))
    upgrade(url, "0014")
    with engine.begin() as conn:
        for run_id, status in ((1, "succeeded"), (2, "queued"), (3, "running"), (4, "queued"),
                               (5, "running")):
            conn.execute(text(
                "INSERT INTO pretraining_runs (id, project_id, status, epochs, image_size, "
                "batch_size, progress, phase, loss_history, stats, created_at) VALUES "
                f"({run_id}, 1, '{status}', 1, 75, 4, 0, 'x', '[]', '{{}}', CURRENT_TIMESTAMP)"))
    engine.dispose()
    upgrade(url)
    assert _diff(url) == []
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, error FROM pretraining_runs "
                                 "ORDER BY id")).all()
    engine.dispose()
    # The first running run is kept (its worker is on it); the queued ones and the
    # later running one are failed, saying why.
    assert [(r[0], r[1]) for r in rows] == [(1, "succeeded"), (2, "failed"), (3, "running"),
                                            (4, "failed"), (5, "failed")]
    assert all("Started twice" in r[2] for r in rows if r[1] == "failed")


def test_sqlite_upgrade_resolves_racing_pretraining_runs(tmp_path):
    _upgrade_with_racing_pretraining_runs(f"sqlite:///{tmp_path / 'race.sqlite'}")


@pytest.mark.postgres
def test_postgres_upgrade_resolves_racing_pretraining_runs():
    with fresh_postgres_database(migrate=False) as url:
        _upgrade_with_racing_pretraining_runs(url)
