"""Synthetic test video with known geometry: a textured 3DMM face moving along known parameter trajectories.

``open_source("synthetic")`` / ``"synthetic:SECONDS"`` (registered here) gives a :class:`SyntheticSource`: frames of
one face that turns its head to +-70 degrees of yaw, nods (pitch +-25), rolls, opens and closes its mouth, smiles,
moves and changes size, and jumps at a scene cut (position, pose and size change between two frames), over a
seeded background (gradient and shapes) with a little sensor noise. Every frame's truth is known:

- ``params`` (T, 62) real 3DMM parameters and ``rois`` (T, 4) frame boxes (the ideal crop of each frame);
- ``ground_truth`` (T, 68, 3) float32: the 68 landmarks ``MorphableModel.landmarks(params, rois, "v1")``;
- ``pose`` (T, 6) (yaw, pitch, roll in degrees, scale, tx, ty) and ``cuts``: the frame indices where a new shot
  starts (the first frame after the jump).

The rendered mesh is ``source.model.dense(params[t], rois[t], "v1")``: the 64x64 grid of ``MorphableModel`` made
consistent with the 68 landmarks (:func:`consistent_dense_model`), because the grid's own expression basis does not
move it (``morph.dense`` shows no open mouth, no smile). Same parameters, ROI and convention as the truth, and the
68 landmarks are exact vertices of the drawn mesh (``source.landmark_vertex``), so they sit where the face is.

Texture: the grid carries a UV texture image taken from a real photo (default DAMDNet's ``imgs/obama.jpg`` from
the assets): the photo is fitted once with the aligner (3DDFA_V2 mb05 + the detector), the grid's UV square is
mapped through the fitted vertices onto the photo (grazing parts from the mirror side or inpainted), and the result
is cached in ``~/.cache/damdnet/synthetic/`` (keyed by the photo's sha256). Without the photo or the model the face
gets a drawn texture (skin, brows, eyes, lips) instead, with a warning. The inner-lip polygon is painted dark, so an
opening mouth shows a dark opening. The mesh is cut along the face outline (no ears or neck: with a photo texture
they look like a second face to the detector at strong yaw). Per frame: dense decode (batched per 64 frames),
Lambert shading as a vertex attribute, the project's numba rasterizer (``model.raster.zbuffer``) with (u, v, light)
attributes, a numba bilinear texture lookup inside the face box over a precomputed noisy background. About 2-4 ms
per 640x480 frame.

Frames carry ``index`` and ``time = index / fps``. Everything is deterministic for a given ``seed``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import cv2
import numba as nb
import numpy as np

from model.assets import AssetError
from model.dense_fit import landmark_vertices
from model.morphable import MorphableModel, angles_to_matrix, consistent_dense_model, params_from_pose, pose_from_params
from stream.frames import Frame, VideoInfo
from model.raster.mesh import grid_uv, vertex_normals
from model.raster.zbuffer import RasterBuffers, rasterize
from stream.sources import Source, SourceError, register_source

log = logging.getLogger(__name__)

CONVENTION = "v1"
DEFAULT_FACE = "LeiJiangJNU/DAMDNet/imgs/obama.jpg"  # under the assets root
TEXTURE_SIZE = 256
CACHE_VERSION = 3
LIGHT = np.array([-0.35, -0.45, 0.82], np.float64)  # toward the light, frame axes (x right, y down, z to camera)
AMBIENT = 0.45

# Expression directions of the 10 BFM expression coefficients (real units), measured on the 68 landmarks:
# MOUTH_OPEN opens the inner lips by ~8% of the mouth width per unit, SMILE widens the mouth and lifts its corners.
MOUTH_OPEN = np.array([-1.0, 0, 0, 0.8, 0, 0, 0, -0.5, 0, 0], np.float32)
SMILE = np.array([0, 0, 0, 0, 0, -0.9, 0, 0, 0, -0.7], np.float32)


# ----------------------------------------------------------------------------------------------------------------
# A dense grid consistent with the 68 landmarks

_MODELS: list[tuple[MorphableModel, tuple[MorphableModel, np.ndarray]]] = []


def _consistent_model(morph: MorphableModel) -> tuple[MorphableModel, np.ndarray]:
    """The grid that passes through the 68 landmarks (``MorphableModel.load()`` gives it already), with the vertex
    index of each landmark. The whole grid (``dense_full``, ``tri_full``): the synthetic face makes its own cut
    (``face_triangles``), wider than the product's, so that every landmark lies on the rendered face."""
    for known, result in _MODELS:
        if known is morph:
            return result
    if morph.landmark_vertices is not None:
        k = morph.landmark_vertices
        result = (MorphableModel(morph.sparse, morph.dense_full, morph.tri_full, morph.grid_shape,
                                 name=f"{morph.name}/full", landmark_vertices=k), k)
    else:
        result = consistent_dense_model(morph)
    _MODELS.append((morph, result))
    return result


# ----------------------------------------------------------------------------------------------------------------
# Texture


def _cache_dir() -> Path:
    return Path(os.environ.get("DAMDNET_CACHE", "~/.cache/damdnet")).expanduser() / "synthetic"


def _default_face_path() -> Path:
    from model.assets import resolve_root

    return resolve_root(rel=DEFAULT_FACE) / DEFAULT_FACE


def _grid_image(values: np.ndarray, grid_shape: tuple[int, int], size: int) -> np.ndarray:
    """Per-vertex values (V, C) of a row-major grid -> (size, size, C) float32, bilinear, corners on corner texels."""
    rows, cols = grid_shape
    g = np.ascontiguousarray(values.reshape(rows, cols, -1), np.float32)
    t = np.arange(size, dtype=np.float32)
    mx = np.broadcast_to((t * ((cols - 1) / (size - 1)))[None, :], (size, size)).astype(np.float32)
    my = np.broadcast_to((t * ((rows - 1) / (size - 1)))[:, None], (size, size)).astype(np.float32)
    out = [cv2.remap(g[..., c], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for c in range(g.shape[2])]
    return np.stack(out, -1)


def texture_from_photo(photo: np.ndarray, vertices: np.ndarray, tri: np.ndarray, grid_shape: tuple[int, int],
                       size: int = TEXTURE_SIZE) -> np.ndarray:
    """UV texture (size, size, 3) uint8 BGR of a grid mesh fitted to a photo (vertices (V, 3) photo px).

    Texel (u, v) takes the photo colour at the bilinear interpolation of the grid's fitted positions. Texels of
    surface seen at a grazing angle (or facing away) in the photo are blended toward their left-right mirror.
    """
    v = np.asarray(vertices, np.float32)
    xy = _grid_image(v[:, :2], grid_shape, size)
    tex = cv2.remap(photo, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    nz = vertex_normals(v, tri)[:, 2:3]
    trust = _grid_image(np.clip((nz - 0.15) / 0.35, 0.0, 1.0), grid_shape, size)
    mirror_tex, mirror_trust = tex[:, ::-1].astype(np.float32), trust[:, ::-1]
    w = trust / np.maximum(trust + (1 - trust) * mirror_trust, 1e-6)
    w = np.where(trust + mirror_trust < 1e-3, 1.0, w)
    out = np.clip(tex.astype(np.float32) * w + mirror_tex * (1 - w) + 0.5, 0, 255).astype(np.uint8)
    # seen at a grazing angle on both sides: fill from the trusted neighbours instead of stretched pixels
    hole = (np.maximum(trust, mirror_trust)[..., 0] < 0.3).astype(np.uint8)
    if hole.any():
        out = cv2.inpaint(out, hole, 5, cv2.INPAINT_TELEA)
    return out


def _fit_photo(path: Path, morph: MorphableModel) -> dict[str, np.ndarray]:
    """Fit the 3DMM to the largest face of a photo (detector box, then two landmark-ROI refinements)."""
    from model.aligner import Aligner
    from model.detect import FaceDetector
    from model.align_images import align_boxes

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SourceError(f"synthetic: cannot read the face photo {path}")
    aligner = Aligner.from_checkpoint("3ddfa-v2-mb05", device="cpu", store=None, expression=False)
    boxes, _ = FaceDetector.create("auto")(img)
    if len(boxes) == 0:
        raise SourceError(f"synthetic: no face found in {path}")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    res = align_boxes(img, aligner, boxes[[int(np.argmax(areas))]], dense=False, refine=2)
    vertices = morph.dense(res.params, res.roi, aligner.convention)[0]  # morph: the consistent grid
    tex = texture_from_photo(img, vertices, morph.tri, morph.grid_shape)
    p = res.params[0]
    return {"texture": tex, "shape": p[12:52].astype(np.float32), "expression": p[52:].astype(np.float32)}


def drawn_texture(morph: MorphableModel, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A texture drawn without any photo: skin with shading-free brows, eyes and lips at the mean shape's landmarks."""
    lm_uv = grid_uv(morph.grid_shape, size)[landmark_vertices(morph)].astype(np.float64)
    tex = np.empty((size, size, 3), np.uint8)
    tex[:] = (120, 150, 205)  # BGR skin
    yy = np.linspace(0, 1, size)[:, None, None]
    tex = np.clip(tex * (0.9 + 0.15 * np.sin(np.pi * yy)), 0, 255).astype(np.uint8)

    def poly(idx: list[int], colour: tuple[int, int, int], closed: bool = True, thick: int = -1) -> None:
        pts = np.round(lm_uv[idx] * 16).astype(np.int32)[None]
        if thick < 0:
            cv2.fillPoly(tex, pts, colour, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(tex, pts, closed, colour, thick, cv2.LINE_AA, shift=4)

    poly(list(range(17, 22)), (40, 50, 70), closed=False, thick=4)
    poly(list(range(22, 27)), (40, 50, 70), closed=False, thick=4)
    for eye in (list(range(36, 42)), list(range(42, 48))):
        poly(eye, (245, 245, 245))
        c = np.round(lm_uv[eye].mean(0) * 16).astype(np.int32)
        cv2.circle(tex, tuple(int(v) for v in c), 3 * 16, (50, 40, 30), -1, cv2.LINE_AA, shift=4)
    poly(list(range(48, 60)), (80, 80, 170))
    poly(list(range(60, 68)), (40, 30, 60))
    poly([27, 28, 29, 30, 33], (95, 125, 180), closed=False, thick=2)
    return tex


def paint_mouth(texture: np.ndarray, lm_uv: np.ndarray, colour: tuple[int, int, int] = (38, 30, 72)) -> np.ndarray:
    """Paint the inner-lip polygon (landmarks 60-67 at their texels ``lm_uv`` (68, 2)) dark: with the lips closed it
    is the thin line between them, and when the mouth opens these texels stretch into a dark mouth opening."""
    out = texture.copy()
    poly = np.round(lm_uv[60:68] * 16).astype(np.int32)[None]
    mask = np.zeros(texture.shape[:2], np.uint8)
    cv2.fillPoly(mask, poly, 255, cv2.LINE_AA, shift=4)
    cv2.polylines(mask, poly, True, 255, 1, cv2.LINE_AA, shift=4)
    a = cv2.GaussianBlur(mask, (0, 0), 0.8).astype(np.float32)[..., None] / 255.0
    out = out.astype(np.float32) * (1 - a) + np.asarray(colour, np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def load_face(morph: MorphableModel, face: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Texture (256, 256, 3) uint8, shape (40,) and neutral expression (10,) of the synthetic face.

    ``face``: a photo path (default the assets' obama.jpg), or ``"drawn"`` for the drawn texture. A fitted photo
    is cached under ``~/.cache/damdnet/synthetic/``. Falls back to the drawn texture (with a warning) when the
    photo or the model is missing.
    """
    if face == "drawn":
        return {"texture": drawn_texture(morph), "shape": np.zeros(40, np.float32),
                "expression": np.zeros(10, np.float32)}
    path = Path(face).expanduser() if face else _default_face_path()
    if not path.is_file():
        if face:
            raise SourceError(f"synthetic: no such face photo: {face}")
        log.warning("synthetic: %s not found; using a drawn face texture", path)
        return load_face(morph, "drawn")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = _cache_dir() / f"face_{digest}_v{CACHE_VERSION}.npz"
    try:
        with np.load(cache) as z:
            return {k: z[k] for k in ("texture", "shape", "expression")}
    except (OSError, KeyError, ValueError):
        pass
    try:
        fitted = _fit_photo(path, morph)
    except SourceError:
        raise
    except Exception as exc:  # model or detector assets missing, offline
        log.warning("synthetic: cannot fit %s (%s); using a drawn face texture", path, exc)
        return load_face(morph, "drawn")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **fitted)
        os.replace(tmp, cache)
    except OSError as exc:  # read-only home: fit again next time
        log.debug("synthetic: cannot cache the face texture: %s", exc)
    return fitted


def face_triangles(morph: MorphableModel, margin: float = 0.05, forehead: float = 0.45) -> np.ndarray:
    """Triangles (F', 3) int32 of the dense mesh inside the face: the jaw line and the brows raised by ``forehead``
    x the brow-to-chin height, grown by ``margin`` x that height around the centre (the mean shape, model space).

    The grid also covers ears, neck and hair at its border; rendered with a photo texture those parts look like a
    second face at strong yaw (the detector fires on them), so the synthetic face is cut out along this outline.
    ``margin`` None or negative keeps every triangle.
    """
    tri = np.ascontiguousarray(morph.tri, np.int32)
    if margin is None or margin < 0:
        return tri
    lm = morph.sparse.u[:, :2].astype(np.float64)
    height = lm[17:27, 1].mean() - lm[8, 1]
    brows = lm[26:16:-1].copy()
    brows[:, 1] += forehead * height
    poly = np.concatenate([lm[0:17], brows])
    centre = poly.mean(0)
    d = poly - centre
    poly = centre + d * (1 + margin * height / np.linalg.norm(d, axis=1, keepdims=True))
    ref = morph.dense_basis.u[:, :2].astype(np.float64)
    x, y = ref[:, 0:1], ref[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    keep = (crosses & (x < xi)).sum(1) % 2 == 1
    if morph.grid_shape is not None:  # folds of the grid border (neck) project inside too: keep the nose's region
        from scipy import ndimage

        labels, _ = ndimage.label(keep.reshape(morph.grid_shape))
        nose = int(np.argmin(((ref - lm[30]) ** 2).sum(1)))
        keep = labels.ravel() == labels.ravel()[nose]
    return np.ascontiguousarray(tri[keep[tri].all(1)], np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Background


def make_background(width: int, height: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a two-colour gradient with some blurred shapes (deterministic per seed)."""
    rng = np.random.default_rng([seed, 7])
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(ang) * xx / width + np.sin(ang) * yy / height)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    bg = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.uint8)
    scale = min(width, height)
    for _ in range(10):
        colour = tuple(int(v) for v in rng.uniform(20, 235, 3))
        kind = rng.integers(3)
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        if kind == 0:
            cv2.circle(bg, (cx, cy), int(rng.uniform(0.04, 0.15) * scale), colour, -1, cv2.LINE_AA)
        elif kind == 1:
            w, h = (int(rng.uniform(0.05, 0.25) * scale) for _ in range(2))
            cv2.rectangle(bg, (cx, cy), (cx + w, cy + h), colour, -1, cv2.LINE_AA)
        else:
            x2, y2 = int(rng.uniform(0, width)), int(rng.uniform(0, height))
            cv2.line(bg, (cx, cy), (x2, y2), colour, int(rng.uniform(2, 8)), cv2.LINE_AA)
    return cv2.GaussianBlur(bg, (0, 0), 1.5)


# ----------------------------------------------------------------------------------------------------------------
# Trajectories


def _smooth_step(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def trajectories(n: int, width: int, height: int, seed: int = 0, cut_at: float = 0.62) -> dict[str, Any]:
    """Per-frame pose, placement and expression of the face (n frames; the shape does not depend on the length).

    Returns yaw, pitch, roll (degrees), cx, cy, size (ROI side, px), mouth, smile (expression amounts), all (n,),
    and ``cuts`` (list of frame indices). Smooth everywhere except at the cut, where position, pose and size jump.
    """
    rng = np.random.default_rng([seed, 11])
    ph = rng.uniform(-0.15, 0.15, 8)
    cut = int(round(cut_at * n)) if n >= 8 else n
    u = np.arange(n) / max(n, 1)  # normalised time 0..1
    seg = np.where(np.arange(n) < cut, 0, 1)
    # before the cut: a full head turn (+70 then -70), two nods, a slow roll, gentle drift and zoom
    ua = u / cut_at
    yaw = 70.0 * np.sin(2 * np.pi * ua)
    pitch = 25.0 * np.sin(2 * np.pi * (2.0 * ua + ph[0])) * _smooth_step(ua * 6)
    roll = 15.0 * np.sin(2 * np.pi * (0.8 * ua + ph[1]))
    cx = 0.42 + 0.10 * np.sin(2 * np.pi * (0.7 * ua + ph[2]))
    cy = 0.50 + 0.06 * np.sin(2 * np.pi * (1.3 * ua + ph[3]))
    size = 0.72 * (1.0 + 0.18 * np.sin(2 * np.pi * (0.9 * ua + ph[4])))
    # after the cut: another place, size and pose; half a turn to -45, nods, the face smaller
    ub = (u - cut_at) / max(1 - cut_at, 1e-6)
    b = seg == 1
    yaw = np.where(b, 35.0 - 80.0 * _smooth_step(ub * 1.3), yaw)
    pitch = np.where(b, -12.0 + 15.0 * np.sin(2 * np.pi * (1.5 * ub + ph[5])), pitch)
    roll = np.where(b, -10.0 + 8.0 * np.sin(2 * np.pi * ub), roll)
    cx = np.where(b, 0.62 - 0.08 * ub, cx)
    cy = np.where(b, 0.45 + 0.05 * np.sin(2 * np.pi * (ub + ph[6])), cy)
    size = np.where(b, 0.58 * (1.0 + 0.15 * ub), size)
    # expressions: the mouth opens and closes ~5 times (from a little more closed than the photo's), two smiles
    mouth = 0.5 * (1 - np.cos(2 * np.pi * 5.0 * u)) * (0.6 + 0.4 * np.sin(2 * np.pi * (1.7 * u + ph[7])) ** 2)
    smile = np.clip(np.sin(2 * np.pi * (2.0 * u + 0.1)), 0.0, None) ** 1.5
    scale = min(width, height)
    return {"yaw": yaw, "pitch": pitch, "roll": roll, "cx": cx * width, "cy": cy * height, "size": size * scale,
            "mouth": 3.0 * mouth - 0.5, "smile": 3.0 * smile, "cuts": [cut] if 0 < cut < n else []}


# ----------------------------------------------------------------------------------------------------------------
# Source


@nb.njit(cache=True, nogil=True)
def _shade_texture(out, tri_id, attr, texture, noise, y0, y1, x0, x1):
    """Where a triangle covers a pixel of the box: bilinear texture lookup at (attr u, v) x light attr[2] + noise."""
    th, tw = texture.shape[0], texture.shape[1]
    for y in range(y0, y1):
        for x in range(x0, x1):
            if tri_id[y, x] < 0:
                continue
            u = min(max(attr[y, x, 0], 0.0), tw - 1.0)
            v = min(max(attr[y, x, 1], 0.0), th - 1.0)
            k = attr[y, x, 2]
            iu = min(int(u), tw - 2)
            iv = min(int(v), th - 2)
            fu = u - iu
            fv = v - iv
            for c in range(3):
                t = ((1 - fu) * (1 - fv) * texture[iv, iu, c] + fu * (1 - fv) * texture[iv, iu + 1, c]
                     + (1 - fu) * fv * texture[iv + 1, iu, c] + fu * fv * texture[iv + 1, iu + 1, c])
                val = t * k + noise[y, x, c]
                if val <= 0.0:
                    out[y, x, c] = 0
                elif val >= 255.0:
                    out[y, x, c] = 255
                else:
                    out[y, x, c] = np.uint8(int(val + 0.5))

# Crop-space placement of the face (what the networks expect in a 120x120 crop of the 3DDFA ROI).
_CROP_SCALE = 4.4e-4
_CROP_T = (60.0, 64.0, 0.0)
_CHUNK = 64  # frames decoded per batched dense call
_NOISE_FIELDS = 6  # precomputed noise images, cycled


class SyntheticSource(Source):
    """A textured 3DMM face on known trajectories (see the module docstring); ``read()`` renders the next frame.

    Options: width, height (px), fps, seconds (length), seed, face (photo path or "drawn"), noise (sensor noise std,
    grey levels), live (pace frames in real time and report ``is_live``), max_frames.
    Attributes: ``params`` (T, 62), ``rois`` (T, 4), ``ground_truth`` (T, 68, 3), ``pose`` (T, 6), ``cuts``.
    """

    def __init__(self, *, width: int = 640, height: int = 480, fps: float = 30.0, seconds: float = 8.0,
                 seed: int = 0, face: str | os.PathLike[str] | None = None, noise: float = 2.0, live: bool = False,
                 margin: float = 0.05, max_frames: int | None = None) -> None:
        width, height, fps, seconds = int(width), int(height), float(fps), float(seconds)
        if width < 64 or height < 64:
            raise SourceError(f"synthetic: frames must be at least 64x64, got {width}x{height}")
        if not fps > 0 or not seconds > 0:
            raise SourceError(f"synthetic: fps and seconds must be positive, got fps={fps}, seconds={seconds}")
        n = max(int(round(seconds * fps)), 1)
        try:
            self.morph = MorphableModel.load()
        except AssetError as exc:
            raise SourceError(f"synthetic: {exc}") from None
        # the rendered grid passes through the 68 landmarks whatever the expression (see consistent_dense_model)
        self.model, self.landmark_vertex = _consistent_model(self.morph)
        face_data = load_face(self.model, face)
        lm_uv = grid_uv(self.model.grid_shape, face_data["texture"].shape[0])[self.landmark_vertex]
        self.texture = paint_mouth(face_data["texture"], lm_uv)
        self.seed = int(seed)
        tr = trajectories(n, width, height, self.seed)
        self.trajectory = tr
        self.cuts: list[int] = list(tr["cuts"])
        rot = angles_to_matrix(np.radians(tr["yaw"]), np.radians(tr["pitch"]), np.radians(tr["roll"]))
        exp = (face_data["expression"][None] + tr["mouth"][:, None] * MOUTH_OPEN[None]
               + tr["smile"][:, None] * SMILE[None])
        shape = np.broadcast_to(face_data["shape"][None], (n, 40))
        t3 = np.broadcast_to(np.asarray(_CROP_T)[None], (n, 3))
        self.params = params_from_pose(np.full(n, _CROP_SCALE), rot, t3, shape, exp)
        half = tr["size"] / 2
        self.rois = np.stack([tr["cx"] - half, tr["cy"] - half, tr["cx"] + half, tr["cy"] + half], 1).astype(np.float32)
        self.ground_truth = self.morph.landmarks(self.params, self.rois, CONVENTION).astype(np.float32)
        self.pose = pose_from_params(self.params)
        self.background = make_background(width, height, self.seed)
        rng = np.random.default_rng([self.seed, 13])
        self.noise_std = float(noise)
        self._noise = [np.round(rng.normal(0, noise, (height, width, 3))).astype(np.int16) if noise > 0
                       else np.zeros((height, width, 3), np.int16) for _ in range(_NOISE_FIELDS if noise > 0 else 1)]
        self._noisy_bg = [cv2.add(self.background, z, dtype=cv2.CV_8U) for z in self._noise]
        self._tri = face_triangles(self.model, margin=margin)
        self._attrs = np.zeros((self.model.n_dense, 3), np.float32)  # u, v (texels), light factor
        self._attrs[:, :2] = grid_uv(self.model.grid_shape, self.texture.shape[0])
        self._buf = RasterBuffers.create(height, width, 3)
        self._light = (LIGHT / np.linalg.norm(LIGHT)).astype(np.float32)
        self._frontal = np.float32(AMBIENT + (1 - AMBIENT) * self._light[2])
        self._chunk: np.ndarray | None = None
        self._chunk_start = 0
        self._live = bool(live)
        time_base = Fraction(fps).limit_denominator(1_000_000) ** -1
        info = VideoInfo(width=width, height=height, fps=fps, time_base=time_base,
                         frame_count=n if max_frames is None else min(n, int(max_frames)), rotation=0,
                         is_live=self._live, name="synthetic")
        super().__init__(info, max_frames)

    def __len__(self) -> int:
        return int(self.params.shape[0])

    def vertices(self, index: int) -> np.ndarray:
        """Dense mesh (V, 3) float32 frame px of frame ``index`` (what is rendered): ``morph.dense`` of the frame's
        params and ROI with the ``v1`` convention, decoded in chunks of frames (one batched call per chunk)."""
        start = self._chunk_start
        if self._chunk is None or not start <= index < start + len(self._chunk):
            start = (index // _CHUNK) * _CHUNK
            sl = slice(start, start + _CHUNK)
            self._chunk = np.ascontiguousarray(self.model.dense(self.params[sl], self.rois[sl], CONVENTION), np.float32)
            self._chunk_start = start
        return self._chunk[index - start]

    def render(self, index: int) -> np.ndarray:
        """The image (H, W, 3) uint8 BGR of frame ``index``."""
        verts = self.vertices(index)
        normals = vertex_normals(verts, self._tri)
        # Lambert light relative to a frontal face: the photo already carries its own frontal lighting
        k = (AMBIENT + (1 - AMBIENT) * np.clip(normals @ self._light, 0.0, None)) / self._frontal
        self._attrs[:, 2] = k
        buf = rasterize(verts, self._tri, self._attrs, buffers=self._buf, cull=0)
        n = (index * 7 + self.seed) % len(self._noise)
        img = self._noisy_bg[n].copy()
        if not buf.is_empty():
            y0, y1, x0, x1 = (int(v) for v in buf.bbox)
            _shade_texture(img, buf.tri_id, buf.attr, self.texture, self._noise[n], y0, y1, x0, x1)
        return img

    def _frames(self) -> Iterator[Frame]:
        fps = self.info.fps
        start = time.perf_counter()
        for i in range(len(self)):
            if self._live:
                delay = start + i / fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            img = self.render(i)
            yield Frame(index=i, time=i / fps, image=img, capture_ns=time.perf_counter_ns())


def open_synthetic(arg: str | None, **options: Any) -> SyntheticSource:
    """Factory for ``synthetic`` / ``synthetic:SECONDS`` specs (options: width, height, fps, seconds, seed, face,
    noise, live, max_frames)."""
    allowed = {"width", "height", "fps", "seconds", "seed", "face", "noise", "live", "max_frames"}
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SourceError(f"unknown option(s) for a synthetic source: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")
    if arg:
        try:
            options["seconds"] = float(arg)
        except ValueError:
            raise SourceError(f"synthetic:{arg}: expected synthetic:SECONDS (a number)") from None
    return SyntheticSource(**options)


register_source("synthetic", open_synthetic)
