"""Mesh helpers for rendering: facing, per-vertex normals (numba), edge lists, grid topology (mirror, UV, lines).

Coordinates are frame pixels (x right, y down, z toward the camera); see ``model.raster.zbuffer`` for the winding rule.
"""
from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np

_EDGE_CACHE: dict[tuple, np.ndarray] = {}


@nb.njit(cache=True, nogil=True)
def _sum_signed_area(verts, tris):
    s = 0.0
    for f in range(tris.shape[0]):
        a = verts[tris[f, 0]]
        b = verts[tris[f, 1]]
        c = verts[tris[f, 2]]
        area = (np.float64(b[0]) - a[0]) * (np.float64(c[1]) - a[1]) - (np.float64(b[1]) - a[1]) * (np.float64(c[0]) - a[0])
        if np.isfinite(area):
            s += area
    return s


def front_cull(vertices: np.ndarray, tri: np.ndarray) -> int:
    """The ``cull`` value (see ``rasterize``) that keeps the triangles facing the camera: +1 or -1.

    For an open surface (a face mask) the signed projected areas of all triangles add up to the signed area of its
    outline, so their sign tells the winding of the visible side whenever the surface is seen from the front
    (|yaw| < 90 degrees). vertices (V, 3) float32 frame px, tri (F, 3) int32.
    """
    s = _sum_signed_area(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(tri, np.int32))
    return 1 if s <= 0.0 else -1


@nb.njit(cache=True, nogil=True)
def _vertex_normals(verts, tris, sign, out):
    V = verts.shape[0]
    for i in range(V):
        out[i, 0] = 0.0
        out[i, 1] = 0.0
        out[i, 2] = 0.0
    for f in range(tris.shape[0]):
        i0 = tris[f, 0]
        i1 = tris[f, 1]
        i2 = tris[f, 2]
        ax = verts[i1, 0] - verts[i0, 0]
        ay = verts[i1, 1] - verts[i0, 1]
        az = verts[i1, 2] - verts[i0, 2]
        bx = verts[i2, 0] - verts[i0, 0]
        by = verts[i2, 1] - verts[i0, 1]
        bz = verts[i2, 2] - verts[i0, 2]
        nx = sign * (ay * bz - az * by)  # area-weighted face normal
        ny = sign * (az * bx - ax * bz)
        nz = sign * (ax * by - ay * bx)
        if not np.isfinite(nx + ny + nz):
            continue
        for k in (i0, i1, i2):
            out[k, 0] += nx
            out[k, 1] += ny
            out[k, 2] += nz
    for i in range(V):
        n = np.sqrt(out[i, 0] ** 2 + out[i, 1] ** 2 + out[i, 2] ** 2)
        if n > 0.0:
            out[i, 0] /= n
            out[i, 1] /= n
            out[i, 2] /= n
        else:
            out[i, 2] = 1.0


def vertex_normals(vertices: np.ndarray, tri: np.ndarray, front: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Unit per-vertex normals (V, 3) float32 in frame axes (x right, y down, z toward the camera).

    Area-weighted mean of the adjacent face normals, oriented so that triangles of the ``front`` winding (``cull``
    convention of ``rasterize``: +1 screen-CCW, -1 screen-CW, 0 = decide with :func:`front_cull`) have n_z > 0.
    Vertices without a valid triangle get (0, 0, 1). ``out`` (V, 3) float32 is reused when given.
    """
    verts = np.ascontiguousarray(vertices, np.float32)
    tris = np.ascontiguousarray(tri, np.int32)
    if front == 0:
        front = front_cull(verts, tris)
    if out is None:
        out = np.empty((verts.shape[0], 3), np.float32)
    # cross z of a triangle equals its signed area A; screen-CCW means A < 0, so flip for front = +1
    _vertex_normals(verts, tris, np.float32(-1.0 if front > 0 else 1.0), out)
    return out


def mesh_edges(tri: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2) int32 (first index < second) of triangles (F, 3); cached per topology."""
    tris = np.ascontiguousarray(tri, np.int32)
    key = (tris.shape, hash(tris.tobytes()))
    edges = _EDGE_CACHE.get(key)
    if edges is None:
        e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
        e.sort(axis=1)
        edges = np.unique(e, axis=0).astype(np.int32)
        if len(_EDGE_CACHE) > 16:
            _EDGE_CACHE.clear()
        _EDGE_CACHE[key] = edges
    return edges


@lru_cache(maxsize=8)
def grid_lines(grid_shape: tuple[int, int], step: int = 2) -> np.ndarray:
    """Edges (E, 2) int32 along every ``step``-th row and column of a row-major grid (no diagonals): a wireframe."""
    rows, cols = grid_shape
    idx = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)
    r_sel = sorted(set(range(0, rows, step)) | {rows - 1})
    c_sel = sorted(set(range(0, cols, step)) | {cols - 1})
    horiz = np.stack([idx[r_sel, :-1].ravel(), idx[r_sel, 1:].ravel()], 1)
    vert = np.stack([idx[:-1, c_sel].ravel(), idx[1:, c_sel].ravel()], 1)
    return np.ascontiguousarray(np.concatenate([horiz, vert]), dtype=np.int32)


def face_grid_lines(grid_shape: tuple[int, int], tri: np.ndarray, step: int = 2) -> np.ndarray:
    """Wireframe edges (E, 2) int32 of a grid mesh cut to the triangles ``tri`` (F, 3): the ``grid_lines`` that are
    edges of ``tri``, and the mesh's own boundary (the face outline, the lips' slit). Cached per topology."""
    tris = np.ascontiguousarray(tri, np.int32)
    key = ("lines", tuple(grid_shape), step, tris.shape, hash(tris.tobytes()))
    edges = _EDGE_CACHE.get(key)
    if edges is None:
        from model.face_mesh import boundary_edges

        lines = np.sort(grid_lines(tuple(grid_shape), step), axis=1)
        mesh = mesh_edges(tris)
        n = int(max(lines.max(), mesh.max())) + 1
        on_mesh = np.isin(lines[:, 0].astype(np.int64) * n + lines[:, 1], mesh[:, 0].astype(np.int64) * n + mesh[:, 1])
        edges = np.unique(np.concatenate([lines[on_mesh], boundary_edges(tris)]), axis=0).astype(np.int32)
        if len(_EDGE_CACHE) > 16:
            _EDGE_CACHE.clear()
        _EDGE_CACHE[key] = edges
    return edges


def grid_mirror(grid_shape: tuple[int, int]) -> np.ndarray:
    """Left-right mirror index (V,) int32 of a row-major grid: vertex (r, c) <-> (r, cols - 1 - c)."""
    rows, cols = grid_shape
    idx = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)
    return np.ascontiguousarray(idx[:, ::-1].ravel())


def grid_uv(grid_shape: tuple[int, int], size: int) -> np.ndarray:
    """Texel coordinates (V, 2) float32 (u = x, v = y, pixel centres at integers) of grid vertices in a ``size`` map.

    Vertex (r, c) sits at texel (c * (size-1)/(cols-1), r * (size-1)/(rows-1)): the corners land on corner texels.
    """
    rows, cols = grid_shape
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    u = c.ravel() * ((size - 1) / (cols - 1))
    v = r.ravel() * ((size - 1) / (rows - 1))
    return np.stack([u, v], 1).astype(np.float32)
