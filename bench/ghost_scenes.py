"""Synthetic multi-face videos with known face boxes, for counting ghost and missed faces (bench_ghosts.py).

Faces are real photos (held-out entries of the classifier's photo cache, never its training photos) turned to any
yaw/pitch by face profiling (``model.data.profile``, with a ring of hair, ears and neck), cut out by the rendered
mask and composited at a known place and size. Their truth per frame is the 68-landmark box of the turned fit,
mapped to the frame, and its visible share (frame border, faces in front, occluders).

Scenes (``SCENES``), each ``n`` frames of ``W x H``:
- ``border``: faces enter and leave through the left, right and top borders, half cut for many frames;
- ``cross``: two faces cross, one in front of the other, while turning;
- ``profile``: faces turn to +-90 degrees of yaw and back, slowly and quickly, nodding;
- ``occlusion``: a hand-like blob and a board sweep over faces (up to ~70% covered);
- ``clutter``: one face over foliage, a crowd of tiny faces (under the minimum face size: neither ghost nor miss)
  and posters of drawn face-like patterns.

``Truth`` per frame: ``boxes`` (K, 4), ``visible`` (K,) share of the face shown, ``yaw`` (K,), ``size`` (K,) px
(sqrt of the box area), ``must``: visible >= 0.6 and size >= MIN_SIZE (a miss counts there), ``ignore``: other
faces at least 0.15 visible or tiny (a report there is neither ghost nor hit). ``clutter_boxes``: where the
clutter is (foliage patches, posters, crowd), to inject detector false positives on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from model.data.cache import CONTEXT, OFFSET, PhotoCache
from model.data.profile import Profiler, apply_affine, params_to_affine
from model.morphable import pose_from_params
from model.roi import box_from_landmarks
from model.train_confidence import face_drawing, foliage, hand

MIN_SIZE = 24.0
SCENES = ("border", "cross", "profile", "occlusion", "clutter")


@dataclass
class Truth:
    boxes: np.ndarray
    visible: np.ndarray
    yaw: np.ndarray
    size: np.ndarray
    clutter_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @property
    def must(self) -> np.ndarray:
        return (self.visible >= 0.6) & (self.size >= MIN_SIZE)

    @property
    def ignore(self) -> np.ndarray:
        return ~self.must & ((self.visible >= 0.15) | (self.size < MIN_SIZE))


class Sprites:
    """Turned, cut-out faces of cache photos: ``get(face, yaw, pitch)`` -> (BGR (144, 144, 3) float32,
    alpha (144, 144) float32, landmarks (68, 2) context px), memoised per 5 degrees."""

    def __init__(self, cache: PhotoCache, ids: list[int], morph) -> None:
        self.cache, self.ids, self.morph = cache, ids, morph
        self.profiler = Profiler.from_morphable(morph, ring=12)
        self._memo: dict[tuple[int, int, int], tuple] = {}

    def get(self, face: int, yaw: float, pitch: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (face, int(round(yaw / 5.0)) * 5, int(round(pitch / 5.0)) * 5)
        if key not in self._memo:
            i = self.ids[face % len(self.ids)]
            real = self.cache.params[i]
            f = params_to_affine(real)
            f[0, 3] += OFFSET
            f[1, 3] += OFFSET
            y0, p0 = (float(v) for v in pose_from_params(real[None])[0, :2])
            img, f1, mask = self.profiler.render(self.cache.image(i), f, real, -(key[1] - y0), key[2] - p0)
            lm = apply_affine(f1, self.morph.sparse.shape_model(real[None])[0])[:, :2]
            alpha = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 1.0)
            self._memo[key] = (img.astype(np.float32), alpha, lm)
        return self._memo[key]


def paste(frame: np.ndarray, label: np.ndarray, sprite: tuple, centre: tuple[float, float], size: float,
          tag: int) -> tuple[np.ndarray, float]:
    """Composite a sprite so that its landmark box has side ``size`` (sqrt area) at ``centre``; ``label`` gets
    ``tag`` where it is drawn. Returns (the face's box in the frame (4,), its drawn pixel count incl. off-frame)."""
    img, alpha, lm = sprite
    b = box_from_landmarks(lm[None])[0]
    s0 = float(np.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1.0)))
    k = size / s0
    c0 = (b[:2] + b[2:]) / 2
    m = np.array([[k, 0, centre[0] - k * c0[0]], [0, k, centre[1] - k * c0[1]]], np.float32)
    h, w = frame.shape[:2]
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)
    im = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR)
    frame[:] = frame * (1 - a[..., None]) + im * a[..., None]
    label[a > 0.5] = tag
    box = np.array([b[0] * k + m[0, 2], b[1] * k + m[1, 2], b[2] * k + m[0, 2], b[3] * k + m[1, 2]], np.float32)
    return box, float((alpha > 0.5).sum() * k * k)


def _lerp(t: float, keys: list[tuple[float, ...]]) -> np.ndarray:
    """Piecewise-linear key frames [(t, v1, v2, ...)] at time t in [0, 1]."""
    ts = np.array([kf[0] for kf in keys])
    vs = np.array([kf[1:] for kf in keys], np.float64)
    return np.array([np.interp(t, ts, vs[:, j]) for j in range(vs.shape[1])])


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    from stream.synthetic import make_background

    bg = make_background(w, h, int(rng.integers(1 << 30))).astype(np.float32)
    if kind == "foliage":
        big = foliage(rng, max(w, h))
        bg[:, : w // 2] = big[:h, : w // 2]
    return bg


def render_scene(name: str, sprites: Sprites, n: int = 150, w: int = 640, h: int = 360, seed: int = 0
                 ) -> tuple[list[np.ndarray], list[Truth]]:
    """Frames (uint8 BGR) and per-frame truth of scene ``name`` (see the module docstring)."""
    rng = np.random.default_rng([seed, SCENES.index(name)])
    bg = _background("foliage" if name == "clutter" else "plain", w, h, rng)
    clutter: list[np.ndarray] = []
    if name == "clutter":  # posters and a crowd of tiny faces on the right half; foliage on the left
        for j in range(2):
            x0, y0 = int(w * 0.55 + j * 130), 20
            poster = cv2.resize(face_drawing(rng), (110, 110))
            bg[y0:y0 + 110, x0:x0 + 110] = poster
            clutter.append(np.array([x0, y0, x0 + 110, y0 + 110], np.float32))
        lab = np.zeros((h, w), np.int32)
        for r in range(3):
            for c in range(8):
                spr = sprites.get(3 + r * 8 + c, rng.uniform(-40, 40))
                paste(bg, lab, spr, (w * 0.55 + 14 + c * 30, h * 0.62 + r * 36), 14.0, 1)
        clutter.append(np.array([w * 0.55, h * 0.55, w, h * 0.95], np.float32))
        for _ in range(4):
            x0, y0 = rng.uniform(0, w * 0.45 - 100), rng.uniform(0, h - 100)
            s = rng.uniform(40, 100)
            clutter.append(np.array([x0, y0, x0 + s, y0 + s], np.float32))
    frames, truths = [], []
    for t_i in range(n):
        t = t_i / max(n - 1, 1)
        frame = bg.copy()
        label = np.zeros((h, w), np.int32)
        faces = []  # (face id, centre, size, yaw, pitch), drawn back to front
        occluders = []
        if name == "border":
            x, y = _lerp(t, [(0, -0.12, 0.5), (0.35, 0.3, 0.5), (0.6, 0.5, 0.45), (1, 1.15, 0.5)])
            faces.append((0, (x * w, y * h), 110.0, 20 * np.sin(6 * t), 0.0))
            x2 = _lerp(t, [(0, 1.15), (0.4, 0.75), (0.7, 0.8), (1, -0.2)])[0]
            faces.append((1, (x2 * w, 0.55 * h), 90.0, -25.0, 5.0))
            y3 = _lerp(t, [(0, -0.25), (0.3, 0.2), (0.5, 0.25), (0.8, -0.05), (1, -0.3)])[0]
            faces.append((2, (0.5 * w, y3 * h), 80.0, 0.0, -10.0))
        elif name == "cross":
            xa = _lerp(t, [(0, 0.2), (1, 0.8)])[0]
            xb = _lerp(t, [(0, 0.8), (1, 0.2)])[0]
            faces.append((0, (xb * w, 0.5 * h), 90.0, -50 * np.sin(3 * t), 0.0))
            faces.append((1, (xa * w, 0.52 * h), 120.0, 60 * np.sin(5 * t), 0.0))  # in front
        elif name == "profile":
            yaw = 92 * np.sin(2 * np.pi * t * 1.5)
            faces.append((0, (0.3 * w, 0.5 * h), 120.0, yaw, 12 * np.sin(2 * np.pi * t * 3)))
            yaw2 = float(_lerp(t, [(0, 0), (0.2, -90), (0.55, -90), (0.7, 0), (0.85, 88), (1, 88)])[0])
            faces.append((1, (0.72 * w, 0.5 * h), 100.0, yaw2, 0.0))
        elif name == "occlusion":
            faces.append((0, (0.3 * w, 0.5 * h), 120.0, 15.0, 0.0))
            faces.append((1, (0.72 * w, 0.5 * h), 110.0, -20.0, 0.0))
            ox = _lerp(t, [(0, -0.2), (0.5, 0.35), (1, 0.9)])[0]
            occluders.append(("hand", ox * w, 0.5 * h, 150))
            oy = _lerp(t, [(0, -0.3), (0.5, 0.45), (1, 1.3)])[0]
            occluders.append(("board", 0.72 * w, oy * h, 110))
        elif name == "clutter":
            faces.append((0, (0.25 * w, 0.5 * h), 100.0, 40 * np.sin(4 * t), 0.0))
        boxes, drawn, yaws, sizes = [], [], [], []
        for k, (fid, c, size, yaw, pitch) in enumerate(faces):
            box, count = paste(frame, label, sprites.get(fid, yaw, pitch), c, size, k + 1)
            boxes.append(box)
            drawn.append(count)
            yaws.append(yaw)
            sizes.append(float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 0.0))))
        for kind, cx, cy, s in occluders:
            if kind == "hand":
                patch = hand(np.random.default_rng(seed + 5), 120).astype(np.float32)
                m = np.zeros((120, 120), np.float32)
                g = cv2.cvtColor(np.clip(patch, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV)
                m[(g[..., 1] > 40) & (g[..., 2] > 60)] = 1.0
                patch = cv2.resize(patch, (s, s))
                m = cv2.resize(m, (s, s))
            else:
                patch = np.full((s, s, 3), (60, 90, 140), np.float32)
                m = np.ones((s, s), np.float32)
            x0, y0 = int(cx - s / 2), int(cy - s / 2)
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
            if xb > xa and yb > ya:
                pm = m[ya - y0:yb - y0, xa - x0:xb - x0, None]
                frame[ya:yb, xa:xb] = frame[ya:yb, xa:xb] * (1 - pm) + patch[ya - y0:yb - y0, xa - x0:xb - x0] * pm
                label[ya:yb, xa:xb][pm[..., 0] > 0.5] = -1
        frame += rng.normal(0, 2.0, frame.shape).astype(np.float32)
        vis = np.array([float((label == k + 1).sum()) / max(drawn[k], 1.0) for k in range(len(faces))], np.float32)
        truths.append(Truth(np.array(boxes, np.float32).reshape(-1, 4), vis, np.array(yaws, np.float32),
                            np.array(sizes, np.float32), np.array(clutter, np.float32).reshape(-1, 4)))
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames, truths


def held_out_ids(cache: PhotoCache, min_size: int = 0) -> list[int]:
    """Cache entries held out of the classifier's training (``model.train_confidence.held_out``), colour photos
    whose teacher fit is steady (flip gap <= 0.05), in a fixed order."""
    from model.train_confidence import held_out

    return [i for i in range(len(cache)) if held_out(str(cache.name[i])) and not cache.grey[i]
            and cache.flip_gap[i] <= 0.05 and str(cache.source[i]) != "facemask_chandrikadeb7"]


def load_sprites(cache_dir: str) -> Sprites:
    from pathlib import Path

    from model.morphable import MorphableModel

    cache = PhotoCache.load(Path(cache_dir).expanduser())
    ids = held_out_ids(cache)
    rng = np.random.default_rng(3)
    ids = [ids[i] for i in rng.permutation(len(ids))[:40]]
    assert CONTEXT == 144
    return Sprites(cache, ids, MorphableModel.load())
