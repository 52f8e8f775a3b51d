"""Deciding which backbone weights to start from: ImageNet, none, or a local file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/"
    "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
IMAGENET_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# The MD5 Keras itself checks (keras/src/applications/inception_v3.py), so a
# truncated or stale cached copy is re-downloaded rather than loaded.
IMAGENET_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"

# Long enough for a slow link (the timeout is per socket operation, not for
# the whole 87 MB), short enough that a firewalled worker does not hang.
EXPLICIT_DOWNLOAD_TIMEOUT = 60.0

AUTO_FALLBACK_DESCRIPTION = "none (auto: ImageNet weights unavailable)"


class WeightsError(RuntimeError):
    """Backbone weights could not be found, fetched or loaded."""


def keras_cache_dir() -> Path:
    """Keras' cache directory, evaluated now.

    Keras reads KERAS_HOME once, at import time; reading it here instead lets a
    worker (or a test) point the cache somewhere else after TensorFlow loaded.
    The /tmp fallback mirrors Keras' own rule for an unwritable home.
    """
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    home = os.path.expanduser("~")
    if not os.access(home, os.W_OK):
        home = "/tmp"
    return Path(home) / ".keras"


def cached_imagenet_notop() -> Path | None:
    """The cached notop weights file, if one is present (not hash-checked)."""
    path = keras_cache_dir() / "models" / IMAGENET_NOTOP_FILE
    return path if path.is_file() and path.stat().st_size > 0 else None


def fetch_imagenet_notop(timeout: float) -> Path:
    """Return the local path of the ImageNet notop weights, downloading if needed.

    Raises whatever `keras.utils.get_file` raises; callers turn that into a
    warning or a WeightsError.
    """
    from keras.utils import get_file  # deferred: keeps this module TF-free to import

    previous = socket.getdefaulttimeout()
    # urlretrieve has no timeout argument; the process-wide default is the only
    # knob. Restored right after so other sockets keep their behaviour.
    socket.setdefaulttimeout(timeout)
    try:
        return Path(
            get_file(
                IMAGENET_NOTOP_FILE,
                IMAGENET_NOTOP_URL,
                cache_dir=str(keras_cache_dir()),
                cache_subdir="models",
                file_hash=IMAGENET_NOTOP_MD5,
            )
        )
    finally:
        socket.setdefaulttimeout(previous)


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
