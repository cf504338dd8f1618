"""Numba kernels that turn rasterizer buffers into pixels: shading, colour/depth blending, hidden-line wireframe.

All kernels write ``out`` (H, W, 3) uint8 BGR only where a triangle covers the pixel (``tri_id >= 0``) or, for lines,
on the line; every other pixel is left untouched. They work inside a box ``(y0, y1, x0, x1)`` (half-open, usually
``RasterBuffers.bbox``) so the cost scales with the face, not the frame. ``out`` may be ``frame`` itself.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _to_u8(v):
    if v <= 0.0:
        return np.uint8(0)
    if v >= 255.0:
        return np.uint8(255)
    return np.uint8(int(v + 0.5))


@nb.njit(cache=True, nogil=True)
def shade_lambert(out, frame, tri_id, normals, y0, y1, x0, x1, colour, light, ambient, alpha):
    """Lambert-shade interpolated normals (attr channels 0..2) with ``colour`` (3,) BGR 0..255 and blend by ``alpha``.

    light (3,) unit direction toward the light in frame axes (x right, y down, z toward the camera);
    intensity = ambient + (1 - ambient) * max(0, n . light).
    """
    for y in range(y0, y1):
        for x in range(x0, x1):
            if tri_id[y, x] < 0:
                continue
            nx = normals[y, x, 0]
            ny = normals[y, x, 1]
            nz = normals[y, x, 2]
            n = np.sqrt(nx * nx + ny * ny + nz * nz)
            lam = 0.0
            if n > 0.0:
                lam = (nx * light[0] + ny * light[1] + nz * light[2]) / n
                if lam < 0.0:
                    lam = 0.0
            k = ambient + (1.0 - ambient) * lam
            for c in range(3):
                out[y, x, c] = _to_u8(frame[y, x, c] * (1.0 - alpha) + colour[c] * k * alpha)


@nb.njit(cache=True, nogil=True)
def blend_colour(out, frame, tri_id, attr, y0, y1, x0, x1, scale, alpha):
    """Blend the colour ``attr[..., :3] * scale`` (BGR) over ``frame`` with ``alpha`` where covered."""
    for y in range(y0, y1):
        for x in range(x0, x1):
            if tri_id[y, x] < 0:
                continue
            for c in range(3):
                out[y, x, c] = _to_u8(frame[y, x, c] * (1.0 - alpha) + attr[y, x, c] * scale * alpha)


@nb.njit(cache=True, nogil=True)
def blend_depth(out, frame, tri_id, depth, y0, y1, x0, x1, zmin, zmax, alpha):
    """Grey depth map (near = bright, ``zmin..zmax`` -> 0..255) blended with ``alpha`` where covered."""
    k = 255.0 / (zmax - zmin) if zmax > zmin else 0.0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if tri_id[y, x] < 0:
                continue
            g = (depth[y, x] - zmin) * k
            for c in range(3):
                out[y, x, c] = _to_u8(frame[y, x, c] * (1.0 - alpha) + g * alpha)


@nb.njit(cache=True, nogil=True)
def draw_edges(out, verts, edges, depth, colour, tol, alpha):
    """Draw mesh edges (E, 2) as 1-px lines, hidden-line removed against ``depth`` (z >= depth - tol passes).

    verts (V, 3) frame px; samples along a line sit at integer pixel centres (rounded), z interpolated linearly.
    """
    H = out.shape[0]
    W = out.shape[1]
    for e in range(edges.shape[0]):
        a = edges[e, 0]
        b = edges[e, 1]
        xa = np.float64(verts[a, 0])
        ya = np.float64(verts[a, 1])
        za = np.float64(verts[a, 2])
        dx = verts[b, 0] - xa
        dy = verts[b, 1] - ya
        dz = verts[b, 2] - za
        if not np.isfinite(xa + ya + za + dx + dy + dz):
            continue
        if (xa < 0 and xa + dx < 0) or (ya < 0 and ya + dy < 0) or (xa > W and xa + dx > W) or (ya > H and ya + dy > H):
            continue
        n = int(max(abs(dx), abs(dy))) + 1
        for i in range(n + 1):
            t = i / n
            px = int(np.floor(xa + t * dx + 0.5))
            py = int(np.floor(ya + t * dy + 0.5))
            if px < 0 or py < 0 or px >= W or py >= H:
                continue
            if za + t * dz < depth[py, px] - tol:
                continue
            for c in range(3):
                out[py, px, c] = _to_u8(out[py, px, c] * (1.0 - alpha) + colour[c] * alpha)


@nb.njit(cache=True, nogil=True)
def blend_masked(out, frame, colour, alpha, y0, x0):
    """``out[y0+i, x0+j] = frame * (1 - a) + colour * a`` where ``a = alpha[i, j] > 0``; elsewhere out is untouched.

    colour (h, w, 3) float32 BGR 0..255 and alpha (h, w) float32 0..1 are crops whose corner sits at (y0, x0).
    """
    for i in range(alpha.shape[0]):
        for j in range(alpha.shape[1]):
            a = alpha[i, j]
            if a <= 0.0:
                continue
            y = y0 + i
            x = x0 + j
            for c in range(3):
                out[y, x, c] = _to_u8(frame[y, x, c] * (1.0 - a) + colour[i, j, c] * a)
