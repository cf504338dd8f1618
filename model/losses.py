"""Training losses of DAMDNet (batched torch): WPDC, VDC, Wing loss, and their weighted combination.

All losses take the network output and the target as WHITENED (N, 62) parameters plus the ``Whitening`` that maps them
to real parameters (``real = w * std + mean``), and the ``MorphableModel`` whose bases give the vertices.

- ``wpdc``: weighted parameter distance cost (3DDFA): ``mean(w * (pred - target)^2)`` over whitened parameters, each
  weight the magnitude of the change of the 68 landmark vertices that the parameter's error alone causes
  (pose entries: |dP_ij| * ||column j of the target's model vertices||; offsets: |dt| * sqrt(68); shape/expression:
  |d alpha_i| * scale * ||basis column i||), normalised by the per-sample maximum, weights detached, z offset ignored.
- ``vdc``: mean Euclidean distance of the 68 (or dense) vertices in crop coordinates; with ``xy_only`` in the image
  plane alone (x, y: what NME measures; the z offset, which no 2D metric sees and WPDC does not learn, then neither adds
  to the distance nor shrinks its x, y gradient).
- ``wing``: Wing loss (Feng et al. 2018) on the 2D landmarks in crop pixels, ``w ln(1 + |x|/eps)`` below ``w`` else
  ``|x| - C``; averaged over points and coordinates.
- ``landmark_wing``: Wing loss of the predicted 68 landmarks against HUMAN 2D landmarks (image px of the crop, y down;
  NaN where a row has none). The 300-W contour points 0-16 are silhouette points, not the model's fixed 3D jaw
  points. Two treatments: ``march`` (default; ``JawMarcher``) compares them with the prediction's own silhouette,
  chosen by the same landmark marching as the fit (``model.fit_landmarks``), weight ``jaw`` at every yaw; or the
  fixed jaw points with their weight ``jaw`` ramped down linearly to 0 at ``jaw_yaw`` degrees of |yaw| (the label's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from model.morphable import CROP_SIZE, MorphableModel, Whitening, project_crop

N_POSE = 12


def _real(p: torch.Tensor, whitening: Whitening) -> torch.Tensor:
    return whitening.unwhiten(p)


def crop_vertices(real: torch.Tensor, morph: MorphableModel, dense: bool = False) -> torch.Tensor:
    """Real params (N, 62) -> projected vertices (N, V, 3) in crop coordinates (before the y flip)."""
    basis = morph.dense_basis if dense else morph.sparse
    return project_crop(real, basis.shape_model(real))


def wpdc_weights(pred_real: torch.Tensor, target_real: torch.Tensor, morph: MorphableModel,
                 whitening: Whitening) -> torch.Tensor:
    """Per-parameter WPDC weights (N, 62) >= 0, max 1 per sample, no gradient.

    Each weight is the landmark displacement caused by that parameter's error alone, measured in the WHITENED space's
    units: the real-space effect of a unit whitened error is ``std_i`` times the real effect, and the loss multiplies
    by the whitened squared error, so the weight uses the real error (|d real_i|) times the real sensitivity.
    """
    with torch.no_grad():
        n = pred_real.shape[0]
        diff = (pred_real - target_real).abs()
        u, w = morph.sparse.torch(target_real.device, target_real.dtype)
        v = (u + target_real[:, 12:] @ w.T).reshape(n, -1, 3)  # (N, 68, 3) target model vertices
        nv = v.shape[1]
        col_norm = v.norm(dim=1)  # (N, 3): ||x||, ||y||, ||z|| over vertices
        weights = torch.zeros_like(pred_real)
        pose = diff[:, :N_POSE].reshape(n, 3, 4)
        wp = torch.cat([pose[:, :, :3] * col_norm[:, None, :], pose[:, :, 3:] * math.sqrt(nv)], dim=2)
        weights[:, :N_POSE] = wp.reshape(n, N_POSE)
        r = target_real[:, :N_POSE].reshape(n, 3, 4)[:, :, :3]
        scale = r[:, :2].norm(dim=2).mean(dim=1, keepdim=True)  # (N, 1)
        basis_norm = w.reshape(nv, 3, -1).norm(dim=(0, 1))  # (50,)
        weights[:, N_POSE:] = diff[:, N_POSE:] * basis_norm[None] * scale
        weights = weights + 1e-6
        weights = weights / weights.max(dim=1, keepdim=True).values
        weights[:, 11] = 0.0  # z offset: invisible in 2D, not learned
    return weights


def _reduce(per_sample: torch.Tensor, reduce: bool) -> torch.Tensor:
    return per_sample.mean() if reduce else per_sample


def wpdc(pred: torch.Tensor, target: torch.Tensor, morph: MorphableModel, whitening: Whitening,
         reduce: bool = True) -> torch.Tensor:
    """WPDC on whitened (N, 62) parameters -> scalar (or (N,) with ``reduce=False``)."""
    w = wpdc_weights(_real(pred, whitening), _real(target, whitening), morph, whitening)
    return _reduce((w * (pred - target) ** 2).mean(dim=1), reduce)


def vdc(pred: torch.Tensor, target: torch.Tensor, morph: MorphableModel, whitening: Whitening,
        dense: bool = False, reduce: bool = True, xy_only: bool = False) -> torch.Tensor:
    """Mean vertex distance (crop pixels) between the decoded 68 (or dense) vertices -> scalar (or (N,)); in the image
    plane (x, y) alone with ``xy_only``."""
    vp = crop_vertices(_real(pred, whitening), morph, dense)
    vt = crop_vertices(_real(target, whitening), morph, dense)
    if xy_only:
        vp, vt = vp[..., :2], vt[..., :2]
    return _reduce((vp - vt).norm(dim=-1).mean(dim=1), reduce)


def wing_from_error(err: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Elementwise Wing loss of errors ``err`` (any shape)."""
    a = err.abs()
    c = w - w * math.log(1.0 + w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


def wing(pred: torch.Tensor, target: torch.Tensor, morph: MorphableModel, whitening: Whitening, w: float = 10.0,
         eps: float = 2.0, reduce: bool = True) -> torch.Tensor:
    """Wing loss on the 2D 68 landmarks (crop pixels) of whitened params -> scalar (mean over points and x, y)."""
    lp = crop_vertices(_real(pred, whitening), morph)[..., :2]
    lt = crop_vertices(_real(target, whitening), morph)[..., :2]
    return _reduce(wing_from_error(lp - lt, w, eps).mean(dim=(1, 2)), reduce)


def yaw_sin(real: torch.Tensor) -> torch.Tensor:
    """|sin(yaw)| (N,) of real params (N, 62) (``matrix_to_angles``: yaw = asin(R[2, 0])), no gradient."""
    with torch.no_grad():
        p = real[:, :12].reshape(-1, 3, 4)[:, :, :3]
        r1 = p[:, 0] / p[:, 0].norm(dim=1, keepdim=True).clamp_min(1e-12)
        r2 = p[:, 1] / p[:, 1].norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.linalg.cross(r1, r2, dim=1)[:, 0].abs().clamp(max=1.0)


def landmark_point_weights(real: torch.Tensor, jaw: float = 1.0, jaw_yaw: float = 30.0) -> torch.Tensor:
    """Per-point weights (N, 68): 1 for points 17-67; contour points 0-16 ``jaw * max(0, 1 - |yaw| / jaw_yaw)``."""
    yaw = torch.rad2deg(torch.asin(yaw_sin(real)))
    w = torch.ones(real.shape[0], 68, dtype=real.dtype, device=real.device)
    ramp = (1.0 - yaw / max(jaw_yaw, 1e-6)).clamp(min=0.0) if jaw_yaw > 0 else torch.zeros_like(yaw)
    w[:, :17] = jaw * ramp[:, None]
    return w


class JawMarcher:
    """Landmark marching in torch: the silhouette point (N, 17, 3) (crop coordinates before the y flip) of each
    contour line of ``model.fit_landmarks.marching_lines`` for real params (N, 62). The choice of vertex follows
    the params' own pose (no gradient through it); the chosen point's position is differentiable."""

    def __init__(self, morph: MorphableModel, margin: int = 6) -> None:
        import numpy as np

        from model.fit_landmarks import CHIN, marching_lines

        lines = marching_lines(morph.landmark_vertices, morph.grid_shape, margin)
        allv = np.concatenate(lines)
        width = max(len(line) for line in lines)
        idx = np.zeros((len(lines), width), np.int64)
        mask = np.zeros((len(lines), width), bool)
        k = 0
        for j, line in enumerate(lines):
            idx[j, :len(line)] = np.arange(k, k + len(line))
            idx[j, len(line):] = k  # padding repeats the first candidate (masked out)
            mask[j, :len(line)] = True
            k += len(line)
        d = morph.dense_full
        w = np.concatenate([d.w_shp, d.w_exp], axis=2)[allv]  # (C, 3, 50)
        self.u = torch.from_numpy(np.ascontiguousarray(d.u[allv]))
        self.w = torch.from_numpy(np.ascontiguousarray(w.reshape(-1, w.shape[-1])))
        self.idx, self.mask = torch.from_numpy(idx), torch.from_numpy(mask)
        side = np.where(np.arange(len(lines)) < CHIN, -1.0, 1.0)  # outward: toward -x on the left, +x on the right
        self.side = torch.from_numpy(side.astype(np.float32))
        self.n = len(allv)

    def __call__(self, real: torch.Tensor) -> torch.Tensor:
        dev, dt = real.device, real.dtype
        u, w = self.u.to(dev, dt), self.w.to(dev, dt)
        x = (u.reshape(-1) + real[:, 12:] @ w.T).reshape(-1, self.n, 3)
        p = project_crop(real, x)  # (N, C, 3)
        with torch.no_grad():
            axis = real[:, :12].reshape(-1, 3, 4)[:, :2, 0]
            axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
            q = (p[..., :2] * axis[:, None]).sum(-1)  # (N, C) along the face's projected x axis
            q = q[:, self.idx.to(dev)] * self.side.to(dev, dt)[None, :, None]
            q = torch.where(self.mask.to(dev)[None], q, torch.full_like(q, -float("inf")))
            best = self.idx.to(dev)[None].expand(q.shape[0], -1, -1).gather(2, q.argmax(2, keepdim=True))[..., 0]
        return p.gather(1, best[..., None].expand(-1, -1, 3))


def landmark_wing(pred: torch.Tensor, landmarks: torch.Tensor, morph: MorphableModel, whitening: Whitening,
                  target: torch.Tensor | None = None, w: float = 10.0, eps: float = 2.0, jaw: float = 1.0,
                  jaw_yaw: float = 30.0, size: int = CROP_SIZE, marcher: JawMarcher | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Wing loss (N,) of the whitened prediction's 68 landmarks against human landmarks (N, 68, 2) in crop image px
    (y down), and the (N,) bool mask of rows that have landmarks. NaN points count zero. With a ``marcher`` the
    contour points 0-16 are the prediction's silhouette (weight ``jaw``); without, the fixed jaw points with their
    weight ramped by the yaw of ``target`` (whitened, the exact label) or else of the prediction
    (``landmark_point_weights``)."""
    real = _real(pred, whitening)
    lp = crop_vertices(real, morph)
    if marcher is not None:
        lp = torch.cat([marcher(real), lp[:, 17:]], dim=1)
    lp = lp[..., :2]
    lp = torch.stack([lp[..., 0], size + 1 - lp[..., 1]], dim=-1)
    valid = torch.isfinite(landmarks).all(dim=-1)  # (N, 68)
    ref = _real(target, whitening) if target is not None else real.detach()
    if marcher is not None:
        pw = torch.ones(real.shape[0], 68, dtype=pred.dtype, device=pred.device)
        pw[:, :17] = jaw
        pw = pw * valid.to(pred.dtype)
    else:
        pw = landmark_point_weights(ref, jaw, jaw_yaw) * valid.to(pred.dtype)
    err = torch.where(valid[..., None], lp - torch.nan_to_num(landmarks.to(pred.dtype)), torch.zeros_like(lp))
    per = (wing_from_error(err, w, eps).mean(dim=-1) * pw).sum(dim=1) / pw.sum(dim=1).clamp_min(1e-12)
    return per, valid.any(dim=1) & (pw.sum(dim=1) > 0)


@dataclass
class LossWeights:
    wpdc: float = 1.0
    vdc: float = 0.0
    vdc_dense: bool = False
    vdc_2d: bool = False  # VDC in the image plane (x, y) only: no z error
    wing: float = 0.1
    wing_w: float = 10.0
    wing_eps: float = 2.0
    human2d: float = 0.0  # Wing loss on the human landmarks of plain human-fit rows (mean over those rows)
    human2d_jaw: float = 0.5  # weight of the contour points 0-16 (silhouette points: noisier than the inner ones)
    human2d_march: bool = True  # contour vs the prediction's marched silhouette; False: fixed jaw points, ramped ...
    human2d_jaw_yaw: float = 30.0  # ... to 0 at this |yaw| (degrees)


class CombinedLoss:
    """``wpdc * WPDC + vdc * VDC + wing * Wing + human2d * landmark Wing``; ``__call__`` returns (total, parts).

    The human 2D term is averaged over the rows that have human landmarks (weighted like the others), so its scale
    does not depend on how many such rows a batch holds."""

    def __init__(self, morph: MorphableModel, whitening: Whitening, weights: LossWeights | None = None) -> None:
        self.morph = morph
        self.whitening = whitening
        self.weights = weights or LossWeights()
        self.marcher = JawMarcher(morph) if self.weights.human2d and self.weights.human2d_march else None

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None,
                 landmarks: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Whitened (N, 62) prediction and target, optional per-sample weights (N,) and human landmarks (N, 68, 2)
        crop px (NaN rows: none) -> (scalar loss, parts)."""
        cfg = self.weights
        parts: dict[str, torch.Tensor] = {}
        if cfg.wpdc:
            parts["wpdc"] = wpdc(pred, target, self.morph, self.whitening, reduce=False)
        if cfg.vdc:
            parts["vdc"] = vdc(pred, target, self.morph, self.whitening, cfg.vdc_dense, reduce=False,
                               xy_only=cfg.vdc_2d)
        if cfg.wing:
            parts["wing"] = wing(pred, target, self.morph, self.whitening, cfg.wing_w, cfg.wing_eps, reduce=False)
        if sample_weight is None:
            sample_weight = torch.ones(pred.shape[0], dtype=pred.dtype, device=pred.device)
        sw = sample_weight.to(pred.dtype) / sample_weight.sum().clamp_min(1e-12)
        red = {k: (v * sw).sum() for k, v in parts.items()}
        if cfg.human2d and landmarks is not None:
            per, has = landmark_wing(pred, landmarks.to(pred.device), self.morph, self.whitening, target, cfg.wing_w,
                                     cfg.wing_eps, cfg.human2d_jaw, cfg.human2d_jaw_yaw, marcher=self.marcher)
            hw = sample_weight.to(pred.dtype) * has.to(pred.dtype)
            red["human2d"] = (torch.nan_to_num(per) * hw).sum() / hw.sum() if bool(has.any()) else pred.sum() * 0.0
        total = sum(getattr(cfg, k) * v for k, v in red.items()) if red else pred.sum() * 0.0
        return total, {k: float(v.detach()) for k, v in red.items()}
