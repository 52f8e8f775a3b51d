"""Loading cell images into InceptionV3-ready arrays."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from models.pixels import to_rgb

# Pillow releases the GIL while decoding, so two threads overlap decoding with
# the model's forward pass on the worker's few cores without oversubscribing.
DECODE_THREADS = 2


class ImageLoadError(Exception):
    """An image file is missing or cannot be decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(path: str | Path, input_size: int) -> np.ndarray:
    """Decode, resize to input_size x input_size and scale to [-1, 1].

    The scaling is exactly keras.applications.inception_v3.preprocess_input
    ("tf" mode: x / 127.5 - 1), done in NumPy so no TensorFlow op runs here.
    High bit-depth images are scaled to 8 bits first (models.pixels), the same
    way the importer scales them for display; a multi-frame file gives its
    first frame.
    """
    try:
        with Image.open(path) as image:
            rgb = to_rgb(image)
            resized = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError and truncated-file errors are OSErrors; some
        # corrupt headers surface as ValueError/SyntaxError from plugins.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageLoadError(path, f"cannot decode image ({reason})") from None
    except Exception as exc:  # noqa: BLE001
        # Pillow's plugins raise other types on some malformed files (struct.error,
        # IndexError, ZeroDivisionError…; found by tests/test_image_fuzz.py). A bad
        # file is the file's problem: skip it with its reason, never crash a round.
        raise ImageLoadError(path, f"cannot decode image ({type(exc).__name__})") from None
    array = np.asarray(resized, dtype=np.float32)
    return array / np.float32(127.5) - np.float32(1.0)


def _load_or_error(path: str | Path, input_size: int) -> np.ndarray | ImageLoadError:
    try:
        return load_image(path, input_size)
    except ImageLoadError as exc:
        return exc


def image_batches(
    paths: Sequence[str | Path],
    input_size: int,
    batch_size: int,
    failures: list[tuple[int, str]] | None = None,
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield `(batch, indices)` in order, where `indices` index into `paths`.

    Unreadable files are skipped and, if `failures` is given, recorded there as
    `(index, reason)`. A batch can be smaller than `batch_size` (or absent
    altogether) when files fail. The next batch decodes while the caller works
    on the current one; at most two batches are in memory at a time.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    starts = range(0, len(paths), batch_size)
    if not starts:
        return

    with ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode") as pool:

        def submit(start: int) -> list[tuple[int, Future]]:
            stop = min(start + batch_size, len(paths))
            return [
                (i, pool.submit(_load_or_error, paths[i], input_size))
                for i in range(start, stop)
            ]

        pending: deque[list[tuple[int, Future]]] = deque([submit(starts[0])])
        for next_start in [*starts[1:], None]:
            if next_start is not None:
                pending.append(submit(next_start))
            arrays: list[np.ndarray] = []
            indices: list[int] = []
            for index, future in pending.popleft():
                result = future.result()
                if isinstance(result, ImageLoadError):
                    if failures is not None:
                        failures.append((index, result.reason))
                    continue
                arrays.append(result)
                indices.append(index)
            if arrays:
                yield np.stack(arrays), indices
