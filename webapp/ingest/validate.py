"""Decide whether a file is a cell image we can keep, and in what form to store it.

Every file is fully decoded with Pillow and size-checked.  Most are stored as
they came.  Three kinds are stored in another form, decided here at import
rather than when serving, so the stored file is what both the browser and the
worker read, and converting is paid once per image, not per page view:

- TIFF: browsers cannot show it in ``<img>``; stored as a lossless PNG.
- High bit-depth greyscale (16-bit PNG, 16/32-bit or float TIFF): scaled to
  8 bits (models.pixels) and stored as PNG, so display and training agree.
- MPO (the multi-picture JPEG some cameras write): its first frame, which is a
  complete JPEG, is stored; the others (a second view, a thumbnail) are dropped.

The content hash that deduplicates imports stays the hash of the file as
imported, so importing the same TIFF again is still a duplicate.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from models.pixels import for_browser, is_high_depth

# Formats a microscope, slide scanner or camera exports; anything else is refused.
ACCEPTED_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "TIFF": ".tif",
                    "BMP": ".bmp", "WEBP": ".webp"}
ZIP_MAGIC = b"PK\x03\x04"

log = logging.getLogger(__name__)


class RejectedImage(ValueError):
    """The file is not an acceptable image; the message says why, for the user."""


@dataclass(frozen=True)
class DecodedImage:
    width: int
    height: int
    extension: str
    data: bytes  # what to store: the file itself, or its converted form


def _png(image: PILImage.Image) -> bytes:
    out = io.BytesIO()
    for_browser(image).save(out, "PNG")
    return out.getvalue()


def _without_mp_index(jpeg: bytes) -> bytes:
    """``jpeg`` without its APP2 "MPF" segments (the index of the other frames).

    Only the segments before the image data are walked; the rest is copied as is.
    """
    out, pos = [jpeg[:2]], 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        if marker == 0xDA:  # start of scan: image data follows
            break
        length = int.from_bytes(jpeg[pos + 2:pos + 4], "big")
        segment = jpeg[pos:pos + 2 + length]
        if not (marker == 0xE2 and segment[4:8] == b"MPF\0"):
            out.append(segment)
        pos += 2 + length
    out.append(jpeg[pos:])
    return b"".join(out)


def _first_mpo_frame(data: bytes, img: PILImage.Image) -> bytes:
    """The first frame of an MPO as a plain JPEG; the whole file if unsure.

    The MP index gives each frame's size; the first frame starts at 0.  If the
    index is missing or wrong, the whole file is kept: browsers show its first
    frame anyway and Pillow opens it at frame 0.
    """
    try:
        size = int(img.mpinfo[0xB002][0]["Size"])  # type: ignore[attr-defined]
        first = _without_mp_index(data[:size])
        with PILImage.open(io.BytesIO(first)) as frame:
            if frame.format == "JPEG" and frame.size == img.size:
                frame.load()
                return first
    except Exception:  # any doubt: keep the original, already decoded
        log.debug("MPO index unusable; keeping the whole file", exc_info=True)
    return data


def _decode(data: bytes, max_pixels: int) -> DecodedImage:
    with PILImage.open(io.BytesIO(data)) as img:
        fmt = img.format
        width, height = img.size
        if fmt not in ACCEPTED_FORMATS:
            raise RejectedImage(f"unsupported image format {fmt or 'unknown'}")
        if width * height > max_pixels:
            raise RejectedImage(
                f"image too large: {width}x{height} pixels exceeds the limit of "
                f"{max_pixels:,} pixels (possible decompression bomb)"
            )
        img.load()  # decodes every pixel: catches truncated and corrupt data
        if width < 8 or height < 8:
            raise RejectedImage(f"image too small: {width}x{height} pixels")
        if fmt == "TIFF" or is_high_depth(img):
            return DecodedImage(width, height, ".png", _png(img))
        if fmt == "MPO":
            return DecodedImage(width, height, ".jpg", _first_mpo_frame(data, img))
        return DecodedImage(width, height, ACCEPTED_FORMATS[fmt], data)


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Fully decode ``data``; raise RejectedImage with a readable reason if we can't.

    RejectedImage is the only exception this raises for any input: the fuzz
    test (tests/test_image_fuzz.py) feeds it mutated images to keep it so.
    """
    if not data:
        raise RejectedImage("empty file")
    if data.startswith(ZIP_MAGIC):
        raise RejectedImage("a zip archive inside the import: unpack it and import it separately")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; we refuse both.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            return _decode(data, max_pixels)
    except RejectedImage:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise RejectedImage("image too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise RejectedImage("not an image (Pillow cannot identify the file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow's wording is useful here ("image file is truncated"), and it is
        # about the user's own file, so it is safe to show.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RejectedImage(f"corrupt image: {reason}") from None
    except MemoryError:
        raise RejectedImage("image too large to decode in memory") from None
    except Exception as exc:  # noqa: BLE001
        # Pillow's plugins raise other types on some malformed files (struct.error,
        # IndexError, ZeroDivisionError…). Whatever the decoder trips on, the file
        # is what is wrong: refuse it by name, never abort the import.
        raise RejectedImage(f"corrupt image (the decoder failed: {type(exc).__name__})") from None
