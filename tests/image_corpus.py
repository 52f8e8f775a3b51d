"""Small image files and zip archives, good and bad, built in the test from Pillow and zipfile.

Used by the import tests, the bad-input corpus and the loader tests: every file
is made here, a few hundred bytes to a few kB each, so nothing large is checked in.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def cell(seed: int, size: int = 32, fmt: str = "JPEG") -> bytes:
    """A small, distinct RGB image (different bytes for every seed)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return _save(Image.fromarray(pixels), fmt)


# --- high bit depth -------------------------------------------------------------

RAMP_WIDTH = 256


def ramp16() -> np.ndarray:
    """A 16-bit greyscale ramp, 256 x 8: column i holds i * 257 (8-bit value i at full scale)."""
    return np.tile(np.arange(RAMP_WIDTH, dtype=np.uint16) * 257, (8, 1))


def png16_ramp() -> bytes:
    image = Image.fromarray(ramp16())
    assert image.mode == "I;16"
    return _save(image, "PNG")


def tiff_ramp(mode: str) -> bytes:
    """The ramp as a TIFF in Pillow mode I;16, I;16B, I (32-bit int) or F (float, 0..1)."""
    values = ramp16()
    if mode == "I;16":
        image = Image.fromarray(values)
    elif mode == "I;16B":
        image = Image.fromarray(values.astype(">u2"))
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    elif mode == "F":
        image = Image.fromarray(values.astype(np.float32) / 65535)
    else:
        raise ValueError(mode)
    assert image.mode == mode, image.mode
    return _save(image, "TIFF")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png48_ramp() -> bytes:
    """A 48-bit RGB PNG (16 bits per channel), written by hand: Pillow cannot write one.

    Red is the ramp, green its reverse, blue a constant 0x8080 (8-bit 128).
    """
    ramp = ramp16()[0].astype(">u2")
    row = np.stack([ramp, ramp[::-1], np.full_like(ramp, 0x8080)], axis=1).tobytes()
    raw = b"".join(b"\0" + row for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", RAMP_WIDTH, 8, 16, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


# --- other modes and containers ----------------------------------------------------

def mpo(first: tuple[int, int, int], second: tuple[int, int, int], size=(40, 30)) -> bytes:
    """A two-frame MPO (multi-picture JPEG), as stereo and some phone cameras write."""
    return _save(Image.new("RGB", size, first), "MPO", save_all=True,
                 append_images=[Image.new("RGB", size, second)])


def tiff_rgb(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return _save(Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)), "TIFF")


def cmyk_jpeg() -> bytes:
    return _save(Image.new("CMYK", (24, 24), (0, 200, 200, 0)), "JPEG")


def palette_png_with_transparency() -> bytes:
    image = Image.new("P", (24, 24), 1)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.paste(0, (0, 0, 12, 24))
    return _save(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("P", (24, 24), i) for i in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def pixel_bomb(side: int = 6000) -> bytes:
    """A real, fully decodable PNG of side x side pixels: a few kB on disk."""
    return _save(Image.new("1", (side, side)), "PNG", optimize=True)


def header_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG header claiming huge dimensions, with almost no data."""
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


# --- zip archives with bad members ---------------------------------------------------

def _central_entries(data: bytes) -> dict[str, int]:
    """Member name -> offset of its central-directory entry."""
    out = {}
    pos = data.find(b"PK\x01\x02")
    while pos != -1 and data[pos:pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28:pos + 34])
        out[data[pos + 46:pos + 46 + name_len].decode()] = pos
        pos += 46 + name_len + extra_len + comment_len
    return out


def patch_member(path: Path, name: str, *, method: int | None = None,
                 flags_or: int = 0, flip_data_byte: bool = False) -> None:
    """Change one member's compression method or flags in both headers, or damage its data."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    local = info.header_offset
    central = _central_entries(bytes(data))[name]
    for flags_at, method_at in ((local + 6, local + 8), (central + 8, central + 10)):
        if flags_or:
            struct.pack_into("<H", data, flags_at,
                             struct.unpack_from("<H", data, flags_at)[0] | flags_or)
        if method is not None:
            struct.pack_into("<H", data, method_at, method)
    if flip_data_byte:
        name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
        start = local + 30 + name_len + extra_len
        data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def zip_with_bad_members(path: Path, good: dict[str, bytes]) -> dict[str, str]:
    """A zip holding ``good`` members and one of each unreadable kind.

    Returns the bad member names with words their rejection reason must contain.
    """
    bad_crc, deflate64, encrypted = "bad-crc.jpg", "deflate64.jpg", "encrypted.jpg"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(bad_crc, cell(900), compress_type=zipfile.ZIP_STORED)
        zf.writestr(deflate64, cell(901), compress_type=zipfile.ZIP_DEFLATED)
    if shutil.which("zip"):  # a really encrypted (ZipCrypto) member
        plain = path.parent / f".{path.stem}-secret"
        plain.mkdir()
        (plain / encrypted).write_bytes(cell(902))
        subprocess.run(["zip", "-q", "-P", "secret", str(path.resolve()), encrypted],
                       cwd=plain, check=True)
        shutil.rmtree(plain)
    else:  # the encryption flag alone makes zipfile ask for a password
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(encrypted, cell(902))
        patch_member(path, encrypted, flags_or=0x1)
    patch_member(path, bad_crc, flip_data_byte=True)
    patch_member(path, deflate64, method=9)
    return {bad_crc: "bad CRC-32", deflate64: "compression method 9 (deflate64)",
            encrypted: "encrypted archive member"}
