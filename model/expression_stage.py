"""The expression stage: after alignment, look at the eyes and mouth the aligner found and re-fit the expression.

For every face: cut two eye patches and a mouth patch from the frame (``model.expression_patches``, anchored on the
aligner's eye and mouth corners), let ``ExpressionNet`` place the eyelid and lip points (36-67) in them (the mouth
twice: its second patch anchored on the corners the network found in the first, ``MOUTH_PASSES``), map those back
to the frame (the inner lips' gaps first spread about a pivot, ``spread_lips``: the network under-reads how far a
mouth opens), and fit the 10 PCA expression coefficients plus the extension (``model.expression_ext``: closed eyes,
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

from model.dense_fit import INNER_LIP_PAIRS
from model.expression_ext import N_EXT
from model.expression_fit import FitBasis, FitWeights, fit_expression
from model.expression_net import ExpressionNet, build_runner, load_expression_net
from model.expression_patches import LEFT_EYE, MOUTH, PARTS, RIGHT_EYE, cut, frames_and_affines
from model.morphable import CROP_SIZE, MorphableModel, crop_flip

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
# The network's inner-lip gaps, spread about a pivot: gap' = max(pivot + gain (gap - pivot), 0), anchor units (the
# mouth's corner-to-corner distance). Like any small regressor it pulls its readings toward the mean opening: on the
# six training videos the raw gap of its inner lips follows MediaPipe's with a slope of 0.50-0.84 (intercepts
# 0.00-0.065, median 0.03), and the product's mouth slope (``expression_check.py``) was 0.81 on average (0.61-1.01).
# Chosen on those six videos, both models (the gain that brings their mean slope to 1; pivot: the raw fits' median
# intercept, so a closed mouth stays closed): mean slope 0.81 -> 1.00 (min 0.61 -> 0.75; inside the expression issue's
# 0.75-1.3 6 -> 11 of 12), correlations unchanged (0.870 -> 0.871); on the validation videos s32 and EdMarkey 0.89 ->
# 1.12 (bench/RESULTS.md, "The network's lip gaps, spread").
LIP_GAIN = 1.3
LIP_PIVOT = 0.03
# (upper, lower) rows of the inner lips' facing pairs in the mouth network's points
_LIP_PAIRS = np.array([[MOUTH.points.index(a), MOUTH.points.index(b)] for a, b in INNER_LIP_PAIRS])
_MOUTH = PARTS.index(MOUTH)
_NO_EYES = np.zeros((0, 1) + RIGHT_EYE.size, np.float32)
_ROW_OF = _ORDER - np.array([0, len(RIGHT_EYE.points), len(RIGHT_EYE.points) + len(LEFT_EYE.points)])[_PART_OF]


def spread_lips(pm: np.ndarray, gain: float = LIP_GAIN, pivot: float = LIP_PIVOT) -> np.ndarray:
    """The mouth network's points (n, 20, 2) anchor units with each facing pair of inner lips moved apart (or
    together) about its midpoint along the patch's y: gap' = max(pivot + gain (gap - pivot), 0). In place; returns
    ``pm``."""
    _spread_kernel(pm, _LIP_PAIRS, float(gain), float(pivot))
    return pm


@nb.njit(cache=True)
def _spread_kernel(pm, pairs, gain, pivot):  # pragma: no cover (numba)
    for i in range(pm.shape[0]):
        for k in range(pairs.shape[0]):
            u, d = pairs[k, 0], pairs[k, 1]
            mid = 0.5 * (pm[i, u, 1] + pm[i, d, 1])
            half = max(0.5 * pivot + gain * (0.5 * (pm[i, d, 1] - pm[i, u, 1]) - 0.5 * pivot), 0.0)
            pm[i, u, 1] = mid - half
            pm[i, d, 1] = mid + half


@nb.njit(cache=True)
def _mouth_to_frame(pm, mouth_bases, lm):  # pragma: no cover (numba)
    """The mouth network's points (n, 20, 2) anchor units -> lm[:, 48:68] frame px through (n, 3, 2) (a, ex, ey)."""
    for i in range(pm.shape[0]):
        for k in range(pm.shape[1]):
            ux, uy = np.float64(pm[i, k, 0]), np.float64(pm[i, k, 1])
            for c in range(2):
                lm[i, 48 + k, c] = mouth_bases[i, 0, c] + ux * mouth_bases[i, 1, c] + uy * mouth_bases[i, 2, c]


@nb.njit(cache=True)
def _points_to_frame(pe, pm, bases, part_of, row_of, out):  # pragma: no cover (numba)
    """Every part's points to frame px in 68-point order 36-67: out (n, 32, 2) from the eye points (2n, 6, 2: right
    eyes, then left), the mouth points (n, 20, 2) and the parts' (3, n, 3, 2) (a, ex, ey)."""
    n = pm.shape[0]
    for i in range(n):
        for j in range(out.shape[1]):
            p, k = part_of[j], row_of[j]
            if p == 2:
                ux, uy = np.float64(pm[i, k, 0]), np.float64(pm[i, k, 1])
            else:
                ux, uy = np.float64(pe[p * n + i, k, 0]), np.float64(pe[p * n + i, k, 1])
            for c in range(2):
                out[i, j, c] = bases[p, i, 0, c] + ux * bases[p, i, 1, c] + uy * bases[p, i, 2, c]


class _PatchBuffer:
    """The network's input for ``n`` faces, cut straight into one buffer: the parts' BGR patches stacked by rows,
    every part's block contiguous (all right eyes, all left eyes, all mouths; the patches are all as wide), so one
    gray conversion and one scaling serve them all and the network reads views of it."""

    def __init__(self, n: int) -> None:
        (eh, ew), (mh, mw) = RIGHT_EYE.size, MOUTH.size
        assert ew == mw and LEFT_EYE.size == RIGHT_EYE.size
        self.n, self.width = n, ew
        self.heights = (eh, eh, mh)  # in PARTS order
        self.starts = (0, n * eh, 2 * n * eh)
        rows = 2 * n * eh + n * mh
        self.bgr = np.empty((rows, ew, 3), np.uint8)
        self.gray = np.empty((rows, ew), np.uint8)
        self.net = np.empty((rows, ew), np.float32)

    def cut(self, frame: np.ndarray, affine: np.ndarray, part: int, i: int) -> None:
        """Face ``i``'s patch of ``PARTS[part]`` through its frame -> patch affine (2, 3)."""
        h = self.heights[part]
        r = self.starts[part] + i * h
        m = affine.astype(np.float32)
        if frame.ndim == 3:
            cv2.warpAffine(frame, m, (self.width, h), dst=self.bgr[r:r + h], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        else:  # a gray frame: its patch goes through BGR unchanged (gray -> BGR -> gray is exact)
            cv2.cvtColor(cut(frame, affine, PARTS[part]), cv2.COLOR_GRAY2BGR, dst=self.bgr[r:r + h])

    def normalised(self, mouths_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(eyes (2n, 1, 32, 48), mouths (n, 1, 56, 48)) float32, gray / 255 - 0.5; ``mouths_only``: refresh only
        the mouths' block (the eyes' is returned as it was)."""
        lo = self.starts[2] if mouths_only else 0
        cv2.cvtColor(self.bgr[lo:], cv2.COLOR_BGR2GRAY, dst=self.gray[lo:])
        np.multiply(self.gray[lo:], np.float32(1 / 255.0), out=self.net[lo:])
        np.subtract(self.net[lo:], np.float32(0.5), out=self.net[lo:])
        eyes = self.net[:self.starts[2]].reshape((2 * self.n, 1) + RIGHT_EYE.size)
        mouths = self.net[self.starts[2]:].reshape((self.n, 1) + MOUTH.size)
        return eyes, mouths


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
# (1, 62) float32: a frontal face filling a 120 px crop, for the warm-up
_WARM_PARAMS = np.concatenate([[6e-4, 0, 0, 60, 0, 6e-4, 0, 60, 0, 0, 6e-4, 0], np.zeros(50)])[None].astype(np.float32)


def share_eye_closure(ext: np.ndarray, w_right: np.ndarray, w_left: np.ndarray) -> np.ndarray:
    """A turned-away eye blinks with the one the camera sees: each eye's closure (ext columns 0, 1) moves toward the
    other's by how much less visible it is (``w`` (N,) its fit weights). Returns a new (N, N_EXT) array."""
    out = np.array(ext, copy=True)
    _share_kernel(np.asarray(ext), np.asarray(w_right, np.float64), np.asarray(w_left, np.float64), out)
    return out


@nb.njit(cache=True)
def _share_kernel(ext, w_right, w_left, out):  # pragma: no cover (numba)
    for i in range(ext.shape[0]):
        top = max(max(w_right[i], w_left[i]), 1e-9)
        a_r, a_l = w_right[i] / top, w_left[i] / top
        out[i, 0] = a_r * ext[i, 0] + (1 - a_r) * ext[i, 1]
        out[i, 1] = a_l * ext[i, 1] + (1 - a_l) * ext[i, 0]


@nb.njit(cache=True)
def _crop_targets(lm, pts, rois, size, dx, top, out):  # pragma: no cover (numba)
    """The fit's targets in crop coordinates before the y flip (``frame_to_crop_xy``, its convention's ``crop_flip``
    (dx, top)): the aligner's landmarks (n, 68, 2+) frame px with 36-67 replaced by the network's points (n, 32, 2),
    through (n, 4) ROIs -> out (n, 68, 2)."""
    for i in range(lm.shape[0]):
        sx = (rois[i, 2] - rois[i, 0]) / size
        sy = (rois[i, 3] - rois[i, 1]) / size
        for j in range(68):
            if j < 36:
                px, py = np.float64(lm[i, j, 0]), np.float64(lm[i, j, 1])
            else:
                px, py = pts[i, j - 36, 0], pts[i, j - 36, 1]
            out[i, j, 0] = (px - rois[i, 0]) / sx + dx
            out[i, j, 1] = top - (py - rois[i, 1]) / sy


class ExpressionStage:
    """``refine_many([(frame, params, rois, landmarks), ...]) -> [(params, ext), ...]`` (see the module docstring)."""

    def __init__(self, morph: MorphableModel, convention: str, exp_std: np.ndarray, net: ExpressionNet | None = None,
                 weights: FitWeights = FitWeights(), fast_path: bool = True, threads: int | None = None,
                 lip_gain: tuple[float, float] = (LIP_GAIN, LIP_PIVOT)) -> None:
        """``fast_path``: run the network through ONNX Runtime (checked against eager), else eager torch.
        ``lip_gain``: (gain, pivot) of :func:`spread_lips` on the network's inner lips; (1, 0) reads them raw."""
        self.lip_gain = (float(lip_gain[0]), float(lip_gain[1]))
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
        self._flip = crop_flip(convention)  # (dx, top); an unknown convention raises here
        self.exp_std = np.asarray(exp_std, np.float64).reshape(-1)[-10:]
        self.weights = weights
        self.last_ms = 0.0
        # the numba kernels (patch geometry, the points' way back to the frame, the fit's targets and weights, the
        # fit, the eyes' shared closure) load, and LLVM starts, on their first call, ~0.2 s each, and the network's
        # mouth-only call (the second look) is a first too: here, through the real path on a blank frame with the
        # aligner's dtypes, not on the first frame (a webcam's first face, a short file's frame rate)
        roi = np.array([[0.0, 0.0, CROP_SIZE, CROP_SIZE]], np.float32)
        lm = morph.landmarks(_WARM_PARAMS, roi, convention).astype(np.float32)
        self.refine_many([(np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8), _WARM_PARAMS, roi, lm)])
        self.last_ms = 0.0

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
        frames = [f for f, c in zip((f for f, _ in items), counts) for _ in range(c)]
        bases, affines = frames_and_affines(lm)
        net_in = _PatchBuffer(n)
        for i, frame in enumerate(frames):
            for part in range(len(PARTS)):
                net_in.cut(frame, affines[part, i], part, i)
        pe, pm = self._run(*net_in.normalised())
        for _ in range(MOUTH_PASSES - 1):  # the mouth again, its patch anchored on the corners the network found
            _mouth_to_frame(pm, bases[_MOUTH], lm)
            bases, affines = frames_and_affines(lm)
            for i, frame in enumerate(frames):
                net_in.cut(frame, affines[_MOUTH, i], _MOUTH, i)
            pm = self._run(_NO_EYES, net_in.normalised(mouths_only=True)[1])[1]
        if self.lip_gain != (1.0, 0.0):
            pm = spread_lips(pm.astype(np.float64), *self.lip_gain)
        out = np.empty((n, 32, 2))
        _points_to_frame(pe, pm, bases, _PART_OF, _ROW_OF, out)
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
            crop = np.empty((n, 68, 2))
            _crop_targets(np.asarray(lm), p, np.asarray(rois, np.float64).reshape(n, 4), CROP_SIZE, *self._flip, crop)
            w = visibility_weights(params)
            p_fit, ext = fit_expression(params, crop, w, self.fit_basis, self.exp_std, self.weights)
            out.append((p_fit, share_eye_closure(ext, w[:, 36], w[:, 42])))
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out
