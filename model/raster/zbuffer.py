"""Z-buffer triangle rasterizer (numba): depth, per-vertex attributes interpolated, triangle ids.

Conventions (the numpy reference in ``tests/test_raster_zbuffer.py`` follows the same rules):

- Vertices ``(V, 3)`` float32 in frame pixels: x right, y down, z toward the camera (larger z is nearer). Orthographic:
  attributes and depth are interpolated linearly in screen space (exact for weak perspective, which the 3DMM uses).
- **Pixel centres are at integer coordinates**: pixel ``(row r, col c)`` samples the point ``(x=c, y=r)``. This matches
  OpenCV (``cv2.circle``, ``cv2.remap``) and the landmark coordinates of the rest of the project.
- **Edges: top-left rule.** A sample exactly on an edge belongs to the triangle only when that edge is a top edge
  (horizontal, interior below) or a left edge (interior to its right). Two triangles sharing an edge therefore never both
  cover a sample on it and never both miss it: no holes, no double coverage, whatever the winding.
- Edge functions and barycentrics are computed in float64 with a fixed operation order (no fastmath), so the result is
  deterministic and equal to the reference bit for bit.
- **Depth test**: a fragment is written when its interpolated z is strictly greater than the stored depth (float32,
  ``-inf`` where empty); equal depth keeps the earlier triangle (lower index, earlier call).
- **Winding / culling**: signed area ``A = (x1-x0)(y2-y0) - (y1-y0)(x2-x0)`` in frame coordinates (y down).
  ``A < 0`` is counter-clockwise as seen on the screen (the orientation of ``MorphableModel.tri`` for a face looking at
  the camera). ``cull=+1`` drops triangles with ``A > 0`` (keeps screen-CCW), ``cull=-1`` drops ``A < 0``, ``cull=0``
  keeps both. Degenerate (``A == 0``) and non-finite triangles are skipped.
- Off-screen parts are clipped to the image by the bounding box: no geometric clipping is needed (no near plane).

Several meshes share one z-buffer: call :func:`rasterize` with ``clear=False`` (and a ``tri_offset``), or
:func:`rasterize_batch` for N meshes of one topology (triangle id ``n * F + f``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np

EMPTY_ID = -1

# Threading, measured on the project's 2 shared cores (bench/bench_render.py; 640x480, one 4096-vertex face 253 px
# tall, 3 channels): serial 1.0 ms; the banded prange kernel 0.7 ms when the machine is idle but 8-15 ms as soon as
# other processes use the cores (OpenMP threads wait on each other). Serial is the default; ``parallel=True`` is
# there for large frames on dedicated cores.
PARALLEL_DEFAULT = False


@nb.njit(cache=True, nogil=True)
def _raster_rows(verts, tris, attrs, depth, attr_img, tri_img, row0, row1, cull, tri_offset, bbox):
    """Rasterize every triangle into rows [row0, row1); grow ``bbox`` (y0, y1, x0, x1; half-open) by written pixels."""
    W = depth.shape[1]
    C = attrs.shape[1]
    by0, by1, bx0, bx1 = bbox[0], bbox[1], bbox[2], bbox[3]
    for f in range(tris.shape[0]):
        i0 = tris[f, 0]
        i1 = tris[f, 1]
        i2 = tris[f, 2]
        x0 = np.float64(verts[i0, 0])
        y0 = np.float64(verts[i0, 1])
        z0 = np.float64(verts[i0, 2])
        x1 = np.float64(verts[i1, 0])
        y1 = np.float64(verts[i1, 1])
        z1 = np.float64(verts[i1, 2])
        x2 = np.float64(verts[i2, 0])
        y2 = np.float64(verts[i2, 1])
        z2 = np.float64(verts[i2, 2])
        if not np.isfinite(x0 + y0 + z0 + x1 + y1 + z1 + x2 + y2 + z2):
            continue
        # quick reject on the band and the image before any setup
        fymin = min(y0, min(y1, y2))
        fymax = max(y0, max(y1, y2))
        if fymax < row0 or fymin > row1 - 1:
            continue
        fxmin = min(x0, min(x1, x2))
        fxmax = max(x0, max(x1, x2))
        if fxmax < 0.0 or fxmin > W - 1.0:
            continue
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0.0:
            continue
        if cull > 0 and area > 0.0:
            continue
        if cull < 0 and area < 0.0:
            continue
        if area < 0.0:  # make every triangle positive (clockwise on screen): swap vertices 1 and 2
            i1, i2 = i2, i1
            x1, x2 = x2, x1
            y1, y2 = y2, y1
            z1, z2 = z2, z1
            area = -area
        xmin = int(np.ceil(max(fxmin, 0.0)))
        xmax = int(np.floor(min(fxmax, W - 1.0)))
        ymin = int(np.ceil(max(fymin, np.float64(row0))))
        ymax = int(np.floor(min(fymax, np.float64(row1 - 1))))
        if xmin > xmax or ymin > ymax:
            continue
        inv = 1.0 / area
        # edge e0: v1 -> v2 (weight of v0), e1: v2 -> v0, e2: v0 -> v1; interior is where all are positive
        dx0 = x2 - x1
        dy0 = y2 - y1
        dx1 = x0 - x2
        dy1 = y0 - y2
        dx2 = x1 - x0
        dy2 = y1 - y0
        tl0 = dy0 < 0.0 or (dy0 == 0.0 and dx0 > 0.0)
        tl1 = dy1 < 0.0 or (dy1 == 0.0 and dx1 > 0.0)
        tl2 = dy2 < 0.0 or (dy2 == 0.0 and dx2 > 0.0)
        fid = f + tri_offset
        for py in range(ymin, ymax + 1):
            fy = np.float64(py)
            for px in range(xmin, xmax + 1):
                fx = np.float64(px)
                w0 = dx0 * (fy - y1) - dy0 * (fx - x1)
                if w0 < 0.0 or (w0 == 0.0 and not tl0):
                    continue
                w1 = dx1 * (fy - y2) - dy1 * (fx - x2)
                if w1 < 0.0 or (w1 == 0.0 and not tl1):
                    continue
                w2 = dx2 * (fy - y0) - dy2 * (fx - x0)
                if w2 < 0.0 or (w2 == 0.0 and not tl2):
                    continue
                b0 = w0 * inv
                b1 = w1 * inv
                b2 = w2 * inv
                z = b0 * z0 + b1 * z1 + b2 * z2
                if z > depth[py, px]:
                    depth[py, px] = z
                    tri_img[py, px] = fid
                    for c in range(C):
                        attr_img[py, px, c] = b0 * attrs[i0, c] + b1 * attrs[i1, c] + b2 * attrs[i2, c]
                    if py < by0:
                        by0 = py
                    if py + 1 > by1:
                        by1 = py + 1
                    if px < bx0:
                        bx0 = px
                    if px + 1 > bx1:
                        bx1 = px + 1
    bbox[0] = by0
    bbox[1] = by1
    bbox[2] = bx0
    bbox[3] = bx1


@nb.njit(cache=True, nogil=True)
def _y_range(verts, H):
    """Rows [r0, r1) that the finite vertices can touch, clamped to the image."""
    lo = np.inf
    hi = -np.inf
    for i in range(verts.shape[0]):
        y = np.float64(verts[i, 1])
        if np.isfinite(y):
            lo = min(lo, y)
            hi = max(hi, y)
    if not (hi >= lo):
        return 0, 0
    r0 = int(np.ceil(max(lo, 0.0)))
    r1 = int(np.floor(min(hi, H - 1.0))) + 1
    return r0, max(r0, r1)


@nb.njit(cache=True, nogil=True)
def _raster_serial(verts, tris, attrs, depth, attr_img, tri_img, cull, tri_offset, bbox):
    _raster_rows(verts, tris, attrs, depth, attr_img, tri_img, 0, depth.shape[0], cull, tri_offset, bbox)


@nb.njit(cache=True, nogil=True, parallel=True)
def _raster_parallel(verts, tris, attrs, depth, attr_img, tri_img, cull, tri_offset, bbox, nbands):
    r0, r1 = _y_range(verts, depth.shape[0])
    n = r1 - r0
    if n <= 0:
        return
    bbs = np.empty((nbands, 4), np.int64)
    for b in nb.prange(nbands):
        for k in range(4):
            bbs[b, k] = bbox[k]
        _raster_rows(verts, tris, attrs, depth, attr_img, tri_img,
                     r0 + b * n // nbands, r0 + (b + 1) * n // nbands, cull, tri_offset, bbs[b])
    for b in range(nbands):
        bbox[0] = min(bbox[0], bbs[b, 0])
        bbox[1] = max(bbox[1], bbs[b, 1])
        bbox[2] = min(bbox[2], bbs[b, 2])
        bbox[3] = max(bbox[3], bbs[b, 3])


@nb.njit(cache=True, nogil=True)
def _clear_region(depth, attr_img, tri_img, y0, y1, x0, x1):
    C = attr_img.shape[2]
    for y in range(y0, y1):
        for x in range(x0, x1):
            depth[y, x] = -np.inf
            tri_img[y, x] = -1
            for c in range(C):
                attr_img[y, x, c] = 0.0


@dataclass
class RasterBuffers:
    """Reusable output of the rasterizer for one frame size.

    ``depth`` (H, W) float32, ``-inf`` where empty; ``attr`` (H, W, C) float32, 0 where empty; ``tri_id`` (H, W) int32,
    -1 where empty; ``bbox`` int64 ``[y0, y1, x0, x1]`` (half-open) of the pixels written since the last :meth:`clear`
    (empty when ``y0 >= y1``). Clearing only resets that box, so a frame costs no full-buffer fill or allocation.
    """

    depth: np.ndarray
    attr: np.ndarray
    tri_id: np.ndarray
    bbox: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))

    @classmethod
    def create(cls, height: int, width: int, channels: int = 0) -> "RasterBuffers":
        """Empty buffers for an (height, width) frame and ``channels`` attribute channels."""
        buf = cls(np.full((height, width), -np.inf, np.float32),
                  np.zeros((height, width, channels), np.float32),
                  np.full((height, width), EMPTY_ID, np.int32))
        buf._reset_bbox()
        return buf

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape[0], self.depth.shape[1]

    @property
    def channels(self) -> int:
        return self.attr.shape[2]

    def _reset_bbox(self) -> None:
        h, w = self.shape
        self.bbox[:] = (h, 0, w, 0)

    def is_empty(self) -> bool:
        return bool(self.bbox[0] >= self.bbox[1] or self.bbox[2] >= self.bbox[3])

    def region(self, pad: int = 0) -> tuple[slice, slice]:
        """Row and column slices of the written box grown by ``pad`` pixels (clamped to the frame)."""
        h, w = self.shape
        y0, y1, x0, x1 = (int(v) for v in self.bbox)
        return (slice(max(y0 - pad, 0), min(y1 + pad, h)), slice(max(x0 - pad, 0), min(x1 + pad, w)))

    def clear(self) -> None:
        """Reset the written box to empty (depth -inf, attributes 0, ids -1)."""
        if not self.is_empty():
            y0, y1, x0, x1 = (int(v) for v in self.bbox)
            _clear_region(self.depth, self.attr, self.tri_id, y0, y1, x0, x1)
        self._reset_bbox()

    def ensure(self, height: int, width: int, channels: int) -> "RasterBuffers":
        """These buffers if they fit (height, width, channels), else new ones (same object when possible)."""
        if self.shape != (height, width):
            return RasterBuffers.create(height, width, channels)
        if self.channels != channels:
            self.clear()
            self.attr = np.zeros((height, width, channels), np.float32)
        return self


def _as_f32(a: np.ndarray, ndim: int, name: str) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def rasterize(vertices: np.ndarray, triangles: np.ndarray, attributes: np.ndarray | None = None,
              height: int | None = None, width: int | None = None, *, buffers: RasterBuffers | None = None,
              clear: bool = True, cull: int = 0, tri_offset: int = 0,
              parallel: bool | None = None, nbands: int = 4) -> RasterBuffers:
    """Rasterize one mesh into a z-buffer.

    vertices (V, 3) float32 frame px (x right, y down, z toward camera); triangles (F, 3) int32 indices;
    attributes (V, C) float32 (any C, None for C = 0); height/width the frame size (or taken from ``buffers``).
    ``buffers`` are reused when given (and must be, with ``clear=False``, to draw several meshes into one z-buffer);
    ``cull`` +1 keeps screen-CCW triangles, -1 screen-CW, 0 both; triangle ids written are ``tri_offset + f``.
    Returns the buffers (depth (H, W), attr (H, W, C), tri_id (H, W), bbox).
    """
    verts = _as_f32(vertices, 2, "vertices")
    if verts.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {verts.shape}")
    tris = np.ascontiguousarray(triangles, dtype=np.int32)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tris.shape}")
    if tris.size and (tris.min() < 0 or tris.max() >= verts.shape[0]):
        raise ValueError("triangle index out of range")
    attrs = np.zeros((verts.shape[0], 0), np.float32) if attributes is None else _as_f32(attributes, 2, "attributes")
    if attrs.shape[0] != verts.shape[0]:
        raise ValueError(f"attributes must have one row per vertex ({verts.shape[0]}), got {attrs.shape}")
    if buffers is None:
        if height is None or width is None:
            raise ValueError("give height and width, or buffers")
        buffers = RasterBuffers.create(int(height), int(width), attrs.shape[1])
    else:
        h, w = buffers.shape
        if (height is not None and height != h) or (width is not None and width != w):
            raise ValueError(f"buffers are {h}x{w}, asked for {height}x{width}")
        if clear:
            buffers.clear()
        elif buffers.channels != attrs.shape[1]:
            raise ValueError(f"buffers have {buffers.channels} channels, attributes {attrs.shape[1]}")
        buffers = buffers.ensure(h, w, attrs.shape[1])
    use_parallel = PARALLEL_DEFAULT if parallel is None else parallel
    if use_parallel:
        _raster_parallel(verts, tris, attrs, buffers.depth, buffers.attr, buffers.tri_id, int(cull), int(tri_offset),
                         buffers.bbox, int(nbands))
    else:
        _raster_serial(verts, tris, attrs, buffers.depth, buffers.attr, buffers.tri_id, int(cull), int(tri_offset),
                       buffers.bbox)
    return buffers


def rasterize_batch(vertices: np.ndarray, triangles: np.ndarray, attributes: np.ndarray | None = None,
                    height: int | None = None, width: int | None = None, *, buffers: RasterBuffers | None = None,
                    cull: int = 0, parallel: bool | None = None) -> RasterBuffers:
    """N meshes of one topology into one z-buffer: vertices (N, V, 3), attributes (N, V, C) or (V, C) shared.

    The triangle id of mesh n, triangle f is ``n * F + f`` (so ``tri_id // F`` is the mesh index).
    """
    verts = np.asarray(vertices)
    if verts.ndim != 3:
        raise ValueError(f"vertices must be (N, V, 3), got {verts.shape}")
    n_faces = triangles.shape[0]
    for n in range(verts.shape[0]):
        a = None
        if attributes is not None:
            a = attributes if np.ndim(attributes) == 2 else attributes[n]
        buffers = rasterize(verts[n], triangles, a, height, width, buffers=buffers, clear=(n == 0), cull=cull,
                            tri_offset=n * n_faces, parallel=parallel)
    if verts.shape[0] == 0:
        c = 0 if attributes is None else np.shape(attributes)[-1]
        if buffers is None:
            buffers = RasterBuffers.create(int(height), int(width), c)
        else:
            buffers.clear()
    return buffers
