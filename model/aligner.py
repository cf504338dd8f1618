"""Aligner: frame + face ROIs -> 3DMM parameters, 68 landmarks, pose and (optionally) dense vertices, batched.

    a = Aligner.from_checkpoint("auto", device="auto")
    res = a.align(frame_bgr, rois)               # rois (N, 4) crop boxes, e.g. model.roi.roi_from_box(boxes)
    res.landmarks                                  # (N, 68, 3) float32 frame pixels

All crops of all frames given to ``align_many`` go through the network in one forward pass (on CUDA when present).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from model.assets import AssetStore
from model.checkpoint import LoadedModel, load_model
from model.confidence import FaceScorer
from model.errors import UserError
from model.expression_stage import ExpressionStage
from model.fastpath import build_fast_path
from model.morphable import MorphableModel, Whitening, pose_from_params
from model.roi import CROP_SIZE, crop_roi, rounded_roi


@dataclass
class AlignResult:
    """Per-face results of one frame (N faces).

    params (N, 62) float32 real 3DMM parameters; landmarks (N, 68, 3) float32 frame px; roi (N, 4) float32 the crop
    boxes used; vertices (N, V, 3) or None; confidence (N,) float32 in [0, 1]: how surely each crop holds a face
    (``model.confidence``, the same classifier for every model; None when the aligner runs without it); pose (N, 6) float32 (yaw, pitch, roll in degrees, scale, tx, ty), computed
    when first read (the streaming pipeline reads the pose of the smoothed parameters instead: ~90 us per frame saved).
    ext (N, N_EXT) float32 or None: the extended expression (``model.expression_ext``: eye closure, mouth corners,
    jaw) from the expression stage, which also re-fitted the 10 PCA expression values in ``params``; landmarks and
    vertices include it. None when the aligner runs without the stage.
    """

    params: np.ndarray
    landmarks: np.ndarray
    roi: np.ndarray
    vertices: np.ndarray | None = None
    confidence: np.ndarray | None = None
    ext: np.ndarray | None = None
    _pose: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def pose(self) -> np.ndarray:
        if self._pose is None:
            self._pose = pose_from_params(self.params)
        return self._pose

    def __len__(self) -> int:
        return int(self.params.shape[0])


class DeviceError(UserError, RuntimeError):
    """A device that is not a device, or not on this machine (one line)."""


def select_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``; DeviceError for a name torch
    does not know or CUDA missing."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:  # torch's one line: "Expected one of cpu, cuda, ... device string: NAME"
        raise DeviceError(str(exc).splitlines()[0]) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but CUDA is not available (use --device cpu or auto)")
    return dev


def normalise_crops(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 crops (N, 120, 120, 3) BGR -> float32 (N, 3, 120, 120) tensor ``(x - 127.5) / 128`` on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(crops))
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return (t.permute(0, 3, 1, 2).float() - 127.5) / 128.0


class Aligner:
    """Batched 3DMM regression on face crops with a verified inference fast path."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "auto", fast_path: str = "auto",
                 store: AssetStore | None = None, confidence: bool = True, expression: bool = True) -> None:
        """``confidence``: also score every crop with the face classifier (``model.confidence.FaceScorer``, on
        the same device, in the same batch) into ``AlignResult.confidence``. ``expression``: run the expression
        stage (``model.expression_stage``: eyelids, mouth) after the network, into ``AlignResult.ext``."""
        self.device = select_device(device) if isinstance(device, str) else device
        self.net = loaded.net.to(self.device).eval()
        self.backbone = loaded.backbone
        self.whitening: Whitening = loaded.whitening
        self.convention = loaded.convention
        self.name = loaded.name
        self.meta = loaded.meta
        self.why = loaded.why  # for auto: why the models before this one were passed over
        self.morph = MorphableModel.load(store)
        self._forward = build_fast_path(self.net, self.device, kind=fast_path)
        self.fast_path: str = getattr(self._forward, "kind", "eager")  # what runs: onnxruntime, torchscript, eager
        self.last_timing: dict[str, float] = {}
        self.scorer: FaceScorer | None = FaceScorer.load(device=self.device) if confidence else None
        self.expression: ExpressionStage | None = \
            ExpressionStage(self.morph, self.convention, self.whitening.std[52:]) if expression else None

    @classmethod
    def from_checkpoint(cls, name_or_path: str = "auto", device: str = "auto", store: AssetStore | None = None,
                        fast_path: str = "auto", confidence: bool = True, expression: bool = True) -> "Aligner":
        """Load a model by name (see ``model.checkpoint.MODEL_NAMES``) or checkpoint path; ``fast_path`` as in
        ``model.fastpath.build_fast_path`` (auto, onnxruntime, torchscript, none); ``confidence`` and
        ``expression`` as in ``__init__``."""
        store = store or AssetStore()
        return cls(load_model(name_or_path, store), device=device, fast_path=fast_path, store=store,
                   confidence=confidence, expression=expression)

    @property
    def param_std(self) -> np.ndarray:
        """(62,) typical scale of each real parameter (the checkpoint's whitening std)."""
        return self.whitening.std

    def forward_crops(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 120, 120) float32 normalised crops -> (N, 62) whitened parameters, through the fast path."""
        return self._forward(x.to(self.device))

    def predict_params(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, 120, 120, 3) BGR -> real parameters (N, 62) float32."""
        return self._predict(crops)[0]

    def _predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 crops (N, 120, 120, 3) -> (real parameters (N, 62), face confidence (N,) or None)."""
        if len(crops) == 0:
            return np.zeros((0, 62), np.float32), (None if self.scorer is None else np.zeros(0, np.float32))
        x = normalise_crops(crops, self.device)
        out = self.forward_crops(x).float()
        conf = None if self.scorer is None else self.scorer.score_tensor(x)
        return self.whitening.unwhiten(out.cpu().numpy()).astype(np.float32), conf

    def decode(self, params: np.ndarray, rois: np.ndarray, dense: bool = False,
               confidence: np.ndarray | None = None, ext: np.ndarray | None = None) -> AlignResult:
        """Real params (N, 62) + the ROIs they were predicted in (N, 4) [+ their crops' confidence (N,), the
        extended expression (N, N_EXT)] -> AlignResult in frame pixels."""
        params = np.asarray(params, dtype=np.float32)
        rois = np.asarray(rois, dtype=np.float32).reshape(-1, 4)
        lm = self.morph.landmarks(params, rois, self.convention, ext).astype(np.float32)
        verts = self.morph.dense(params, rois, self.convention, ext).astype(np.float32) if dense else None
        if confidence is None and self.scorer is not None and len(params) == 0:
            confidence = np.zeros(0, np.float32)  # no faces: an empty score array, like the other fields
        return AlignResult(params, lm, rois, verts, confidence, ext)

    def align(self, frame: np.ndarray, rois: np.ndarray, dense: bool = False) -> AlignResult:
        """One frame (H, W, 3) uint8 BGR and crop ROIs (N, 4) -> AlignResult."""
        return self.align_many([(frame, rois)], dense=dense)[0]

    def align_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]], dense: bool = False) -> list[AlignResult]:
        """Several (frame, rois) pairs -> one AlignResult each; all crops in one forward pass."""
        t0 = time.perf_counter()
        rois = [rounded_roi(np.asarray(r, dtype=np.float32).reshape(-1, 4)) for _, r in items]
        counts = [len(r) for r in rois]
        crops = np.empty((sum(counts), CROP_SIZE, CROP_SIZE, 3), np.uint8)
        k = 0
        for (frame, _), rr in zip(items, rois):
            for roi in rr:
                crops[k] = crop_roi(frame, roi)
                k += 1
        t1 = time.perf_counter()
        params, conf = self._predict(crops)
        t2 = time.perf_counter()
        exts: list[np.ndarray | None] = [None] * len(items)
        if self.expression is not None and len(params):
            jobs, k = [], 0
            for (frame, _), n, rr in zip(items, counts, rois):
                p = params[k:k + n]
                jobs.append((frame, p, rr, self.morph.landmarks(p, rr, self.convention)))
                k += n
            refined = self.expression.refine_many(jobs)
            params = np.concatenate([p for p, _ in refined]) if refined else params
            exts = [e for _, e in refined]
        t3 = time.perf_counter()
        out, k = [], 0
        for n, rr, ex in zip(counts, rois, exts):
            c = None if conf is None else conf[k:k + n]
            out.append(self.decode(params[k:k + n], rr, dense=dense, confidence=c, ext=ex))
            k += n
        self.last_timing = {"crop_ms": (t1 - t0) * 1e3, "net_ms": (t2 - t1) * 1e3, "expression_ms": (t3 - t2) * 1e3,
                            "decode_ms": (time.perf_counter() - t3) * 1e3, "faces": float(k)}
        return out
