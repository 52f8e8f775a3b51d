"""Runtime settings, read once from ``HEMALOOP_*`` environment variables.

The webapp, the Celery worker and Alembic all read the same settings, which is
why they live beside the data model.  Parsing is strict: a value that does not
parse, or a ``HEMALOOP_`` name nobody knows (usually a typo), stops start-up
with a message that names the variable.  There is no hard-coded secret key:
when ``HEMALOOP_SECRET_KEY`` is unset, one is generated once and kept in the
instance folder.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from models.files import atomic_write

PREFIX = "HEMALOOP_"
MIN_INPUT_SIZE = 75  # InceptionV3 refuses anything smaller.
MAX_INPUT_SIZE = 1024

# Names read elsewhere (bootstrap, tests) that are not settings but are known.
_KNOWN_NON_SETTINGS = {"HEMALOOP_ADMIN_PASSWORD"}


class SettingsError(ValueError):
    """A HEMALOOP_* variable is missing, malformed or unknown."""


@dataclass(frozen=True)
class Settings:
    instance_dir: Path
    database_url: str
    broker_url: str
    storage_dir: Path
    secret_key: str
    input_size: int
    backbone_weights: str  # "auto", "imagenet", "none" or a path to an .h5 file
    batch_size: int
    head_epochs: int
    fine_tune_epochs: int
    mixed_precision: str  # "auto", "on" or "off"
    schedule_seconds: int
    max_image_pixels: int
    max_upload_bytes: int
    round_stale_seconds: int
    log_level: str
    # Celery's result backend: only pool scoring's chord uses it (its chunks'
    # counts reach the callback through it); every other task records its
    # outcome on a database row.
    result_backend: str = ""
    # Pool scoring is split into chunks of this many cells, run in parallel.
    score_chunk_cells: int = 5000
    # Login and sessions (docs/reliability.md, "Login and sessions").
    # A session unused this long is over; the next request goes to the login page.
    session_idle_minutes: int = 480
    # Cookies only over HTTPS: on behind TLS (the compose file), off for plain-HTTP
    # development, where a Secure cookie would never come back.
    secure_cookies: bool = False
    # Where Flask-Limiter counts failed logins: the broker's Redis when the broker
    # is Redis, else memory:// (one count per web process; see docs/reliability.md).
    ratelimit_storage_url: str = "memory://"
    # Request bodies of ordinary forms and htmx posts; routes that take uploads
    # (webapp/limits.py ``accepts_upload``) get max_upload_bytes instead.
    max_form_bytes: int = 1024 * 1024
    # How many reverse proxies (TLS terminators) stand in front: their
    # X-Forwarded-For/-Proto are trusted that many hops deep.  0: none.
    trusted_proxies: int = 0
    # How long a Predict request waits for the predict worker (webapp/predict/client.py).
    predict_timeout_seconds: int = 60

    @property
    def images_dir(self) -> Path:
        return self.storage_dir / "images"

def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{PREFIX}{name}={value} is outside {lo}..{hi}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(PREFIX + name, "") or default).strip().lower()
    if value not in allowed:
        raise SettingsError(f"{PREFIX}{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(PREFIX + name, "") or "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{PREFIX}{name}={raw!r}: expected true or false (1/0, yes/no, on/off)")


def _ratelimit_storage(env: Mapping[str, str], broker_url: str) -> str:
    value = env.get(PREFIX + "RATELIMIT_STORAGE_URL", "").strip()
    if not value:
        # The broker's Redis is shared by every web process: one count for all.
        return broker_url if broker_url.startswith(("redis://", "rediss://")) else "memory://"
    if not value.startswith(("redis://", "rediss://", "memory://", "memcached://")):
        raise SettingsError(
            f"{PREFIX}RATELIMIT_STORAGE_URL={value!r}: expected a URL starting with one of "
            "redis://, rediss://, memcached://, memory://"
        )
    return value


def _weights(raw: str) -> str:
    value = raw.strip()
    if value.lower() in {"auto", "imagenet", "none"}:
        return value.lower()
    path = Path(value).expanduser()
    if path.suffix != ".h5":
        raise SettingsError(
            f"{PREFIX}BACKBONE_WEIGHTS={raw!r}: expected auto, imagenet, none "
            "or the path of an .h5 weights file"
        )
    if not path.is_file():
        raise SettingsError(f"{PREFIX}BACKBONE_WEIGHTS: weights file {path} does not exist")
    return str(path.resolve())


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(PREFIX + name, "").strip() or default
    if not value.startswith(schemes):
        raise SettingsError(
            f"{PREFIX}{name}={value!r}: expected a URL starting with one of {', '.join(schemes)}"
        )
    return value


def _secret_key(env: Mapping[str, str], instance_dir: Path) -> str:
    value = env.get(PREFIX + "SECRET_KEY", "")
    if value:
        if len(value) < 16:
            raise SettingsError(f"{PREFIX}SECRET_KEY is too short (16 characters at least)")
        return value
    # Generated once per instance and kept, so sessions survive restarts.
    key_file = instance_dir / "secret_key"
    if not key_file.exists():
        # Written aside and linked into place: a crash never leaves an empty key
        # file, and two processes starting at once end up with the same key
        # (the one that lost the race reads the winner's).
        atomic_write(key_file, lambda tmp: tmp.write_text(secrets.token_hex(32)),
                     fsync=True, mode=0o600, overwrite=False)
    key = key_file.read_text().strip()
    if len(key) < 16:
        raise SettingsError(
            f"{key_file} is empty or too short; delete it to have a new key generated, "
            f"or set {PREFIX}SECRET_KEY"
        )
    return key


KNOWN_NAMES = {
    PREFIX + n
    for n in (
        "INSTANCE_DIR", "DATABASE_URL", "BROKER_URL", "STORAGE_DIR", "SECRET_KEY",
        "INPUT_SIZE", "BACKBONE_WEIGHTS", "BATCH_SIZE", "HEAD_EPOCHS", "FINE_TUNE_EPOCHS",
        "MIXED_PRECISION", "SCHEDULE_SECONDS",
        "MAX_IMAGE_PIXELS", "MAX_UPLOAD_BYTES", "ROUND_STALE_SECONDS", "LOG_LEVEL",
        "RESULT_BACKEND", "SCORE_CHUNK_CELLS",
        "SESSION_IDLE_MINUTES", "SECURE_COOKIES", "RATELIMIT_STORAGE_URL", "MAX_FORM_BYTES",
        "TRUSTED_PROXIES", "PREDICT_TIMEOUT_SECONDS",
    )
} | _KNOWN_NON_SETTINGS


def instance_dir_from_env(env: Mapping[str, str]) -> Path:
    """The instance directory, by the rule load_settings uses (for code that needs
    only this, such as the worker's weights cache)."""
    return Path(env.get(PREFIX + "INSTANCE_DIR", "") or "instance").expanduser().resolve()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    unknown = sorted(
        k for k in env
        if k.startswith(PREFIX) and k not in KNOWN_NAMES and not k.startswith(PREFIX + "TEST_")
    )
    if unknown:
        raise SettingsError(
            f"unknown setting {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_NAMES))}"
        )
    instance_dir = instance_dir_from_env(env)
    storage_raw = env.get(PREFIX + "STORAGE_DIR", "")
    storage_dir = Path(storage_raw).expanduser().resolve() if storage_raw else instance_dir / "storage"
    broker_url = _url(
        env, "BROKER_URL", f"sqla+sqlite:///{instance_dir / 'broker.sqlite'}",
        ("sqla+", "redis://", "rediss://", "amqp://", "memory://"),
    )
    return Settings(
        instance_dir=instance_dir,
        database_url=_url(
            env, "DATABASE_URL", f"sqlite:///{instance_dir / 'hemaloop.sqlite'}",
            ("sqlite:", "postgresql:", "postgresql+"),
        ),
        broker_url=broker_url,
        storage_dir=storage_dir,
        secret_key=_secret_key(env, instance_dir),
        input_size=_int(env, "INPUT_SIZE", 299, MIN_INPUT_SIZE, MAX_INPUT_SIZE),
        backbone_weights=_weights(env.get(PREFIX + "BACKBONE_WEIGHTS", "") or "auto"),
        batch_size=_int(env, "BATCH_SIZE", 32, 1, 4096),
        head_epochs=_int(env, "HEAD_EPOCHS", 30, 1, 1000),
        fine_tune_epochs=_int(env, "FINE_TUNE_EPOCHS", 10, 0, 1000),
        mixed_precision=_choice(env, "MIXED_PRECISION", "auto", ("auto", "on", "off")),
        schedule_seconds=_int(env, "SCHEDULE_SECONDS", 60, 5, 24 * 3600),
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 40_000_000, 1024, 1_000_000_000),
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 512 * 1024 * 1024, 1024, 1 << 40),
        round_stale_seconds=_int(env, "ROUND_STALE_SECONDS", 900, 5, 7 * 24 * 3600),
        log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        result_backend=_url(
            env, "RESULT_BACKEND", f"db+sqlite:///{instance_dir / 'celery-results.sqlite'}",
            ("db+sqlite:", "db+postgresql:", "db+postgresql+", "redis://", "rediss://"),
        ),
        score_chunk_cells=_int(env, "SCORE_CHUNK_CELLS", 5000, 1, 1_000_000),
        session_idle_minutes=_int(env, "SESSION_IDLE_MINUTES", 480, 1, 30 * 24 * 60),
        secure_cookies=_bool(env, "SECURE_COOKIES", False),
        ratelimit_storage_url=_ratelimit_storage(env, broker_url),
        max_form_bytes=_int(env, "MAX_FORM_BYTES", 1024 * 1024, 16 * 1024, 1 << 30),
        trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, 0, 5),
        predict_timeout_seconds=_int(env, "PREDICT_TIMEOUT_SECONDS", 60, 1, 3600),
    )
