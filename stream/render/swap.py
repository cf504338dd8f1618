"""3DMM face swap: render a source texture with each target's geometry and blend it into the frame.

Per frame: all targets are rasterized into one z-buffer (so faces occlude each other), then per target, inside its
box only: texture lookup, alpha, colour transfer (mean/std in Lab over the mask), an optional low-frequency lighting
ratio from the target, and a blend. Alpha is the product of smooth ramps: along the face's contour from the per-vertex
UV distance to the mesh boundary (interpolated by the rasterizer, so no staircase from the mask's pixels), from the
rendered silhouette (distance transform, where the face turns away or another face covers it), and around the
target's own eyes, brows and inner mouth (its landmarks' polygons, alpha exactly 0 inside: they always show through,
at every degree of opening). Every pixel outside the rendered faces and inside those polygons keeps its exact value.

Blends, per face of 253 px on a 640x480 frame, 2 shared x86_64 cores (``bench/bench_render.py``, whole swap):
``alpha`` 3.1 ms (feathered alpha: the fastest, but where the mask edge crosses hair, e.g. a fringe on the forehead,
the edge stays visible), ``pyramid`` 4.1 ms (Laplacian pyramid, 3 levels: that edge becomes a soft gradient),
``seamless`` 13.5 ms (``cv2.seamlessClone``, Poisson: the most natural border, slightly flatter face tone, but 4x the
cost of pyramid and 30+ ms per face when the cores are busy). Default: ``pyramid``, the best look within the budget
for several faces per frame.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from stream.render import composite
from model.raster.zbuffer import RasterBuffers, rasterize
from stream.render.texture import (FaceTexture, brow_polygons, build_texture, face_region,  # noqa: F401 (API)
                                   feature_polygons)

BLENDS = ("alpha", "pyramid", "seamless")
EDGE_FEATHER = 0.12  # UV units (about a fraction of the face width) of the feather along the face's contour
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


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (3,) of an image over a uint8 mask."""
    mean, std = cv2.meanStdDev(lab, mask=mask)
    return mean.reshape(3).astype(np.float32), std.reshape(3).astype(np.float32) + 1e-3


def _pyramid_blend(a: np.ndarray, b: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend of float32 images a (weight alpha) and b (weight 1 - alpha)."""
    ga, gb, gm = [a], [b], [alpha]
    for _ in range(levels):
        ga.append(cv2.pyrDown(ga[-1]))
        gb.append(cv2.pyrDown(gb[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = ga[-1] * gm[-1][..., None] + gb[-1] * (1 - gm[-1][..., None])
    for i in range(levels - 1, -1, -1):
        size = (ga[i].shape[1], ga[i].shape[0])
        la = ga[i] - cv2.pyrUp(ga[i + 1], dstsize=size)
        lb = gb[i] - cv2.pyrUp(gb[i + 1], dstsize=size)
        out = cv2.pyrUp(out, dstsize=size) + la * gm[i][..., None] + lb * (1 - gm[i][..., None])
    return out


def swap_faces(frame: np.ndarray, targets: Sequence[np.ndarray], tri: np.ndarray, texture: FaceTexture, *,
               landmarks: Sequence[np.ndarray] | None = None, out: np.ndarray | None = None,
               buffers: RasterBuffers | None = None, blend: str = "pyramid", color_match: bool = True,
               relight: bool = True, erode: float = 0.03, feather: float = 0.03,
               keep_features: bool = True, color_states: Sequence[dict] | None = None,
               color_smoothing: float = 0.8) -> np.ndarray:
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
    for i, v in enumerate(targets):
        v = np.ascontiguousarray(v, np.float32)
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
                  relight, erode, feather, state, color_smoothing)
    return out


def _swap_one(out: np.ndarray, frame: np.ndarray, buf: RasterBuffers, texture: FaceTexture, id0: int, id1: int,
              box: tuple[int, int, int, int], landmarks: np.ndarray | None, blend: str, color_match: bool,
              relight: bool, erode: float, feather: float, state: dict | None = None,
              smoothing: float = 0.8) -> None:
    y0, y1, x0, x1 = box
    ids = buf.tri_id[y0:y1, x0:x1]
    attr = buf.attr[y0:y1, x0:x1]
    face = (ids >= id0) & (ids < id1) & (attr[..., -2] > 0.5)
    if not face.any():
        return
    size = float(np.sqrt((y1 - y0) * (x1 - x0)))
    e = erode * size
    f = max(1.0, feather * size)
    # alpha: a smooth ramp from the face's own contour (the per-vertex UV distance from the mesh boundary,
    # interpolated: no pixel staircase), times one ramp from the nearest of the rendered silhouette (where the face
    # turns away or another face covers it) and the target's eyes, brows and inner mouth (their polygons, from its
    # landmarks): a distance transform, 0 on and inside them
    keep = face.astype(np.uint8)
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64)[:, :2] - (x0, y0)
        if texture.region is None and texture.edge is None:  # no face region: limit to the target's outline
            outline = np.zeros_like(keep)
            cv2.fillPoly(outline, [np.round(outline_polygon(lm) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
            keep &= outline
        polys = [np.round(p * 16).astype(np.int32) for p in feature_polygons(lm) + brow_polygons(lm)]
        cv2.fillPoly(keep, polys, 0, cv2.LINE_8, shift=4)
    dist = cv2.distanceTransform(cv2.copyMakeBorder(keep, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0), cv2.DIST_L2,
                                 3)[1:-1, 1:-1]
    alpha = np.clip((dist - 0.25 * e) * (1.0 / f), 0.0, 1.0)
    if texture.edge is not None:
        alpha = np.minimum(alpha, np.clip(attr[..., -1] * (1.0 / EDGE_FEATHER), 0.0, 1.0))
    alpha = alpha * alpha * (3 - 2 * alpha)  # smoothstep: no kink where the ramp starts or ends
    alpha *= face
    alpha = alpha.astype(np.float32)
    mask = (alpha > 0.5).astype(np.uint8)
    inner = mask > 0
    if not inner.any():
        return
    f = int(round(f))

    # source colour, in Lab straight from the texture (converted once in build_texture)
    if texture.image is not None:
        src_lab = cv2.remap(texture.image_lab, np.ascontiguousarray(attr[..., 0]), np.ascontiguousarray(attr[..., 1]),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        src_lab = cv2.cvtColor(np.clip(attr[..., :3], 0, 255) * (1 / 255.0), cv2.COLOR_BGR2Lab)
    if color_match or relight:
        # target in 8-bit Lab (L * 255/100, a + 128, b + 128): converted back to float Lab units below
        tgt = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_BGR2Lab)
        if color_match:
            ms, ss = _lab_stats(src_lab, mask)
            mt, st = _lab_stats(tgt, mask)
            mt = (mt - _LAB8_OFFSET) / _LAB8_SCALE
            st = st / _LAB8_SCALE
            if state is not None:  # temporal average of the target's statistics (no flicker)
                if "mt" in state:
                    mt = smoothing * state["mt"] + (1 - smoothing) * mt
                    st = smoothing * state["st"] + (1 - smoothing) * st
                state["mt"], state["st"] = mt, st
            gain = np.clip(st / ss, 0.5, 2.0).astype(np.float32)
            src_lab = cv2.multiply(cv2.subtract(src_lab, tuple(float(v) for v in ms) + (0.0,)),
                                   tuple(float(v) for v in gain) + (1.0,))
            src_lab = cv2.add(src_lab, tuple(float(v) for v in mt) + (0.0,))
        if relight:
            k = max(3, int(size / 6) | 1)
            wgt = cv2.blur(inner.astype(np.float32), (k, k)) + 1e-4
            l_t = tgt[..., 0].astype(np.float32) * (1 / _LAB8_SCALE[0])
            low_t = cv2.blur(l_t * inner, (k, k)) / wgt
            low_s = cv2.blur(src_lab[..., 0] * inner, (k, k)) / wgt
            ratio = np.clip((low_t + 1.0) / (low_s + 1.0), 0.6, 1.6)
            src_lab[..., 0] *= ratio
    colour = cv2.cvtColor(src_lab, cv2.COLOR_Lab2BGR)
    colour *= 255.0

    if blend == "alpha":
        composite.blend_masked(out, out, colour.astype(np.float32, copy=False), alpha, y0, x0)
    elif blend == "pyramid":
        base = out[y0:y1, x0:x1].astype(np.float32)
        levels = max(1, min(4, int(np.log2(max(2 * f, 2)))))
        mixed = _pyramid_blend(colour.astype(np.float32), base, alpha, levels)
        composite.blend_masked(out, out, mixed, (alpha > 0).astype(np.float32), y0, x0)
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
