"""The source's 3DMM shape on the target's pose and expression, for the full face swap.

The swap renders the source's texture on the target's mesh. With the target's own identity coefficients the source's
nose, lips and face come out in the target's proportions; here the target's mesh takes the source's shape
coefficients instead (its pose, expression and extended expression stay), weighted per vertex: all of it inside the
face, none at what must stay where the target's is: the face's contour (the blend meets the target's own outline),
the target's inner eyes and inner mouth (the holes the target shows through are placed from its landmarks). The
weights fade smoothly over ``SHAPE_EDGE`` UV units from the contour and ``SHAPE_HOLE`` eye / mouth widths from the
holes, so the geometry has no kink.

The offset is linear in the coefficients: model space ``W_shp (a_src - a_tgt)``, rotated and scaled by the target's
pose and its ROI (x, y: both conventions scale by the ROI and flip y; z: the mean scale), added to the target's
vertices.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from model.basis import N_SHAPE
from model.morphable import CROP_SIZE
from stream.render.swap_kernels import add_offsets

SHAPE_EDGE = 0.12  # UV units (texture.edge): the source's shape fades in from the face's contour over this distance
SHAPE_HOLE = (0.6, 0.6)  # ... and from the target's inner eyes / inner mouth over this many eye / mouth widths


@dataclass
class ShapeSwap:
    """What a swap needs to put a source's shape on targets: the moved vertices ``index`` (K,), their weights
    ``weight`` (K,) float32, the shape basis of those vertices (3K, 40) float32 (rows x, y, z per vertex), and the source's shape
    coefficients (40,) float32."""

    index: np.ndarray
    weight: np.ndarray
    basis: np.ndarray
    shape: np.ndarray

    def apply(self, vertices: np.ndarray, params: np.ndarray, roi: np.ndarray) -> np.ndarray:
        """A target's frame vertices (V, 3) with the source's shape (a copy): ``params`` (62,) its real parameters
        (pose, shape, expression), ``roi`` (4,) its box (x1, y1, x2, y2)."""
        p = np.asarray(params, np.float32)
        d = self.basis @ (self.shape - p[12:12 + N_SHAPE])  # (3K,) model space, x, y, z per vertex
        sx = float(roi[2] - roi[0]) / CROP_SIZE
        sy = float(roi[3] - roi[1]) / CROP_SIZE
        out = np.array(vertices, np.float32)
        # the target's rotation and scale (crop units), then the ROI's scale (y flipped in the frame)
        add_offsets(out, self.index, self.weight, d.reshape(-1, 3), np.ascontiguousarray(p[:12].reshape(3, 4)[:, :3]),
                    np.array([sx, -sy, (sx + sy) / 2], np.float32))
        return out


def shape_weights(morph, edge: np.ndarray) -> np.ndarray:
    """(V,) float32 weights of the source's shape: 1 inside the face, 0 at its contour (``edge`` (V,) the UV distance
    from the mesh's outer boundary, ``FaceTexture.edge``) and inside the inner eyes and inner mouth of the mean
    shape's landmarks, a smoothstep over ``SHAPE_EDGE`` / ``SHAPE_HOLE`` in between."""
    u = np.asarray(morph.dense_basis.u, np.float64)[:, :2]
    lm = np.asarray(morph.sparse.u, np.float64)[:, :2]
    w = _smoothstep(np.asarray(edge, np.float64) / SHAPE_EDGE)
    for sl, reach in ((slice(36, 42), SHAPE_HOLE[0]), (slice(42, 48), SHAPE_HOLE[0]), (slice(60, 68), SHAPE_HOLE[1])):
        poly = lm[sl]
        width = float(np.hypot(*(poly[0] - poly[len(poly) // 2])))  # corner to corner (36-39, 42-45, 60-64)
        contour = poly.astype(np.float32).reshape(-1, 1, 2)
        # signed distance, positive inside: 0 inside the hole, the distance outside
        dist = np.array([max(-cv2.pointPolygonTest(contour, (float(x), float(y)), True), 0.0) for x, y in u])
        w *= _smoothstep(dist / (reach * width))
    return w.astype(np.float32)


def shape_swap(morph, texture) -> ShapeSwap | None:
    """The ``ShapeSwap`` of a texture whose source shape is known (``texture.shape``), cached on it; else None."""
    shape = getattr(texture, "shape", None)
    if shape is None or texture.edge is None:
        return None
    cached = texture.__dict__.get("_shape_swap")
    if cached is not None and cached[0] is morph and cached[1] is shape:
        return cached[2]
    w = shape_weights(morph, texture.edge)
    idx = np.nonzero(w > 1e-3)[0]
    basis = np.ascontiguousarray(morph.dense_basis.w_shp[idx], np.float32).reshape(-1, N_SHAPE)
    out = ShapeSwap(idx, w[idx], basis, np.asarray(shape, np.float32))
    texture.__dict__["_shape_swap"] = (morph, shape, out)
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
