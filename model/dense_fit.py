"""A dense grid that follows the 68-landmark model: expressions and identity as the landmarks show them.

The PAF grid's own expression basis (``Model_PAF.pkl`` ``w_exp_filter``) barely moves it (about 1e-2 units per unit
coefficient, where the 68-point basis moves 5e3), so its mesh shows no expression: no open mouth, no smile. Here the
difference between the 68-point model and the grid at the landmarks' vertices is spread over the grid by a thin-plate
spline in grid coordinates. The difference is linear in the parameters, so the result is again a linear basis (mean,
40 shape, 10 expression) and decodes through the same ``MorphableModel.dense`` code, with
``dense(p, roi, c)[:, landmark_vertices] == landmarks(p, roi, c)`` exactly.
"""
from __future__ import annotations

import numpy as np

from model.basis import Basis

INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner lip points facing each other


def landmark_vertices(morph) -> np.ndarray:
    """(68,) int: the grid vertex standing for each landmark (distinct vertices, nearest in 3D on the mean shape).

    The inner lips get vertically adjacent vertices of one column (upper above lower), so that opening the mouth
    stretches the rows between them instead of shearing neighbours; the other points are matched by the Hungarian
    method on the 3D distance.
    """
    return _landmark_vertices(morph.sparse, morph.dense_basis, morph.grid_shape)


def _landmark_vertices(sparse: Basis, dense: Basis, grid_shape: tuple[int, int]) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    rows, cols = grid_shape
    u = dense.u.astype(np.float64)
    lm = sparse.u.astype(np.float64)
    k = np.full(68, -1, np.int64)
    for a, b in INNER_LIP_PAIRS:
        mid = (lm[a] + lm[b]) / 2
        v0 = int(np.argmin(((u[:, :2] - mid[:2]) ** 2).sum(1)))
        r, c = divmod(v0, cols)
        if u[v0, 1] < mid[1]:  # the vertex is below the lips' middle: it is the lower one
            r -= 1
        r = min(max(r, 0), rows - 2)
        k[a], k[b] = r * cols + c, (r + 1) * cols + c
    free = np.setdiff1d(np.arange(len(u)), k[k >= 0])
    todo = np.nonzero(k < 0)[0]
    d = np.sqrt(((lm[todo, None, :] - u[None, free, :]) ** 2).sum(-1))
    ri, ci = linear_sum_assignment(d)
    k[todo[ri]] = free[ci]
    return k


def _tps_operator(nodes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(P, N) linear operator of the thin-plate spline through N 2D ``nodes``, evaluated at ``points`` (P, 2)."""

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r2 > 0, 0.5 * r2 * np.log(np.maximum(r2, 1e-300)), 0.0)

    n = len(nodes)
    aff = np.concatenate([np.ones((n, 1)), nodes], 1)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = kernel(nodes, nodes)
    system[:n, n:] = aff
    system[n:, :n] = aff.T
    inv = np.linalg.inv(system)[:, :n]
    at = np.concatenate([kernel(points, nodes), np.ones((len(points), 1)), points], 1)
    return at @ inv


def _idw_operator(nodes: np.ndarray, points: np.ndarray, power: float = 6.0) -> np.ndarray:
    """(P, N) inverse-distance weights (Shepard) of N 2D ``nodes`` at ``points`` (P, 2): rows sum to 1, exact at the
    nodes, never overshooting (each point is a convex blend of the nodes' values, the nearest weighing most)."""
    d2 = ((points[:, None, :] - nodes[None, :, :]) ** 2).sum(-1)
    at = d2 == 0
    w = 1.0 / np.maximum(d2, 1e-12) ** (power / 2)
    w = np.where(at.any(1, keepdims=True), at.astype(np.float64), w)
    return w / w.sum(1, keepdims=True)


def landmark_following_basis(sparse: Basis, dense: Basis, grid_shape: tuple[int, int]) -> tuple[Basis, np.ndarray]:
    """The dense grid's basis made to pass exactly through the 68 landmarks, for every shape and expression.

    Why: the grid's own expression basis (``Model_PAF.pkl`` ``w_exp_filter``) barely moves it (about 1e-2 units per
    unit coefficient, where the 68-point basis moves 5e3), so the raw dense mesh shows no expression and a rendered
    open mouth or smile would not be where the true landmarks say. Here the difference between the 68-point model
    and the grid at the landmarks' vertices (``landmark_vertices``) is spread over the grid by a thin-plate spline
    in grid coordinates; the difference is linear in the parameters, so the result is again a linear basis (mean,
    40 shape, 10 expression; the extension ``w_ext`` by inverse-distance weights, it being local). Returns (basis,
    the (68,) grid vertex of each landmark); ``model.morphable.consistent_dense_model`` wraps it in a model.
    """
    k = _landmark_vertices(sparse, dense, grid_shape)
    rows, cols = grid_shape
    grid = np.stack(np.divmod(np.arange(rows * cols), cols), 1).astype(np.float64)
    op = _tps_operator(grid[k], grid)  # (V, 68)
    d, s = dense, sparse
    u = d.u.astype(np.float64) + op @ (s.u.astype(np.float64) - d.u[k].astype(np.float64))
    w_shp = d.w_shp.astype(np.float64) + np.einsum("vn,nck->vck", op, s.w_shp - d.w_shp[k].astype(np.float64))
    w_exp = d.w_exp.astype(np.float64) + np.einsum("vn,nck->vck", op, s.w_exp - d.w_exp[k].astype(np.float64))
    # the extension is local (lids, mouth corners, jaw): a thin-plate spline would carry a lid's motion up to the
    # forehead and overshoot the jaw's, so it is spread by inverse-distance weights, which stay within the nodes'
    w_ext = None if s.w_ext is None else \
        np.einsum("vn,nck->vck", _idw_operator(grid[k], grid), s.w_ext.astype(np.float64)).astype(np.float32)
    return Basis(u.astype(np.float32), w_shp.astype(np.float32), w_exp.astype(np.float32), w_ext), k
