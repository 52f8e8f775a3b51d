"""Settings are parsed strictly: a bad HEMALOOP_* value stops start-up, naming it."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from models.settings import SettingsError, load_settings
from tests.helpers import base_env


def _load(tmp_path, **extra: str):
    return load_settings(base_env(tmp_path, **extra))


def test_base_env_loads(tmp_path):
    s = _load(tmp_path)
    assert s.input_size == 75 and s.backbone_weights == "none" and s.head_epochs == 8
    assert s.instance_dir == (tmp_path / "instance").resolve()
    assert s.storage_dir == s.instance_dir / "storage"
    assert s.database_url == f"sqlite:///{s.instance_dir / 'hemaloop.sqlite'}"


@pytest.mark.parametrize("name, value, words", [
    ("HEMALOOP_INPUT_SIZE", "abc", ["HEMALOOP_INPUT_SIZE", "'abc'", "not an integer"]),
    ("HEMALOOP_INPUT_SIZE", "74", ["HEMALOOP_INPUT_SIZE=74", "outside 75..1024"]),
    ("HEMALOOP_INPUT_SIZE", "1025", ["HEMALOOP_INPUT_SIZE=1025", "outside"]),
    ("HEMALOOP_BATCH_SIZE", "0", ["HEMALOOP_BATCH_SIZE=0", "outside"]),
    ("HEMALOOP_HEAD_EPOCHS", "2.5", ["HEMALOOP_HEAD_EPOCHS", "not an integer"]),
    ("HEMALOOP_MAX_IMAGE_PIXELS", "-1", ["HEMALOOP_MAX_IMAGE_PIXELS", "outside"]),
    ("HEMALOOP_ROUND_STALE_SECONDS", "4", ["HEMALOOP_ROUND_STALE_SECONDS=4", "outside"]),
    ("HEMALOOP_LOG_LEVEL", "chatty", ["HEMALOOP_LOG_LEVEL", "chatty"]),
    ("HEMALOOP_MIXED_PRECISION", "maybe", ["HEMALOOP_MIXED_PRECISION", "maybe"]),
    ("HEMALOOP_FINE_TUNE_EPOCHS", "-1", ["HEMALOOP_FINE_TUNE_EPOCHS"]),
    ("HEMALOOP_SESSION_IDLE_MINUTES", "0", ["HEMALOOP_SESSION_IDLE_MINUTES=0", "outside"]),
    ("HEMALOOP_SECURE_COOKIES", "sure", ["HEMALOOP_SECURE_COOKIES", "'sure'", "true or false"]),
    ("HEMALOOP_RATELIMIT_STORAGE_URL", "sqlite:///x", ["HEMALOOP_RATELIMIT_STORAGE_URL",
                                                       "redis://"]),
    ("HEMALOOP_MAX_FORM_BYTES", "100", ["HEMALOOP_MAX_FORM_BYTES=100", "outside"]),
    ("HEMALOOP_TRUSTED_PROXIES", "9", ["HEMALOOP_TRUSTED_PROXIES=9", "outside"]),
])
def test_bad_values_are_refused_by_name(tmp_path, name, value, words):
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, **{name: value})
    for word in words:
        assert word in str(err.value)


def test_login_and_session_settings(tmp_path):
    s = _load(tmp_path)
    assert (s.session_idle_minutes, s.secure_cookies, s.trusted_proxies) == (480, False, 0)
    assert s.max_form_bytes == 1024 * 1024 and s.ratelimit_storage_url == "memory://"
    s = _load(tmp_path, HEMALOOP_SECURE_COOKIES=" Yes ", HEMALOOP_SESSION_IDLE_MINUTES="30",
              HEMALOOP_RATELIMIT_STORAGE_URL="redis://r:6379/2", HEMALOOP_TRUSTED_PROXIES="1")
    assert (s.session_idle_minutes, s.secure_cookies, s.trusted_proxies) == (30, True, 1)
    assert s.ratelimit_storage_url == "redis://r:6379/2"
    assert _load(tmp_path, HEMALOOP_SECURE_COOKIES="off").secure_cookies is False


def test_integers_tolerate_surrounding_space_and_empty_means_default(tmp_path):
    s = _load(tmp_path, HEMALOOP_INPUT_SIZE=" 128 ", HEMALOOP_BATCH_SIZE="")
    assert s.input_size == 128 and s.batch_size == 32


def test_unknown_hemaloop_variable_is_named(tmp_path):
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, HEMALOOP_INPUT_SIZ="128")  # a typo of INPUT_SIZE
    message = str(err.value)
    assert "unknown setting HEMALOOP_INPUT_SIZ;" in message
    assert "HEMALOOP_INPUT_SIZE" in message  # the known names are listed


def test_test_variables_and_other_prefixes_are_allowed(tmp_path):
    s = _load(tmp_path, HEMALOOP_TEST_DATABASE_URL="postgresql://x/y",
              HEMALOOP_TEST_ANYTHING="1", HEMALOOPX="1", PATH="/usr/bin")
    assert s.input_size == 75


def test_weights_path_must_exist(tmp_path):
    missing = tmp_path / "nowhere" / "inception.h5"
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, HEMALOOP_BACKBONE_WEIGHTS=str(missing))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_weights_path_must_be_h5(tmp_path):
    weights = tmp_path / "inception.weights.bin"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, HEMALOOP_BACKBONE_WEIGHTS=str(weights))
    assert "inception.weights.bin" in str(err.value) and ".h5" in str(err.value)


def test_weights_keywords_and_existing_h5(tmp_path):
    assert _load(tmp_path, HEMALOOP_BACKBONE_WEIGHTS="ImageNet").backbone_weights == "imagenet"
    assert _load(tmp_path, HEMALOOP_BACKBONE_WEIGHTS="").backbone_weights == "auto"
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"\0" * 16)
    s = _load(tmp_path, HEMALOOP_BACKBONE_WEIGHTS=str(weights))
    assert s.backbone_weights == str(weights.resolve())


@pytest.mark.parametrize("url", ["mysql://root@localhost/hemaloop", "hemaloop.sqlite",
                                 "postgres://user@host/db"])
def test_bad_database_url_scheme(tmp_path, url):
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, HEMALOOP_DATABASE_URL=url)
    assert "HEMALOOP_DATABASE_URL" in str(err.value) and url in str(err.value)


def test_bad_broker_url_scheme(tmp_path):
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, HEMALOOP_BROKER_URL="http://127.0.0.1:6379/0")
    assert "HEMALOOP_BROKER_URL" in str(err.value)


def test_accepted_database_urls(tmp_path):
    for url in ("sqlite:////tmp/x.sqlite", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        assert _load(tmp_path, HEMALOOP_DATABASE_URL=url).database_url == url


def _without_secret(tmp_path) -> dict[str, str]:
    env = base_env(tmp_path)
    del env["HEMALOOP_SECRET_KEY"]
    return env


def test_secret_key_generated_once_private_and_reused(tmp_path):
    env = _without_secret(tmp_path)
    key_file = tmp_path / "instance" / "secret_key"
    assert not key_file.exists()
    first = load_settings(env)
    assert key_file.is_file()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(first.secret_key) >= 32 and key_file.read_text().strip() == first.secret_key
    second = load_settings(env)
    assert second.secret_key == first.secret_key
    # Another instance gets its own key.
    other = load_settings(_without_secret(tmp_path / "other"))
    assert other.secret_key != first.secret_key


def test_given_secret_key_wins_and_writes_nothing(tmp_path):
    s = _load(tmp_path)
    assert s.secret_key == "test-secret-key-0123456789"
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_short_secret_key_refused(tmp_path):
    with pytest.raises(SettingsError) as err:
        _load(tmp_path, HEMALOOP_SECRET_KEY="short")
    assert "HEMALOOP_SECRET_KEY" in str(err.value) and "too short" in str(err.value)


@pytest.mark.parametrize("content", ["", "\n", "short\n"])
def test_empty_or_short_secret_key_file_is_refused(tmp_path, content):
    """A key file left empty (say, a crash between creating and writing it) or
    holding a weak key must not silently become the secret key: with an empty
    one every form and login fails at request time instead of at start-up."""
    key_file = tmp_path / "instance" / "secret_key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(content)
    with pytest.raises(SettingsError) as err:
        load_settings(_without_secret(tmp_path))
    assert "secret_key" in str(err.value)


# --- the CLI -----------------------------------------------------------------

def _cli(args, env):
    from webapp.cli import main

    return CliRunner().invoke(main, args, env=env)


@pytest.mark.parametrize("bad, named", [
    ({"HEMALOOP_INPUT_SIZE": "abc"}, "HEMALOOP_INPUT_SIZE"),
    ({"HEMALOOP_INPUT_SIZ": "128"}, "HEMALOOP_INPUT_SIZ"),
    ({"HEMALOOP_DATABASE_URL": "mysql://x/y"}, "HEMALOOP_DATABASE_URL"),
])
def test_cli_reports_configuration_error(tmp_path, bad, named):
    env = base_env(tmp_path, **bad)
    for args in (["migrate"], ["create-project", "p"], ["import", str(tmp_path), "--project", "p"]):
        result = _cli(args, env)
        assert result.exit_code != 0, result.output
        assert "configuration error" in result.stderr and named in result.stderr
        assert "Traceback" not in result.output
        assert result.stdout == ""
    # Nothing was created on the way to failing.
    assert not (tmp_path / "instance" / "hemaloop.sqlite").exists()


def test_cli_starts_with_good_settings(tmp_path):
    result = _cli(["migrate"], base_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "created the database schema" in result.stdout
    assert (tmp_path / "instance" / "hemaloop.sqlite").is_file()
