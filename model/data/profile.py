"""Face profiling: re-render a fitted face photo at a new yaw and pitch, with the exact rotated parameters as label.

The paper's large-pose data (300W-LP) comes from rotating each photo's fitted 3DMM and re-rendering it. Here, per
sample (all numpy + the numba rasterizer, ~1 ms on one core for a 144 px context):

1. the photo's teacher fit (real v1 parameters of its centre crop) gives the dense mesh in context pixels;
2. a source z-buffer says which vertices the photo shows; hidden ones take their texture position from their
   left-right mirror vertex (the face is close to symmetric), so a newly exposed cheek is not smeared;
3. the mesh is rotated about its centroid (yaw, then pitch, in the camera frame) and rasterized with each vertex's
   source position as attribute: every covered pixel fetches its colour from the photo (``cv2.remap``), so the
   texture keeps the photo's resolution;
4. the photo's old face region is filled from its surroundings (normalised Gaussian convolution), so no ghost of the
   original face shows beside the rotated one, and the new face is composited with a one-pixel feather.

Geometry is kept as an **image-space affine** ``F`` (3, 4): a model point X maps to pixels ``F @ [X; 1]`` (x right,
y down, z toward the camera), which for a crop is ``diag(1, -1, 1) P + (0, 121, 0)`` in the v1 convention. Any
rotation or 2D similarity of the image acts on ``F`` linearly, so labels stay exact through profiling, crop jitter
and flips (:func:`params_to_affine`, :func:`affine_to_params`, :func:`transform_affine`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from model.raster.mesh import grid_mirror, vertex_normals
from model.raster.zbuffer import RasterBuffers, rasterize
from model.roi import CROP_SIZE

_FLIP_Y = np.diag([1.0, -1.0, 1.0])


def params_to_affine(real: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Real v1 params (62,) of a ``size`` crop -> image-space affine F (3, 4) float64 in that crop's pixels."""
    p = np.asarray(real, np.float64)[:12].reshape(3, 4)
    f = _FLIP_Y @ p
    f[1, 3] += size + 1
    return f


def affine_to_params(f: np.ndarray, real: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Image-space affine F (3, 4) of a ``size`` crop + shape/expression of ``real`` (62,) -> real v1 params (62,)."""
    g = np.array(f, np.float64)
    g[1, 3] -= size + 1
    out = np.array(real, np.float32, copy=True)
    out[:12] = (_FLIP_Y @ g).reshape(12)
    return out


def transform_affine(f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2D similarity m (2, 3) (image -> new image) to F (3, 4): x, y mapped by m, z scaled by its scale."""
    a = np.asarray(m, np.float64)
    k = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    g = np.zeros((3, 3))
    g[:2, :2] = a[:, :2]
    g[2, 2] = k
    out = g @ f
    out[:2, 3] += a[:, 2]
    return out


def rotation_yaw_pitch(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-frame rotation (3, 3): pitch about the image x axis, then yaw about the image y axis."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return ry @ rx


def rotate_affine(f: np.ndarray, rot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """F (3, 4) rotated by ``rot`` (3, 3) about the image-space point ``centre`` (3,)."""
    out = np.empty((3, 4))
    out[:, :3] = rot @ f[:, :3]
    out[:, 3] = rot @ (f[:, 3] - centre) + centre
    return out


def apply_affine(f: np.ndarray, model_points: np.ndarray) -> np.ndarray:
    """Model-space points (V, 3) -> image-space (V, 3) float32."""
    return (model_points @ f[:, :3].T + f[:, 3]).astype(np.float32)


def extend_grid(points: np.ndarray, grid_shape: tuple[int, int], ring: int) -> np.ndarray:
    """Grid points (rows*cols, 3) -> the grid grown by ``ring`` rows/columns on every side ((rows+2r)*(cols+2r), 3).

    New points continue the border linearly (the last cell's step repeated), so the surface goes on along its edge
    tangent: past the cheeks it keeps turning away like the side of a head, above the brows it keeps rising like a
    forehead. Rendered with the face, the hair, ears and neck next to it turn with it instead of staying behind.
    """
    rows, cols = grid_shape
    if ring <= 0:
        return points
    g = points.reshape(rows, cols, 3)
    k = np.arange(ring, 0, -1, dtype=points.dtype)[:, None, None]
    top = g[0] + k * (g[0] - g[1])
    bottom = g[-1] + k[::-1] * (g[-1] - g[-2])
    g = np.concatenate([top, g, bottom], 0)
    k = k.transpose(1, 0, 2)
    left = g[:, :1] + k * (g[:, :1] - g[:, 1:2])
    right = g[:, -1:] + k[:, ::-1] * (g[:, -1:] - g[:, -2:-1])
    return np.ascontiguousarray(np.concatenate([left, g, right], 1).reshape(-1, 3))


def fill_region(image: np.ndarray, mask: np.ndarray, sigma: float, down: int = 4) -> np.ndarray:
    """``image`` with the pixels where ``mask`` is set replaced by a normalised Gaussian average of the others.

    The average is computed at 1/``down`` resolution (it is smooth by construction) and upsampled bilinearly.
    """
    h, w = mask.shape
    keep = (~mask).astype(np.float32)
    img = image.astype(np.float32)
    small = (max(w // down, 1), max(h // down, 1))
    num = cv2.resize(img * keep[..., None], small, interpolation=cv2.INTER_AREA)
    den = cv2.resize(keep, small, interpolation=cv2.INTER_AREA)
    num = cv2.GaussianBlur(num, (0, 0), sigma / down)
    den = cv2.GaussianBlur(den, (0, 0), sigma / down)
    mean = img[~mask].mean(0) if (~mask).any() else img.reshape(-1, img.shape[-1]).mean(0)
    fill = np.where(den[..., None] > 1e-3, num / np.maximum(den, 1e-3)[..., None], mean)
    fill = cv2.resize(fill.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(mask[..., None], fill, img).astype(np.uint8)


@dataclass
class Profiler:
    """Re-renders faces at new poses. ``model_vertices(real)`` (V, 3) comes from the dense basis; ``tri`` (F, 3)."""

    dense_basis: object
    tri: np.ndarray
    mirror: np.ndarray
    grid_shape: tuple[int, int] = (64, 64)
    ring: int = 0  # grid rows/columns added around the face (``extend_grid``); ``tri``/``mirror`` include them
    inner: np.ndarray | None = None  # (V,) bool: the face grid's own vertices (the ring's are never mirrored)
    depth_tol: float = 0.05  # x face size: a vertex this far behind the z-buffer counts as hidden
    mirror_margin: float = 0.25  # facing (normal z) by which the mirror vertex must win to lend its texture
    fill_sigma: float = 10.0
    _buffers: dict | None = None

    @classmethod
    def from_morphable(cls, morph, ring: int = 0) -> "Profiler":
        """``ring``: grid rows/columns of surrounding head (hair, ears, neck) rotated with the face."""
        from model.morphable import grid_triangles

        if morph.grid_shape is None:
            raise ValueError("face profiling needs a grid mesh (for the left-right mirror of hidden vertices)")
        rows, cols = morph.grid_shape
        big = (rows + 2 * ring, cols + 2 * ring)
        # the whole grid (``dense_full``, ``tri_full``), not the face cut: profiling re-renders hair and ears too
        tri = getattr(morph, "tri_full", morph.tri) if ring == 0 else grid_triangles(*big)
        inner = np.zeros(big, bool)
        inner[ring:ring + rows, ring:ring + cols] = True
        return cls(getattr(morph, "dense_full", morph.dense_basis), np.ascontiguousarray(tri, np.int32), grid_mirror(big), morph.grid_shape, ring,
                   inner.ravel())

    def _buf(self, h: int, w: int, c: int) -> RasterBuffers:
        if self._buffers is None:
            self._buffers = {}
        key = (h, w, c)
        if key not in self._buffers:
            self._buffers[key] = RasterBuffers.create(h, w, c)
        return self._buffers[key]

    def render(self, image: np.ndarray, f: np.ndarray, real: np.ndarray, yaw_deg: float,
               pitch_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rotate the face fitted by (F, real) in ``image`` (H, W, 3) uint8 by yaw/pitch (degrees).

        Returns (new image (H, W, 3) uint8, new F (3, 4), face mask (H, W) bool where the rotated face was drawn).
        """
        h, w = image.shape[:2]
        x = extend_grid(self.dense_basis.shape_model(np.asarray(real, np.float32)[None])[0], self.grid_shape,
                        self.ring)
        v0 = apply_affine(f, x)
        src = rasterize(v0, self.tri, None, buffers=self._buf(h, w, 0))
        src_mask = src.tri_id >= 0
        px = np.clip(np.round(v0[:, 0]), 0, w - 1).astype(np.intp)
        py = np.clip(np.round(v0[:, 1]), 0, h - 1).astype(np.intp)
        inside = (v0[:, 0] >= 0) & (v0[:, 0] <= w - 1) & (v0[:, 1] >= 0) & (v0[:, 1] <= h - 1)
        size = float(np.ptp(v0[:, 0]) + np.ptp(v0[:, 1])) / 2
        # hidden = behind the surface drawn at its pixel by more than a slope's worth (self-occlusion by the nose
        # or a turned cheek is far deeper than that); an outline pixel left empty by the fill rule reads -inf
        visible = inside & (v0[:, 2] >= src.depth[py, px] - self.depth_tol * size)
        facing = np.where(visible, vertex_normals(v0, self.tri)[:, 2], -1.0)
        # texture from the mirror vertex when it is seen and faces the camera clearly better (a cheek seen at a
        # grazing angle stretches into streaks once turned to the front)
        # (blend weight ramps over 0.2 of facing; colours are blended per pixel, never the positions: a triangle
        # between an own-textured and a mirror-textured vertex would otherwise sample across the whole face)
        gain = facing[self.mirror] - facing - self.mirror_margin
        if self.inner is not None:  # hair, ears and background around the face are not symmetric: never mirrored
            gain = np.where(self.inner, gain, -1.0)
        attrs = np.empty((len(v0), 5), np.float32)
        attrs[:, :2] = v0[:, :2]
        attrs[:, 2:4] = v0[self.mirror, :2]
        attrs[:, 4] = np.clip(gain / 0.2 + 0.5, 0.0, 1.0)

        centre = v0.mean(0).astype(np.float64)
        rot = rotation_yaw_pitch(yaw_deg, pitch_deg)
        f1 = rotate_affine(f, rot, centre)
        v1 = apply_affine(f1, x)
        dst = rasterize(v1, self.tri, attrs, buffers=self._buf(h, w, 5))
        mask = dst.tri_id >= 0
        a = dst.attr
        own = cv2.remap(image, np.ascontiguousarray(a[..., 0]), np.ascontiguousarray(a[..., 1]), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        face = own
        wm = a[..., 4:5]
        if (wm > 0).any():
            mir = cv2.remap(image, np.ascontiguousarray(a[..., 2]), np.ascontiguousarray(a[..., 3]), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            face = own * (1 - wm) + mir * wm
        old = cv2.dilate(src_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        background = fill_region(image, old & ~mask, self.fill_sigma)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0.6)
        alpha = np.where(mask, np.maximum(alpha, 0.5), alpha)[..., None]
        out = face * alpha + background.astype(np.float32) * (1 - alpha)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), f1, mask
