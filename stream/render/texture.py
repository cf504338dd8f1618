"""Face texture from a source photo for the 3DMM face swap: a UV image of the source's face (and per-vertex colours).

The mesh is rasterized in UV space (``MorphableModel.uv``) and each texel samples the source photo once, at a size
that follows the source face. Hidden, grazing and out-of-image texels, the inner eyes and inner mouth (from the
source's landmarks) are never trusted. ``features=True`` (the full swap) trusts the source's own brows, lids,
lashes, nose, lips and facial hair (colour near the skin's in their landmark zones) and leaves out what occludes
them: non-skin regions that reach far outside those zones (a fringe, strands on the brows, glasses frames), long
thin dark structures running down the forehead and cheeks, the sclera past the lid landmarks; a turned source's
highlights and far side (its mirror is seen better). ``features=False`` trusts the skin only, as the swap that kept
the target's eyes and brows did: whatever fails a skin-colour model fitted to the source's cheeks and nose (hair,
fringe, glasses, hands, background, brows) and the source's specular highlights (bright, pale spots over the
trusted skin: the photo's light, not its skin). Untrusted texels take the mirrored texel (u -> 1 - u) when that
one is trusted (its detail over the local skin tone), else the low-frequency colour of the trusted texels, plus a
smooth offset that meets the trusted texels at the fill's border (no seam); the inner mouth gets the lip colour, so
a source's teeth never reach the texture. Meshes without UVs get per-vertex colours (mirror, then diffusion along
mesh edges, then the mean).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np

from model.face_mesh import inside_polygon
from model.raster.mesh import mesh_edges, vertex_normals
from model.raster.zbuffer import RasterBuffers, rasterize

BLACKHAT_L = 9.0  # L units (0..100): a thin structure this much darker than its surroundings is not skin
TOPHAT_L = 9.0  # L units: a spot this much brighter than its surroundings and paler than the skin is a highlight
LEFT_EYE = slice(42, 48)
RIGHT_EYE = slice(36, 42)
INNER_MOUTH = slice(60, 68)
# the source's inner eye left out of the texture (:func:`eye_polygons`): along the eye, toward the upper lid, toward the
# lower lid (the fitted lower lid often runs above the real one); the swap lays this opening into the target's, so
# the source's lids and lashes close when it blinks
EYE_HOLE_SCALE = (1.1, 1.15, 1.5)
LONG_THIN = 0.12  # a thin dark structure outside the features this long (x the texture side) is a strand or a frame
MIDDLE = 0.08  # the middle of the face (nose, bridge), +- this share of the texture's width about its centre
HIGHLIGHT_KEEP = 4.0  # L units: the full swap keeps this much of a source's highlight over its surroundings
HIGHLIGHT_AROUND = 0.02  # ... measured against the texels around it (Gaussian sigma, x the texture side) not taken down
EYE_REACH = 0.25  # full swap: the vertices within this many eye widths of the source's left-out eye follow the target's
FORESHORTENED = 0.7  # full swap: a texel facing the camera less than this (normal z) ...
FACING_GAIN = 0.25  # ... takes its mirror when that one faces it this much more (and is trusted)
HAIR_SHARE = 0.25  # a non-skin region with this share of its texels outside the feature zones is an occluder
# ... where skin in shadow (the skin's chroma, at most SHADED_DARK L units under its median) does not count as
# non-skin: a face lit from one side has a dark cheek and temple that would join its brow and eye make-up to the
# hair beyond the temple, and the brow and lids of that side went as an occluder (bench/RESULTS.md, "Shaded skin
# is not an occluder")
SHADED_CHROMA = 3.5
SHADED_DARK = 30.0
BROW_ZONE = 1.15  # the source's brows: the band of :func:`_grown` around landmarks 17-21 / 22-26, scaled


@dataclass
class FaceTexture:
    """Colours of a source face on a mesh topology.

    colors (V, 3) float32 BGR 0..255 (every vertex, filled); valid (V,) bool: seen in the source (not filled);
    mean_color (3,) float32 mean of the valid colours (skin); region (V,) float32 0..1 or None: the face interior
    (see :func:`face_region`); image (T, T, 3) float32 BGR UV texture or None, image_lab the same in float Lab
    (L 0..100), image_valid (T, T) bool (trusted skin), uv (V, 2) float32 texel coordinates of the vertices and edge
    (V,) float32 their UV distance from the mesh's outer boundary (meshes with UVs only).
    """

    colors: np.ndarray
    valid: np.ndarray
    mean_color: np.ndarray
    region: np.ndarray | None = None
    image: np.ndarray | None = None
    image_lab: np.ndarray | None = None
    image_valid: np.ndarray | None = None
    uv: np.ndarray | None = None
    edge: np.ndarray | None = None  # (V,) float32 distance from the mesh's outer boundary in UV units (the feather)
    # full swap: per eye (right, left), the vertices in and around the source's left-out inner eye and their eye
    # coordinates (index (K,), (s, t, e) (K, 3); :func:`eye_coordinates`): the swap lays them into the target's eye
    # (a blinking target closes the source's lids over the left-out part)
    eye_vertices: list | None = None
    # full swap: the source's own eyes (12, 2) float32 source px (landmarks 36-47): the swap shows their outline
    eye_landmarks: np.ndarray | None = None
    # the source's 3DMM shape coefficients (40,) float32 when known (``stream.assemble.fit_swap_texture``): the full
    # swap renders the source's shape on the target's pose and expression (``stream.render.swap_shape``)
    shape: np.ndarray | None = None


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
    return inside_polygon(np.asarray(dense_reference, np.float64)[:, :2], poly).astype(np.float32)


def feature_polygons(landmarks: np.ndarray, eye_scale: float = 1.6, mouth_scale: float = 1.15) -> list[np.ndarray]:
    """Eye and inner-mouth polygons (K, 2) float64 from 68 landmarks (frame px), grown around their centres.

    The eyes are ellipses through the eye corners, as tall as 0.55 x their width whatever the lids do, so a blink
    still falls inside; the mouth is the inner-lip polygon (empty when the lips are closed).
    """
    lm = np.asarray(landmarks, np.float64)[:, :2]
    polys = []
    for sl in (RIGHT_EYE, LEFT_EYE):
        a, b = lm[sl.start], lm[sl.start + 3]
        dx, dy = (b - a).tolist()
        half_w = 0.5 * math.hypot(dx, dy) * eye_scale
        ang = math.atan2(dy, dx)
        ca, sa = math.cos(ang), math.sin(ang)
        ex, ey = half_w * _CIRCLE20[0], 0.55 * half_w * _CIRCLE20[1]
        poly = np.empty((20, 2))
        poly[:, 0] = 0.5 * (a[0] + b[0]) + ex * ca - ey * sa
        poly[:, 1] = 0.5 * (a[1] + b[1]) + ex * sa + ey * ca
        polys.append(poly)
    polys.append(inner_mouth_polygon(lm, mouth_scale))
    return polys


_CIRCLE20 = (np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
             np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False)))


def eye_polygons(landmarks: np.ndarray, scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 eyes: tuple[int, ...] = (0, 1)) -> list[np.ndarray]:
    """The inner eyes (iris and sclera) as polygons (26, 2) float64 frame px from the lid landmarks 36-41 and 42-47:
    the lid curves (:func:`_closed_spline`) moved apart about the eye's middle line, ``scale`` = (along the
    eye's corner-to-corner axis, the upper lid's side, the lower lid's side) times the half opening; 1 = the
    curves themselves. The region |t| <= 1 of :func:`eye_coordinates` with the same scales. A closed eye's
    polygon has no area. ``eyes``: which (0 = right, 36-41; 1 = left, 42-47)."""
    lm = np.asarray(landmarks, np.float64)
    return [eye_polygon(lm[(RIGHT_EYE, LEFT_EYE)[k], :2], scale) for k in eyes]


def eye_polygon(eye: np.ndarray, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """One eye's :func:`eye_polygons` (26, 2) float64 px from its 6 landmarks (6, 2) px."""
    along, up, down = scale
    ste = _POLYGON_STE.get(along)
    if ste is None:
        s = 0.5 + (_GRID13 - 0.5) * along
        ste = np.zeros((26, 3))
        ste[:13, 0], ste[13:, 0] = s, s[::-1]
        ste[:13, 1], ste[13:, 1] = -1.0, 1.0
        if len(_POLYGON_STE) < 16:
            _POLYGON_STE[along] = ste
    return eye_positions(ste, eye, up, down)


_POLYGON_STE: dict[float, np.ndarray] = {}  # (s, t, e) of the polygon's 26 points, per scale along the eye


def _catmull_rom_matrix(k: int, per_segment: int) -> np.ndarray:
    """(k * per_segment, k) weights: a closed Catmull-Rom curve through k points, ``per_segment`` samples a span."""
    t = np.arange(per_segment) / per_segment
    w = np.stack([-t + 2 * t ** 2 - t ** 3, 2 - 5 * t ** 2 + 3 * t ** 3, t + 4 * t ** 2 - 3 * t ** 3,
                  -t ** 2 + t ** 3], 1) / 2  # weights of p[i-1], p[i], p[i+1], p[i+2]
    m = np.zeros((k * per_segment, k))
    for i in range(k):
        for j, off in enumerate((-1, 0, 1, 2)):
            m[i * per_segment:(i + 1) * per_segment, (i + off) % k] += w[:, j]
    return m


_SPLINE6 = _catmull_rom_matrix(6, 4)
_GRID13 = np.linspace(0.0, 1.0, 13)


def _closed_spline(pts: np.ndarray) -> np.ndarray:
    """A closed Catmull-Rom curve (24, 2) through 6 points (6, 2): the lids bulge between the landmarks as they do
    on a face (the hexagon of the 6 eye points cuts the eye's corners of the iris off)."""
    return _SPLINE6 @ np.asarray(pts, np.float64)


def inner_mouth_polygon(landmarks: np.ndarray, scale: float = 1.15) -> np.ndarray:
    """The inner-lip polygon (8, 2) float64 (landmarks 60-67, frame px) grown by ``scale`` about its centre (the
    third of :func:`feature_polygons`)."""
    mouth = np.asarray(landmarks, np.float64)[INNER_MOUTH, :2]
    return mouth.mean(0) + (mouth - mouth.mean(0)) * scale


def brow_polygons(landmarks: np.ndarray, scale: float = 1.25) -> list[np.ndarray]:
    """The two brows as bands (K, 2) float64 around landmarks 17-21 and 22-26 (frame px): the swap keeps the
    target's own brows (they follow its expression), so the texture never needs the source's (which hair often
    covers)."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    return [_grown(lm[17:22], scale), _grown(lm[22:27], scale)]


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


def auto_texture_size(face_px: float, lo: int = 256, hi: int = 1024) -> int:
    """UV image side for a source face ``face_px`` pixels across: about one texel per source pixel, a multiple of
    32 within [lo, hi] (a large source face keeps its detail; a small one is not upsampled past 256)."""
    return int(np.clip(32 * round(1.15 * face_px / 32), lo, hi))


def skin_model(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust skin colour model from Lab samples (N, 3) float (L 0..100) of a central face region: median L,
    its robust spread, and the (a, b) mean (2,) with inverse covariance (2, 2) of the inliers."""
    lab = np.asarray(lab, np.float64)
    med = np.median(lab, 0)
    mad = np.median(np.abs(lab - med), 0) * 1.4826 + 1e-3
    inl = (np.abs(lab - med) < 2.5 * mad).all(1)
    if inl.sum() < 10:
        inl = np.ones(len(lab), bool)
    ab = lab[inl, 1:]
    mu = ab.mean(0)
    cov = np.cov(ab.T) + np.eye(2) * 4.0  # at least 2 units of chroma spread: flat-lit skin is not a point
    l_med = float(np.median(lab[inl, 0]))
    l_sd = float(max(np.std(lab[inl, 0]), 4.0))
    return np.array([l_med, l_sd]), mu, np.linalg.inv(cov)


def skin_test(lab: np.ndarray, model: tuple, chroma: float = 3.5, dark: float = 3.0, dark_min: float = 20.0,
              bright: float = 45.0) -> np.ndarray:
    """(...) bool: Lab pixels (..., 3) that fit the skin ``model``: chroma within ``chroma`` Mahalanobis units, L no
    more than max(``dark`` sd, ``dark_min``) below the median (hair, shadows of glasses) nor ``bright`` above."""
    (l_med, l_sd), mu, icov = model
    d = lab[..., 1:] - mu
    m2 = np.einsum("...i,ij,...j->...", d, icov, d)
    l = lab[..., 0]
    return (m2 < chroma ** 2) & (l > l_med - max(dark * l_sd, dark_min)) & (l < l_med + bright)


def _smooth_fill(img: np.ndarray, weight: np.ndarray, coarse: int = 32) -> np.ndarray:
    """Low-frequency image (t, t, C) defined everywhere: push-pull of the ``weight``-normalised ``img`` over a
    Gaussian pyramid (down to 4 texels), kept from the level about ``coarse`` texels wide and upsampled smoothly
    from there. Untrusted texels (weight 0) get the colour of the trusted ones around them, never their own; a
    trusted texel gets its neighbourhood's tone, without its own detail."""
    iw, w = [img * weight[..., None]], [weight.astype(np.float32)]
    while iw[-1].shape[0] > 4:
        iw.append(cv2.pyrDown(iw[-1]))
        w.append(cv2.pyrDown(w[-1]))
    total = float(w[-1].sum())
    mean = iw[-1].reshape(-1, img.shape[2]).sum(0) / total if total > 0 else np.full(img.shape[2], 128.0)
    est = np.where(w[-1][..., None] > 1e-4, iw[-1] / np.maximum(w[-1], 1e-4)[..., None], mean).astype(np.float32)
    for level in range(len(iw) - 2, -1, -1):
        size = (iw[level].shape[1], iw[level].shape[0])
        est = cv2.pyrUp(est, dstsize=size)
        if iw[level].shape[0] <= coarse:  # coarse levels take the trusted colour where there is some
            a = np.clip(w[level] * 2, 0, 1)[..., None]
            est = a * (iw[level] / np.maximum(w[level], 1e-4)[..., None]) + (1 - a) * est
    return est.astype(np.float32)


def _polygon_mask(shape: tuple[int, int], polys: list[np.ndarray]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for p in polys:
        if len(p) >= 3:
            cv2.fillPoly(m, [np.round(np.asarray(p) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return m > 0


def build_texture(src_image: np.ndarray, src_vertices: np.ndarray, tri: np.ndarray,
                  grid_shape: tuple[int, int] | None = None, *, landmarks: np.ndarray | None = None,
                  region: np.ndarray | None = None, mirror: np.ndarray | None = None, uv: np.ndarray | None = None,
                  texture_size: int | None = None, min_facing: float = 0.3, depth_tol: float | None = None,
                  skin: bool = True, features: bool = True, buffers: RasterBuffers | None = None) -> FaceTexture:
    """Sample a source face's skin onto its mesh.

    src_image (H, W, 3) uint8 BGR; src_vertices (V, 3) float32 frame px of the fitted source face; tri (F, 3) int32.
    With ``uv`` (V, 2) in [0, 1] (``MorphableModel.uv``; or, with a ``grid_shape``, the grid's own normalised
    positions) a UV image is built: the mesh is rasterized in UV space and every texel samples the source once,
    at full resolution (``texture_size`` None: :func:`auto_texture_size` of the source face). A texel is trusted
    when it is in the image, not hidden (z-buffer within ``depth_tol`` px, default 2% of the face size), facing
    the camera (interpolated normal z >= ``min_facing``: grazing samples are smeared), outside the source's eyes
    and inner mouth (given its ``landmarks`` (68, 2|3)), and skin: ``skin_test`` against a colour model fitted to
    the source's cheeks and nose (hair, fringe, glasses, hands, background and the brows fail it; lips are kept;
    the swap shows the target's own brows), and not a specular highlight (``TOPHAT_L`` brighter than the trusted
    skin around it and less red or less saturated than the skin: on a turned source the nose ridge, which the far
    flank also projects onto). With ``features`` (the full swap) the source's brows, lids and facial hair are
    trusted in their zones, and a turned source's highlights, the nose ridge's included, are taken down to
    ``HIGHLIGHT_KEEP`` over the skin around them instead of left out (its nose stays its own).
    Untrusted texels take the mirrored texel (u -> 1 - u) when that one is trusted, with its detail over the local
    low-frequency skin tone, else the low-frequency skin colour (``_smooth_fill`` of trusted texels only); the
    source's inner mouth is filled with its lip colour. Per-vertex ``colors`` are read from that image. Without
    uv, per-vertex colours only (mirror ``mirror`` (V,), neighbours, mean), as for any mesh.
    ``region`` (V,) float32 (see :func:`face_region`) is stored for the swap mask.
    """
    img = np.ascontiguousarray(src_image)
    verts = np.ascontiguousarray(src_vertices, np.float32)
    tris = np.ascontiguousarray(tri, np.int32)
    h, w = img.shape[:2]
    n_v = verts.shape[0]
    finite = np.isfinite(verts).all(1)
    used = np.zeros(n_v, bool)
    used[tris.ravel()] = True
    fv = finite & used
    size = float(np.ptp(verts[fv, 0]) + np.ptp(verts[fv, 1])) / 2 if fv.any() else 1.0
    tol = 0.02 * size if depth_tol is None else float(depth_tol)

    buf = rasterize(verts, tris, None, h, w, buffers=buffers)
    depth = cv2.dilate(buf.depth, np.ones((3, 3), np.uint8))
    normals = vertex_normals(verts, tris)
    valid = _visible(verts, depth, tol) & (normals[:, 2] >= min_facing)
    if landmarks is None:
        holes = []
    elif features:  # the inner eyes only: lids, lashes and brows are the source's
        holes = eye_polygons(landmarks, EYE_HOLE_SCALE) + [inner_mouth_polygon(landmarks)]
    else:
        holes = feature_polygons(landmarks)
    for poly in holes:
        if len(poly) >= 3:
            valid &= ~inside_polygon(verts[:, :2].astype(np.float64), poly)
    if uv is None and grid_shape is not None:
        rows, cols = grid_shape
        r, c = np.divmod(np.arange(rows * cols), cols)
        uv = np.stack([c / (cols - 1), r / (rows - 1)], 1).astype(np.float32)
    if uv is None:
        colors = _sample(img, verts[:, 0:1], verts[:, 1:2]).reshape(n_v, -1)[:, :3].copy()
        filled = _fill(colors, valid, mirror, tris)
        mean = colors[valid].mean(0) if valid.any() else np.full(3, 128.0, np.float32)
        return FaceTexture(filled, valid, mean.astype(np.float32),
                           None if region is None else np.asarray(region, np.float32))

    t = auto_texture_size(max(np.ptp(verts[fv, 0]), np.ptp(verts[fv, 1])) if fv.any() else 256) \
        if texture_size is None else int(texture_size)
    uvp = np.asarray(uv, np.float32) * (t - 1)
    attrs = np.concatenate([np.where(finite[:, None], verts, 0), normals[:, 2:3]], 1).astype(np.float32)
    ubuf = rasterize(np.concatenate([uvp, np.zeros((n_v, 1), np.float32)], 1), tris, attrs, t, t)
    covered = ubuf.tri_id >= 0
    tv = ubuf.attr[..., :3].reshape(-1, 3)
    ok = covered.reshape(-1) & _visible(tv, depth, tol) & (ubuf.attr[..., 3].reshape(-1) >= min_facing)
    ok = ok.reshape(t, t)
    image = _sample(img, ubuf.attr[..., 0], ubuf.attr[..., 1])[..., :3]
    lab = cv2.cvtColor(np.clip(image, 0, 255) * (1 / 255.0), cv2.COLOR_BGR2Lab)
    mouth_fill = None
    seen = ok.copy()  # what the camera sees of the face, before any test of the source's content
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64)[:, :2]
        sx, sy = ubuf.attr[..., 0].astype(np.float64), ubuf.attr[..., 1].astype(np.float64)
        pts = np.stack([sx.ravel(), sy.ravel()], 1)

        def texels_in(polys: list[np.ndarray]) -> np.ndarray:  # texels whose source point lies in the polygons
            m = _polygon_mask((h, w), polys)
            px = np.clip(np.round(pts[:, 0]), 0, w - 1).astype(np.intp)
            py = np.clip(np.round(pts[:, 1]), 0, h - 1).astype(np.intp)
            return (m[py, px] & covered.reshape(-1)).reshape(t, t)

        eyes_mouth = texels_in(holes)
        ok &= ~eyes_mouth
        inner = texels_in([holes[2]]) if len(holes) > 2 else np.zeros((t, t), bool)
        lips = texels_in([lm[48:60]]) & ~inner
        if skin:
            idx = [1, 2, 3, 31, 33, 35, 13, 14, 15, 47, 42, 39, 40]
            central = texels_in([lm[idx][_hull_order(lm[idx])]]) & ok & ~lips
            if central.sum() >= 50:
                model = skin_model(lab[central])
                is_skin = skin_test(lab, model)
                # thin dark structures (glasses frames, hair strands, brows) whatever the lighting: the black-hat
                # of L over about 4% of the face; the nostrils and lips are features, not occluders
                l_img = np.where(covered, lab[..., 0], model[0][0]).astype(np.float32)
                k = max(3, int(0.04 * t) | 1)
                bh = cv2.morphologyEx(l_img, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
                nose = texels_in([_grown(lm[31:36], 1.6)])
                skin_only = is_skin.copy()
                is_skin &= (bh < BLACKHAT_L) | nose | lips
                # specular highlights (the source's light, not its skin; on a turned face the nose ridge and the
                # near flank): brighter than the trusted skin around them over about 8% of the face, and less red
                # or less saturated than the skin (light adds white). Kept, they paste the source's light as a
                # streak wherever the target's nose is, and the mirror doubles it. The top-hat runs on trusted
                # texels only: hidden texels sample the same bright pixels (the far flank projects onto the ridge)
                # and would hide the highlight inside a wide plateau.
                k2 = max(5, int(0.08 * t) | 1)
                l_ok = np.where(ok, lab[..., 0], model[0][0]).astype(np.float32)
                th = cv2.morphologyEx(l_ok, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k2, k2)))
                mu_ab = model[1]
                pale = (lab[..., 1] < 0.6 * mu_ab[0]) | (np.hypot(lab[..., 1], lab[..., 2]) < 0.8 * np.hypot(*mu_ab))
                highlight = (th > TOPHAT_L) & pale
                is_skin &= ~highlight | lips
                loose = skin_test(lab, model, chroma=15.0, dark=99.0, dark_min=999.0, bright=999.0)
                is_skin = np.where(lips, loose, is_skin)  # lips: only gross chroma outliers go
                if features:
                    turned = _turn_weight(seen, covered)
                    shaded = skin_test(lab, model, chroma=SHADED_CHROMA, dark=0.0, dark_min=SHADED_DARK,
                                       bright=999.0)
                    is_skin, tight = _feature_trust(lm, covered & ~eyes_mouth, texels_in, skin_only, loose,
                                                    bh >= BLACKHAT_L, highlight, lips, t, shaded)
                    if turned >= 0.5:
                        # a turned source's highlights down the middle of the face (nose ridge, bridge: the far
                        # flank projects onto them and the mirror doubles them) stay in the texture, taken down with
                        # the others just below (never "tight" there). Left out, as in the skin-only texture, the
                        # nose took the smooth fill of the skin around it: a flat patch where the source's nose
                        # should be (92% of the nose's texels on a 39-degree UTKFace chip), and dlib's descriptor
                        # of the swap stayed near the target (bench/RESULTS.md, "A turned source keeps its nose")
                        middle = np.zeros((t, t), bool)
                        middle[:, int((0.5 - MIDDLE) * t):int((0.5 + MIDDLE) * t) + 1] = True
                        tight &= ~middle
                    # on a source turned part way the highlights are taken down to HIGHLIGHT_KEEP over their
                    # surroundings (and back toward the skin's chroma), in proportion; on a frontal one (both sides
                    # seen, the mirror doubles nothing) they are its own and stay
                    taken = pale & ok & ~lips & ~tight
                    excess = np.where(taken, np.maximum(th - HIGHLIGHT_KEEP, 0.0), 0.0) * turned
                    if excess.any():
                        # never below what is around it that is not taken down (a pale patch inside a bright
                        # ridge that is not pale went dark under it: a blotch on the nose)
                        around = (ok & ~(taken & (th > HIGHLIGHT_KEEP))).astype(np.float32)
                        sig = max(1.0, HIGHLIGHT_AROUND * t)
                        ref = cv2.GaussianBlur(lab[..., 0] * around, (0, 0), sig) / np.maximum(
                            cv2.GaussianBlur(around, (0, 0), sig), 1e-3)
                        excess = np.minimum(excess, np.maximum(lab[..., 0] - (ref + HIGHLIGHT_KEEP), 0.0))
                        share = (excess / np.maximum(th, 1e-3))[..., None]
                        lab[..., 0] -= excess
                        lab[..., 1:] += share * (mu_ab - lab[..., 1:])
                        image = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0
                # teeth (less red than skin, bright) and the dark interior between the lips, wherever the
                # landmarks put the inner lips: the mouth interior, filled with lip colour below
                (l_med, l_sd), mu, _ = model
                inner |= lips & (((lab[..., 1] < mu[0] - 2) & (lab[..., 0] > l_med - l_sd)) | (lab[..., 0] < l_med - 25))
                inner = cv2.morphologyEx(inner.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
                lips &= ~inner
                # hair edges and strands blend into skin over a few texels: widen what is not skin
                r = max(1, int(round(0.008 * t)))
                # (the source's own eyes and mouth are left out already: they do not grow into its lids and lips)
                rejected = ~is_skin & covered & ~eyes_mouth & ~tight if features else ~is_skin & covered
                not_skin = cv2.dilate(rejected.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8))
                ok &= not_skin == 0
        ok &= ~inner
        ok_lips = ok & lips
        if inner.any():
            mouth_fill = np.median(image[ok_lips], 0) if ok_lips.sum() >= 5 else None
            if mouth_fill is None:
                mouth_fill = np.median(image[covered & ok], 0) if (covered & ok).any() else None
            if mouth_fill is not None:
                image[inner] = mouth_fill
                ok |= inner
    if features:
        # a turned source's far side is seen at a grazing angle (foreshortened, smeared lids and brows): where its
        # mirror is seen much better and trusted, the mirror's detail is used instead
        nz = ubuf.attr[..., 3]
        ok &= ~(ok[:, ::-1] & (nz < FORESHORTENED) & (nz[:, ::-1] > nz + FACING_GAIN) & covered)
    low = _smooth_fill(image, ok.astype(np.float32))
    ok_m = ok[:, ::-1]
    mirrored = image[:, ::-1] - low[:, ::-1] + low  # the mirror's detail over the local skin tone
    fill = np.where(ok_m[..., None], mirrored, low)
    if ok.any():  # no seam where a fill meets trusted texels: a smooth offset takes the fill to them at its border
        fill = fill + _smooth_fill(image - fill, ok.astype(np.float32), coarse=t)
    image = np.where(ok[..., None], image, fill)
    if features and landmarks is not None:
        # the source's left-out inner eyes: their upper half reflects the upper lid about its edge, their lower half
        # the lower lid (lashes first, then lid skin): what shows of them as the target blinks and the lids meet is
        # the source's own lash lines, not a fill
        for poly in holes[:2]:
            image = _reflect_lids(image, texels_in([poly]), ok)
    image = np.where(covered[..., None], image, low)
    tex_image = np.ascontiguousarray(image, np.float32)
    colors = cv2.remap(tex_image, np.ascontiguousarray(uvp[:, 0:1]), np.ascontiguousarray(uvp[:, 1:2]),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(n_v, 3)
    vpx = np.clip(np.round(uvp), 0, t - 1).astype(np.intp)
    valid = ok[vpx[:, 1], vpx[:, 0]] & used
    mean = tex_image[ok].mean(0) if ok.any() else np.full(3, 128.0, np.float32)
    tex = FaceTexture(colors.astype(np.float32), valid, mean.astype(np.float32),
                      None if region is None else np.asarray(region, np.float32))
    tex.image = tex_image
    tex.image_lab = cv2.cvtColor(np.clip(tex.image, 0, 255) * (1 / 255.0), cv2.COLOR_BGR2Lab)
    tex.image_valid = ok
    tex.uv = uvp
    tex.edge = boundary_distance(np.asarray(uv, np.float32), tris)
    if features and landmarks is not None:
        lm = np.asarray(landmarks, np.float64)[:, :2]
        tex.eye_vertices = []
        tex.eye_landmarks = lm[36:48].astype(np.float32)
        for sl in (RIGHT_EYE, LEFT_EYE):
            ste = eye_coordinates(np.nan_to_num(verts[:, :2]), lm[sl], *EYE_HOLE_SCALE[1:])
            near = (ste[:, 0] > -EYE_REACH) & (ste[:, 0] < 1 + EYE_REACH) & (ste[:, 2] < EYE_REACH)
            idx = np.nonzero(used & finite & near)[0]
            tex.eye_vertices.append((idx, ste[idx].astype(np.float32)))
    return tex


def _reflect_lids(image: np.ndarray, hole: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``image`` (T, T, 3) with the texels of an eye's ``hole`` (T, T) bool replaced, column by column, by the
    trusted texels mirrored about the hole's upper edge (its upper half) and lower edge (its lower half)."""
    cols = np.nonzero(hole.any(0))[0]
    t = hole.shape[0]
    for c in cols:
        rows = np.nonzero(hole[:, c])[0]
        r0, r1 = rows.min(), rows.max()
        mid = (r0 + r1) / 2
        src = np.where(rows <= mid, r0 - 1 - (rows - r0), r1 + 1 + (r1 - rows))
        src = np.clip(src, 0, t - 1)
        good = ok[src, c]
        image[rows[good], c] = image[src[good], c]
    return image


def _eye_band(eye: np.ndarray, up: float, down: float):
    """An eye's frame from its 6 landmarks (6, 2) px with the opening grown ``up`` / ``down`` times its half height
    on the upper / lower lid's side: outer-to-inner corner origin a (2,), axis d (2,) (corner to corner), unit normal
    n (2,) (toward the lower lid), and the opening's centre (13,) and half height (13,) along n at s = 0..1 (the lids
    from the closed Catmull-Rom curve :func:`_closed_spline`). The last few are remembered (a swap asks for the same
    eyes several times a frame)."""
    eye = np.ascontiguousarray(np.asarray(eye, np.float64)[:6, :2])
    key = (eye.tobytes(), up, down)
    hit = _BAND_CACHE.get(key)
    if hit is None:
        if len(_BAND_CACHE) >= 48:
            try:  # (render threads may share it: losing an entry is harmless)
                _BAND_CACHE.pop(next(iter(_BAND_CACHE)), None)
            except (StopIteration, RuntimeError):
                pass
        hit = _BAND_CACHE[key] = _eye_band_of(eye, float(up), float(down), _SPLINE6, _GRID13)
    return hit


_BAND_CACHE: dict[tuple, tuple] = {}


@nb.njit(cache=True, nogil=True)
def _eye_band_of(eye, up, down, spline, grid):
    """:func:`_eye_band`'s kernel (``spline`` the (24, 6) closed Catmull-Rom weights, ``grid`` (13,) s = 0..1)."""
    a = eye[0].copy()
    d = eye[3] - eye[0]
    length2 = max(d[0] * d[0] + d[1] * d[1], 1e-9)
    n = np.array([-d[1], d[0]]) / np.sqrt(length2)
    lower = 0.5 * (eye[4] + eye[5] - eye[2] - eye[1])
    if lower[0] * n[0] + lower[1] * n[1] < 0:
        n = -n
    curve = spline @ eye  # 24 points: 0..12 the lid from corner 0 over 1, 2 to corner 3, then back
    m = curve.shape[0]
    s_all = np.empty(m)
    off_all = np.empty(m)
    for k in range(m):
        px = curve[k, 0] - a[0]
        py = curve[k, 1] - a[1]
        s_all[k] = (px * d[0] + py * d[1]) / length2
        off_all[k] = px * n[0] + py * n[1]
    upper = np.arange(13)
    lower_idx = np.empty(13, np.int64)
    lower_idx[:12] = np.arange(12, 24)
    lower_idx[12] = 0
    lids = []
    for part in (upper, lower_idx):
        s = s_all[part]
        off = off_all[part]
        order = np.argsort(s, kind="mergesort")
        lids.append(np.interp(grid, s[order], off[order]))
    top, bottom = lids[0], lids[1]
    half = np.maximum((bottom - top) / 2, 0.0)
    return a, d, n, (top + bottom) / 2 + half * (down - up) / 2, half * (down + up) / 2


def eye_coordinates(points: np.ndarray, eye: np.ndarray, up: float = 1.0, down: float = 1.0) -> np.ndarray:
    """(N, 3) float64 coordinates (s, t, e) of points (N, 2) in an eye's frame (its 6 landmarks (6, 2)): s from 0
    at the first corner to 1 at the other; t from -1 on the upper to 1 on the lower boundary of the opening grown
    ``up`` / ``down`` times on each side (:func:`eye_polygons`), clipped to [-1, 1]; e how far past that boundary
    the point lies, in eye widths (0 inside)."""
    a, d, n, centre, half = _eye_band(eye, up, down)
    p = np.asarray(points, np.float64) - a
    width = np.sqrt(max(float(d @ d), 1e-9))
    s = p @ d / (width * width)
    grid = np.linspace(0, 1, 13)
    c = np.interp(s, grid, centre)
    h = np.maximum(np.interp(s, grid, half), 1e-3 * width)
    t = (p @ n - c) / h
    return np.stack([s, np.clip(t, -1.0, 1.0), np.maximum(np.abs(t) - 1.0, 0.0) * h / width], 1)


def eye_positions(ste: np.ndarray, eye: np.ndarray, up: float = 1.0, down: float = 1.0) -> np.ndarray:
    """The inverse of :func:`eye_coordinates` in another eye (6, 2): (s, t, e) (K, 3) -> points (K, 2). A point
    inside the opening keeps its place between the lids (a closed eye takes them all onto one line), one past it
    keeps its distance from the boundary in eye widths."""
    a, d, n, centre, half = _eye_band(eye, up, down)
    out = np.empty((len(ste), 2), np.float64)
    _eye_points(np.ascontiguousarray(ste, np.float64), a, d, n, centre, half, out)
    return out


@nb.njit(cache=True, nogil=True)
def _eye_points(ste, a, d, n, centre, half, out):
    """:func:`eye_positions`' kernel: ``out[k] = a + s d + (centre(s) + t half(s) + sign(t) e width) n``, centre and
    half (13,) sampled at s = 0..1 (read at s clipped to [0, 1])."""
    width = np.sqrt(max(d[0] * d[0] + d[1] * d[1], 1e-9))
    g = centre.shape[0] - 1
    for k in range(ste.shape[0]):
        s = ste[k, 0]
        t = ste[k, 1]
        x = min(max(s, 0.0), 1.0) * g
        i = min(int(x), g - 1)
        f = x - i
        off = centre[i] * (1.0 - f) + centre[i + 1] * f + t * (half[i] * (1.0 - f) + half[i + 1] * f)
        off += (-1.0 if t < 0 else 1.0) * ste[k, 2] * width
        out[k, 0] = a[0] + s * d[0] + off * n[0]
        out[k, 1] = a[1] + s * d[1] + off * n[1]


def _turn_weight(ok: np.ndarray, covered: np.ndarray) -> float:
    """0 for a frontal source, 1 for a turned one: the difference between the shares of the two UV halves that the
    camera sees (``ok``: visible and facing it; a turned face hides one side), from 0.1 (0) to 0.3 (1)."""
    half = ok.shape[1] // 2
    shares = [ok[:, sl][covered[:, sl]].mean() if covered[:, sl].any() else 0.0
              for sl in (slice(0, half), slice(half, None))]
    return float(np.clip((abs(shares[0] - shares[1]) - 0.1) / 0.2, 0.0, 1.0))


def _feature_trust(lm, covered, texels_in, skin_only, loose, thin_dark, highlight, lips, t, shaded):
    """Which texels of a source to trust in the full swap (its own features shown), (T, T) bool, from the skin
    tests and the feature zones of its landmarks ``lm`` (68, 2) frame px; ``covered``: the texels that count (the
    face less the source's eyes and inner mouth), ``thin_dark``: the black-hat test's texels.

    - brows and eye surroundings (the brow bands, the lid ellipses, the hull of each brow and eye, the space
      between the brows): any colour near the skin's (``loose``: brows, lashes, lids), but not a specular
      highlight (the source's sclera past its lid landmarks) and not part of a non-skin region that lies for
      ``HAIR_SHARE`` or more outside the feature zones (hair on the forehead or the temples that reaches the brows,
      a glasses frame around the eye); ``shaded`` (T, T) bool, skin in shadow (the skin's chroma, darker), does
      not join such a region (a cheek and temple in shadow between a made-up eye and the hair are skin);
    - the nose, and the lower face below it (nostrils, moustache, beard, the folds beside the nose): ``loose``;
    - the lips: ``loose``; elsewhere (forehead, temples, cheeks): the skin test (``skin_only``), less the thin dark
      structures that run down a long way (``LONG_THIN`` x the texture side: hair strands, the sides of glasses
      frames; not wrinkles, which run across).

    Returns (trusted, the rejected texels that are not to be grown (the highlights around the eyes)).
    """
    orbits = [np.concatenate([lm[17:22], lm[36:42]]), np.concatenate([lm[22:27], lm[42:48]])]
    upper = texels_in([_grown(lm[17:22], BROW_ZONE), _grown(lm[22:27], BROW_ZONE), lm[[21, 22, 42, 27, 39]]]
                      + [o[_hull_order(o)] for o in orbits] + feature_polygons(lm)[:2])
    nose_pts = lm[27:36]
    chin_pts = np.concatenate([lm[3:14], lm[31:36]])
    lower = texels_in([nose_pts[_hull_order(nose_pts)], _grown(lm[31:36], 1.6), chin_pts[_hull_order(chin_pts)]]) \
        & ~upper
    zones = upper | lower | lips
    dark = (covered & ~skin_only & ~shaded).astype(np.uint8)
    n, labels = cv2.connectedComponents(dark, connectivity=4)
    occluder = np.zeros(dark.shape, bool)
    if n > 1:
        outside = np.bincount(labels[~zones], minlength=n)
        outside[0] = 0
        occluder = (outside > HAIR_SHARE * np.bincount(labels.ravel(), minlength=n))[labels]
    thin = (thin_dark & covered & ~zones).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(thin, connectivity=8)
    long_thin = np.zeros(thin.shape, bool)
    if n > 1:
        extent = stats[:, cv2.CC_STAT_HEIGHT].copy()  # strands and frames' rims run down, wrinkles across
        extent[0] = 0
        long_thin = (extent >= LONG_THIN * t)[labels]
    out = np.where(zones, loose, skin_only & ~long_thin)
    out = np.where(upper, loose & ~highlight & ~occluder, out)
    return out, upper & highlight & ~occluder


def _hull_order(pts: np.ndarray) -> np.ndarray:
    hull = cv2.convexHull(np.asarray(pts, np.float32), returnPoints=False)
    return hull.reshape(-1)


def _grown(pts: np.ndarray, scale: float) -> np.ndarray:
    """A band (K, 2) around a polyline of points (brows), 0.4 x its length tall, scaled by ``scale`` about its centre."""
    pts = np.asarray(pts, np.float64)
    k = len(pts)
    dy = 0.2 * math.hypot(pts[-1, 0] - pts[0, 0], pts[-1, 1] - pts[0, 1])
    poly = np.empty((2 * k, 2))
    poly[:k] = pts
    poly[k:] = pts[::-1]
    poly[:k, 1] -= dy
    poly[k:, 1] += dy
    c = poly.mean(0)
    return c + (poly - c) * scale


def boundary_distance(uv: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Per-vertex distance (V,) float32 in UV units from the mesh's outer boundary (its longest boundary loop; the
    lips' slit and other holes do not count): the face's contour feather, smooth across triangles."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from model.face_mesh import boundary_edges

    e = boundary_edges(tri)
    n = len(uv)
    if len(e) == 0:
        return np.full(n, 1.0, np.float32)
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    lab_e = labels[e[:, 0]]
    outer = e[lab_e == np.bincount(lab_e).argmax()]
    a, b = uv[outer[:, 0]].astype(np.float64), uv[outer[:, 1]].astype(np.float64)
    ab = b - a
    d = np.full(n, np.inf)
    p = uv.astype(np.float64)
    for i in range(0, len(outer), 256):
        aa, bb = a[i:i + 256], ab[i:i + 256]
        tt = np.clip(((p[:, None] - aa[None]) * bb[None]).sum(-1) / np.maximum((bb ** 2).sum(-1), 1e-12)[None], 0, 1)
        q = aa[None] + tt[..., None] * bb[None]
        d = np.minimum(d, np.linalg.norm(p[:, None] - q, axis=-1).min(1))
    return d.astype(np.float32)


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
