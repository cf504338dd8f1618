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

import numpy as np

from model.expression_ext import N_EXT
from model.basis import N_EXP, Basis
from model.morphable import split_params


@dataclass(frozen=True)
class FitWeights:
    """Weights of the fit. ``prior_exp``: ridge on each PCA coefficient's change, per (whitening std)^2, in crop px^2;
    ``prior_ext`` (N_EXT,): ridge on each extension value (per unit^2, crop px^2): the eyelids are cheap (nothing else
    closes an eye), the mouth corners and the jaw dearer, so the PCA explains what it can and the extension the rest;
    ``ext_min`` / ``ext_max`` (N_EXT,) clamp; ``part_slack``: ridge on each part's nuisance shift (crop px^2 per px^2)
    and scale (per (PART_SCALE_PX px)^2), None for no slack.
    """

    prior_exp: float = 1.0
    prior_ext: tuple[float, ...] = (1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 4.0)
    ext_min: tuple[float, ...] = (-0.6, -0.6, -2.0, -2.0, -2.0, -2.0, 0.0)
    ext_max: tuple[float, ...] = (1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.5)
    part_slack: float | None = 1.0


SLACK_PARTS = (slice(36, 42), slice(42, 48), slice(48, 68))  # right eye, left eye, mouth (68-point indices)
PART_SCALE_PX = 50.0  # a part's scale unknown moves a point by (its offset from the part's centre) / this, crop px


@dataclass(frozen=True)
class FitBasis:
    """The 68-point basis laid out for the fit, float64: mean ``u`` (68, 3), shape ``w_shp`` (204, 40) rows x, y, z
    per point, and the joint expression basis ``w_all`` (3, 68 * 17) (10 PCA + N_EXT, per point)."""

    u: np.ndarray
    w_shp: np.ndarray
    w_all: np.ndarray

    @classmethod
    def of(cls, basis: Basis) -> "FitBasis":
        w_all = np.concatenate([basis.w_exp, basis.w_ext], axis=2).astype(np.float64)  # (68, 3, 17)
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
    """
    fb = basis if isinstance(basis, FitBasis) else FitBasis.of(basis)
    p = np.asarray(params, np.float64).reshape(-1, 62)
    n = len(p)
    k_exp = N_EXP + N_EXT
    r, t, a, e0 = split_params(p)
    r2t = r[:, :2, :].transpose(0, 2, 1)  # (N, 3, 2)
    base = fb.u[None] + (a @ fb.w_shp.T).reshape(n, 68, 3)
    pred0 = base @ r2t + t[:, None, :2]  # (N, 68, 2) with zero expression
    jac = (r[:, :2, :] @ fb.w_all).reshape(n, 2, 68, k_exp).transpose(0, 2, 1, 3)  # (N, 68, 2, 17)
    lam_parts = []
    if weights.part_slack is not None:
        jac = np.concatenate([jac, _slack_columns(pred0)], axis=3)
        lam_parts = [weights.part_slack] * (jac.shape[3] - k_exp)
    k = jac.shape[3]
    tgt = np.asarray(targets_crop, np.float64).reshape(n, 68, 2)
    wts = np.broadcast_to(np.asarray(point_weights, np.float64), (n, 68)).copy()
    ok = np.isfinite(tgt).all(-1)
    wts[~ok] = 0.0
    res = np.where(ok[..., None], tgt - pred0, 0.0)
    std = np.asarray(exp_std, np.float64).reshape(N_EXP)
    lam = np.concatenate([weights.prior_exp / std ** 2,
                          np.broadcast_to(np.asarray(weights.prior_ext, np.float64), (N_EXT,)), lam_parts])
    prior_mean = np.concatenate([e0, np.zeros((n, k - N_EXP))], axis=1)
    sw = np.sqrt(wts)[..., None]
    jw = (jac * sw[..., None]).reshape(n, 136, k)
    rw = (res * sw).reshape(n, 136, 1)
    jt = jw.transpose(0, 2, 1)
    a_mat = jt @ jw + np.diag(lam)[None]
    b_vec = (jt @ rw)[..., 0] + lam * prior_mean
    sol = np.linalg.solve(a_mat, b_vec[..., None])[..., 0]
    ext = np.clip(sol[:, N_EXP:k_exp], weights.ext_min, weights.ext_max)
    if np.any(ext != sol[:, N_EXP:k_exp]):  # re-solve the rest with the clamped extension fixed
        free = np.r_[0:N_EXP, k_exp:k]
        rw2 = rw - jw[..., N_EXP:k_exp] @ ext[..., None]
        j2 = jw[..., free]
        jt2 = j2.transpose(0, 2, 1)
        a2 = jt2 @ j2 + np.diag(lam[free])[None]
        b2 = (jt2 @ rw2)[..., 0] + lam[free] * prior_mean[:, free]
        sol[:, :N_EXP] = np.linalg.solve(a2, b2[..., None])[..., 0][:, :N_EXP]
    out = p.copy()
    out[:, 12 + 40:] = sol[:, :N_EXP]
    return out.astype(np.float32), ext.astype(np.float32)


def _slack_layout() -> tuple[np.ndarray, ...]:
    """Constant parts of the slack's Jacobian: the shifts (68 * 2 * 3P,), the part-centre averaging matrix (P, 68),
    the parted points, each one's part, and where its scale entries sit in the flattened (68, 2, 3P) block."""
    n_cols = 3 * len(SLACK_PARTS)
    shifts = np.zeros((68, 2, n_cols))
    centre = np.zeros((len(SLACK_PARTS), 68))
    part_of = np.full(68, -1)
    for i, part in enumerate(SLACK_PARTS):
        shifts[part, 0, 3 * i] = 1.0
        shifts[part, 1, 3 * i + 1] = 1.0
        centre[i, part] = 1.0 / (part.stop - part.start)
        part_of[part] = i
    points = np.flatnonzero(part_of >= 0)
    flat = (points[:, None] * 2 + np.arange(2)[None]) * n_cols + 3 * part_of[points][:, None] + 2  # (P_pts, 2)
    return shifts.reshape(-1), centre, points, part_of[points], flat.reshape(-1)


_SLACK_SHIFTS, _SLACK_CENTRE, _SLACK_POINTS, _SLACK_PART_OF, _SLACK_SCALE_AT = _slack_layout()


def _slack_columns(pred0: np.ndarray) -> np.ndarray:
    """(N, 68, 2) predicted points -> (N, 68, 2, 3 * len(SLACK_PARTS)) Jacobian of each part's nuisance shift x, y and
    scale (about the part's centre, in units of PART_SCALE_PX)."""
    n = len(pred0)
    cols = np.repeat(_SLACK_SHIFTS[None], n, axis=0)
    rel = pred0[:, _SLACK_POINTS] - (_SLACK_CENTRE @ pred0)[:, _SLACK_PART_OF]
    cols[:, _SLACK_SCALE_AT] = rel.reshape(n, -1) * (1.0 / PART_SCALE_PX)
    return cols.reshape(n, 68, 2, -1)
