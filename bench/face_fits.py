"""Fits of our aligner (``WEIGHTS``) to shared videos and photos, cached as parameters (so a run on another tree of the
code decodes them with its own mesh): used by bench/face_quality.py and the render-quality tests.

    python bench/face_fits.py PHOTO...     prints yaw, pitch, face size of each photo's largest face
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CACHE = Path(os.environ.get("DAMDNET_FIT_CACHE", Path.home() / ".cache" / "damdnet" / "fits"))
# the aligner is pinned to our weights, not ``auto``: what the render tests see must not change with the release
# verdict (``model.ship``), which decides whether ``auto`` serves our weights or the teacher's
WEIGHTS = os.environ.get("DAMDNET_FIT_WEIGHTS", "damdnet")


@dataclass
class Fit:
    """One face: real params (62,), roi (4,), landmarks (68, 3) frame px, yaw/pitch/roll degrees, the extended
    expression ext (7,) (None without the expression stage); ``dense(morph)`` decodes its mesh with it."""

    params: np.ndarray
    roi: np.ndarray
    landmarks: np.ndarray
    pose: np.ndarray
    ext: np.ndarray | None = None

    def dense(self, morph) -> np.ndarray:
        """(V, 3) float32 dense vertices, frame px (the fit's params, ROI and extension)."""
        ext = None if self.ext is None else np.asarray(self.ext, np.float32)[None]
        return morph.dense(self.params[None], self.roi[None], "v1", ext)[0].astype(np.float32)


_ENGINE: list = []


def engine():
    """(aligner on ``WEIGHTS``, the default detector), built once."""
    if not _ENGINE:
        from model.aligner import Aligner
        from model.detect import FaceDetector

        _ENGINE.append((Aligner.from_checkpoint(WEIGHTS, device="cpu"), FaceDetector.create("auto", quiet=True)))
    return _ENGINE[0]


def fit_image(img: np.ndarray, refine: int = 1) -> Fit | None:
    """The largest face of an image (detector box, then ``refine`` landmark-ROI refinements), or None."""
    from model.align_images import align_boxes

    aligner, detector = engine()
    boxes, _ = detector(img)
    if len(boxes) == 0:
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    res = align_boxes(img, aligner, boxes[[int(np.argmax(areas))]], dense=False, refine=refine)
    ext = getattr(res, "ext", None)
    return Fit(res.params[0].astype(np.float32), res.roi[0].astype(np.float32), res.landmarks[0].astype(np.float32),
               res.pose[0, :3].astype(np.float32), None if ext is None else ext[0].astype(np.float32))


def vertices(morph, fit: Fit) -> np.ndarray:
    """(V, 3) float32 dense mesh of a fit in frame px, with its extended expression (the pipeline's mesh)."""
    return fit.dense(morph)


def detector_ready(img: np.ndarray) -> np.ndarray:
    """A source photo as the detector needs it: a small chip (longest side <= 256 px, too tight for the detector)
    through :func:`padded_chip`, any other photo as it is."""
    return padded_chip(img) if max(img.shape[:2]) <= 256 else img


def padded_chip(img: np.ndarray, scale: float = 1.5, pad: int = 90) -> np.ndarray:
    """A small, tightly cropped face photo (a 200 px UTKFace chip) as the detector needs it: upscaled ``scale``x
    (bilinear) with ``pad`` px of replicated border on each side (200 px -> 480 px)."""
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def _key(path: Path, extra: str) -> Path:
    from model.expression_ext import EXT_VERSION
    from model.expression_net import WEIGHTS as STAGE

    stage = f"{EXT_VERSION}:{STAGE.stat().st_size}:{STAGE.stat().st_mtime_ns}" if STAGE.exists() else "none"
    h = hashlib.sha1(f"{path.resolve()}|{path.stat().st_size}|{extra}|{WEIGHTS}|{stage}".encode()).hexdigest()[:16]
    return CACHE / f"{path.stem}-{h}.npz"


def read_frames(path: Path, n: int, step: int = 1) -> list[np.ndarray]:
    """The first ``n`` frames (every ``step``-th) of a video, BGR."""
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(frame)
        i += 1
    cap.release()
    return out


def fit_video(path: Path, n: int, step: int = 1) -> tuple[list[np.ndarray], list[Fit | None]]:
    """Frames and fits of a video (fits cached by path, n and step)."""
    frames = read_frames(path, n, step)
    cache = _key(path, f"video{n}/{step}")
    if cache.is_file():
        z = np.load(cache)
        fits = [Fit(z["params"][i], z["roi"][i], z["landmarks"][i], z["pose"][i],
                    z["ext"][i] if z["has_ext"] else None) if z["ok"][i] else None for i in range(len(z["ok"]))]
        return frames, fits
    fits = [fit_image(f) for f in frames]
    CACHE.mkdir(parents=True, exist_ok=True)
    ok = np.array([f is not None for f in fits])
    pick = lambda name, shape: np.stack([getattr(f, name) if f is not None else np.zeros(shape, np.float32)  # noqa
                                         for f in fits])
    has_ext = any(f is not None and f.ext is not None for f in fits)
    n_ext = next((len(f.ext) for f in fits if f is not None and f.ext is not None), 0)
    ext = np.stack([f.ext if f is not None and f.ext is not None else np.zeros(n_ext, np.float32) for f in fits])
    np.savez(cache, ok=ok, params=pick("params", (62,)), roi=pick("roi", (4,)), landmarks=pick("landmarks", (68, 3)),
             pose=pick("pose", (3,)), ext=ext, has_ext=has_ext)
    return frames, fits


def fit_photo(path: Path) -> tuple[np.ndarray, Fit | None]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    cache = _key(path, "photo")
    if cache.is_file():
        z = np.load(cache)
        return img, Fit(z["params"], z["roi"], z["landmarks"], z["pose"], z["ext"] if z["has_ext"] else None) \
            if z["ok"] else None
    f = fit_image(img, refine=2)
    CACHE.mkdir(parents=True, exist_ok=True)
    if f is None:
        np.savez(cache, ok=False, params=0, roi=0, landmarks=0, pose=0, ext=0, has_ext=False)
    else:
        np.savez(cache, ok=True, params=f.params, roi=f.roi, landmarks=f.landmarks, pose=f.pose,
                 ext=f.ext if f.ext is not None else 0, has_ext=f.ext is not None)
    return img, f


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    for p in sys.argv[1:]:
        img, f = fit_photo(Path(p))
        if f is None:
            print(p, "no face")
        else:
            size = float(np.ptp(f.landmarks[:, 0]) + np.ptp(f.landmarks[:, 1])) / 2
            print(f"{p} {img.shape[1]}x{img.shape[0]} yaw {f.pose[0]:.0f} pitch {f.pose[1]:.0f} size {size:.0f}")
