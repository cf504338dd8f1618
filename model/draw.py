"""Basic OpenCV drawing of alignment results: 68 landmarks with their contours, pose axes, a mesh outline.

All functions draw in place on a (H, W, 3) uint8 BGR image and return it. Coordinates are frame pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

# 68-point contours: jaw, brows, nose bridge, nose base, eyes (closed), lips (closed).
CONTOURS: tuple[tuple[range, bool], ...] = (
    (range(0, 17), False), (range(17, 22), False), (range(22, 27), False), (range(27, 31), False),
    (range(31, 36), False), (range(36, 42), True), (range(42, 48), True), (range(48, 60), True), (range(60, 68), True),
)


def draw_landmarks(img: np.ndarray, lm: np.ndarray, color: tuple[int, int, int] = (0, 255, 0),
                   lines: bool = True) -> np.ndarray:
    """Draw 68 landmarks (68, 2|3) with their contours; point radius scales with the face size."""
    pts = np.asarray(lm)[:, :2]
    size = float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2
    r = max(1, int(round(size / 120)))
    ipts = np.round(pts * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    if lines:
        for idx, closed in CONTOURS:
            cv2.polylines(img, [ipts[list(idx)]], closed, color, max(1, r // 2), cv2.LINE_AA, shift=4)
    for p in ipts:
        cv2.circle(img, (int(p[0]), int(p[1])), r * 16, color, -1, cv2.LINE_AA, shift=4)
    return img


def draw_pose_axes(img: np.ndarray, rotation: np.ndarray, center: np.ndarray, length: float) -> np.ndarray:
    """Draw the head's x (red), y (green), z (blue) axes from ``center`` (2,) with ``length`` pixels.

    ``rotation`` (3, 3) is the model->camera rotation with model y up; image y is down, so y components flip.
    """
    c = np.asarray(center, np.float64)[:2]
    for axis, color in ((0, (0, 0, 255)), (1, (0, 255, 0)), (2, (255, 0, 0))):
        d = rotation[:, axis]
        end = c + length * np.array([d[0], -d[1]])
        cv2.arrowedLine(img, tuple(int(v) for v in np.round(c)), tuple(int(v) for v in np.round(end)), color, 2,
                        cv2.LINE_AA, tipLength=0.15)
    return img


def draw_box(img: np.ndarray, box: np.ndarray, color: tuple[int, int, int] = (255, 200, 0),
             label: str | None = None) -> np.ndarray:
    """Draw a box (4,) x1, y1, x2, y2 and an optional label above it."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    cv2.rectangle(img, (x1, y1), (x2, y2), color, 1, cv2.LINE_AA)
    if label:
        cv2.putText(img, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return img


def grid_outline(vertices: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Border of a row-major grid mesh (V, 3) -> closed polygon (K, 2)."""
    rows, cols = grid_shape
    g = np.asarray(vertices)[:, :2].reshape(rows, cols, 2)
    return np.concatenate([g[0, :], g[1:, -1], g[-1, -2::-1], g[-2:0:-1, 0]])


def draw_mesh_outline(img: np.ndarray, vertices: np.ndarray, grid_shape: tuple[int, int] | None,
                      color: tuple[int, int, int] = (255, 255, 0), tri: np.ndarray | None = None) -> np.ndarray:
    """Draw the outline of a mesh (V, 3) in frame pixels: the boundary edges of ``tri`` (F, 3) when given (the
    face's outline and the lips' slit), else the border of a row-major grid."""
    if tri is not None:
        from model.face_mesh import boundary_edges

        seg = np.round(np.asarray(vertices)[boundary_edges(tri)][..., :2] * 16).astype(np.int32)
        cv2.polylines(img, list(seg), False, color, 1, cv2.LINE_AA, shift=4)
        return img
    poly = np.round(grid_outline(vertices, grid_shape) * 16).astype(np.int32)
    cv2.polylines(img, [poly], True, color, 1, cv2.LINE_AA, shift=4)
    return img
