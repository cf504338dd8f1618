"""Accuracy and temporal-stability measures of landmark tracks (pure numpy; DESIGN.md section 6).

All landmark arrays are ``(..., P, 2+)`` frame pixels (only x, y are used); sequences are ``(T, P, 2+)``. Face size
is ``sqrt(w * h)`` of the ground-truth landmarks' tight box (the NME normaliser of the 3DDFA protocol). Results are
in percent of the face size. Frames with non-finite values are skipped (with every difference that touches them).

- ``nme``: per frame/image, mean 2D point distance / face size.
- ``nmj``: RMS over frames of the RMS over points of the frame-to-frame change of the error ``pred - gt``, over the
  face size. A constant offset gives 0; jitter around the truth counts, a smooth bias does not.
- ``acceleration_jitter``: for unlabelled video, the mean norm of the second difference of the landmarks over the
  face size (compare smoothed with raw on the same video).
- ``estimate_lag``: frames by which a trajectory trails a reference (normalised cross-correlation peak, sub-frame).
"""
from __future__ import annotations

import numpy as np

from model.metrics import nme as _nme_gt_box


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """``sqrt(w * h)`` of the tight box of landmarks (..., P, 2+) -> (...) pixels."""
    g = np.asarray(landmarks, dtype=np.float64)[..., :2]
    wh = g.max(axis=-2) - g.min(axis=-2)
    return np.sqrt(np.maximum(wh[..., 0] * wh[..., 1], 1e-12))


def _sizes(size: float | np.ndarray | None, ref: np.ndarray, t: int) -> np.ndarray:
    if size is None:
        return face_size(ref)
    return np.broadcast_to(np.asarray(size, dtype=np.float64), (t,)).copy()


def nme(pred: np.ndarray, gt: np.ndarray, box: np.ndarray | None = None) -> np.ndarray:
    """Normalised mean error in %: pred, gt (..., P, 2+) -> (...).

    Normaliser: ``sqrt(w * h)`` of ``box`` (..., 4) when given (e.g. the ground-truth face box), else of the
    ground-truth landmarks' tight box (``model.metrics.nme``).
    """
    if box is None:
        return _nme_gt_box(pred, gt)
    p = np.asarray(pred, np.float64)[..., :2]
    g = np.asarray(gt, np.float64)[..., :2]
    b = np.asarray(box, np.float64)
    size = np.sqrt(np.maximum((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 1e-12))
    return np.linalg.norm(p - g, axis=-1).mean(axis=-1) / size * 100.0


def nmj_per_frame(pred: np.ndarray, gt: np.ndarray, size: float | np.ndarray | None = None) -> np.ndarray:
    """Per frame pair (T-1,) in %: RMS over points of ``|e_t - e_{t-1}|``, ``e = pred - gt``, over the face size.

    pred, gt (T, P, 2+); size: scalar or (T,) pixels, default the ground truth's ``face_size`` per frame (the mean
    of the two frames is used). Pairs touching a non-finite frame are NaN.
    """
    p = np.asarray(pred, np.float64)[..., :2]
    g = np.asarray(gt, np.float64)[..., :2]
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"pred and gt must both be (T, P, 2+), got {np.shape(pred)} and {np.shape(gt)}")
    e = p - g
    d = np.diff(e, axis=0)
    rms = np.sqrt(np.mean(np.sum(d * d, axis=-1), axis=-1))
    s = _sizes(size, g, p.shape[0])
    return rms / ((s[1:] + s[:-1]) / 2) * 100.0


def nmj(pred: np.ndarray, gt: np.ndarray, size: float | np.ndarray | None = None) -> float:
    """Normalised mean jitter in %: RMS over frames of ``nmj_per_frame`` (non-finite pairs skipped)."""
    j = nmj_per_frame(pred, gt, size)
    j = j[np.isfinite(j)]
    return float(np.sqrt(np.mean(j * j))) if j.size else float("nan")


def acceleration_jitter(landmarks: np.ndarray, size: float | np.ndarray | None = None) -> float:
    """Mean landmark acceleration in % of face size: landmarks (T, P, 2+) -> mean over t, p of ``|x_{t+1} - 2 x_t +
    x_{t-1}|`` / size_t. size: scalar or (T,) pixels, default the landmarks' own ``face_size`` per frame.
    """
    x = np.asarray(landmarks, np.float64)[..., :2]
    if x.ndim != 3:
        raise ValueError(f"landmarks must be (T, P, 2+), got {np.shape(landmarks)}")
    if x.shape[0] < 3:
        return float("nan")
    a = x[2:] - 2 * x[1:-1] + x[:-2]
    s = _sizes(size, x, x.shape[0])[1:-1]
    v = np.linalg.norm(a, axis=-1).mean(axis=-1) / s * 100.0
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def estimate_lag(signal: np.ndarray, reference: np.ndarray, max_lag: int = 15) -> float:
    """Frames by which ``signal`` trails ``reference`` (positive: ``signal[t] ~ reference[t - lag]``).

    signal, reference: (T,) or (T, D) (e.g. a landmark trajectory flattened to (T, 136)). The normalised
    cross-correlation of the mean-removed series, summed over D, is maximised over integer lags in
    ``[-max_lag, max_lag]`` and refined to sub-frame by a parabola through the peak. Frames non-finite in either
    series are dropped first. A causal filter with no delay gives about 0.
    """
    s = np.asarray(signal, np.float64)
    r = np.asarray(reference, np.float64)
    s = s.reshape(s.shape[0], -1)
    r = r.reshape(r.shape[0], -1)
    if s.shape != r.shape:
        raise ValueError(f"signal and reference shapes differ: {s.shape} vs {r.shape}")
    ok = np.all(np.isfinite(s), axis=1) & np.all(np.isfinite(r), axis=1)
    s, r = s[ok], r[ok]
    t = s.shape[0]
    max_lag = int(min(max_lag, t // 2))
    if t < 4:
        return float("nan")
    lags = np.arange(-max_lag, max_lag + 1)
    score = np.empty(len(lags))
    for i, k in enumerate(lags):
        a, b = (s[k:], r[:t - k]) if k >= 0 else (s[:t + k], r[-k:])
        a = a - a.mean(axis=0)
        b = b - b.mean(axis=0)
        den = np.sqrt(np.sum(a * a) * np.sum(b * b))
        score[i] = np.sum(a * b) / den if den > 0 else -np.inf
    i = int(np.argmax(score))
    lag = float(lags[i])
    if 0 < i < len(lags) - 1 and np.all(np.isfinite(score[i - 1:i + 2])):
        y0, y1, y2 = score[i - 1:i + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            lag += 0.5 * (y0 - y2) / den
    return lag
