"""Fit pose, 40 shape and 10 expression parameters of the 3DMM to 68 human 2D landmarks (300-W convention).

    fitter = LandmarkFitter.create(MorphableModel.load(), Whitening.load("v1"))
    result = fitter.fit(start_params, landmarks_crop_px)      # start: e.g. the teacher's flip-averaged fit

Model: a landmark's model point is a vertex of the dense grid (``MorphableModel.dense_full``, the whole grid, which
passes through the 68 BFM landmarks exactly), ``X = u + W a``; its crop position ``p = s R X + t`` (v1 projection, before the y
flip: image ``y = size + 1 - p_y``). Unknowns: log scale, a rotation update (axis-angle, right-multiplied), the 2D
offset and the 50 coefficients in whitened units ``b = (a - mean) / std`` (the v1 parameter whitening is the
distribution of 300W-LP fits: a Gaussian prior). The offset z and the third row of the camera follow the rotation.

Cost (Levenberg-Marquardt, analytic Jacobian):
``sum_k w_k^2 |p_k - y_k|^2 / sigma^2 + prior_shape^2 |b_shp|^2 + prior_exp^2 |b_exp|^2``.

Jaw contour (300-W points 0-16 follow the visible silhouette): **landmark marching**. Each contour point owns a
horizontal line of the grid (its vertex's grid row, from its own column toward the midline); before every round of
LM iterations each contour point takes the vertex of its line that lies furthest outward in the image along the
face's projected horizontal axis: the silhouette of that line. Frontal, that is the 3D jaw point itself; at large
yaw the far-side points slide onto the cheek outline the labeller saw. The chin point (8) is fixed.

Pure numpy; one face fits in a few milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.metrics import YAW_BINS
from model.morphable import CROP_SIZE, N_EXP, N_SHAPE, pose_from_params, scale_rotation

JAW = np.arange(17)
INNER = np.arange(17, 68)
CHIN = 8


@dataclass
class FitConfig:
    """Fit settings: prior strengths (x whitened coefficient), landmark noise (crop px), jaw weight, iterations."""

    prior_shape: float = 1.0
    prior_exp: float = 1.0
    sigma: float = 1.0  # crop pixels: landmark residuals are divided by it
    jaw_weight: float = 1.0  # weight of the contour points 0-16 (after marching)
    march: bool = True
    rounds: int = 6  # marching rounds (correspondences re-chosen before each)
    iterations: int = 8  # LM iterations per round
    midline_margin: int = 6  # grid columns of each side kept off the marching lines (the nose)


@dataclass
class FitResult:
    """A fit: real v1 params (62,), the model vertex of each landmark (68,) (marched jaw), its 2D crop landmarks
    (68, 2) image px (y down), the rms landmark residual (crop px) and the cost history."""

    params: np.ndarray
    vertices: np.ndarray
    landmarks: np.ndarray
    rms: float
    costs: list

    @property
    def yaw(self) -> float:
        """Yaw of the fit in degrees."""
        return float(pose_from_params(self.params[None])[0, 0])


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices: (..., 3) -> (..., 3, 3) with ``skew(a) @ b == cross(a, b)``."""
    v = np.asarray(v, np.float64)
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def rodrigues(w: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) radians -> rotation (3, 3)."""
    w = np.asarray(w, np.float64)
    th = float(np.linalg.norm(w))
    k = skew(w)
    if th < 1e-12:
        return np.eye(3) + k
    return np.eye(3) + np.sin(th) / th * k + (1 - np.cos(th)) / th ** 2 * (k @ k)


@dataclass
class State:
    """Fit unknowns: log scale, rotation (3, 3), crop offset (3,) (z kept), whitened coefficients (50,)."""

    log_s: float
    rot: np.ndarray
    t: np.ndarray
    b: np.ndarray

    def copy(self) -> "State":
        return State(self.log_s, self.rot.copy(), self.t.copy(), self.b.copy())


def state_from_params(params: np.ndarray, mean: np.ndarray, std: np.ndarray) -> State:
    """Real v1 params (62,) -> State (the camera's rows are orthonormalised: scaled rotation)."""
    p = np.asarray(params, np.float64)[None]
    s, r, t = scale_rotation(p)
    return State(float(np.log(s[0])), r[0], t[0].copy(), (p[0, 12:] - mean) / std)


def params_from_state(st: State, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """State -> real v1 params (62,) float32 (``P = s R | t``)."""
    out = np.empty(62)
    out[:12] = np.concatenate([np.exp(st.log_s) * st.rot, st.t[:, None]], 1).reshape(12)
    out[12:] = mean + std * st.b
    return out.astype(np.float32)


def project(st: State, u: np.ndarray, w: np.ndarray, std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Crop positions (K, 3) (before the y flip) of model points with means ``u`` (K, 3) and bases ``w`` (K, 3, 50)."""
    a = mean + std * st.b
    x = u + w @ a
    return np.exp(st.log_s) * x @ st.rot.T + st.t


def residuals_jacobian(st: State, u: np.ndarray, w: np.ndarray, target: np.ndarray, weights: np.ndarray,
                       mean: np.ndarray, std: np.ndarray, prior: np.ndarray, jac: bool = True
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Residuals (2K + 50,) and their Jacobian (2K + 50, 56) over (log s, rotation update (3), t (2), b (50)).

    ``target`` (K, 2) crop coordinates before the y flip; ``weights`` (K,) already divided by sigma; ``prior`` (50,).
    """
    s = np.exp(st.log_s)
    a = mean + std * st.b
    x = u + w @ a  # (K, 3) model points
    rx = x @ st.rot.T  # (K, 3)
    p = s * rx[:, :2] + st.t[:2]
    r = np.concatenate([((p - target) * weights[:, None]).reshape(-1), prior * st.b])
    if not jac:
        return r, None
    k = len(u)
    j = np.zeros((2 * k + 50, 56))
    jd = j[:2 * k].reshape(k, 2, 56)
    jd[:, :, 0] = s * rx[:, :2]
    # d(R exp([dw]) x)/d dw = -R [x]x
    jd[:, :, 1:4] = -s * np.einsum("ij,kjl->kil", st.rot[:2], skew(x))
    jd[:, 0, 4] = 1.0
    jd[:, 1, 5] = 1.0
    jd[:, :, 6:] = s * np.einsum("ij,kjl->kil", st.rot[:2], w) * std
    jd *= weights[:, None, None]
    j[2 * k:, 6:] = np.diag(prior)
    return r, j


def apply_step(st: State, d: np.ndarray) -> State:
    """State moved by a step (56,) in the Jacobian's coordinates."""
    out = st.copy()
    out.log_s += float(d[0])
    out.rot = st.rot @ rodrigues(d[1:4])
    out.t[:2] += d[4:6]
    out.b = st.b + d[6:]
    return out


def levenberg_marquardt(st: State, fn, iterations: int, lam: float = 1e-3) -> tuple[State, list, float]:
    """Minimise ``|r|^2`` with ``fn(state, jac) -> (r, J)``; returns (state, costs, final damping)."""
    r, j = fn(st, True)
    cost = float(r @ r)
    costs = [cost]
    for _ in range(iterations):
        h = j.T @ j
        g = j.T @ r
        dg = np.diag(h).copy()
        improved = False
        for _ in range(10):
            a = h + lam * np.diag(np.maximum(dg, 1e-9))
            try:
                d = np.linalg.solve(a, -g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            cand = apply_step(st, d)
            rc, _ = fn(cand, False)
            cc = float(rc @ rc)
            if cc < cost:
                st, improved = cand, True
                lam = max(lam / 3, 1e-9)
                break
            lam *= 4
        if not improved:
            break
        r, j = fn(st, True)
        new = float(r @ r)
        converged = cost - new < 1e-10 * max(cost, 1e-12)
        cost = new
        costs.append(cost)
        if converged:
            break
    return st, costs, lam


def marching_lines(landmark_vertices: np.ndarray, grid_shape: tuple[int, int], margin: int = 6) -> list:
    """Per contour point 0-16 the grid vertices (row-major ids) it may march along: its grid row from its own column
    to ``margin`` columns off the midline (left side: points 0-7, right: 9-16; the chin 8 stays)."""
    rows, cols = grid_shape
    mid = cols // 2
    out = []
    for j in JAW:
        r, c = divmod(int(landmark_vertices[j]), cols)
        if j == CHIN:
            cs = [c]
        elif j < CHIN:
            cs = list(range(c, max(mid - margin, c + 1)))
        else:
            cs = list(range(min(mid + margin, c), c + 1))
        out.append(np.array([r * cols + cc for cc in cs], np.int64))
    return out


def march(st: State, lines: list, u: np.ndarray, w: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The silhouette vertex (17,) of each contour line at the current pose: furthest outward along the projected
    model x axis (left points toward -x, right toward +x)."""
    allv = np.concatenate(lines)
    p = project(st, u[allv], w[allv], std, mean)[:, :2]
    axis = st.rot[:2, 0] / max(np.linalg.norm(st.rot[:2, 0]), 1e-9)
    out = np.empty(len(lines), np.int64)
    k = 0
    for j, line in enumerate(lines):
        q = p[k:k + len(line)] @ axis
        k += len(line)
        out[j] = line[int(np.argmin(q) if j < CHIN else np.argmax(q))]
    return out


@dataclass
class LandmarkFitter:
    """Dense-grid bases (float64), the landmarks' grid vertices, the marching lines and the prior."""

    u: np.ndarray  # (V, 3)
    w: np.ndarray  # (V, 3, 50)
    landmark_vertices: np.ndarray  # (68,)
    lines: list
    mean: np.ndarray  # (50,) whitening mean of the coefficients
    std: np.ndarray  # (50,)
    cfg: FitConfig
    size: int = CROP_SIZE

    @classmethod
    def create(cls, morph, whitening, cfg: FitConfig | None = None) -> "LandmarkFitter":
        """From a ``MorphableModel`` (with ``landmark_vertices``: ``load(follow_landmarks=True)``) and a whitening."""
        cfg = cfg or FitConfig()
        if morph.landmark_vertices is None or morph.grid_shape is None:
            raise ValueError("landmark fitting needs the grid model that follows the landmarks")
        # the whole grid that passes through the 68 landmarks (a face-cut model keeps it as ``dense_full``)
        d = getattr(morph, "dense_full", None) or morph.dense_basis
        w = np.concatenate([d.w_shp, d.w_exp], axis=2).astype(np.float64)
        k = np.asarray(morph.landmark_vertices, np.int64)
        return cls(d.u.astype(np.float64), w, k, marching_lines(k, morph.grid_shape, cfg.midline_margin),
                   np.asarray(whitening.mean[12:], np.float64), np.asarray(whitening.std[12:], np.float64), cfg)

    def prior(self) -> np.ndarray:
        c = self.cfg
        return np.concatenate([np.full(N_SHAPE, c.prior_shape), np.full(N_EXP, c.prior_exp)])

    def vertices_for(self, st: State) -> np.ndarray:
        """The model vertex of each of the 68 landmarks at state ``st`` (jaw marched when enabled)."""
        v = self.landmark_vertices.copy()
        if self.cfg.march:
            v[JAW] = march(st, self.lines, self.u, self.w, self.mean, self.std)
        return v

    def landmarks(self, params: np.ndarray, vertices: np.ndarray | None = None) -> np.ndarray:
        """Crop image px (68, 2) (y down) of ``params``' landmarks; ``vertices`` default to the marched ones."""
        st = state_from_params(params, self.mean, self.std)
        v = self.vertices_for(st) if vertices is None else vertices
        p = project(st, self.u[v], self.w[v], self.std, self.mean)
        return np.stack([p[:, 0], self.size + 1 - p[:, 1]], 1)

    def fit(self, start: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> FitResult:
        """Fit real v1 params (62,) to 2D landmarks ``target`` (68, 2) in crop image px (x right, y down, pixel
        centres, of a ``size`` crop) from ``start`` (62,). ``weights`` (68,) multiply each point (default 1, jaw
        ``cfg.jaw_weight``); NaN targets are ignored."""
        c = self.cfg
        tgt = np.asarray(target, np.float64).reshape(68, 2).copy()
        wts = np.ones(68) if weights is None else np.asarray(weights, np.float64).copy()
        wts[JAW] *= c.jaw_weight
        bad = ~np.isfinite(tgt).all(1)
        wts[bad] = 0.0
        tgt[bad] = 0.0
        tgt[:, 1] = self.size + 1 - tgt[:, 1]  # to crop coordinates before the y flip
        wts = wts / c.sigma
        prior = self.prior()
        st = state_from_params(start, self.mean, self.std)
        costs: list = []
        v = self.vertices_for(st)
        for _ in range(max(c.rounds, 1) if c.march else 1):
            u, w = self.u[v], self.w[v]

            def fn(s, jac, u=u, w=w):
                return residuals_jacobian(s, u, w, tgt, wts, self.mean, self.std, prior, jac)

            st, cs, _ = levenberg_marquardt(st, fn, c.iterations if c.march else c.iterations * c.rounds)
            costs.extend(cs)
            nv = self.vertices_for(st)
            if np.array_equal(nv, v):
                break
            v = nv
        p = project(st, self.u[v], self.w[v], self.std, self.mean)
        lm = np.stack([p[:, 0], self.size + 1 - p[:, 1]], 1)
        ok = wts > 0
        tgt[:, 1] = self.size + 1 - tgt[:, 1]
        rms = float(np.sqrt(((lm - tgt)[ok] ** 2).sum(1).mean())) if ok.any() else float("nan")
        return FitResult(params_from_state(st, self.mean, self.std), v, lm.astype(np.float32), rms, costs)


def point_nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-point errors (N, 68) in % of sqrt(w h) of each ground-truth landmark box (``metrics.nme`` per point)."""
    g = np.asarray(gt, np.float64)
    wh = g.max(axis=1) - g.min(axis=1)
    size = np.sqrt(np.maximum(wh[:, 0] * wh[:, 1], 1e-12))
    return np.linalg.norm(np.asarray(pred, np.float64)[..., :2] - g[..., :2], axis=-1) / size[:, None] * 100.0


def fit_report(stats: dict, seconds: float, source: str = "") -> str:
    """Markdown NME table of fits against human landmarks.

    ``stats``: ``target`` (N, 68, 2) human landmarks, ``teacher`` (the start's 68 model landmarks), ``fit`` (the fit,
    jaw marched: what it matched), ``fit3d`` (the fit's fixed 68 model landmarks), all crop px; ``yaw`` (N,) degrees
    of the fit. Columns: all faces, by |yaw| bin of the fit, contour points 0-16, inner points 17-67.
    """
    yaw = np.abs(np.asarray(stats["yaw"]))
    bins = [(yaw >= lo) & (yaw < hi if hi < 90 else yaw <= 1e9) for lo, hi in YAW_BINS]
    head = ("| landmarks vs human labels | all | " + " | ".join(f"yaw {lo:.0f}-{hi:.0f} (n={int(b.sum())})"
            for (lo, hi), b in zip(YAW_BINS, bins)) + " | jaw 0-16 | inner 17-67 |")
    lines = [f"Fits to human 68-point labels ({source}): {len(yaw)} faces, NME % (mean point error / sqrt(w h) of "
             f"the human landmark box), {seconds:.0f} s to build.", "", head, "|---|" + "---:|" * 6]
    names = {"teacher": "teacher start (mb05, flip-averaged, its 68 points)",
             "fit": "fit, contour marched (what it matched)", "fit3d": "fit, its fixed 68 model points"}

    def cell(e: np.ndarray) -> str:
        return f"{e.mean():.2f}" if e.size else "-"

    for key, name in names.items():
        e = point_nme(stats[key], stats["target"])
        per = e.mean(1)
        lines.append(f"| {name} | {cell(per)} | " + " | ".join(cell(per[b]) for b in bins)
                     + f" | {cell(e[:, JAW])} | {cell(e[:, INNER])} |")
    return "\n".join(lines) + "\n"
