"""The face-shaped topology of a dense vertex set: which triangles are the face, where its boundary runs, its UVs.

The PAF grid (and the full BFM mesh) reach past the face: ears, neck, hair. The face is cut out once, on the mean
shape in model space (x right, y up), along a smooth outline: the jaw (landmarks 0-16) and a forehead arc above the
brows (17-26) raised by ``FOREHEAD`` x the brow-to-chin height, resampled as a periodic spline. Triangles with at least
one vertex inside are kept; every outside vertex they use (one ring) is moved onto the outline along its edge to the
nearest inside neighbour. That move is a fixed blend of two vertices' bases, so the boundary stays on the outline for
every shape, expression and pose (no staircase of grid cells, no flaps). The slit between the inner lips (the
triangles an open mouth stretches across) is left out, so an open mouth shows as a hole, as lips do.

Everything here is decided once per model (``MorphableModel.load``) and is plain numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOREHEAD = 0.2  # brow-to-forehead-top, as a fraction of the brow-to-chin height (the PAF grid ends at ~0.23)
JAW_INSET = 0.025  # the outline runs this far (x brow-to-chin height) inside the jaw landmarks


@dataclass
class FaceTopology:
    """tri (F', 3) int32 the face triangles; moved (M,) int32 outside vertices moved onto the outline, toward (M,)
    int32 the inside neighbour each moves to by ``t`` (M,) float64 (new = (1-t) old + t toward); inside (V,) bool;
    outline (K, 2) float64 model xy of the outline; slit (S,) int32 rows of the full tri left out between the lips."""

    tri: np.ndarray
    moved: np.ndarray
    toward: np.ndarray
    t: np.ndarray
    inside: np.ndarray
    outline: np.ndarray
    slit: np.ndarray

    def blend(self, a: np.ndarray) -> np.ndarray:
        """Apply the outline moves to per-vertex data ``a`` (V, ...) (a basis, positions, UVs): a new array."""
        out = np.array(a, copy=True)
        t = self.t.reshape((-1,) + (1,) * (out.ndim - 1))
        out[self.moved] = (1 - t) * a[self.moved] + t * a[self.toward]
        return out


def face_outline(landmarks: np.ndarray, forehead: float = FOREHEAD, jaw_inset: float = JAW_INSET,
                 n: int = 160) -> np.ndarray:
    """Smooth closed outline (n, 2) float64 in model xy (y up) from the mean 68 landmarks (68, 2|3).

    Jaw 0-16 drawn in toward the centre by ``jaw_inset`` x brow-to-chin height (the dense fit pins the grid to the
    jaw points, which folds the cells right around them and the ears beyond), then the brows 26-17 raised by
    ``forehead`` x that height; a periodic smoothing spline through them.
    """
    from scipy.interpolate import splev, splprep

    lm = np.asarray(landmarks, np.float64)[:, :2]
    height = lm[17:27, 1].mean() - lm[8, 1]
    brows = lm[26:16:-1].copy()
    brows[:, 1] += forehead * height
    # the brows' own bumps are not the forehead: a parabola through them, fit by least squares
    cx = brows[:, 0].mean()
    coef = np.polyfit(brows[:, 0] - cx, brows[:, 1], 2)
    brows[:, 1] = np.polyval(coef, brows[:, 0] - cx)
    jaw = lm[0:17].copy()
    centre = np.array([jaw[:, 0].mean(), lm[17:27, 1].mean()])
    d = jaw - centre
    jaw = centre + d * (1 - jaw_inset * height / np.linalg.norm(d, axis=1, keepdims=True))
    poly = np.concatenate([jaw, brows])
    closed = np.concatenate([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    u = np.concatenate([[0], np.cumsum(seg)]) / seg.sum()
    tck, _ = splprep([closed[:, 0], closed[:, 1]], u=u, per=1, s=len(poly) * (0.004 * height) ** 2)
    x, y = splev(np.linspace(0, 1, n, endpoint=False), tck)
    return np.stack([x, y], 1)


def inside_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of points (N, 2) against a polygon (K, 2) -> (N,) bool."""
    pts = np.asarray(pts, np.float64)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xi)).sum(1) % 2 == 1


def _segment_hits(p: np.ndarray, q: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Smallest t in [0, 1] where segments p->q (N, 2) cross the closed polygon (K, 2); 1 where none does."""
    a, b = poly, np.roll(poly, -1, axis=0)
    d = (q - p)[:, None, :]
    e = (b - a)[None]
    w = a[None] - p[:, None, :]
    den = d[..., 0] * e[..., 1] - d[..., 1] * e[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (w[..., 0] * e[..., 1] - w[..., 1] * e[..., 0]) / den
        s = (w[..., 0] * d[..., 1] - w[..., 1] * d[..., 0]) / den
    ok = (np.abs(den) > 1e-12) & (t >= 0) & (t <= 1) & (s >= 0) & (s <= 1)
    return np.where(ok, t, 1.0).min(1)


def _component(inside: np.ndarray, tri: np.ndarray, seed: int) -> np.ndarray:
    """The inside vertices connected to ``seed`` through triangles whose vertices are all inside."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t = tri[inside[tri].all(1)]
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    n = len(inside)
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return inside & (labels == labels[seed])


def face_topology(mean: np.ndarray, tri: np.ndarray, landmarks: np.ndarray, open_mouth: np.ndarray | None = None,
                  forehead: float = FOREHEAD, keep: np.ndarray | None = None) -> FaceTopology:
    """Cut the face out of a dense mesh: mean (V, 3) model-space vertices (y up), tri (F, 3) all triangles,
    landmarks (68, 3) the mean 68 points in the same space. ``open_mouth`` (V + 8, 3): the vertices with the mouth
    opened, then that shape's 8 inner-lip landmarks (60-67); the triangles whose centre falls inside that inner-lip
    polygon are the slit left out (None keeps them). ``keep`` (K,) vertex indices that count as inside whatever the
    outline says (the landmarks' own vertices, so that they never move)."""
    mean = np.asarray(mean, np.float64)
    tri = np.ascontiguousarray(tri, np.int32)
    lm = np.asarray(landmarks, np.float64)
    outline = face_outline(lm, forehead)
    inside = inside_polygon(mean[:, :2], outline)
    if keep is not None:
        inside[np.asarray(keep, np.intp)] = True
    nose = int(np.argmin(((mean[:, :2] - lm[30, :2]) ** 2).sum(1)))
    inside = _component(inside, tri, nose)
    if keep is not None:
        inside[np.asarray(keep, np.intp)] = True
    keep = inside[tri].any(1)
    slit = np.zeros(0, np.int32)
    if open_mouth is not None:
        verts, lips = open_mouth[:-8], open_mouth[-8:, :2]
        centre = verts[tri].mean(1)[:, :2]
        in_slit = inside_polygon(centre, lips) & keep
        slit = np.nonzero(in_slit)[0].astype(np.int32)
        keep &= ~in_slit
    kept = tri[keep]
    # the ring: outside vertices of kept triangles, each moved onto the outline toward an inside neighbour
    ring = np.unique(kept[~inside[kept]])
    e = np.concatenate([kept[:, [0, 1]], kept[:, [1, 2]], kept[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    e = e[~inside[e[:, 0]] & inside[e[:, 1]]]
    t = _segment_hits(mean[e[:, 0], :2], mean[e[:, 1], :2], outline)
    dist = t * np.linalg.norm(mean[e[:, 1], :2] - mean[e[:, 0], :2], axis=1)
    order = np.lexsort((dist, e[:, 0]))
    e, t = e[order], t[order]
    first = np.concatenate([[True], e[1:, 0] != e[:-1, 0]])
    moved, toward, t = e[first, 0], e[first, 1], t[first]
    assert np.array_equal(np.sort(moved), ring)
    topo = FaceTopology(np.ascontiguousarray(kept, np.int32), moved.astype(np.int32), toward.astype(np.int32),
                        np.clip(t, 0.0, 1.0), inside, outline, slit)
    # a moved vertex can make a sliver triangle fold over; those (zero or negative area) are dropped
    moved_xy = topo.blend(mean[:, :2])
    a, b, c = moved_xy[kept[:, 0]], moved_xy[kept[:, 1]], moved_xy[kept[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ref = np.sign(np.median(area[inside[kept].all(1)]))
    topo.tri = np.ascontiguousarray(kept[area * ref > 1e-9 * np.abs(area).max()], np.int32)
    return topo


def grid_face_uv(topo: FaceTopology, grid_shape: tuple[int, int]) -> np.ndarray:
    """UVs (V, 2) float32 in [0, 1] of a row-major grid's face: u along columns, v along rows (v = 0 at the top row
    of the face, forehead), fitted to the face's extent in grid units and symmetric (u <-> 1 - u is column c <->
    cols-1-c). Moved vertices get the blend of their two grid positions."""
    rows, cols = grid_shape
    r, c = np.divmod(np.arange(rows * cols), cols)
    rc = topo.blend(np.stack([r, c], 1).astype(np.float64))
    used = np.unique(topo.tri)
    c_lo = min(rc[used, 1].min(), cols - 1 - rc[used, 1].max())
    c_hi = cols - 1 - c_lo
    r_lo, r_hi = rc[used, 0].min(), rc[used, 0].max()
    uv = np.stack([(rc[:, 1] - c_lo) / (c_hi - c_lo), (rc[:, 0] - r_lo) / (r_hi - r_lo)], 1)
    return np.clip(uv, 0.0, 1.0).astype(np.float32)


def boundary_edges(tri: np.ndarray) -> np.ndarray:
    """Edges (E, 2) int32 used by exactly one triangle: the outline of the mesh (and of its holes)."""
    tri = np.asarray(tri, np.int64)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e.sort(axis=1)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    return uniq[count == 1].astype(np.int32)
