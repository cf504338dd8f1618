"""3DMM face swap: render a source texture with each target's geometry and blend it into the frame.

The full swap (default) shows the source's face on the target's motion: the source's brows, lids, lashes, eye
surroundings, nose, lips and facial hair (``texture.build_texture(features=True)``), with only the target's inner
eyes (iris and sclera) and inner mouth showing through, and the target's lighting. The eyes keep the source's own
lid outline (``EYE_OUTLINE``): its eye landmarks carried onto the target's mesh (``source_eyes``), opened and closed
by the target's opening over the track's open level, and the texture's left-out eye openings are laid into them
(``eyes_to_target``): as the target blinks or widens its eyes, the source's lids do. The target's iris and sclera are
carried into that outline corner to corner (``lay_target_eyes``; the iris keeps its shape, the source's lids cover
what does not fit, and the hole is where both openings overlap). The targets' vertices may carry the source's 3DMM
shape (``stream.render.swap_shape``, applied by ``FrameRenderer``).
The per-face pixel work runs in ``stream.render.swap_kernels``. ``keep_target_eyes`` keeps the target's whole eyes
and brows instead (the swap before the full one).

Per frame: all targets are rasterized into one z-buffer (so faces occlude each other), then per target, inside its
box only: texture lookup, alpha, colour transfer over the skin of both (the source's tone moves ``TONE_MATCH`` of
the way to the target's inside the face and all of it at the contour, its contrast within ``GAIN_RANGE``), the
target's light (a plane of L fitted to each face's skin, the target's over the source's: its gradient, not its
features; the target's pixels far darker than most of its skin, a fringe or a hat's shadow, left out:
``_lit_skin``), along the mesh's straight top edge across the forehead the target's local tone
(``_forehead_tone``), and a blend. Alpha is the product of smooth ramps: along the face's contour from the
per-vertex UV distance to the mesh boundary (interpolated by the rasterizer, so no staircase from the mask's
pixels), from the rendered silhouette (distance transform, where the face turns away or another face covers it),
and around every hole (:func:`hole_polygons`: sub-pixel distance from the polygon, a smoothstep over
``HOLE_FEATHER`` x its width, alpha exactly 0 inside). Every pixel outside the rendered faces and inside the holes
keeps its exact value.

Blends, one face of 255 px on a 640x480 frame, 2 shared x86_64 cores under load (``bench/bench_render.py``, whole
swap, 2026-12-07): ``alpha`` 5.9 ms (feathered alpha: the fastest, but where the mask edge crosses hair, e.g. a
fringe on the forehead, the edge stays visible), ``pyramid`` 6.3 ms (Laplacian pyramid, 3 levels: that edge becomes a
soft gradient), ``seamless`` 21.6 ms (``cv2.seamlessClone``, Poisson: the most natural border, slightly flatter face
tone, but 3-4x the cost of pyramid and more when the cores are busy). Default: ``pyramid``, the best look within
the budget for several faces per frame.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numba as nb
import numpy as np

from stream.render import composite
from stream.render import swap_kernels as kernels
from model.raster.zbuffer import RasterBuffers, rasterize
from stream.render.texture import (EYE_HOLE_SCALE, EYE_REACH, FaceTexture, _eye_band, brow_polygons,  # noqa: F401
                                   build_texture, eye_polygon, eye_positions, face_region, feature_polygons,
                                   inner_mouth_polygon)  # (build_texture, face_region: API)

BLENDS = ("alpha", "pyramid", "seamless")
EDGE_FEATHER = 0.05  # UV units (about a fraction of the face width) of the feather along the face's contour
TONE_MATCH = np.array([0.8, 0.5, 0.5], np.float32)  # share of the way the source's mean L, a, b move to the target's
GAIN_RANGE = (0.8, 1.25)  # the source's colour contrast may follow the target's within this factor
RELIGHT_RANGE = (0.7, 1.45)  # the target's light over the source's (each a smooth fit), applied to the source's L
EYE_HOLE = (1.0, 0.7, 0.8)  # the target's inner eye (texture.eye_polygons): along the eye, upper side, lower side
# (inside the lid curves: with the feather the source's own lash lines cover the lids' margins, as the source's lids
# cover the top of an iris; at (1.0, 0.9, 1.0) half of the target's lash line showed around the source's)
MOUTH_HOLE = 1.0  # the target's inner mouth: its inner-lip polygon grown this much about its centre
KEEP_FEATHER = 0.15  # keep_target_eyes: the ramp around the target's eyes and brows, x 0.2 x the face's size
MOUTH_FEATHER = 0.15  # the ramp around the inner mouth, x its width (its seam is the one nearest the limit)
HOLE_FEATHER = 0.10  # the ramp around an eye's hole, x the eye's width
FOREHEAD_TONE = 0.15  # UV units below the mesh's top edge over which the swap's local tone meets the target's: to the
# brows (0.15-0.21 below it on the mean face), whose tone stays the source's (0.10 left the line half there)
FOREHEAD_ROWS = (0.1, 0.3)  # texture rows (0 top, 1 bottom): the forehead fully above the first, not below the second
DARK_SKIN = 3.0  # target "skin" pixels this many robust std of L under its median are not skin (hair, shadows)
FOREHEAD_BLUR = 0.05  # the local tone's blur (Gaussian sigma), x the face's size
LIGHT_STEP = 6  # the light planes are fitted on every LIGHT_STEP-th pixel (rows and columns) of the skin
CLOSED_EYE = 0.06  # an eye whose aspect ratio (lid gap over width) is under this shows none of the target's eye
EYE_OUTLINE = "source"  # full swap: whose lid outline the eyes show ("source": the source's, "target": the target's)
OPEN_RATE = 0.05  # a track's open-eye level: an exponential average of its eyes' opening (this weight a frame) ...
OPEN_BLINK = 0.7  # ... over the frames where an eye is open more than this share of the level (not in a blink)
OPEN_MAX = 1.6  # the source's opening follows the target's over its open level up to this factor (a wide eye)
OPEN_EYE = 0.28  # the open level (lid gap over width) of a target without a track's state
_LAB8_SCALE = np.array([255 / 100, 1, 1], np.float32)  # OpenCV 8-bit Lab = (L * 255/100, a + 128, b + 128)
_LAB8_OFFSET = np.array([0, 128, 128], np.float32)


def outline_polygon(landmarks: np.ndarray, forehead: float = 0.3) -> np.ndarray:
    """Face outline (27, 2) in frame px from 68 landmarks: the jaw, then the brows raised by ``forehead`` x the
    brow-to-chin distance (image y down)."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    brows = lm[26:16:-1].copy()
    brows[:, 1] -= forehead * (lm[8, 1] - lm[17:27, 1].mean())
    return np.concatenate([lm[0:17], brows])


def _render_attrs(texture: FaceTexture) -> np.ndarray:
    """Per-vertex attributes to rasterize: (u, v) texel coords or BGR colours, the region weight, then the UV
    distance from the mesh's outer boundary (large where unknown). Cached on the texture."""
    key = (id(texture.uv), id(texture.colors), id(texture.region), id(texture.edge), id(texture.image))
    cached = texture.__dict__.get("_attrs")
    if cached is not None and cached[0] == key:
        return cached[1]
    attrs = _build_attrs(texture)
    texture.__dict__["_attrs"] = (key, attrs)
    return attrs


def _build_attrs(texture: FaceTexture) -> np.ndarray:
    base = texture.uv if texture.image is not None else texture.colors
    region = texture.region if texture.region is not None else np.ones(base.shape[0], np.float32)
    edge = texture.edge if texture.edge is not None else np.full(base.shape[0], 1e3, np.float32)
    return np.ascontiguousarray(np.concatenate([base, region[:, None], edge[:, None]], 1), np.float32)


def _lit_skin(tgt8: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """The skin mask (h, w) uint8 without the target's pixels far darker than most of its skin: hair across the
    forehead (a fringe), a hat's shadow, a hand. Their L (8-bit Lab ``tgt8``) under the skin's median minus
    ``DARK_SKIN`` robust std (1.4826 x the median absolute deviation, from a histogram) would tilt the light planes
    toward them and darken the swapped face beside them (a fringe: 15 L across the forehead). Unchanged when that
    leaves under half. (The tone statistics keep them: there they darken the face evenly, which hides the swap's
    edge where the mesh reaches over hair at the temples.)"""
    hist = cv2.calcHist([tgt8], [0], skin, [256], [0, 256]).ravel()
    cum = np.cumsum(hist)
    n = float(cum[-1])
    if n < 40:
        return skin
    med = int(np.searchsorted(cum, n / 2))
    # the median absolute deviation: the least r whose window med +- r holds half the pixels
    inside = cum[np.minimum(med + _RADII, 255)] - np.where(med - _RADII > 0, cum[np.maximum(med - _RADII - 1, 0)], 0.0)
    mad = int(np.argmax(inside >= n / 2))
    lo = med - DARK_SKIN * 1.4826 * max(float(mad), 1.0)
    below = max(0, math.ceil(lo))
    if below > 0 and cum[below - 1] > n / 2:
        return skin
    return cv2.bitwise_and(skin, cv2.compare(tgt8[..., 0], lo, cv2.CMP_GE))


_RADII = np.arange(256)


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (3,) of an image over a uint8 mask."""
    mean, std = cv2.meanStdDev(lab, mask=mask)
    return mean.reshape(3).astype(np.float32), std.reshape(3).astype(np.float32) + 1e-3


def _forehead_tone(src_lab: np.ndarray, tgt8: np.ndarray, attr: np.ndarray, row_scale: float, skin: np.ndarray,
                   size: float) -> None:
    """Where the mesh's straight top edge crosses the forehead, the swap's local tone meets the target's, in place.

    The mean tone transfer and the light planes match the face as a whole, and at the contour the tone meets the
    target's mean; but a forehead lit otherwise than the target's (brighter, ruddier) stays a band of other tone
    under a straight line, the mesh's top edge, however it is feathered. Here the difference target - swap, blurred
    over the skin near that edge (a normalised convolution, Gaussian ``FOREHEAD_BLUR`` x the face's size, on 4x4
    blocks), is added with weight 1 at the edge fading (smoothstep) to 0 at ``FOREHEAD_TONE`` UV units inside it,
    and only across the forehead (texture rows ``FOREHEAD_ROWS``): the jaw and cheeks, where the contour is the
    face's own outline, keep the source's tone. ``src_lab`` (h, w, 3) float Lab, ``tgt8`` the target in 8-bit Lab,
    ``attr`` the rasterized attributes (texel u, v, ..., UV distance from the mesh's boundary), ``row_scale`` texel
    v -> row 0..1, ``skin`` (h, w) uint8."""
    h, w = skin.shape
    fade = np.empty((h, w), np.float32)
    num = np.zeros(((h + 3) // 4, (w + 3) // 4, 3), np.float32)
    den = np.zeros(num.shape[:2], np.float32)
    if not kernels.forehead_sums(fade, num, den, src_lab, tgt8, attr, skin, 1.0 / FOREHEAD_TONE, row_scale,
                                 *FOREHEAD_ROWS):
        return
    sigma = max(1.0, size * FOREHEAD_BLUR / 4)
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    # the mean difference where the skin near the edge reaches, fading to none where it does not (a block's mean
    # weight, den / 16, under 1 / 20)
    low = num * (np.clip(den * (20.0 / 16.0), 0.0, 1.0) / np.maximum(den, 1e-3))[..., None]
    kernels.add_field(src_lab, fade, np.ascontiguousarray(low, np.float32))


def _pyramid_delta(d: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend of a float32 image ``d`` (h, w, 3) (weight alpha (h, w)) with zero (weight
    1 - alpha): each level of d's Laplacian pyramid times the Gaussian pyramid of alpha, collapsed. Blending images
    a over b this way is b + this of (a - b)."""
    gd, gm = [d], [alpha]
    for _ in range(levels):
        gd.append(cv2.pyrDown(gd[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = gd[-1] * gm[-1][..., None]
    for i in range(levels - 1, -1, -1):
        size = (gd[i].shape[1], gd[i].shape[0])
        out = cv2.pyrUp(out, dstsize=size)
        kernels.add_laplacian(out, gd[i], cv2.pyrUp(gd[i + 1], dstsize=size), gm[i])
    return out


def swap_faces(frame: np.ndarray, targets: Sequence[np.ndarray], tri: np.ndarray, texture: FaceTexture, *,
               landmarks: Sequence[np.ndarray] | None = None, out: np.ndarray | None = None,
               buffers: RasterBuffers | None = None, blend: str = "pyramid", color_match: bool = True,
               relight: bool = True, erode: float = 0.03, feather: float = 0.03,
               keep_features: bool = True, color_states: Sequence[dict] | None = None,
               color_smoothing: float = 0.8, keep_target_eyes: bool = False) -> np.ndarray:
    """Swap the source face (``texture``) onto every target face of a frame; returns the image.

    frame (H, W, 3) uint8 BGR; targets: per face (V, 3) float32 vertices in frame px (same topology as ``tri`` (F, 3)
    and the texture); landmarks: per face (68, 2|3) frame px, used to keep the target's eyes and inner mouth.
    ``erode`` and ``feather`` are fractions of the face size (feather is capped at the erosion so the blend stays
    inside the rendered face). ``blend`` is one of ``alpha``, ``pyramid``, ``seamless``. ``out`` may be ``frame``;
    ``buffers`` (frame size) avoid per-frame allocation of the z-buffer.
    Pixels outside the rendered faces are byte-identical to ``frame``.
    ``color_states``: one dict per target kept by the caller across frames (e.g. per track id); the target's skin
    colour statistics are then averaged over time (exponentially, weight ``color_smoothing`` on the past), so the
    colour match does not flicker with per-frame mask changes.
    """
    if blend not in BLENDS:
        raise ValueError(f"unknown blend '{blend}' (expected one of {', '.join(BLENDS)})")
    frame = np.asarray(frame)
    if out is None:
        out = frame.copy()
    elif out is not frame:
        np.copyto(out, frame)
    if len(targets) == 0:
        return out
    h, w = frame.shape[:2]
    tri = np.ascontiguousarray(tri, np.int32)
    n_tri = tri.shape[0]
    attrs = _render_attrs(texture)
    buffers = RasterBuffers.create(h, w, attrs.shape[1]) if buffers is None else buffers.ensure(h, w, attrs.shape[1])
    buffers.clear()
    boxes = []
    shown_eyes: list[np.ndarray | None] = []  # per target: the eyes the swap shows (12, 2) frame px, None: its own
    for i, v in enumerate(targets):
        v = np.ascontiguousarray(v, np.float32)
        if landmarks is not None and keep_features and not keep_target_eyes:
            eyes = None
            if EYE_OUTLINE == "source":
                eyes = source_eyes(v, texture, landmarks[i], None if color_states is None else color_states[i])
                if color_states is not None:
                    color_states[i]["shown_eyes"] = eyes
            shown_eyes.append(eyes)
            v = eyes_to_target(v, texture, landmarks[i], eyes)
        else:
            shown_eyes.append(None)
        before = buffers.bbox.copy()
        buffers.bbox[:] = (h, 0, w, 0)
        rasterize(v, tri, attrs, buffers=buffers, clear=False, tri_offset=i * n_tri)
        boxes.append(buffers.bbox.copy())
        buffers.bbox[:] = (min(before[0], boxes[-1][0]), max(before[1], boxes[-1][1]),
                           min(before[2], boxes[-1][2]), max(before[3], boxes[-1][3]))
    # a later face can hide part of an earlier one but never grow its box: each face's pixels lie in its own box
    for i, bb in enumerate(boxes):
        y0, y1, x0, x1 = (int(b) for b in bb)
        if y0 >= y1 or x0 >= x1:
            continue
        lm = None if landmarks is None or not keep_features else landmarks[i]
        state = None if color_states is None else color_states[i]
        _swap_one(out, frame, buffers, texture, i * n_tri, (i + 1) * n_tri, (y0, y1, x0, x1), lm, blend, color_match,
                  relight, erode, feather, state, color_smoothing, keep_target_eyes, shown_eyes[i])
    return out


def eyes_to_target(v: np.ndarray, texture: FaceTexture, landmarks: np.ndarray,
                   eyes: np.ndarray | None = None) -> np.ndarray:
    """The target's vertices (V, 3) with those in and around the source's left-out eyes (``texture.eye_vertices``)
    laid into the eyes shown by their eye coordinates: the target's own (its 68 ``landmarks``) or ``eyes`` (12, 2)
    frame px (:func:`source_eyes`): the texture's eye opening fills that opening (where the target's inner eye
    shows through) and closes with it; the lid skin around it keeps its width. Blended into the mesh's own positions
    over ``EYE_REACH`` eye widths past the opening. A copy when anything moves."""
    if not texture.eye_vertices:
        return v
    lm = np.asarray(landmarks, np.float64)[:, :2]
    shown = lm[36:48] if eyes is None else np.asarray(eyes, np.float64)
    out = v.copy()
    for (idx, ste), sl in zip(texture.eye_vertices, (slice(0, 6), slice(6, 12))):
        if len(idx) > 0:
            _eye_into(out, v, idx, ste, *_eye_band(shown[sl], *EYE_HOLE_SCALE[1:]), EYE_REACH)
    return out


def eye_opening(eye: np.ndarray) -> float:
    """An eye's aspect ratio from its 6 landmarks (6, 2) px: the mean lid gap (1-5, 2-4) over the corner distance.
    One eye's ``model.expression_ext.eye_aspect_ratio`` (the same values), in plain floats: that one is vectorised
    over faces and costs ten times as much for one face, and the swap asks for it several times a face."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3), (x4, y4), (x5, y5) = np.asarray(eye, np.float64)[:6, :2].tolist()
    width = math.hypot(x3 - x0, y3 - y0)
    return (math.hypot(x1 - x5, y1 - y5) + math.hypot(x2 - x4, y2 - y4)) / (2 * max(width, 1e-6))


@nb.njit(cache=True, nogil=True)
def _similarity(src, dst, idx):
    """The least-squares similarity (2, 3) float64 taking points src (K, 2) to ``dst[idx, :2]`` (dst (V, >=2), idx
    (K,)) (Umeyama, no reflection; two points: exactly)."""
    k = src.shape[0]
    msx = 0.0
    msy = 0.0
    mdx = 0.0
    mdy = 0.0
    for i in range(k):
        msx += src[i, 0]
        msy += src[i, 1]
        mdx += dst[idx[i], 0]
        mdy += dst[idx[i], 1]
    msx /= k
    msy /= k
    mdx /= k
    mdy /= k
    var = 0.0
    re = 0.0
    im = 0.0
    for i in range(k):
        ax = src[i, 0] - msx
        ay = src[i, 1] - msy
        bx = dst[idx[i], 0] - mdx
        by = dst[idx[i], 1] - mdy
        var += ax * ax + ay * ay
        re += ax * bx + ay * by  # (a conjugate) b: scale x (cos + i sin) times var
        im += ax * by - ay * bx
    if var > 1e-9:
        re /= var
        im /= var
    else:
        re = 1.0
        im = 0.0
    out = np.empty((2, 3))
    out[0, 0] = re
    out[0, 1] = -im
    out[0, 2] = mdx - (re * msx - im * msy)
    out[1, 0] = im
    out[1, 1] = re
    out[1, 2] = mdy - (im * msx + re * msy)
    return out


def _eye_rings(texture: FaceTexture) -> list:
    """Per eye of a full-swap texture: the eye-ring vertices (index (K,)) and their places in the source photo
    (K, 2) (the lid skin past the opening, what the target's blink moves least); cached on the texture."""
    key = (id(texture.eye_vertices), id(texture.eye_landmarks))
    cached = texture.__dict__.get("_eye_rings")
    if cached is not None and cached[0] == key:
        return cached[1]
    rings = []
    for (idx, ste), sl in zip(texture.eye_vertices, (slice(0, 6), slice(6, 12))):
        ring = ste[:, 2] > 0.02
        rings.append((idx[ring], eye_positions(ste[ring], np.asarray(texture.eye_landmarks[sl], np.float64),
                                               *EYE_HOLE_SCALE[1:])))
    texture.__dict__["_eye_rings"] = (key, rings)
    return rings


def source_eyes(v: np.ndarray, texture: FaceTexture, landmarks: np.ndarray, state: dict | None = None
                ) -> np.ndarray | None:
    """The source's own eyes on a target (12, 2) float64 frame px (right 36-41, then left 42-47), or None when the
    texture has none: each eye's landmarks (``texture.eye_landmarks``) carried onto the target's mesh ``v`` (V, 3)
    by the similarity that best takes the texture's eye-ring vertices from the source photo to ``v`` (the lid skin
    past the opening: the source's outline, size and slant where the mesh puts its eye), then its upper lid moved
    toward or away from the lower one by the target's opening over its open level (from its ``landmarks`` (68, 2)
    px; up to ``OPEN_MAX``), so the source's lids blink and widen with the target's. ``state``, a track's dict,
    keeps that level: an exponential average (``OPEN_RATE``) of the eye's opening over the frames it is not in a
    blink (``OPEN_BLINK``), starting at the first frame's; without one the level is ``OPEN_EYE``."""
    src = texture.eye_landmarks
    if src is None or not texture.eye_vertices:
        return None
    lm = np.asarray(landmarks, np.float64)[:, :2]
    src = np.asarray(src, np.float64)
    out = np.empty((12, 2))
    level = None if state is None else state.get("eye_open")
    opens = (eye_opening(lm[36:42]), eye_opening(lm[42:48]))
    if level is None:
        floor = OPEN_EYE if state is None else 0.5 * OPEN_EYE
        level = np.array([max(o, floor) for o in opens])
    else:
        level = np.array([lv + (OPEN_RATE * (o - lv) if o > OPEN_BLINK * lv else 0.0) for o, lv in zip(opens, level)])
    if state is not None:
        state["eye_open"] = level
    verts = np.asarray(v)
    for k, (idx, at) in enumerate(_eye_rings(texture)):
        sl = slice(6 * k, 6 * k + 6)
        if len(idx) < 3:
            out[sl] = lm[36:48][sl]
            continue
        m = _similarity(at, verts, idx)
        e = src[sl] @ m[:, :2].T + m[:, 2]
        k_open = min(max(opens[k] / max(float(level[k]), 1e-6), 0.0), OPEN_MAX)
        e[1:3] = e[5:3:-1] + k_open * (e[1:3] - e[5:3:-1])
        out[sl] = e
    return out


@nb.njit(cache=True, nogil=True)
def _eye_into(out, v, idx, ste, a, d, n, centre, half, reach):
    """``eyes_to_target``'s kernel: ``out[idx, :2]`` = the eye positions of ``ste`` (K, 3) (``texture.eye_positions``
    in the eye band a, d, n, centre, half) blended with ``v[idx, :2]`` by a smoothstep of 1 - (how far past the
    opening) / ``reach``."""
    width = np.sqrt(max(d[0] * d[0] + d[1] * d[1], 1e-9))
    g = centre.shape[0] - 1
    for k in range(idx.shape[0]):
        s = np.float64(ste[k, 0])
        t = np.float64(ste[k, 1])
        e = np.float64(ste[k, 2])
        w = 1.0 - max(max(-s, s - 1.0), e) / reach
        w = min(max(w, 0.0), 1.0)
        w = w * w * (3.0 - 2.0 * w)
        if w <= 0.0:
            continue
        x = min(max(s, 0.0), 1.0) * g
        i = min(int(x), g - 1)
        f = x - i
        off = centre[i] * (1.0 - f) + centre[i + 1] * f + t * (half[i] * (1.0 - f) + half[i + 1] * f)
        off += (-1.0 if t < 0 else 1.0) * e * width
        j = idx[k]
        out[j, 0] = (1.0 - w) * v[j, 0] + w * (a[0] + s * d[0] + off * n[0])
        out[j, 1] = (1.0 - w) * v[j, 1] + w * (a[1] + s * d[1] + off * n[1])


def _light_planes(ata: np.ndarray, atv: np.ndarray, sums: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """The two light planes (3, 2) (columns: target, source; each over its mean) from their normal equations
    (``swap_kernels.light_sums``), and the floor of a plane's value (1 / the mean L of both); a (0, 2) array (no
    relighting) when fewer than 12 pixels were sampled or the system is singular."""
    if n < 12:
        return np.zeros((0, 2)), 1.0
    try:
        c = np.linalg.solve(ata, atv)
    except np.linalg.LinAlgError:
        return np.zeros((0, 2)), 1.0
    means = sums / n
    return c / np.maximum(means, 1.0), 1.0 / max(float(means.mean()), 1.0)


def eye_hole_grow(opening: float) -> float:
    """How much of an eye's hole shows (0..1) at the target's eye opening (aspect ratio, :func:`eye_opening`): a
    closing eye's hole narrows to nothing (the source's lids cover a closed eye); its height follows the opening
    from ``CLOSED_EYE`` (none) to ``CLOSED_EYE`` + 0.1 (all of ``EYE_HOLE``); a sliver (under 0.4 of it) is none (a
    hole this thin is all edge)."""
    grow = min(max((opening - CLOSED_EYE) / 0.1, 0.0), 1.0)
    return grow if grow > 0.4 else 0.0


def hole_polygons(landmarks: np.ndarray, keep_target_eyes: bool = False,
                  eyes: np.ndarray | None = None) -> list[tuple]:
    """What of the target shows through the swap, as (polygon (K, 2) frame px, feather px[, clip polygon]) from its
    68 landmarks: its inner eyes (iris and sclera: :func:`~stream.render.texture.eye_polygons`, ``EYE_HOLE``) and
    inner mouth; with ``keep_target_eyes`` its whole eyes and brows instead of the inner eyes (the target's lids,
    lashes and brows: ``feature_polygons``, ``brow_polygons``). With ``eyes`` (12, 2) frame px (the source's
    outline, :func:`source_eyes`) an eye's hole is that opening where it overlaps the target's own opening carried
    onto it (:func:`eye_carry`: the clip polygon; the target's iris keeps its shape and the source's lids cover
    what does not fit). Each hole's feather is ``HOLE_FEATHER`` x its width, less as the target's eye closes; its
    height follows the target's opening (:func:`eye_hole_grow`): a blinking target shows the source's closed lids."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    mouth = inner_mouth_polygon(lm, MOUTH_HOLE)
    mouth_w = math.hypot(lm[64, 0] - lm[60, 0], lm[64, 1] - lm[60, 1])
    out: list[tuple] = []
    if keep_target_eyes:
        polys = feature_polygons(lm)[:2] + brow_polygons(lm)
        size = float(np.sqrt(np.ptp(lm[:, 0]) * np.ptp(lm[:, 1])))
        out = [(p, KEEP_FEATHER * 0.2 * size) for p in polys]
    else:
        shown = None if eyes is None else np.asarray(eyes, np.float64)[:, :2]
        for k, sl in enumerate((slice(36, 42), slice(42, 48))):
            target = lm[sl]
            opening = eye_opening(target)
            grow = eye_hole_grow(opening)
            if grow == 0.0:
                continue
            scale = (EYE_HOLE[0], EYE_HOLE[1] * grow, EYE_HOLE[2] * grow)
            own = eye_polygon(target, scale)
            eye = target if shown is None else shown[k * 6:k * 6 + 6]  # the eye the hole lies in
            feather = (HOLE_FEATHER * math.hypot(eye[3, 0] - eye[0, 0], eye[3, 1] - eye[0, 1])
                       * min(max(opening / 0.25, 0.2), 1.0))
            if shown is None:
                out.append((own, feather))
            else:
                m = eye_carry(target, eye)
                out.append((eye_polygon(eye, scale), feather, own @ m[:, :2].T + m[:, 2]))
    out.append((mouth, MOUTH_FEATHER * mouth_w))
    return out


def eye_carry(target: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """The similarity (2, 3) float64 that takes a target's eye (6, 2) px onto the eye shown (6, 2): corner to corner
    (rotation, one scale, shift), so the target's iris keeps its shape wherever the source's outline lies."""
    t = np.asarray(target, np.float64)
    s = np.asarray(shown, np.float64)
    p0, p1 = complex(t[0, 0], t[0, 1]), complex(t[3, 0], t[3, 1])
    q0, q1 = complex(s[0, 0], s[0, 1]), complex(s[3, 0], s[3, 1])
    z = (q1 - q0) / (p1 - p0) if abs(p1 - p0) > 1e-9 else 1.0 + 0.0j  # scale x (cos + i sin)
    c = q0 - z * p0
    return np.array([[z.real, -z.imag, c.real], [z.imag, z.real, c.imag]])


def lay_target_eyes(out: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, eyes: np.ndarray,
                    box: tuple[int, int, int, int] | None = None) -> None:
    """Lay the target's inner eyes (iris and sclera, and its lids just past them, which the holes' feather reaches)
    into the eyes the swap shows, in ``out`` (H, W, 3) uint8, in place: near a shown eye (``eyes`` (12, 2),
    :func:`source_eyes`) the ``frame``'s eye carried onto it corner to corner (:func:`eye_carry`, bilinear; the
    iris keeps its shape); all of it within the hole's feather of the shown opening (``HOLE_FEATHER`` x the eye's
    width, and a pixel), fading to none over a twentieth of the eye's width and a pixel past that
    (``swap_kernels.lay_eye``). ``box`` (y0, y1, x0, x1): the pixels to touch; ``eyes`` and ``landmarks`` are in
    ``out``'s px less (x0, y0), ``frame`` whole. Where the target's eye shows no hole (:func:`eye_hole_grow`)
    nothing is laid."""
    y0, y1, x0, x1 = (0, out.shape[0], 0, out.shape[1]) if box is None else box
    h, w = y1 - y0, x1 - x0
    lm = np.asarray(landmarks, np.float64)[:, :2]
    eyes = np.asarray(eyes, np.float64)
    for k in (0, 6):
        eye, target = eyes[k:k + 6], lm[36 + k:42 + k]
        width = math.hypot(eye[3, 0] - eye[0, 0], eye[3, 1] - eye[0, 1])
        if width < 2 or eye_hole_grow(eye_opening(target)) == 0.0:
            continue
        full = HOLE_FEATHER * width + 1.0
        reach = full + 0.05 * width + 1.0
        (lx, ly), (hx, hy) = eye.min(0).tolist(), eye.max(0).tolist()
        ex0, ey0 = max(math.floor(lx - reach), 0), max(math.floor(ly - reach), 0)
        ex1, ey1 = min(math.ceil(hx + reach) + 1, w), min(math.ceil(hy + reach) + 1, h)
        if ex0 < ex1 and ey0 < ey1:
            kernels.lay_eye(out, frame, y0 + ey0, y0 + ey1, x0 + ex0, x0 + ex1, float(x0), float(y0),
                            *_eye_band(eye, 1.0, 1.0), eye_carry(eye, target), full, reach)


def holes_reference(frame: np.ndarray, landmarks: Sequence[np.ndarray],
                    eyes: Sequence[np.ndarray | None]) -> np.ndarray:
    """The frame as a swap's holes show it, for seam measures: a copy of ``frame`` with each face's inner eyes laid
    into the eyes its swap showed (:func:`lay_target_eyes`; ``eyes[i]`` (12, 2) px, None where the swap showed the
    face's own eyes), so every hole's boundary is a boundary of what the swap changed. ``landmarks[i]`` (68, 2)."""
    out = frame.copy()
    for lm, shown in zip(landmarks, eyes):
        if shown is not None:
            lay_target_eyes(out, frame, lm, shown)
    return out


def _hole_alpha(alpha: np.ndarray, holes: list[tuple]) -> None:
    """Multiply ``alpha`` (h, w) float32 in place by each hole's ramp (``swap_kernels.hole_ramp``; the holes of
    :func:`hole_polygons` in ``alpha``'s px): 0 inside the polygon (exactly: the target's own pixels), a smoothstep
    from its edge over its feather outside (the feathering the face's contour has). A hole with a clip polygon is
    where both overlap: the larger of the two ramps."""
    for hole in holes:
        clip = np.ascontiguousarray(hole[2], np.float64) if len(hole) > 2 else _NO_CLIP
        kernels.hole_ramp(alpha, np.ascontiguousarray(hole[0], np.float64), clip, max(hole[1], 0.5))


_NO_CLIP = np.zeros((0, 2))


def _swap_one(out: np.ndarray, frame: np.ndarray, buf: RasterBuffers, texture: FaceTexture, id0: int, id1: int,
              box: tuple[int, int, int, int], landmarks: np.ndarray | None, blend: str, color_match: bool,
              relight: bool, erode: float, feather: float, state: dict | None = None,
              smoothing: float = 0.8, keep_target_eyes: bool = False, eyes: np.ndarray | None = None) -> None:
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    ids = buf.tri_id[y0:y1, x0:x1]
    attr = buf.attr[y0:y1, x0:x1]
    keep = np.zeros((h + 2, w + 2), np.uint8)  # the face's pixels, with a zero border for the distance transform
    if kernels.face_mask(keep, ids, attr, id0, id1) == 0:
        return
    size = float(np.sqrt(h * w))
    e = erode * size
    f = max(1.0, feather * size)
    # alpha: a smooth ramp from the face's own contour (the per-vertex UV distance from the mesh boundary,
    # interpolated: no pixel staircase), times one ramp from the rendered silhouette (where the face turns away or
    # another face covers it: a distance transform), times one ramp around each hole where the target shows through
    # (its inner eyes and inner mouth, or with keep_target_eyes its eyes and brows: sub-pixel distance from their
    # landmark polygons, 0 inside them)
    lm = None
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64)[:, :2] - (x0, y0)
        if texture.region is None and texture.edge is None:  # no face region: limit to the target's outline
            outline = np.zeros_like(keep)
            cv2.fillPoly(outline, [np.round((outline_polygon(lm) + 1) * 16).astype(np.int32)], 1, cv2.LINE_8,
                         shift=4)
            keep &= outline
    dist = cv2.distanceTransform(keep, cv2.DIST_L2, 3)
    contour = np.empty((h, w), np.float32)  # the contour's ramp alone (0 at the face's edge, 1 inside)
    kernels.contour_alpha(contour, dist, keep, attr, 0.25 * e, 1.0 / f,
                          1.0 / EDGE_FEATHER if texture.edge is not None else 0.0)
    alpha = contour.copy()
    features = None
    shown = None  # the eyes shown (the source's outline on the target: ``source_eyes``), box px
    if lm is not None:
        if eyes is not None:
            shown = np.asarray(eyes, np.float64) - (x0, y0)
        _hole_alpha(alpha, hole_polygons(lm, keep_target_eyes, shown))
        # the target's features (eyes, brows, lips): left out of the skin statistics and the lighting
        features = np.ones((h, w), np.uint8)
        polys = feature_polygons(lm)[:2] + brow_polygons(lm) + [lm[48:60]]
        cv2.fillPoly(features, [np.round(p * 16).astype(np.int32) for p in polys], 0, cv2.LINE_8, shift=4)
    mask = cv2.compare(alpha, 0.5, cv2.CMP_GT)  # 255 where alpha > 0.5
    if cv2.countNonZero(mask) == 0:
        return
    skin = mask if features is None else cv2.bitwise_and(mask, mask, mask=features)
    if cv2.countNonZero(skin) < 20:
        skin = mask
    f = int(round(f))

    # source colour, in Lab straight from the texture (converted once in build_texture)
    if texture.image is not None:
        uv = np.empty((h, w, 2), np.float32)
        kernels.texel_map(attr, uv)
        src_lab = cv2.remap(texture.image_lab, uv, None, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    else:
        src_lab = cv2.cvtColor(np.clip(attr[..., :3], 0, 255) * (1 / 255.0), cv2.COLOR_BGR2Lab)
    if color_match or relight:
        # target in 8-bit Lab (L * 255/100, a + 128, b + 128): converted back to float Lab units below
        tgt = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_BGR2Lab)
        off = np.zeros(3, np.float32)
        gain = np.ones(3, np.float32)
        base = np.zeros(3, np.float32)
        keep_tone = np.zeros(3, np.float32)
        if color_match:
            # over the skin of both (the target's eyes, brows and lips left out): the source's tone moves
            # TONE_MATCH of the way to the target's (its exposure and white balance), its contrast within GAIN_RANGE
            # (no bleaching of its features, no amplified grain)
            ms, ss = _lab_stats(src_lab, skin)
            mt, st = _lab_stats(tgt, skin)
            mt = (mt - _LAB8_OFFSET) / _LAB8_SCALE
            st = st / _LAB8_SCALE
            if state is not None:  # temporal average of the target's statistics (no flicker)
                if "mt" in state:
                    mt = smoothing * state["mt"] + (1 - smoothing) * mt
                    st = smoothing * state["st"] + (1 - smoothing) * st
                state["mt"], state["st"] = mt, st
            # v -> (v - ms) gain + mt - contour^2 (1 - TONE_MATCH)(mt - ms): at the face's contour the tone meets the
            # target's fully (no step where the ramp starts), inside it keeps (1 - TONE_MATCH) of the source's own
            off, base = ms.astype(np.float32), mt.astype(np.float32)
            gain = np.clip(st / ss, *GAIN_RANGE).astype(np.float32)
            keep_tone = ((1.0 - TONE_MATCH) * (mt - ms)).astype(np.float32)
        planes = np.zeros((0, 2))
        cx, cy, sc = w / 2, h / 2, 2.0 / max(size, 1.0)
        lo = 1.0
        if relight:
            # the target's lighting, not its features: a plane of L over the face fitted to the skin of each (the
            # light's gradient across the face), the target's over the source's, each over its mean
            # (over the skin without the target's fringe or a hat's shadow: ``_lit_skin``)
            planes, lo = _light_planes(*kernels.light_sums(tgt, src_lab, contour, _lit_skin(tgt, skin), LIGHT_STEP,
                                                           cx, cy, sc, off, gain, base, keep_tone))
        kernels.tone_light(src_lab, contour, off, gain, base, keep_tone, planes, cx, cy, sc, lo, *RELIGHT_RANGE)
        if color_match and texture.edge is not None and texture.image is not None:
            _forehead_tone(src_lab, tgt, attr, 1.0 / max(texture.image.shape[0] - 1, 1), skin, size)
    colour = cv2.cvtColor(src_lab, cv2.COLOR_Lab2BGR)
    cv2.multiply(colour, 255.0, dst=colour)
    if shown is not None:
        lay_target_eyes(out, frame, lm, shown, (y0, y1, x0, x1))

    if blend == "alpha":
        composite.blend_masked(out, out, colour.astype(np.float32, copy=False), alpha, y0, x0)
    elif blend == "pyramid":
        # a Laplacian-pyramid blend of the colour over the frame is the frame plus the pyramid blend of their
        # difference with zero: one pyramid instead of two. Its coarse levels carry the source's tone a little past
        # the alpha's support: faded out with smoothstep(alpha), so the frame is met without a step (every
        # boundary: contour and holes)
        base = out[y0:y1, x0:x1]
        levels = max(1, min(4, int(np.log2(max(2 * f, 2)))))
        delta = _pyramid_delta(cv2.subtract(colour, base, dtype=cv2.CV_32F), alpha, levels)
        kernels.add_masked_smooth(out, base, delta, alpha, y0, x0)
    else:
        src8 = np.clip(colour, 0, 255).astype(np.uint8)
        m8 = (alpha > 0.5).astype(np.uint8) * 255
        bx, by, bw, bh = cv2.boundingRect(m8)
        hh, ww = m8.shape
        if bw < 3 or bh < 3 or bx == 0 or by == 0 or bx + bw >= ww or by + bh >= hh:
            composite.blend_masked(out, out, colour.astype(np.float32), alpha, y0, x0)
            return
        base = np.ascontiguousarray(out[y0:y1, x0:x1])
        cloned = cv2.seamlessClone(src8, base, m8, (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)
        composite.blend_masked(out, out, cloned.astype(np.float32), alpha, y0, x0)
