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


POSE_KEYS = ("yaw", "pitch", "roll")
POSE_LIMIT = 99.0  # degrees: ground truth beyond this on any angle is left out of pose MAE (SynergyNet's rule)


def pose_para_angles(rotation: np.ndarray) -> np.ndarray:
    """Rotations (N, 3, 3) of our model->image transform -> (N, 3) yaw, pitch, roll in degrees, in the convention of
    AFLW2000-3D / 300W-LP ``Pose_Para`` (``R = Rx(-pitch) Ry(-yaw) Rz(-roll)``, see
    ``model.groundtruth.rotation_from_pose_para``), so predictions compare with ``Pose_Para`` directly."""
    r = np.asarray(rotation, np.float64)
    b = np.arcsin(np.clip(r[:, 0, 2], -1.0, 1.0))
    c = np.arctan2(-r[:, 0, 1], r[:, 0, 0])
    a = np.arctan2(-r[:, 1, 2], r[:, 2, 2])
    return np.degrees(np.stack([-b, -a, -c], axis=1))


def angle_error(pred_deg: np.ndarray, gt_deg: np.ndarray) -> np.ndarray:
    """Absolute angle differences in degrees, wrapped to [0, 180]; same shapes in and out."""
    d = (np.asarray(pred_deg, np.float64) - np.asarray(gt_deg, np.float64) + 180.0) % 360.0 - 180.0
    return np.abs(d)
