"""Measures of how a render or a swap looks, for the tests and bench/face_quality.py.

- :func:`face_hull`: the hull of the 68 landmarks extended to the forehead by the mean shape (frame px).
- :func:`mesh_coverage`: how much of a rendered mesh mask lies outside that hull, and how much of the hull it covers.
- :func:`seam_ratio`: gradient energy in a thin band along the blend boundary over the same band in the original;
  :func:`seam_ratios` the same per boundary: the outer contour and each inner hole (eyes, mouth, brows, nose).
- :func:`occluder`: a saturated band across the forehead and hair strands drawn on a photo (the occluder test).
- :func:`far_cheek_darkness`, :func:`nose_highlight`: a swap texture's hidden cheek and nose against its skin.
"""
from __future__ import annotations

import cv2
import numpy as np


def face_size(landmarks: np.ndarray) -> float:
    """sqrt(width x height) of the landmarks' box, px."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    return float(np.sqrt(np.ptp(lm[:, 0]) * np.ptp(lm[:, 1])))


def face_hull(landmarks: np.ndarray, mean_landmarks: np.ndarray, forehead: float | None = None) -> np.ndarray:
    """Convex hull (K, 2) float64 frame px of the 68 landmarks (68, 2|3) and the forehead of the mean shape: the
    upper arc of ``model.face_mesh.face_outline`` (mean 68 points ``mean_landmarks`` (68, 3), model space, y up)
    mapped into the frame by the least-squares affine map of the mean landmarks onto these."""
    from model.face_mesh import FOREHEAD, face_outline

    lm = np.asarray(landmarks, np.float64)[:, :2]
    ref = np.asarray(mean_landmarks, np.float64)[:, :2]
    a = np.concatenate([ref, np.ones((68, 1))], 1)
    m, *_ = np.linalg.lstsq(a, lm, rcond=None)  # (3, 2)
    outline = face_outline(ref, FOREHEAD if forehead is None else forehead, jaw_inset=0.0)
    top = outline[outline[:, 1] > ref[17:27, 1].mean()]
    pts = np.concatenate([lm, np.concatenate([top, np.ones((len(top), 1))], 1) @ m])
    return pts[cv2.convexHull(pts.astype(np.float32), returnPoints=False).reshape(-1)]


def polygon_mask(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels inside a polygon (K, 2) px."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(poly) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return m > 0


def mesh_coverage(mask: np.ndarray, hull: np.ndarray, size: float, margin: float = 0.05) -> tuple[float, float]:
    """(fraction of the mask's pixels more than ``margin`` x ``size`` px outside the hull, fraction of the hull's
    pixels the mask covers)."""
    inside = polygon_mask(mask.shape, hull)
    dist = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    n = max(int(mask.sum()), 1)
    return float((mask & (dist > margin * size)).sum() / n), float((mask & inside).sum() / max(int(inside.sum()), 1))


def _grad_energy(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return gx * gx + gy * gy


def blend_band(out: np.ndarray, frame: np.ndarray, radius: int = 2) -> np.ndarray:
    """(H, W) bool: pixels within ``radius`` px of the boundary of the changed region (out != frame), holes
    (the kept eyes and mouth) included: where a seam would show."""
    changed = (np.abs(out.astype(np.int16) - frame.astype(np.int16)).max(2) > 0).astype(np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # pixels equal by chance
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return (cv2.dilate(changed, k) - cv2.erode(changed, k)) > 0


def seam_ratio(out: np.ndarray, frame: np.ndarray, radius: int = 2) -> float:
    """Mean gradient energy (Sobel, grey) of ``out`` over that of ``frame`` in the blend band; nan without one."""
    band = blend_band(out, frame, radius)
    if band.sum() < 10:
        return float("nan")
    return float(_grad_energy(out)[band].mean() / max(_grad_energy(frame)[band].mean(), 1e-6))


# landmark groups that name an inner boundary of the blend (a band pixel belongs to the group of its nearest landmark)
SEAM_GROUPS = {"eye_r": range(36, 42), "eye_l": range(42, 48), "mouth": range(48, 68), "brow_r": range(17, 22),
               "brow_l": range(22, 27), "nose": range(27, 36), "jaw": range(0, 17)}


def _changed(out: np.ndarray, frame: np.ndarray) -> np.ndarray:
    changed = (np.abs(out.astype(np.int16) - frame.astype(np.int16)).max(2) > 0).astype(np.uint8)
    return cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # pixels equal by chance


def _band(mask: np.ndarray, radius: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return (cv2.dilate(mask, k) - cv2.erode(mask, k)) > 0


def _filled(changed: np.ndarray) -> np.ndarray:
    """The changed region (H, W) uint8 with its holes filled: what the image border cannot reach through unchanged
    pixels."""
    h, w = changed.shape
    pad = cv2.copyMakeBorder(1 - changed, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    reach = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(pad, reach, (0, 0), 2)
    return (pad[1:-1, 1:-1] != 2).astype(np.uint8)


def boundary_bands(out: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, radius: int = 2) -> dict:
    """The blend band (:func:`blend_band`) split per boundary: ``outer`` (the contour of the changed region with its
    holes filled) and, for the band around the holes inside it, one (H, W) bool mask per ``SEAM_GROUPS`` name, each
    band pixel going to the group of its nearest landmark (68, 2|3) (a kept eye's hole -> ``eye_r``/``eye_l``)."""
    changed = _changed(out, frame)
    filled = _filled(changed)
    outer = _band(filled, radius)
    inner = _band(changed, radius) & ~outer
    bands = {"outer": outer}
    if inner.any():
        lm = np.asarray(landmarks, np.float64)[:, :2]
        ys, xs = np.nonzero(inner)
        d = (xs[:, None] - lm[None, :, 0]) ** 2 + (ys[:, None] - lm[None, :, 1]) ** 2
        nearest = d.argmin(1)
        for name, idx in SEAM_GROUPS.items():
            sel = np.isin(nearest, list(idx))
            if sel.any():
                m = np.zeros_like(inner)
                m[ys[sel], xs[sel]] = True
                bands[name] = m
    return bands


def seam_ratios(out: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, radius: int = 2,
                min_pixels: int = 10) -> dict[str, float]:
    """:func:`seam_ratio` per boundary (:func:`boundary_bands`): ``{"outer": r, "eye_r": r, ...}`` for every
    boundary with at least ``min_pixels`` band pixels, plus ``all`` (the whole band, = ``seam_ratio``)."""
    g_out, g_frame = _grad_energy(out), _grad_energy(frame)
    res = {}
    bands = boundary_bands(out, frame, landmarks, radius)
    bands["all"] = np.logical_or.reduce(list(bands.values()))
    for name, band in bands.items():
        if band.sum() >= min_pixels:
            res[name] = float(g_out[band].mean() / max(g_frame[band].mean(), 1e-6))
    return res


def tone_steps(out: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, sectors: int = 8, blur: float = 0.02,
               depth: float = 0.05) -> dict[str, float]:
    """The step of tone where the blend meets the frame, per sector of its outer boundary: the mean absolute
    difference of the blurred L (Lab, 0..100; Gaussian, ``blur`` x the face's size) of ``out`` and ``frame`` over the
    transition zone (the changed region's pixels within ``depth`` x the face's size of its outer boundary, holes
    filled), the zone split into ``sectors`` equal angles about the landmarks' centre (sector 0 from the subject's
    right, counter-clockwise in the image; sectors with under 20 pixels left out). Outside the zone the frame is
    unchanged, so a value of several L units is a line of another tone along the boundary (the thin-band seam
    measure misses one with a feather of a few pixels: at the changed region's very edge the difference is a grey
    level or two). Returns ``{"sector_k": L, ...}`` plus ``max``."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    size = face_size(landmarks)
    filled = _filled(_changed(out, frame))
    d = cv2.distanceTransform(filled, cv2.DIST_L2, 3)
    zone = (filled > 0) & (d <= max(2.0, depth * size))
    sig = max(0.5, blur * size)

    def lightness(img: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab)[..., 0].astype(np.float32) * (100 / 255)
        return cv2.GaussianBlur(lab, (0, 0), sig)

    diff = np.abs(lightness(out) - lightness(frame))
    ys, xs = np.nonzero(zone)
    c = lm.mean(0)
    ang = np.mod(np.arctan2(-(ys - c[1]), xs - c[0]), 2 * np.pi)
    k = np.minimum((ang / (2 * np.pi / sectors)).astype(int), sectors - 1)
    res = {}
    for i in range(sectors):
        sel = k == i
        if sel.sum() >= 20:
            res[f"sector_{i}"] = float(diff[ys[sel], xs[sel]].mean())
    res["max"] = max(res.values()) if res else float("nan")
    return res


def occluder(image: np.ndarray, landmarks: np.ndarray, colour: tuple[int, int, int] = (255, 0, 255),
             strands: int = 7, seed: int = 0) -> np.ndarray:
    """A copy of a photo with a saturated ``colour`` band across the forehead (from just above the brows up
    0.25 x the brow-to-chin height, wider than the face) and dark hair strands hanging over the forehead and
    temples down to the brows."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    out = image.copy()
    brow = lm[17:27, 1].min()
    height = lm[8, 1] - lm[17:27, 1].mean()
    x0, x1 = lm[0, 0] - 0.1 * height, lm[16, 0] + 0.1 * height
    cv2.rectangle(out, (int(x0), int(brow - 0.28 * height)), (int(x1), int(brow - 0.05 * height)), colour, -1)
    rng = np.random.default_rng(seed)
    for i in range(strands):
        xs = np.linspace(lm[17, 0], lm[26, 0], strands)[i] + rng.uniform(-5, 5)
        ys = np.linspace(brow - 0.45 * height, brow - 0.02 * height, 12)
        wig = xs + np.cumsum(rng.normal(0, 0.02 * height, 12)) + np.linspace(0, 0.15 * height * (i - strands / 2)
                                                                             / strands, 12)
        pts = np.stack([wig, ys], 1)
        cv2.polylines(out, [np.round(pts * 16).astype(np.int32)], False, (25, 35, 50), max(2, int(0.015 * height)),
                      cv2.LINE_AA, shift=4)
    return out


def _texture_l(tex) -> np.ndarray:
    img = np.clip(tex.image, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2Lab)[..., 0].astype(np.float32) * (100 / 255)


def far_cheek_darkness(tex, verts: np.ndarray, uv: np.ndarray) -> float:
    """How much darker (L, 0..100) the darkest smoothed spot (Gaussian, 2% of the UV side) of the far cheek of a UV
    swap texture (``FaceTexture``) is than the mean of its trusted skin. The far cheek is the UV half (u < 0.5 or
    u > 0.5) whose source vertices ``verts`` (V, 3) frame px (z towards the camera) lie deeper; ``uv`` (V, 2) in
    [0, 1]. Its box: v 0.45-0.75, u 0.08-0.35 of that half."""
    L = _texture_l(tex)
    t = L.shape[0]
    blur = cv2.GaussianBlur(L, (0, 0), 0.02 * t)
    left = np.asarray(uv)[:, 0] < 0.5
    far_left = verts[left, 2].mean() < verts[~left, 2].mean()
    u0, u1 = (0.08, 0.35) if far_left else (0.65, 0.92)
    far = blur[int(0.45 * t):int(0.75 * t), int(u0 * t):int(u1 * t)]
    return float(L[tex.image_valid].mean() - far.min())


def nose_highlight(tex, nose_uv: np.ndarray) -> float:
    """How much brighter (L, 0..100) the brightest smoothed spot (Gaussian, 1% of the UV side) of a UV swap
    texture's nose is than the mean of its trusted skin: a source's specular streak pasted into the texture.
    ``nose_uv`` (K, 2) texel coordinates of the nose outline (landmarks 27, 31-35 of the texture's ``uv``)."""
    L = _texture_l(tex)
    blur = cv2.GaussianBlur(L, (0, 0), max(1.0, 0.01 * L.shape[0]))
    return float(blur[texture_hull_mask(tex, nose_uv)].max() - L[tex.image_valid].mean())


def nose_dark_spot(tex, uv68: np.ndarray) -> float:
    """How much darker (L, 0..100) the darkest spot of a UV swap texture's upper nose is than what is around it: the
    black-hat (elliptic kernel, 4% of the UV side) of L, its maximum over the triangle of landmark 27 and the nostril
    wings 31, 35 drawn a quarter of the way up toward it (the nostrils themselves left out), its base narrowed to 0.8
    of its width about the ridge line (the full base ends on the crease where each flank's shading begins: a fit a
    few texels to one side put pitt.jpg's crease inside, 15.3 where the ridge itself reads 9). ``uv68`` (68, 2) texel
    coordinates of the 68 landmarks (the texture's ``uv`` at ``landmark_vertices``). A blotch a source does not
    have reads 15-25; a nose's own shading under 12."""
    uv = np.asarray(uv68, np.float64)
    left, right = uv[31] + 0.25 * (uv[27] - uv[31]), uv[35] + 0.25 * (uv[27] - uv[35])
    mid = (left + right) / 2
    upper = np.array([uv[27], mid + 0.8 * (left - mid), mid + 0.8 * (right - mid)])
    L = _texture_l(tex)
    k = max(3, int(0.04 * L.shape[0]) | 1)
    bh = cv2.morphologyEx(L, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return float(bh[texture_hull_mask(tex, upper)].max())


def texture_hull_mask(tex, points_uv: np.ndarray) -> np.ndarray:
    """(T, T) bool: the texels of a UV swap texture inside the convex hull of ``points_uv`` (K, 2) texel coordinates
    (landmarks of the texture's ``uv``: e.g. 27, 31-35 for the nose)."""
    t = tex.image.shape[0]
    hull = cv2.convexHull(np.asarray(points_uv, np.float32), returnPoints=False).ravel()
    return polygon_mask((t, t), np.asarray(points_uv)[hull])
