"""Decide whether a file is a cell image we can keep: decoded with Pillow, size-checked."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# Formats a microscope or slide scanner exports; anything else is refused.
ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp"}


class RejectedImage(ValueError):
    """The file is not an acceptable image; the message says why, for the user."""


@dataclass(frozen=True)
class DecodedImage:
    width: int
    height: int
    extension: str


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Fully decode ``data``; raise RejectedImage with a readable reason if we can't."""
    if not data:
        raise RejectedImage("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; we refuse both.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
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
    except RejectedImage:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise RejectedImage("image too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise RejectedImage("not an image (Pillow cannot identify the file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow's wording is useful here ("image file is truncated"), and it is
        # about the user's own file, so it is safe to show.
        raise RejectedImage(f"corrupt image: {exc}") from None
    if width < 8 or height < 8:
        raise RejectedImage(f"image too small: {width}x{height} pixels")
    return DecodedImage(width, height, ACCEPTED_FORMATS[fmt])
