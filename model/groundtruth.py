"""Ground-truth readers: AFLW2000-3D / 300W-LP ``.mat`` (``pt3d_68``, ``Pose_Para``, shape/expression) and ``.pts``.

``GroundTruth.landmarks`` is (68, 2) float32 in image pixels (0-based). ``yaw`` in degrees or None when unknown.
``params_from_mat`` turns the 3DMM fit of a ``.mat`` into our real 62 parameters in full-image coordinates
(decode with ``crop_to_frame(..., roi=(0, 0, H, H), convention="v1", size=H)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.morphable import N_EXP, N_SHAPE

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


@dataclass
class GroundTruth:
    """One labelled image."""

    image: Path
    landmarks: np.ndarray  # (68, 2) float32, pixels
    yaw: float | None  # degrees
    mat: dict | None = None


def read_pts(path: str | Path) -> np.ndarray:
    """An ibug ``.pts`` file -> (K, 2) float32 (converted from 1-based to 0-based pixels)."""
    lines = Path(path).read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "{") + 1
    end = next(i for i, l in enumerate(lines) if l.strip() == "}")
    pts = np.array([[float(v) for v in l.split()[:2]] for l in lines[start:end]], dtype=np.float32)
    return pts - 1.0


def load_mat(path: str | Path) -> dict:
    """A ``.mat`` file as a dict of arrays (without MATLAB headers)."""
    import scipy.io as sio

    m = sio.loadmat(str(path))
    return {k: v for k, v in m.items() if not k.startswith("__")}


def _image_for(label: Path) -> Path | None:
    for ext in IMAGE_EXTS:
        p = label.with_suffix(ext)
        if p.is_file():
            return p
    return None


def read_groundtruth(label: str | Path) -> GroundTruth:
    """Read a ``.mat`` (``pt3d_68`` (3, 68) and ``Pose_Para``) or a 68-point ``.pts`` label and find its image."""
    label = Path(label)
    image = _image_for(label)
    if image is None:
        raise FileNotFoundError(f"no image beside {label} (looked for {', '.join(IMAGE_EXTS)})")
    if label.suffix == ".mat":
        m = load_mat(label)
        if "pt3d_68" in m:
            lm = np.asarray(m["pt3d_68"], np.float32)[:2].T
        elif "pt2d" in m and np.asarray(m["pt2d"]).shape[1] == 68:
            lm = np.asarray(m["pt2d"], np.float32).T
        else:
            raise ValueError(f"{label}: no 68-point landmarks (pt3d_68) inside")
        yaw = float(np.degrees(m["Pose_Para"][0, 1])) if "Pose_Para" in m else None
        return GroundTruth(image, lm, yaw, m)
    if label.suffix == ".pts":
        lm = read_pts(label)
        if lm.shape[0] != 68:
            raise ValueError(f"{label}: {lm.shape[0]} points, expected 68")
        return GroundTruth(image, lm, None)
    raise ValueError(f"unsupported label file {label} (expected .mat or .pts)")


def find_labels(folder: str | Path) -> list[Path]:
    """All ``.mat`` and 68-point ``.pts`` labels with an image beside them in ``folder`` (sorted)."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix in (".mat", ".pts") and _image_for(p) is not None)


def rotation_from_pose_para(pose_para: np.ndarray) -> np.ndarray:
    """300W-LP / AFLW2000 ``Pose_Para`` (pitch, yaw, roll in radians, ...) -> rotation (3, 3) of our model->image."""
    pitch, yaw, roll = (float(v) for v in np.asarray(pose_para).ravel()[:3])

    def rx(a: float) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    def ry(a: float) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])

    def rz(a: float) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    return rx(-pitch) @ ry(-yaw) @ rz(-roll)


def params_from_mat(m: dict) -> np.ndarray:
    """A ``.mat`` 3DMM fit -> real params (62,) in full-image coordinates (shape cut to 40, expression to 10)."""
    pp = np.asarray(m["Pose_Para"], np.float64).ravel()
    r = rotation_from_pose_para(pp)
    s, t = pp[6], pp[3:6]
    p = np.concatenate([s * r, t[:, None]], axis=1).reshape(-1)
    shp = np.asarray(m["Shape_Para"], np.float64).ravel()[:N_SHAPE]
    exp = np.asarray(m["Exp_Para"], np.float64).ravel()[:N_EXP]
    return np.concatenate([p, shp, exp]).astype(np.float32)
