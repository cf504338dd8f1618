"""Latency probe: a time stamp drawn into the bottom strip of a video frame.

Why: WebRTC gives a page no way to tie a frame it receives to the camera frame it sent. With the probe on
(`?probe=1` on the page URL, `"probe": true` in the offer) the page draws each camera frame into a canvas,
paints a strip of 32 black/white cells along the bottom that encodes `performance.now()` in milliseconds,
and sends the canvas. The server copies that strip from the incoming frame onto the processed frame (after
the processor ran, so overlays cannot hide it). The page decodes the strip of every frame it receives and
measures `now - stamp`: browser send -> network -> server decode -> queue -> processor -> encode -> network ->
browser decode, the whole loop, with one clock.

Layout (same in app.js): the strip is the bottom `ceil(H / STRIP_DIVISOR)` rows (at least MIN_STRIP_ROWS);
32 equal cells across the width: cell 0 white, cell 1 black (sync), cells 2..25 the 24-bit value (MSB
first, white = 1), cells 26..31 a 6-bit check `(b0 + b1 + b2 + 0x15) & 0x3F` over the value's bytes.
Cells are big blocks so they survive VP8/H.264 compression twice; a misread fails the check and is dropped.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

CELLS = 32
DATA_BITS = 24
CHECK_BITS = 6
STRIP_DIVISOR = 20
MIN_STRIP_ROWS = 8
VALUE_MASK = (1 << DATA_BITS) - 1


def strip_rows(height: int) -> int:
    """Rows the strip occupies at the bottom of a frame of this height."""
    return min(height, max(MIN_STRIP_ROWS, math.ceil(height / STRIP_DIVISOR)))


def _check(value: int) -> int:
    b0, b1, b2 = (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF
    return (b0 + b1 + b2 + 0x15) & ((1 << CHECK_BITS) - 1)


def _bits(value: int) -> list[int]:
    value &= VALUE_MASK
    data = [(value >> (DATA_BITS - 1 - i)) & 1 for i in range(DATA_BITS)]
    chk = _check(value)
    check = [(chk >> (CHECK_BITS - 1 - i)) & 1 for i in range(CHECK_BITS)]
    return [1, 0] + data + check


def encode_probe(image: np.ndarray, value: int) -> np.ndarray:
    """Paint `value` (24 bits) into the bottom strip of a BGR image, in place; returns the image."""
    h, w = image.shape[:2]
    rows = strip_rows(h)
    bits = _bits(value)
    for i, bit in enumerate(bits):
        x0, x1 = (i * w) // CELLS, ((i + 1) * w) // CELLS
        image[h - rows:, x0:x1] = 255 if bit else 0
    return image


def decode_probe(image: np.ndarray) -> Optional[int]:
    """Read the value from a BGR (or gray) image's strip; None when absent or misread."""
    h, w = image.shape[:2]
    if w < CELLS * 2 or h < MIN_STRIP_ROWS:
        return None
    rows = strip_rows(h)
    strip = image[h - rows:]  # only the strip: the rest of the frame is never read
    gray = strip if strip.ndim == 2 else strip.mean(axis=2)
    y0, y1 = rows // 4, rows - rows // 4
    bits = []
    for i in range(CELLS):
        x0, x1 = (i * w) // CELLS, ((i + 1) * w) // CELLS
        cw = x1 - x0
        patch = gray[y0:max(y1, y0 + 1), x0 + cw // 4:x1 - cw // 4]
        bits.append(1 if float(patch.mean()) > 127.5 else 0)
    if bits[0] != 1 or bits[1] != 0:
        return None
    value = 0
    for b in bits[2:2 + DATA_BITS]:
        value = (value << 1) | b
    chk = 0
    for b in bits[2 + DATA_BITS:]:
        chk = (chk << 1) | b
    return value if chk == _check(value) else None


def copy_strip(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy the probe strip of `src` onto `dst` (same shape), in place."""
    if src.shape != dst.shape:
        return
    rows = strip_rows(src.shape[0])
    dst[-rows:] = src[-rows:]
