"""Face detection: YuNet (``cv2.FaceDetectorYN``, an asset) with OpenCV's bundled Haar cascade as the fallback.

    det = FaceDetector.create("auto")            # YuNet when its file is present/fetchable, else Haar
    boxes, scores = det(frame_bgr)                # (N, 4) float32 x1, y1, x2, y2 pixels; (N,) float32

``max_side`` downsizes large frames before detection (boxes are mapped back), which keeps detection cheap.
"""
from __future__ import annotations

import sys
import threading

import cv2
import numpy as np

from model.assets import AssetError, AssetStore


class FaceDetector:
    """Base: call with a BGR frame, get boxes (N, 4) and scores (N,), sorted by score, highest first."""

    kind = "base"

    def __init__(self, score_threshold: float = 0.6, max_side: int = 640) -> None:
        self.score_threshold = score_threshold
        self.max_side = max_side
        self._lock = threading.Lock()  # OpenCV detectors keep per-call state: one call at a time

    @staticmethod
    def create(kind: str = "auto", store: AssetStore | None = None, score_threshold: float = 0.6,
               max_side: int = 640, quiet: bool = False) -> "FaceDetector":
        """``kind``: ``auto`` (YuNet, else Haar with a note on stderr), ``yunet`` or ``haar``."""
        if kind not in ("auto", "yunet", "haar"):
            raise ValueError(f"unknown detector '{kind}' (expected auto, yunet or haar)")
        if kind in ("auto", "yunet"):
            try:
                path = (store or AssetStore()).path("yunet")
                return YuNetDetector(str(path), score_threshold, max_side)
            except AssetError as exc:
                if kind == "yunet":
                    raise
                if not quiet:
                    print(f"note: YuNet unavailable ({exc}); using the Haar cascade", file=sys.stderr)
        return HaarDetector(score_threshold, max_side)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = frame if scale == 1.0 else cv2.resize(frame, (round(w * scale), round(h * scale)),
                                                       interpolation=cv2.INTER_AREA)
        with self._lock:
            boxes, scores = self._detect(small)
        keep = scores >= self.score_threshold
        boxes, scores = boxes[keep] / scale, scores[keep]
        order = np.argsort(-scores)
        return boxes[order].astype(np.float32), scores[order].astype(np.float32)

    def _detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class YuNetDetector(FaceDetector):
    """YuNet (libfacedetection) through ``cv2.FaceDetectorYN``."""

    kind = "yunet"

    def __init__(self, model_path: str, score_threshold: float = 0.6, max_side: int = 640) -> None:
        super().__init__(score_threshold, max_side)
        try:
            self._net = cv2.FaceDetectorYN.create(model_path, "", (320, 320), score_threshold=min(score_threshold, 0.5),
                                                  nms_threshold=0.3, top_k=5000)
        except cv2.error as e:  # a truncated or foreign file where the YuNet model should be
            from model.assets import AssetError

            why = str(e).strip().splitlines()[-1].split("error: ")[-1][:100]
            raise AssetError(f"OpenCV cannot load the YuNet face detector from {model_path} ({why}); delete it to "
                             "fetch it again, or use --detector haar") from None
        self._size: tuple[int, int] | None = None

    def _detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = frame.shape[:2]
        if self._size != (w, h):
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self._net.detect(frame)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        x, y, bw, bh = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
        return np.stack([x, y, x + bw, y + bh], 1), faces[:, 14]


class HaarDetector(FaceDetector):
    """OpenCV's bundled frontal-face Haar cascade (no download); scores are 1.0 (the cascade gives none)."""

    kind = "haar"

    def __init__(self, score_threshold: float = 0.6, max_side: int = 640) -> None:
        super().__init__(score_threshold, max_side)
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            from model.assets import AssetError

            raise AssetError(f"cannot load OpenCV's Haar cascade from {path} (the opencv-python install is broken: "
                             "reinstall it, or use --detector yunet)")

    def _detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        found = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        if len(found) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        f = np.asarray(found, np.float32)
        # The cascade's box sits higher on the face than YuNet's: moved down to where YuNet's would be, so that one crop
        # rule (model.roi.roi_from_box) serves both (bench/calibrate_box_roi.py: the landmark crop's centre is 0.074 of
        # the box below a Haar box's centre moved down 0.08, and 0.136 below a YuNet box's).
        boxes = np.stack([f[:, 0], f[:, 1] + 0.02 * f[:, 3], f[:, 0] + f[:, 2], f[:, 1] + 1.02 * f[:, 3]], 1)
        return boxes, np.ones(len(f), np.float32)
