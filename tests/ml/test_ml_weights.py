import hashlib
import socket

import pytest

from worker.ml import weights
from worker.ml.weights import (
    AUTO_FALLBACK_DESCRIPTION,
    IMAGENET_NOTOP_FILE,
    WeightsError,
    resolve_backbone_weights,
    short_reason,
)


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def test_url_is_the_official_notop_file():
    assert weights.IMAGENET_NOTOP_URL.endswith("/inception_v3/" + IMAGENET_NOTOP_FILE)
    assert IMAGENET_NOTOP_FILE == "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_none_and_imagenet_settings():
    assert resolve_backbone_weights("none") == (None, "none", [])
    assert resolve_backbone_weights("imagenet") == ("imagenet", "imagenet", [])


def test_existing_file_is_passed_through(tmp_path):
    path = tmp_path / "backbone.h5"
    path.write_bytes(b"not checked here")
    assert resolve_backbone_weights(str(path)) == (str(path), str(path), [])


def test_missing_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "backbone.h5"
    with pytest.raises(WeightsError, match="backbone.h5"):
        resolve_backbone_weights(str(missing))


def test_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(WeightsError, match=str(tmp_path)):
        resolve_backbone_weights(str(tmp_path))


def test_auto_uses_a_cached_file_without_downloading(empty_keras_home, monkeypatch):
    cached = empty_keras_home / "models" / IMAGENET_NOTOP_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    # Stands in for the real 87 MB file: a file whose hash is "the published one".
    monkeypatch.setattr(weights, "IMAGENET_NOTOP_MD5", hashlib.md5(b"x").hexdigest())

    def no_download(timeout):
        raise AssertionError("must not download when cached")

    monkeypatch.setattr(weights, "fetch_imagenet_notop", no_download)
    assert resolve_backbone_weights("auto") == ("imagenet", "imagenet", [])


def test_auto_offline_falls_back_with_a_short_warning(empty_keras_home):
    # This machine has no internet: the download must fail, quickly.
    previous_timeout = socket.getdefaulttimeout()
    arg, description, warnings = resolve_backbone_weights("auto", download_timeout=3)

    assert arg is None
    assert description == AUTO_FALLBACK_DESCRIPTION
    assert len(warnings) == 1
    assert warnings[0].startswith("ImageNet weights are not cached and could not be downloaded (")
    assert "random initialisation" in warnings[0]
    assert "Traceback" not in warnings[0] and len(warnings[0]) < 400
    assert socket.getdefaulttimeout() == previous_timeout
    # No half-downloaded file left behind to be mistaken for a cached one.
    assert not (empty_keras_home / "models" / IMAGENET_NOTOP_FILE).exists()


def test_published_hash_is_the_one_keras_checks():
    # Read from Keras' source, not imported: importing keras loads TensorFlow.
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("keras")
    source = (Path(spec.origin).parent / "src" / "applications" / "inception_v3.py").read_text()
    notop = source[source.index("WEIGHTS_PATH_NO_TOP,"):][:200]
    assert f'file_hash="{weights.IMAGENET_NOTOP_MD5}"' in notop


def test_cache_lives_under_the_instance_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HEMALOOP_INSTANCE_DIR", str(tmp_path / "inst"))
    assert weights.keras_cache_dir() == (tmp_path / "inst" / "keras").resolve()
    assert weights.notop_cache_path() == (
        tmp_path / "inst" / "keras" / "models" / IMAGENET_NOTOP_FILE).resolve()
    assert "/tmp/.keras" not in str(weights.keras_cache_dir())


def test_a_wrong_cached_file_is_refused_with_a_clear_error(empty_keras_home):
    cached = empty_keras_home / "models" / IMAGENET_NOTOP_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="not the published one"):
        weights.verify_imagenet_notop(cached)
    assert weights.cached_imagenet_notop() is None


def test_a_wrong_cached_file_is_set_aside_and_not_loaded_offline(empty_keras_home):
    cached = empty_keras_home / "models" / IMAGENET_NOTOP_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    # This machine has no internet: the new download fails, and the error says
    # why the cached copy was not used.
    with pytest.raises(WeightsError) as err:
        weights.fetch_imagenet_notop(timeout=3)
    message = str(err.value)
    assert "not the published one" in message and "moved aside" in message
    assert "Traceback" not in message
    assert not cached.exists()
    assert cached.with_name(cached.name + ".rejected").read_bytes() == b"not the weights"
    # "auto" falls back to random initialisation, with a warning, as when offline.
    arg, description, warnings = resolve_backbone_weights("auto", download_timeout=3)
    assert arg is None and description == AUTO_FALLBACK_DESCRIPTION and len(warnings) == 1


def test_short_reason_keeps_the_useful_part():
    exc = Exception(
        "URL fetch failure on https://x/y.h5: None -- [Errno -2] Name or service not known"
    )
    assert short_reason(exc) == "[Errno -2] Name or service not known"
    assert short_reason(TimeoutError("timed out\nmore")) == "TimeoutError: timed out"
    assert short_reason(OSError()) == "OSError"


def test_numpy_only_modules_do_not_import_tensorflow():
    # The web process imports these; TensorFlow would cost seconds and memory.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import worker.ml, worker.ml.weights, worker.ml.evaluate, "
        "worker.ml.uncertainty, worker.ml.data; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
