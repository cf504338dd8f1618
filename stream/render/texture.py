"""Face texture from a source photo for the 3DMM face swap: per-vertex colours and, for grid meshes, a UV image.

Occluded, grazing and out-of-image parts are not trusted: they are filled from the left-right mirror (grid meshes:
column c <-> cols-1-c), then by diffusion along mesh edges from trusted neighbours, then by the mean colour. Given the
source's 68 landmarks, its eyes and inner mouth are treated the same way, so that a swapped face shows the target's
own eyes and mouth (cut out of the swap mask) over neutral skin, never the source's open eyes or teeth.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np

from model.render.mesh import grid_mirror, grid_uv, mesh_edges, vertex_normals
from model.render.raster import RasterBuffers, rasterize

LEFT_EYE = slice(42, 48)
RIGHT_EYE = slice(36, 42)
INNER_MOUTH = slice(60, 68)


@dataclass
class FaceTexture:
    """Colours of a source face on a mesh topology.

    colors (V, 3) float32 BGR 0..255 (every vertex, filled); valid (V,) bool: seen in the source (not filled);
    mean_color (3,) float32 mean of the valid colours (skin); region (V,) float32 0..1 or None: the face interior
    (see :func:`face_region`); image (T, T, 3) float32 BGR UV texture or None, image_lab the same in float Lab
    (L 0..100), image_valid (T, T) bool, and uv (V, 2) float32 texel coordinates of the vertices (grid meshes only).
    """

    colors: np.ndarray
    valid: np.ndarray
    mean_color: np.ndarray
    region: np.ndarray | None = None
    image: np.ndarray | None = None
    image_lab: np.ndarray | None = None
    image_valid: np.ndarray | None = None
    uv: np.ndarray | None = None


def _inside_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of points (N, 2) against a polygon (K, 2) -> (N,) bool."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xi)).sum(1) % 2 == 1


def face_region(dense_reference: np.ndarray, landmark_reference: np.ndarray, forehead: float = 0.3) -> np.ndarray:
    """Per-vertex weight (V,) float32, 1 inside the face outline, 0 outside (ears, neck, hair border of the mesh).

    dense_reference (V, 3) and landmark_reference (68, 3) in one model space with y up (``morph.dense_basis.u`` and
    ``morph.sparse.u``). The outline is the jaw (0-16) and the brows (26-17) raised by ``forehead`` x the
    brow-to-chin height.
    """
    lm = np.asarray(landmark_reference, np.float64)[:, :2]
    up = forehead * (lm[17:27, 1].mean() - lm[8, 1])
    brows = lm[26:16:-1].copy()
    brows[:, 1] += up
    poly = np.concatenate([lm[0:17], brows])
    return _inside_polygon(np.asarray(dense_reference, np.float64)[:, :2], poly).astype(np.float32)


def feature_polygons(landmarks: np.ndarray, eye_scale: float = 1.6, mouth_scale: float = 1.15) -> list[np.ndarray]:
    """Eye and inner-mouth polygons (K, 2) float64 from 68 landmarks (frame px), grown around their centres.

    The eyes are ellipses through the eye corners, as tall as 0.55 x their width whatever the lids do, so a blink
    still falls inside; the mouth is the inner-lip polygon (empty when the lips are closed).
    """
    lm = np.asarray(landmarks, np.float64)[:, :2]
    polys = []
    for sl in (RIGHT_EYE, LEFT_EYE):
        eye = lm[sl]
        a, b = eye[0], eye[3]
        c = (a + b) / 2
        d = b - a
        half_w = np.hypot(*d) / 2 * eye_scale
        ang = np.arctan2(d[1], d[0])
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        ex, ey = half_w * np.cos(t), 0.55 * half_w * np.sin(t)
        polys.append(np.stack([c[0] + ex * np.cos(ang) - ey * np.sin(ang), c[1] + ex * np.sin(ang) + ey * np.cos(ang)],
                              1))
    mouth = lm[INNER_MOUTH]
    polys.append(mouth.mean(0) + (mouth - mouth.mean(0)) * mouth_scale)
    return polys


@nb.njit(cache=True, nogil=True)
def _diffuse_fill(colors, known, edges, iters):
    """Give unknown vertices the mean of their known neighbours, ring by ring; returns the final known mask."""
    V = colors.shape[0]
    C = colors.shape[1]
    acc = np.zeros((V, C), np.float64)
    cnt = np.zeros(V, np.int64)
    known = known.copy()
    for _ in range(iters):
        acc[:] = 0.0
        cnt[:] = 0
        for e in range(edges.shape[0]):
            a = edges[e, 0]
            b = edges[e, 1]
            if known[a] and not known[b]:
                for c in range(C):
                    acc[b, c] += colors[a, c]
                cnt[b] += 1
            elif known[b] and not known[a]:
                for c in range(C):
                    acc[a, c] += colors[b, c]
                cnt[a] += 1
        changed = False
        for v in range(V):
            if cnt[v] > 0:
                for c in range(C):
                    colors[v, c] = acc[v, c] / cnt[v]
                known[v] = True
                changed = True
        if not changed:
            break
    return known


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of img at float pixel coordinates (integer = pixel centre) -> (..., C) float32."""
    out = cv2.remap(img, np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.astype(np.float32).reshape(*x.shape, -1)


def _visible(verts: np.ndarray, depth: np.ndarray, tol: float) -> np.ndarray:
    """Points (N, 3) that are in the image and not behind ``depth`` by more than ``tol``.

    ``depth`` is the z-buffer dilated by 3x3 (max): a vertex on the right or bottom outline samples a pixel that the
    top-left rule leaves empty, so the nearest surface around it is what counts.
    """
    h, w = depth.shape
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    ok = np.isfinite(verts).all(1) & (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    px = np.clip(np.round(np.nan_to_num(x)), 0, w - 1).astype(np.intp)
    py = np.clip(np.round(np.nan_to_num(y)), 0, h - 1).astype(np.intp)
    return ok & (z >= depth[py, px] - tol)


def build_texture(src_image: np.ndarray, src_vertices: np.ndarray, tri: np.ndarray,
                  grid_shape: tuple[int, int] | None = None, *, landmarks: np.ndarray | None = None,
                  region: np.ndarray | None = None, mirror: np.ndarray | None = None, texture_size: int = 256,
                  min_facing: float = 0.25, depth_tol: float | None = None,
                  buffers: RasterBuffers | None = None) -> FaceTexture:
    """Sample a source face's colours onto its mesh.

    src_image (H, W, 3) uint8 BGR; src_vertices (V, 3) float32 frame px of the fitted source face; tri (F, 3) int32.
    A vertex is trusted when inside the image, not hidden (z-buffer test within ``depth_tol`` px, default 2% of the
    face size) and facing the camera (normal z >= ``min_facing``), and not inside the source's eyes or mouth (when
    its ``landmarks`` (68, 2|3) are given). Untrusted vertices are filled from ``mirror`` (V,) (default: the grid's
    left-right mirror when ``grid_shape`` is given), then from neighbours, then with the mean colour. With a
    ``grid_shape`` a ``texture_size``^2 UV image is also built the same way, for full-resolution swaps.
    ``region`` (V,) float32 (see :func:`face_region`) is stored for the swap mask.
    """
    img = np.ascontiguousarray(src_image)
    verts = np.ascontiguousarray(src_vertices, np.float32)
    tris = np.ascontiguousarray(tri, np.int32)
    h, w = img.shape[:2]
    n_v = verts.shape[0]
    finite = np.isfinite(verts).all(1)
    size = float(np.ptp(verts[finite, 0]) + np.ptp(verts[finite, 1])) / 2 if finite.any() else 1.0
    tol = 0.02 * size if depth_tol is None else float(depth_tol)

    buf = rasterize(verts, tris, None, h, w, buffers=buffers)
    depth = cv2.dilate(buf.depth, np.ones((3, 3), np.uint8))
    normals = vertex_normals(verts, tris)
    valid = _visible(verts, depth, tol) & (normals[:, 2] >= min_facing)
    holes = [p for p in feature_polygons(landmarks)] if landmarks is not None else []
    for poly in holes:
        if len(poly) >= 3:
            valid &= ~_inside_polygon(verts[:, :2].astype(np.float64), poly)
    colors = _sample(img, verts[:, 0:1], verts[:, 1:2]).reshape(n_v, -1)[:, :3].copy()

    if mirror is None and grid_shape is not None:
        mirror = grid_mirror(grid_shape)
    filled = _fill(colors, valid, mirror, tris)
    mean = colors[valid].mean(0) if valid.any() else np.full(3, 128.0, np.float32)
    tex = FaceTexture(filled, valid, mean.astype(np.float32),
                      None if region is None else np.asarray(region, np.float32))

    if grid_shape is not None:
        rows, cols = grid_shape
        t = int(texture_size)
        gr, gc = np.meshgrid(np.arange(t) * ((rows - 1) / (t - 1)), np.arange(t) * ((cols - 1) / (t - 1)),
                             indexing="ij")
        gc32, gr32 = gc.astype(np.float32), gr.astype(np.float32)

        def up(a: np.ndarray) -> np.ndarray:  # per-vertex values (V, C) -> texel values (t, t, C), bilinear
            a = np.ascontiguousarray(a.reshape(rows, cols, -1), np.float32)
            return cv2.remap(a, gc32, gr32, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(t, t, -1)

        tv = up(np.where(finite[:, None], verts, 0)).reshape(-1, 3)
        ok = (up(valid.astype(np.float32)).reshape(-1) > 0.999) & _visible(tv, depth, tol)
        for poly in holes:
            if len(poly) >= 3:
                ok &= ~_inside_polygon(tv[:, :2].astype(np.float64), poly)
        image = _sample(img, tv[:, 0].reshape(t, t), tv[:, 1].reshape(t, t))[..., :3]
        ok = ok.reshape(t, t)
        fill = up(filled)
        mirrored = image[:, ::-1]
        ok_m = ok[:, ::-1]
        image = np.where(ok[..., None], image, np.where(ok_m[..., None], mirrored, fill))
        tex.image = np.ascontiguousarray(image, np.float32)
        tex.image_lab = cv2.cvtColor(np.clip(tex.image, 0, 255) * (1 / 255.0), cv2.COLOR_BGR2Lab)
        tex.image_valid = ok
        tex.uv = grid_uv(grid_shape, t)
    return tex


def _fill(colors: np.ndarray, valid: np.ndarray, mirror: np.ndarray | None, tri: np.ndarray) -> np.ndarray:
    """Colours (V, 3) with untrusted vertices filled: mirror, then neighbour diffusion, then the mean."""
    out = colors.copy()
    known = valid.copy()
    if mirror is not None:
        mirror = np.asarray(mirror, np.intp)
        take = ~known & known[mirror]
        out[take] = colors[mirror[take]]
        known |= take
    if not known.all() and known.any():
        known = _diffuse_fill(out, known, mesh_edges(tri), 256)
    if not known.all():
        out[~known] = colors[valid].mean(0) if valid.any() else 128.0
    return out.astype(np.float32)
