"""Validation of uploaded images (the swap source): size, format, dimensions, decoding.

Only PNG and JPEG are accepted. Their headers are read before decoding so that a small file announcing a
huge image (a decompression bomb) is refused without allocating it.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from model.errors import UserError

MIN_SIDE = 32
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000


class UploadError(UserError, ValueError):
    """A user-facing reason, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if seg_len < 2:
            return None
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seg_len
    return None


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header; UploadError(415) for anything but PNG/JPEG."""
    size = _png_size(data)
    if size is not None:
        return ("png", *size)
    if data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
        if size is None:
            raise UploadError("the JPEG header is damaged (no frame size found)")
        return ("jpeg", *size)
    raise UploadError("unsupported image format: upload a PNG or JPEG", status=415)


def decode_image(data: bytes, max_bytes: int) -> np.ndarray:
    """Bytes of a PNG/JPEG -> (H, W, 3) uint8 BGR, or UploadError saying what is wrong."""
    if not data:
        raise UploadError("empty upload: send the image bytes (multipart field 'image' or the raw body)")
    if len(data) > max_bytes:
        raise UploadError(f"image is {len(data)} bytes, the limit is {max_bytes}", status=413)
    _, w, h = image_size(data)
    if w < MIN_SIDE or h < MIN_SIDE:
        raise UploadError(f"image is {w}x{h}, it must be at least {MIN_SIDE}x{MIN_SIDE}")
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise UploadError(f"image is {w}x{h}, the limit is {MAX_SIDE} per side and {MAX_PIXELS} pixels", status=413)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise UploadError("the image could not be decoded (damaged or truncated file?)")
    return image


def load_image_file(path: str | Path, max_bytes: int) -> np.ndarray:
    """Same checks for a file given on the command line (`--swap-source face.jpg`)."""
    p = Path(path)
    if not p.is_file():
        raise UploadError(f"swap source {p} not found")
    return decode_image(p.read_bytes(), max_bytes)
