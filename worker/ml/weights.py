"""Deciding which backbone weights to start from: ImageNet, none, or a local file."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/"
    "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
IMAGENET_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# The MD5 Keras publishes for this file (keras/src/applications/inception_v3.py,
# WEIGHTS_PATH_NO_TOP's file_hash), checked on every cached or downloaded copy:
# a truncated, stale or planted file is never loaded.
IMAGENET_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"

# Long enough for a slow link (the timeout is per socket operation, not for
# the whole 87 MB), short enough that a firewalled worker does not hang.
EXPLICIT_DOWNLOAD_TIMEOUT = 60.0

AUTO_FALLBACK_DESCRIPTION = "none (auto: ImageNet weights unavailable)"


class WeightsError(RuntimeError):
    """Backbone weights could not be found, fetched or loaded."""


def keras_cache_dir() -> Path:
    """Where the ImageNet weights are cached: ``<instance>/keras``.

    Under the instance directory (HEMALOOP_INSTANCE_DIR), beside the rest of
    this installation's state, never in a shared place such as /tmp/.keras
    where another user could plant a file.  KERAS_HOME, when set, is an
    operator's explicit choice and wins.  Read at call time, not import time,
    so a worker (or a test) can point it elsewhere after TensorFlow loaded.
    """
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"])
    from models.settings import instance_dir_from_env

    return instance_dir_from_env(os.environ) / "keras"


def notop_cache_path() -> Path:
    return keras_cache_dir() / "models" / IMAGENET_NOTOP_FILE


# (path, size, mtime_ns) -> verified; hashing 87 MB takes a fraction of a second,
# but a worker asks for every round.
_verified: set[tuple[str, int, int]] = set()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_imagenet_notop(path: Path) -> Path:
    """``path`` if its MD5 is the one Keras publishes for the notop file, else WeightsError."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return path
    actual = file_md5(path)
    if actual != IMAGENET_NOTOP_MD5:
        raise WeightsError(
            f"The ImageNet weights file {path} is not the published one (MD5 {actual}, "
            f"expected {IMAGENET_NOTOP_MD5}): a truncated download or another file. "
            "Delete it to have it downloaded again."
        )
    _verified.add(key)
    return path


def cached_imagenet_notop() -> Path | None:
    """The cached notop weights file, if one is present and matches the published hash."""
    path = notop_cache_path()
    if not path.is_file():
        return None
    try:
        return verify_imagenet_notop(path)
    except WeightsError:
        return None


def _set_aside(path: Path) -> Path:
    """Move a cached file that failed the hash check aside (kept, never loaded)."""
    aside = path.with_name(path.name + ".rejected")
    os.replace(path, aside)
    return aside


def fetch_imagenet_notop(timeout: float) -> Path:
    """Return the local path of the verified ImageNet notop weights, downloading if needed.

    A cached copy that fails the hash check is moved aside (``.rejected``) and
    downloaded again; if that download fails too, the WeightsError says why
    the cached copy was not used.  Download failures raise whatever
    `keras.utils.get_file` raises; callers turn that into a warning or a
    WeightsError.
    """
    path = notop_cache_path()
    rejected: WeightsError | None = None
    if path.is_file():
        try:
            return verify_imagenet_notop(path)
        except WeightsError as exc:
            rejected = exc
            _set_aside(path)

    from keras.utils import get_file  # deferred: keeps this module TF-free to import

    previous = socket.getdefaulttimeout()
    # urlretrieve has no timeout argument; the process-wide default is the only
    # knob. Restored right after so other sockets keep their behaviour.
    socket.setdefaulttimeout(timeout)
    try:
        downloaded = Path(
            get_file(
                IMAGENET_NOTOP_FILE,
                IMAGENET_NOTOP_URL,
                cache_dir=str(keras_cache_dir()),
                cache_subdir="models",
                file_hash=IMAGENET_NOTOP_MD5,
            )
        )
    except Exception as exc:
        if rejected is not None:
            raise WeightsError(
                f"{rejected} It was moved aside, and a new copy could not be downloaded "
                f"({short_reason(exc)})."
            ) from None
        raise
    finally:
        socket.setdefaulttimeout(previous)
    # Keras checks the hash of what it downloads; checked here as well, so the
    # rule does not depend on Keras' version.
    return verify_imagenet_notop(downloaded)


def short_reason(exc: BaseException) -> str:
    """One short line describing `exc`, for users; never a traceback."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    # Keras wraps urllib errors as "URL fetch failure on <url>: <errno> -- <why>";
    # the part after "--" is the useful bit.
    if " -- " in text:
        text = text.rsplit(" -- ", 1)[1]
    if len(text) > 120:
        text = text[:117] + "..."
    name = type(exc).__name__
    if not text:
        return name
    return text if name == "Exception" else f"{name}: {text}"


def resolve_backbone_weights(
    setting: str, *, download_timeout: float = 10.0
) -> tuple[str | None, str, list[str]]:
    """Turn a weights setting into `(weights_arg_for_keras, description, warnings)`.

    `setting` is "imagenet", "none", "auto" or a path to a local .h5 file.
    "auto" never fails: without ImageNet weights it falls back to random
    initialisation and says so in `warnings`.
    """
    choice = setting.strip()
    lowered = choice.lower()
    if lowered == "none":
        return None, "none", []
    if lowered == "imagenet":
        # Keras downloads and caches it; build_classifier reports failures.
        return "imagenet", "imagenet", []
    if lowered == "auto":
        if cached_imagenet_notop() is not None:
            return "imagenet", "imagenet", []
        try:
            fetch_imagenet_notop(download_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not available", by design
            warning = (
                "ImageNet weights are not cached and could not be downloaded "
                f"({short_reason(exc)}); the backbone starts from random "
                "initialisation, so expect much lower accuracy."
            )
            return None, AUTO_FALLBACK_DESCRIPTION, [warning]
        return "imagenet", "imagenet", []

    path = Path(choice).expanduser()
    if not path.exists():
        raise WeightsError(f"Backbone weights file {choice} does not exist.")
    if not path.is_file():
        raise WeightsError(f"Backbone weights path {choice} is not a file.")
    return str(path), str(path), []
