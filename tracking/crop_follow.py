"""Crop geometry for tracking: the next frame's ROI from landmarks, plausibility checks, crop-to-crop parameter maps.

- ``next_roi``: 3DDFA_V2's tracking rule (ROI of the next frame = ``model.roi.roi_from_landmarks`` of this frame's
  68 landmarks) with a guard: the side may change by at most ``max_growth`` per frame relative to the previous ROI
  (no collapse, no explosion from one bad frame), is kept within ``[min_side, max_side_frac * frame size]``, and the
  centre is kept inside the frame.
- ``check_landmarks``: is an alignment believable? Landmarks mostly inside the frame, their tight box not degenerate,
  its size relative to the ROI within bounds and its IoU with the ROI above a floor. A failure marks the track lost.
- ``crop_change`` / ``reexpress_params``: the pose part of 3DMM parameters is in the coordinates of the crop it was
  predicted in; these re-express parameters (or a filter state) in another ROI's crop, exactly, for the ``v1`` and
  ``v2`` conventions of ``model.morphable.crop_to_frame``.

Boxes and ROIs are ``(x1, y1, x2, y2)`` float pixels; ``frame_shape`` is ``(H, W[, C])``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.morphable import CROP_SIZE
from model.roi import box_from_landmarks, iou_matrix, roi_from_landmarks


@dataclass(frozen=True)
class RoiConfig:
    """ROI policy and plausibility bounds (defaults in brackets).

    ``max_growth`` [1.5]: the next ROI's side is clamped to ``[prev / max_growth, prev * max_growth]``.
    ``min_side`` [16 px]: smallest ROI side; a smaller face is treated as lost.
    ``max_side_frac`` [3.0]: largest ROI side, as a multiple of the frame's larger dimension.
    ``min_inside`` [0.6]: fraction of the 68 landmarks that must lie inside the frame.
    ``min_box_ratio`` / ``max_box_ratio`` [0.3 / 1.3]: bounds of (landmark box's larger side) / (ROI side); a
    consistent alignment gives 1/sqrt(2) = 0.71 on a landmark ROI and ~0.65 on a detector ROI.
    ``min_iou`` [0.15]: IoU of the landmark box with its ROI (0.5 frontal, ~0.3 profile, lower = drifted off).
    """

    max_growth: float = 1.5
    min_side: float = 16.0
    max_side_frac: float = 3.0
    min_inside: float = 0.6
    min_box_ratio: float = 0.3
    max_box_ratio: float = 1.3
    min_iou: float = 0.15

    def __post_init__(self) -> None:
        if self.max_growth < 1:
            raise ValueError(f"max_growth must be >= 1: {self.max_growth}")
        if not 0 < self.min_box_ratio < self.max_box_ratio:
            raise ValueError(f"need 0 < min_box_ratio < max_box_ratio: {self.min_box_ratio}, {self.max_box_ratio}")


def roi_side(roi: np.ndarray) -> np.ndarray:
    """ROIs (..., 4) -> side (...): the mean of width and height, pixels."""
    r = np.asarray(roi, dtype=np.float64)
    return ((r[..., 2] - r[..., 0]) + (r[..., 3] - r[..., 1])) / 2


def next_roi(landmarks: np.ndarray, prev_roi: np.ndarray | None, frame_shape: tuple[int, ...],
             config: RoiConfig | None = None) -> np.ndarray:
    """The ROI (4,) float32 to crop the next frame with, from this frame's landmarks (68, 2|3) frame pixels.

    3DDFA_V2's rule (``roi_from_landmarks``), then: side clamped to ``max_growth`` of ``prev_roi``'s side (when
    given) and to ``[min_side, max_side_frac * max(H, W)]``; centre clamped into the frame.
    """
    cfg = config or RoiConfig()
    lm = np.asarray(landmarks, dtype=np.float64).reshape(1, -1, np.asarray(landmarks).shape[-1])
    roi = roi_from_landmarks(lm)[0].astype(np.float64)
    c = (roi[:2] + roi[2:]) / 2
    side = float(roi_side(roi))
    if prev_roi is not None:
        ps = float(roi_side(np.asarray(prev_roi, dtype=np.float64)))
        if ps > 0:
            side = float(np.clip(side, ps / cfg.max_growth, ps * cfg.max_growth))
    h, w = frame_shape[:2]
    side = float(np.clip(side, cfg.min_side, max(cfg.min_side, cfg.max_side_frac * max(h, w))))
    c = np.clip(c, [0.0, 0.0], [w - 1.0, h - 1.0])
    half = side / 2
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half], dtype=np.float32)


def check_landmarks(landmarks: np.ndarray, roi: np.ndarray, frame_shape: tuple[int, ...],
                    config: RoiConfig | None = None) -> str:
    """Plausibility of one alignment: ``""`` when believable, else a short reason (the track is then lost).

    landmarks (68, 2|3) frame pixels; roi (4,) the crop they were predicted in.
    """
    cfg = config or RoiConfig()
    lm = np.asarray(landmarks, dtype=np.float64)
    if not np.all(np.isfinite(lm)):
        return "non-finite landmarks"
    h, w = frame_shape[:2]
    x, y = lm[:, 0], lm[:, 1]
    inside = np.mean((x >= 0) & (x < w) & (y >= 0) & (y < h))
    if inside < cfg.min_inside:
        return f"out of frame ({inside:.0%} inside)"
    box = box_from_landmarks(lm[None])[0].astype(np.float64)
    bw, bh = box[2] - box[0], box[3] - box[1]
    side = float(roi_side(roi))
    if min(bw, bh) < 0.1 * max(bw, bh, 1e-9) or max(bw, bh) < cfg.min_side / 4 or side < cfg.min_side:
        return f"degenerate box {bw:.1f}x{bh:.1f} px"
    ratio = max(bw, bh) / side
    if not cfg.min_box_ratio <= ratio <= cfg.max_box_ratio:
        return f"landmark box / ROI size {ratio:.2f} out of [{cfg.min_box_ratio}, {cfg.max_box_ratio}]"
    iou = float(iou_matrix(box[None], np.asarray(roi, dtype=np.float64).reshape(1, 4))[0, 0])
    if iou < cfg.min_iou:
        return f"landmark box IoU with ROI {iou:.2f} < {cfg.min_iou}"
    return ""


def _crop_affine(roi: np.ndarray, convention: str, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis affine crop -> frame of ``model.morphable.crop_to_frame``: ``frame_k = alpha_k * crop_k + beta_k``.

    roi (N, 4) -> alpha (N, 3), beta (N, 3). (v2's per-face shift of z to min 0 is a constant offset of z and cancels
    in crop-to-crop maps up to that offset, which the decode removes again.)
    """
    r = np.asarray(roi, dtype=np.float64).reshape(-1, 4)
    sx = (r[:, 2] - r[:, 0]) / size
    sy = (r[:, 3] - r[:, 1]) / size
    sz = (sx + sy) / 2
    zero = np.zeros_like(sx)
    if convention == "v1":
        beta = np.stack([r[:, 0], (size + 1) * sy + r[:, 1], zero], 1)
    elif convention == "v2":
        beta = np.stack([r[:, 0] - sx, size * sy + r[:, 1], -sz], 1)
    else:
        raise ValueError(f"unknown convention '{convention}' (expected v1 or v2)")
    return np.stack([sx, -sy, sz], 1), beta


def crop_change(roi_from: np.ndarray, roi_to: np.ndarray, convention: str = "v1") -> tuple[np.ndarray, np.ndarray]:
    """Map of parameters predicted in the crop of ``roi_from`` (4,) to the crop of ``roi_to`` (4,).

    Returns ``scale (62,)``, ``offset (62,)`` with ``params_to = scale * params_from + offset``: the same face in the
    same frame position, decoded through ``roi_to``. Only the pose (indices 0..11) changes: row k of P scales by
    ``alpha_k(from) / alpha_k(to)``; its translation (index 4k+3) gets ``(beta_k(from) - beta_k(to)) / alpha_k(to)``.
    Velocities of a filter state scale by ``scale`` alone.
    """
    a0, b0 = _crop_affine(roi_from, convention)
    a1, b1 = _crop_affine(roi_to, convention)
    a = (a0 / a1)[0]
    b = ((b0 - b1) / a1)[0]
    scale = np.ones(62)
    offset = np.zeros(62)
    for k in range(3):
        scale[4 * k:4 * k + 4] = a[k]
        offset[4 * k + 3] = b[k]
    return scale, offset


def reexpress_params(params: np.ndarray, roi_from: np.ndarray, roi_to: np.ndarray,
                     convention: str = "v1") -> np.ndarray:
    """Params (N, 62) predicted in crops ``roi_from`` (N, 4) -> the same faces as params of crops ``roi_to`` (N, 4)."""
    p = np.asarray(params, dtype=np.float64).reshape(-1, 62)
    rf = np.asarray(roi_from, dtype=np.float64).reshape(-1, 4)
    rt = np.asarray(roi_to, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(p)
    for i in range(p.shape[0]):
        s, o = crop_change(rf[i], rt[i], convention)
        out[i] = s * p[i] + o
    return out.astype(np.asarray(params).dtype if np.asarray(params).dtype.kind == "f" else np.float64)
