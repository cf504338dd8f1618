"""Closed-form fit of the expression (10 PCA coefficients + the extension) to target landmark positions.

With pose and identity held, the projected landmarks are linear in the expression: in crop coordinates (before the y
flip) ``lm_j = R2 (u_j + W_shp,j a + W_exp,j e + W_ext,j x) + t2``. So the weighted least-squares fit of ``(e, x)``
to targets, with a ridge prior pulling ``e`` toward the aligner's own coefficients (in whitening-std units) and ``x``
toward 0, is one small linear solve per face, batched.

Each part (right eye 36-41, left eye 42-47, mouth 48-67) may also move and scale as a whole in the fit (``part_slack``,
three nuisance unknowns a part, not part of the result). The aligner places a part a few pixels off often; without the
slack the fit explains that offset with the only shapes that move the part, so an eye placed too high "closes" and
a mouth placed too low "opens". With MediaPipe's own points as the targets on the training videos, the slack raised
the correlation of the fitted eye openness with MediaPipe's from 0.86 to 0.99 (bench/RESULTS.md, issue 22).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba as nb
import numpy as np

from model.expression_ext import N_EXT
from model.basis import N_EXP, Basis


@dataclass(frozen=True)
class FitWeights:
    """Weights of the fit. ``prior_exp``: ridge on each PCA coefficient's change, per (whitening std)^2, in crop px^2;
    ``prior_ext`` (N_EXT,): ridge on each extension value (per unit^2, crop px^2): the eyelids are cheap (nothing else
    closes an eye), the mouth corners and the jaw dearer, so the PCA explains what it can and the extension the rest;
    the inner lips (``lips_part``) as dear as the jaw: they follow the network's inner lip points, noisier than the
    outer ones on a barely moving mouth (chosen on the validation and training videos, bench/RESULTS.md);
    ``ext_min`` / ``ext_max`` (N_EXT,) clamp; ``part_slack``: ridge on each part's nuisance shift (crop px^2 per px^2)
    and scale (per (PART_SCALE_PX px)^2), None for no slack.
    """

    prior_exp: float = 1.0
    prior_ext: tuple[float, ...] = (1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0)
    ext_min: tuple[float, ...] = (-0.6, -0.6, -2.0, -2.0, -2.0, -2.0, 0.0, -3.0)
    ext_max: tuple[float, ...] = (1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.5, 3.0)
    part_slack: float | None = 1.0


SLACK_PARTS = (slice(36, 42), slice(42, 48), slice(48, 68))  # right eye, left eye, mouth (68-point indices)
PART_SCALE_PX = 50.0  # a part's scale unknown moves a point by (its offset from the part's centre) / this, crop px


@dataclass(frozen=True)
class FitBasis:
    """The 68-point basis laid out for the fit, float64: mean ``u`` (68, 3), shape ``w_shp`` (204, 40) rows x, y, z
    per point, and the joint expression basis ``w_all`` (3, 68 * (10 + N_EXT)) (10 PCA + N_EXT, per point)."""

    u: np.ndarray
    w_shp: np.ndarray
    w_all: np.ndarray

    @classmethod
    def of(cls, basis: Basis) -> "FitBasis":
        w_all = np.concatenate([basis.w_exp, basis.w_ext], axis=2).astype(np.float64)  # (68, 3, 10 + N_EXT)
        return cls(basis.u.astype(np.float64), basis.w_shp.astype(np.float64).reshape(-1, basis.w_shp.shape[-1]),
                   np.ascontiguousarray(w_all.transpose(1, 0, 2).reshape(3, -1)))


def fit_expression(params: np.ndarray, targets_crop: np.ndarray, point_weights: np.ndarray,
                   basis: Basis | FitBasis, exp_std: np.ndarray, weights: FitWeights = FitWeights()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fit the expression of each face to target points.

    params (N, 62) real; targets_crop (N, 68, 2) crop coordinates before the y flip (NaN: no target); point_weights
    (N, 68) or (68,) >= 0; basis: the 68-point Basis (with ``w_ext``) or its ``FitBasis`` (faster when reused);
    exp_std (10,) real units of one whitening std.
    Returns (params (N, 62) float32 with the fitted PCA expression, ext (N, N_EXT) float32).

    One numba pass a face: the normal equations of the weighted least squares (10 PCA + N_EXT + the parts' slack
    unknowns) with the ridge, one solve; an extension value out of its range is clamped and the rest solved again with
    the extension fixed.
    """
    fb = basis if isinstance(basis, FitBasis) else FitBasis.of(basis)
    p = np.ascontiguousarray(np.asarray(params, np.float64).reshape(-1, 62))
    n = len(p)
    tgt = np.ascontiguousarray(np.asarray(targets_crop, np.float64).reshape(n, 68, 2))
    wts = np.ascontiguousarray(np.broadcast_to(np.asarray(point_weights, np.float64), (n, 68)))
    lam, lo, hi = _ridge(weights, tuple(np.asarray(exp_std, np.float64).reshape(N_EXP).tolist()))
    exp = np.empty((n, N_EXP))
    ext = np.empty((n, N_EXT))
    _fit_kernel(p, tgt, wts, fb.u, fb.w_shp, fb.w_all, lam, lo, hi,
                _NO_PARTS if weights.part_slack is None else _PART_OF, 1.0 / PART_SCALE_PX, exp, ext)
    out = p.copy()
    out[:, 12 + 40:] = exp
    return out.astype(np.float32), ext.astype(np.float32)


@lru_cache(maxsize=16)
def _ridge(weights: FitWeights, exp_std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ridge per unknown (10 + N_EXT [+ 3 per slack part]), the extension's lower and upper clamps), float64."""
    slack = weights.part_slack is not None
    lam = np.concatenate([weights.prior_exp / np.array(exp_std) ** 2,
                          np.broadcast_to(np.asarray(weights.prior_ext, np.float64), (N_EXT,)),
                          np.full(3 * len(SLACK_PARTS) if slack else 0, weights.part_slack or 0.0)])
    lo = np.broadcast_to(np.asarray(weights.ext_min, np.float64), (N_EXT,)).copy()
    hi = np.broadcast_to(np.asarray(weights.ext_max, np.float64), (N_EXT,)).copy()
    return lam, lo, hi


@nb.njit(cache=True)
def _fit_kernel(p, tgt, wts, u, w_shp, w_all, lam, lo, hi, part_of, inv_scale, exp, ext):  # pragma: no cover
    n_exp, n_ext = exp.shape[1], ext.shape[1]
    k_exp = n_exp + n_ext
    n_parts = 0
    for j in range(68):
        n_parts = max(n_parts, part_of[j] + 1)
    k = k_exp + 3 * n_parts
    n_shp = w_shp.shape[1]
    pred = np.empty((68, 2))
    b = np.empty(3)
    idx = np.empty(k_exp + 2, np.int64)  # a row's nonzero columns: the expression's 0..k_exp-1, then its part's two
    idx[:k_exp] = np.arange(k_exp)
    val = np.empty(k_exp + 2)
    for i in range(p.shape[0]):
        # the face with its expression at zero, projected (crop coordinates)
        for j in range(68):
            for c in range(3):
                s = u[j, c]
                for q in range(n_shp):
                    s += w_shp[3 * j + c, q] * p[i, 12 + q]
                b[c] = s
            for d in range(2):
                pred[j, d] = p[i, 4 * d] * b[0] + p[i, 4 * d + 1] * b[1] + p[i, 4 * d + 2] * b[2] + p[i, 4 * d + 3]
        centre = np.zeros((max(n_parts, 1), 2))
        count = np.zeros(max(n_parts, 1))
        for j in range(68):
            q = part_of[j]
            if q >= 0:
                centre[q, 0] += pred[j, 0]
                centre[q, 1] += pred[j, 1]
                count[q] += 1.0
        for q in range(n_parts):
            centre[q, 0] /= count[q]
            centre[q, 1] /= count[q]
        a_mat = np.zeros((k, k))
        b_vec = np.zeros(k)
        for j in range(68):
            w = wts[i, j]
            if w <= 0.0 or not (np.isfinite(tgt[i, j, 0]) and np.isfinite(tgt[i, j, 1])):
                continue
            q = part_of[j]
            nz = k_exp + 2 if q >= 0 else k_exp  # a row's nonzero columns: the expression, its part's shift and scale
            for d in range(2):
                for m in range(k_exp):
                    val[m] = p[i, 4 * d] * w_all[0, j * k_exp + m] + p[i, 4 * d + 1] * w_all[1, j * k_exp + m] \
                        + p[i, 4 * d + 2] * w_all[2, j * k_exp + m]
                if q >= 0:
                    idx[k_exp], val[k_exp] = k_exp + 3 * q + d, 1.0
                    idx[k_exp + 1], val[k_exp + 1] = k_exp + 3 * q + 2, (pred[j, d] - centre[q, d]) * inv_scale
                r = w * (tgt[i, j, d] - pred[j, d])
                for x in range(k_exp):  # the expression block: contiguous rows (vectorised)
                    wx = w * val[x]
                    b_vec[x] += val[x] * r
                    for y in range(x + 1):
                        a_mat[x, y] += wx * val[y]
                for x in range(k_exp, nz):  # the part's shift and scale: their rows against every nonzero column
                    wx = w * val[x]
                    b_vec[idx[x]] += val[x] * r
                    for y in range(x + 1):
                        a_mat[idx[x], idx[y]] += wx * val[y]
        for m in range(k):  # the lower triangle was summed: mirror it
            for m2 in range(m):
                a_mat[m2, m] = a_mat[m, m2]
        for m in range(k):
            a_mat[m, m] += lam[m]
        for m in range(n_exp):  # the ridge pulls the PCA toward the aligner's own coefficients, the rest toward 0
            b_vec[m] += lam[m] * p[i, 62 - n_exp + m]
        sol = np.linalg.solve(a_mat, b_vec)
        clamped = False
        for m in range(n_ext):
            v = min(max(sol[n_exp + m], lo[m]), hi[m])
            clamped = clamped or v != sol[n_exp + m]
            ext[i, m] = v
        if clamped:  # the rest again with the (clamped) extension fixed
            free = np.concatenate((np.arange(n_exp), np.arange(k_exp, k)))
            a2 = np.empty((len(free), len(free)))
            b2 = np.empty(len(free))
            for x in range(len(free)):
                b2[x] = b_vec[free[x]]
                for m in range(n_ext):
                    b2[x] -= a_mat[free[x], n_exp + m] * ext[i, m]
                for y in range(len(free)):
                    a2[x, y] = a_mat[free[x], free[y]]
            sol2 = np.linalg.solve(a2, b2)
            for m in range(n_exp):
                sol[m] = sol2[m]
        for m in range(n_exp):
            exp[i, m] = sol[m]


def _part_of() -> np.ndarray:
    """(68,) int64: each point's slack part (index into ``SLACK_PARTS``), -1 for points of no part."""
    part_of = np.full(68, -1, np.int64)
    for i, part in enumerate(SLACK_PARTS):
        part_of[part] = i
    return part_of


_PART_OF = _part_of()
_NO_PARTS = np.full(68, -1, np.int64)
