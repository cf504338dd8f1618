"""The face crop of the contact sheets of the swap benches (bench/face_quality.py, bench/face_identity.py)."""
from __future__ import annotations

import numpy as np


def face_crop(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(H, W, C) image, (68, 2+) landmarks px -> the face's square-ish crop (1.5 x its landmarks' extent, a little
    more above than below), clipped to the image, contiguous."""
    box = np.asarray(lm)[:, :2]
    cx, cy = box.mean(0)
    half = 0.75 * max(np.ptp(box[:, 0]), np.ptp(box[:, 1]))
    h, w = img.shape[:2]
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half * 1.1))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half * 0.9))
    return np.ascontiguousarray(img[y0:y1, x0:x1])
