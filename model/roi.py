"""Face boxes and crop ROIs (3DDFA's rules) and the 120x120 crop itself. Pure numpy; boxes are (x1, y1, x2, y2)."""
from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 120
# The detector-box crop rule, calibrated so that a detector crop is the landmark crop (``roi_from_landmarks``) the
# network is trained, evaluated and tracked on: medians over training photos of YuNet's boxes, side 1.256 and down
# 0.136 (bench/calibrate_box_roi.py). 3DDFA's rule, side 1.58 and down 0.14, was made for FaceBoxes' boxes: on YuNet's
# its crops are 1.26x too large, which cost 0.9 NME (ours) and 0.5 (the teacher) on the validation set.
BOX_SIDE = 1.26
BOX_DOWN = 0.14


def roi_from_box(boxes: np.ndarray, side: float = BOX_SIDE, down: float = BOX_DOWN) -> np.ndarray:
    """Detector boxes (N, 4) -> square crop ROIs (N, 4): side ``side`` x the box's mean side (floored to an even
    number of pixels), centre moved down ``down`` x the mean side."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    old = (b[:, 2] - b[:, 0] + b[:, 3] - b[:, 1]) / 2
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2 + old * down
    half = np.floor(old * side / 2)  # an even side: a box with a whole-pixel centre gives a whole-pixel square
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32)


def box_from_landmarks(lm: np.ndarray) -> np.ndarray:
    """Landmarks (N, K, 2|3) -> tight boxes (N, 4)."""
    p = np.asarray(lm)[..., :2]
    return np.concatenate([p.min(axis=1), p.max(axis=1)], axis=1).astype(np.float32)


def roi_from_landmarks(lm: np.ndarray) -> np.ndarray:
    """Landmarks (N, 68, 2|3) -> ROIs (N, 4): the square of side max(w, h) on the box centre, enlarged to its diagonal.

    This is the 3DDFA protocol rule for evaluation crops and for tracking the next frame.
    """
    b = box_from_landmarks(lm).astype(np.float64)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    half = side * np.sqrt(2) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (N, 4) and b (M, 4) -> (N, M) float32."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def crop_roi(image: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Crop ROI (4,) from an image (H, W, 3), zero-padding outside, resized to (size, size, 3) uint8 (bilinear).

    The ROI is rounded to integer pixels first (3DDFA's ``crop_img``), so the crop spans exactly the ROI used to map
    predictions back to the frame.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in roi)
    cw, ch = max(x2 - x1, 1), max(y2 - y1, 1)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx1 == x1 and sy1 == y1 and sx2 == x2 and sy2 == y2:
        patch = image[sy1:sy2, sx1:sx2]
    else:
        patch = np.zeros((ch, cw, image.shape[2]), dtype=image.dtype)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)


def rounded_roi(roi: np.ndarray) -> np.ndarray:
    """ROIs (N, 4) rounded the way ``crop_roi`` rounds them (so decode maps back through the exact crop)."""
    return np.round(np.asarray(roi, dtype=np.float64)).astype(np.float32)
