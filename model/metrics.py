"""Accuracy metrics of the 3DDFA protocol (pure numpy)."""
from __future__ import annotations

import numpy as np

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Normalised mean error in %: mean 2D point distance over sqrt(w * h) of the ground-truth box.

    pred, gt: (..., K, 2+) pixels (only x, y used) -> (...) float64, percent.
    """
    p = np.asarray(pred, np.float64)[..., :2]
    g = np.asarray(gt, np.float64)[..., :2]
    wh = g.max(axis=-2) - g.min(axis=-2)
    size = np.sqrt(np.maximum(wh[..., 0] * wh[..., 1], 1e-12))
    return np.linalg.norm(p - g, axis=-1).mean(axis=-1) / size * 100.0


def yaw_bin(yaw_deg: float) -> int:
    """Index into ``YAW_BINS`` for |yaw| in degrees (> 90 counts as the last bin)."""
    a = abs(yaw_deg)
    for i, (lo, hi) in enumerate(YAW_BINS):
        if a <= hi:
            return i
    return len(YAW_BINS) - 1
