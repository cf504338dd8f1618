"""The expression stage: after alignment, look at the eyes and mouth the aligner found and re-fit the expression.

For every face: cut two eye patches and a mouth patch from the frame (``model.expression_patches``, anchored on the
aligner's eye and mouth corners), let ``ExpressionNet`` place the eyelid and lip points (36-67) in them (the mouth
twice: its second patch anchored on the corners the network found in the first, ``MOUTH_PASSES``), map those back
to the frame, and fit the 10 PCA expression coefficients plus the extension (``model.expression_ext``: closed eyes,
mouth corners, jaw, inner lips) to them in closed form (``model.expression_fit``), pose and identity held. The same
for every backbone: it sees only the frame and the aligner's landmarks. All faces of all frames go through one
forward pass (and one more of the mouth network).
"""
from __future__ import annotations

import time
from typing import Sequence

import cv2
import numba as nb
import numpy as np

from model.expression_ext import N_EXT
from model.expression_fit import FitBasis, FitWeights, fit_expression
from model.expression_net import ExpressionNet, build_runner, load_expression_net
from model.expression_patches import LEFT_EYE, MOUTH, PARTS, RIGHT_EYE, cut, frames_and_affines, units_to_frame
from model.morphable import MorphableModel, frame_to_crop_xy

# fit weight of each landmark's target: the patches' points (36-67) count fully; brows and nose keep the aligner's
# positions (so the PCA does not bend them to fit the eyes and mouth); the jaw contour follows the fit freely
POINT_WEIGHTS = np.concatenate([np.zeros(17), np.full(19, 0.3), np.ones(32)]).astype(np.float32)
# how far a part can be turned away and still be read, |yaw| degrees: (full weight up to, zero weight from). Chosen
# on the AFLW2000-3D validation set (GT crops): past ~25 degrees the patches' lips follow the visible outline where
# the 3D landmarks do not, so the mouth fades first (with the mouth at 45-70 the 30-60 bin lost 0.4 NME points)
FAR_EYE_YAW = (20.0, 45.0)
NEAR_EYE_YAW = (45.0, 70.0)
MOUTH_YAW = (25.0, 45.0)


@nb.njit(cache=True)
def _visibility_kernel(p, base, far_span, near_span, mouth_span, out):  # pragma: no cover (numba)
    for i in range(p.shape[0]):
        # yaw = asin of the x component of the rotation's third row, r1 x r2 normalised (= pose_from_params' yaw)
        a0, a1, a2, b0, b1, b2 = p[i, 0], p[i, 1], p[i, 2], p[i, 4], p[i, 5], p[i, 6]
        s = (a1 * b2 - a2 * b1) / np.sqrt((a0 * a0 + a1 * a1 + a2 * a2) * (b0 * b0 + b1 * b1 + b2 * b2))
        yaw = np.degrees(np.arcsin(min(max(s, -1.0), 1.0)))
        ay = abs(yaw)
        far = min(max((far_span[1] - ay) / (far_span[1] - far_span[0]), 0.0), 1.0)
        near = min(max((near_span[1] - ay) / (near_span[1] - near_span[0]), 0.0), 1.0)
        mouth = min(max((mouth_span[1] - ay) / (mouth_span[1] - mouth_span[0]), 0.0), 1.0)
        w_r, w_l = (far, near) if yaw > 0 else (near, far)
        for j in range(68):
            k = w_r if 36 <= j < 42 else (w_l if 42 <= j < 48 else (mouth if j >= 48 else 1.0))
            out[i, j] = base[j] * k


# the three parts' points (eye_r, eye_l, mouth, as the network returns them) in 68-point order 36-67
_PART_POINTS = np.array(RIGHT_EYE.points + LEFT_EYE.points + MOUTH.points)
_ORDER = np.argsort(_PART_POINTS)
_PART_OF = np.repeat(np.arange(3), [len(RIGHT_EYE.points), len(LEFT_EYE.points), len(MOUTH.points)])[_ORDER]
assert (_PART_POINTS[_ORDER] == np.arange(36, 68)).all()
_SPANS = tuple(np.array(s, np.float64) for s in (FAR_EYE_YAW, NEAR_EYE_YAW, MOUTH_YAW))
# How many times the mouth network looks: the first patch is anchored on the aligner's mouth corners, each further one
# on the corners the network itself found in the previous patch. A backbone whose mouth is off (on the training video
# s20, damdnet's opening correlates -0.58 with MediaPipe's) gives a patch the lips sit badly in: the network's inner
# lips there correlated 0.01 with MediaPipe's, 0.78 after one re-anchoring (mb05 0.73 -> 0.77); bench/RESULTS.md,
# "The lips' own opening". The eyes are read once (re-anchoring them moved nothing).
MOUTH_PASSES = 2
_MOUTH = PARTS.index(MOUTH)
_NO_EYES = np.zeros((0, 1) + RIGHT_EYE.size, np.float32)


def visibility_weights(params: np.ndarray) -> np.ndarray:
    """(N, 62) real params -> (N, 68) fit weights: ``POINT_WEIGHTS`` with each eye's and the mouth's points faded out
    as the head turns that part away (a turned-away eye's patch shows the nose or the cheek, not its lids): full
    weight up to the span's first |yaw|, none from its second, linear between.

    Yaw > 0 brings the subject's left side (model x > 0) toward the camera, so the right eye (36-41) is the far one.
    """
    p = np.ascontiguousarray(np.asarray(params, np.float64).reshape(-1, 62))
    w = np.empty((len(p), 68))
    _visibility_kernel(p, _BASE_WEIGHTS, *_SPANS, w)
    return w


_BASE_WEIGHTS = POINT_WEIGHTS.astype(np.float64)
_FRONTAL = np.concatenate([np.eye(3, 4).ravel(), np.zeros(50)])[None]  # (1, 62): a frontal face, for the warm-up


def _gray(patch: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch


def share_eye_closure(ext: np.ndarray, w_right: np.ndarray, w_left: np.ndarray) -> np.ndarray:
    """A turned-away eye blinks with the one the camera sees: each eye's closure (ext columns 0, 1) moves toward the
    other's by how much less visible it is (``w`` (N,) its fit weights). Returns a new (N, N_EXT) array."""
    out = np.array(ext, copy=True)
    top = np.maximum(np.maximum(w_right, w_left), 1e-9)
    a_r, a_l = w_right / top, w_left / top
    out[:, 0] = a_r * ext[:, 0] + (1 - a_r) * ext[:, 1]
    out[:, 1] = a_l * ext[:, 1] + (1 - a_l) * ext[:, 0]
    return out


class ExpressionStage:
    """``refine_many([(frame, params, rois, landmarks), ...]) -> [(params, ext), ...]`` (see the module docstring)."""

    def __init__(self, morph: MorphableModel, convention: str, exp_std: np.ndarray, net: ExpressionNet | None = None,
                 weights: FitWeights = FitWeights(), fast_path: bool = True, threads: int | None = None) -> None:
        """``fast_path``: run the network through ONNX Runtime (checked against eager), else eager torch."""
        if net is None:
            net, self.meta = load_expression_net()
        else:
            self.meta = {}
        self.net = net.eval()
        self._run = build_runner(self.net, fast_path, threads)
        self.fast_path: str = getattr(self._run, "kind", "eager")
        self.morph = morph
        self.fit_basis = FitBasis.of(morph.sparse)
        self.convention = convention
        self.exp_std = np.asarray(exp_std, np.float64).reshape(-1)[-10:]
        self.weights = weights
        self.last_ms = 0.0
        # the numba kernels (patch geometry, fit weights, the fit) load, and LLVM starts, on their first call, ~0.2 s
        # each: here, not on the first frame (a webcam's first face, a short file's frame rate); and the network's
        # mouth-only call (the second look) once
        frames_and_affines(np.zeros((1, 68, 2)))
        visibility_weights(_FRONTAL)
        fit_expression(_FRONTAL, np.zeros((1, 68, 2)), POINT_WEIGHTS, self.fit_basis, self.exp_std, self.weights)
        self._run(_NO_EYES, np.zeros((1, 1) + MOUTH.size, np.float32))

    def points(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The network's eyelid and lip points (N, 32, 2) frame px (68-point indices 36-67) for one frame's faces."""
        return self.points_many([(frame, landmarks)])[0]

    def points_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """[(frame, landmarks (n, 68, 2+) frame px)] -> [(n, 32, 2) frame px], one forward pass for all (and
        ``MOUTH_PASSES - 1`` more of the mouth network alone)."""
        counts = [len(lm) for _, lm in items]
        n = sum(counts)
        if n == 0:
            return [np.zeros((0, 32, 2)) for _ in items]
        lm = np.concatenate([np.asarray(x, np.float64)[..., :2] for _, x in items if len(x)])
        bases, affines = frames_and_affines(lm)
        aff = {p.name: affines[i] for i, p in enumerate(PARTS)}
        frames = [f for f, c in zip((f for f, _ in items), counts) for _ in range(c)]
        eyes = np.empty((2 * n,) + RIGHT_EYE.size, np.uint8)
        mouths = np.empty((n,) + MOUTH.size, np.uint8)
        for i, frame in enumerate(frames):
            eyes[i] = _gray(cut(frame, aff[RIGHT_EYE.name][i], RIGHT_EYE))
            eyes[n + i] = _gray(cut(frame, aff[LEFT_EYE.name][i], LEFT_EYE))
            mouths[i] = _gray(cut(frame, aff[MOUTH.name][i], MOUTH))
        scale = np.float32(1 / 255.0)
        pe, pm = self._run((eyes[:, None] * scale - np.float32(0.5)), (mouths[:, None] * scale - np.float32(0.5)))
        for _ in range(MOUTH_PASSES - 1):  # the mouth again, its patch anchored on the corners the network found
            mb = bases[_MOUTH]
            lm[:, 48:68] = units_to_frame(pm, mb[:, 0], mb[:, 1], mb[:, 2])
            bases, affines = frames_and_affines(lm)
            for i, frame in enumerate(frames):
                mouths[i] = _gray(cut(frame, affines[_MOUTH][i], MOUTH))
            pm = self._run(_NO_EYES, (mouths[:, None] * scale - np.float32(0.5)))[1]
        # every part's units to frame px at once, in point order 36-67: each point with its part's (a, ex, ey)
        units = np.concatenate([pe[:n], pe[n:], pm], axis=1)[:, _ORDER]  # (n, 32, 2)
        b = bases[_PART_OF].transpose(1, 0, 2, 3)  # (n, 32, 3, 2)
        out = units_to_frame(units, b[:, :, 0], b[:, :, 1], b[:, :, 2])
        return list(np.split(out, np.cumsum(counts)[:-1])) if len(items) > 1 else [out]

    def refine_many(self, items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(frame, params (n, 62) real, rois (n, 4), landmarks (n, 68, 3) frame px)] -> [(params (n, 62) float32
        with the re-fitted PCA expression, ext (n, N_EXT) float32)]."""
        t0 = time.perf_counter()
        pts = self.points_many([(f, lm) for f, _, _, lm in items])
        out = []
        for (frame, params, rois, lm), p in zip(items, pts):
            n = len(params)
            if n == 0:
                out.append((np.zeros((0, 62), np.float32), np.zeros((0, N_EXT), np.float32)))
                continue
            targets = np.asarray(lm, np.float64)[..., :2].copy()
            targets[:, 36:68] = p
            crop = frame_to_crop_xy(targets, rois, self.convention)
            w = visibility_weights(params)
            p_fit, ext = fit_expression(params, crop, w, self.fit_basis, self.exp_std, self.weights)
            out.append((p_fit, share_eye_closure(ext, w[:, 36], w[:, 42])))
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out
