"""Per-track temporal filter of the 62 real 3DMM parameters (filterpy Kalman, constant velocity, no added delay).

Model. Every parameter ``i`` follows an independent constant-velocity model with white random acceleration
(state: value and velocity per frame). All noise levels are given in "std units": multiples of a per-parameter scale
``param_scale (62,)`` (the aligner's whitening std, ``Aligner.param_std``), so one config fits every backbone and every
parameter inside a group. The three groups have their own noise levels:

- ``pose``: the 12 camera parameters ``P`` (3x4 row-major, in crop coordinates of the current ROI);
- ``shape``: the 40 identity coefficients, near constant for a person: tiny process noise, i.e. a long running mean;
- ``expression``: the 10 expression coefficients: fast, moderately smoothed.

Engines (``KalmanConfig.engine``), both run through ``filterpy.kalman.KalmanFilter`` and give the same numbers:

- ``"shared"`` (default): in std units every parameter of a group has the same F, Q, R, H and initial P, hence the same
  covariance and gain at every step. One 2-state filterpy filter per group carries the shared 2x2 covariance, and its
  state ``x`` is a (2, n_group) matrix whose columns are the parameters (filterpy's predict/update are matrix products,
  so the columns ride along; ``update`` gets ``H`` explicitly so filterpy takes the (1, n_group) measurement as is).
  Exact; measured 45-65 us per frame for all 62 parameters on a 2-core CPU (~95 us with the machine oversubscribed).
- ``"full"``: one 124-d filterpy filter (state = 62 values and their 62 velocities, block-diagonal Q and R). The
  textbook form: 124x124 products and a 62x62 inverse per frame, measured 0.5-0.9 ms single-threaded and several ms
  when BLAS threads compete for busy cores. Kept as the reference the shared engine is tested against
  (``tests/test_tracking_kalman.py::test_engines_agree``).

Gating: before each update the normalised innovation of every parameter, ``y_i / sqrt(S_ii)`` (about 1 for pure
measurement noise), is summarised per group by its RMS. Over the group's ``gate`` (a scene cut, a fast turn, a
different person) the group is reset to the measurement (value = measurement, velocity 0, covariance back to its
start) instead of being smeared over the next frames: the output at that frame equals the measurement. Between
``adapt_gate`` and the gate the group's predicted covariance is inflated for that step (a manoeuvre: follow faster).

Latency: ``update(z)`` returns the posterior after the update with ``z``: the estimate for the frame of ``z``, no delay.

Coordinates: the pose part of the parameters lives in the crop of the ROI it was measured in. When the ROI moves
between frames the caller re-expresses the filter state in the new crop first with ``change_frame(scale, offset)``
(an affine change of coordinates per parameter, see ``tracking.crop_follow.crop_change``); otherwise ROI motion would look
like face motion.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter

from model.expression_ext import N_EXT

N_PARAMS = 62
#: Parameter groups: name -> slice into the 62 real parameters.
GROUPS: dict[str, slice] = {"pose": slice(0, 12), "shape": slice(12, 52), "expression": slice(52, 62)}
#: The extended expression (``model.expression_ext``) appended after the 62: eyelid closure (right, left), then the
#: mouth corners, jaw and inner lips. ``TRACK_GROUPS`` is the (62 + N_EXT)-value layout the tracker filters.
EXT_GROUPS: dict[str, slice] = {"eyelids": slice(62, 64), "mouth_shape": slice(64, 62 + N_EXT)}
TRACK_GROUPS: dict[str, slice] = {**GROUPS, **EXT_GROUPS}


def layout_size(groups: dict[str, slice]) -> int:
    """Number of values a group layout covers (its largest stop)."""
    return max(s.stop for s in groups.values())


@dataclass(frozen=True)
class GroupNoise:
    """Noise and gate of one parameter group, in std units (multiples of ``param_scale``), time in frames.

    ``meas_std``: std of the per-frame measurement noise (the network's frame-to-frame jitter).
    ``accel_std``: std of the random acceleration per frame^2 (process noise of the constant-velocity model);
    smaller = smoother, slower to follow changes of speed. ``meas_std`` / ``accel_std`` sets the trade-off.
    ``init_vel_std``: std of the velocity assumed when the filter starts or resets (velocity is set to 0).
    ``gate``: reset the group when the RMS over its parameters of the normalised innovation
    ``y_i / sqrt(S_ii)`` exceeds this many sigmas (pure measurement noise gives about 1); ``inf`` disables.
    """

    meas_std: float
    accel_std: float
    init_vel_std: float
    gate: float

    def __post_init__(self) -> None:
        if not (self.meas_std > 0 and self.accel_std >= 0 and self.init_vel_std >= 0 and self.gate > 0):
            raise ValueError(f"noise levels must be meas_std > 0, accel_std >= 0, init_vel_std >= 0, gate > 0: {self}")


#: Start velocity std of each group (``GroupNoise.init_vel_std``; not a run setting, so not in configs/default.yaml).
INIT_VEL_STD: dict[str, float] = {"pose": 0.3, "shape": 1e-3, "expression": 0.3, "eyelids": 0.5, "mouth_shape": 0.5}


@dataclass(frozen=True)
class KalmanConfig:
    """Settings of ``ParamKalman``; every std in std units of the parameter (``param_scale``), time in frames.

    The noise levels and gates of the groups and ``adapt_gate`` are run settings: their values (starting points,
    tuned on rendered videos with known geometry, see ``tracking.jitter``) and what each does are in
    configs/default.yaml (``kalman.*``), turned into this config by ``stream.analyze.kalman_config``. In short:
    - pose: on synthetic signals with exactly the default noise levels, still-head jitter (mean |second difference|)
      is cut 3.6x and slow turns are followed without steady lag; a scene cut or a very fast turn (innovation RMS
      over the gate over the 12 parameters) resets;
    - shape: a running mean over the first frames, then adapts over ~100 frames; resets only on a large identity
      change (a different person in the same track);
    - expression: lighter smoothing, mouth and eyes must stay lively;
    - eyelids and mouth_shape (the extended expression, in its own units: 1 = a closed eye): a blink's closing and
      opening are innovations far over the gate, so the group resets to the measurement there and keeps the
      blink's full depth with no lag; between blinks the lids are smoothed;
    - ``adapt_gate``: between this RMS normalised innovation and the gate, the group's predicted covariance is
      inflated by ``(rms / adapt_gate)^2`` for this step (a manoeuvre: follow faster instead of lagging or resetting).
    Library settings (defaults here): ``max_gap`` 15 frames: a longer gap between measurements resets the whole
    filter; ``engine``: "shared" or "full" (the module docstring).
    """

    pose: GroupNoise
    shape: GroupNoise
    expression: GroupNoise
    eyelids: GroupNoise
    mouth_shape: GroupNoise
    adapt_gate: float
    max_gap: float = 15.0
    engine: str = "shared"

    def __post_init__(self) -> None:
        if self.engine not in ("shared", "full"):  # ENGINES
            raise ValueError(f"unknown Kalman engine '{self.engine}' (expected shared or full)")
        if not self.adapt_gate > 0:
            raise ValueError(f"adapt_gate must be > 0 sigmas: {self.adapt_gate}")
        if self.max_gap <= 0:
            raise ValueError(f"max_gap must be > 0 frames: {self.max_gap}")

    def noise(self, group: str) -> GroupNoise:
        return getattr(self, group)


@lru_cache(maxsize=64)
def _cv_matrices(dt: float, accel_var: float) -> tuple[np.ndarray, np.ndarray]:
    """Transition F (2, 2) and process noise Q (2, 2) of a constant-velocity model over ``dt`` frames."""
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = Q_discrete_white_noise(dim=2, dt=dt, var=accel_var)
    return f, q


class Smoother(Protocol):
    """What the tracker needs from a per-track parameter smoother (``ParamKalman`` or ``NoSmoother``)."""

    initialized: bool
    last_reset: tuple[str, ...]

    def update(self, z: np.ndarray, dt: float = 1.0) -> np.ndarray: ...

    def reset(self, z: np.ndarray) -> np.ndarray: ...

    def change_frame(self, scale: np.ndarray, offset: np.ndarray) -> None: ...


class NoSmoother:
    """Pass-through with the ``ParamKalman`` interface (``--smooth none``): the output is the measurement."""

    def __init__(self, param_scale: np.ndarray | None = None, config: KalmanConfig | None = None,
                 groups: dict[str, slice] = GROUPS) -> None:
        self.groups = groups
        self.n = layout_size(groups)
        self.initialized = False
        self.last_reset: tuple[str, ...] = ()
        self.nis: dict[str, float] = {}

    def update(self, z: np.ndarray, dt: float = 1.0) -> np.ndarray:
        """Measurement (n,) -> the same values (n,) float32."""
        self.last_reset = () if self.initialized else tuple(self.groups)
        self.initialized = True
        return np.asarray(z, dtype=np.float32).reshape(self.n).copy()

    def reset(self, z: np.ndarray) -> np.ndarray:
        self.initialized = True
        self.last_reset = tuple(self.groups)
        return np.asarray(z, dtype=np.float32).reshape(self.n).copy()

    def change_frame(self, scale: np.ndarray, offset: np.ndarray) -> None:
        return None


class ParamKalman:
    """Constant-velocity Kalman filter of one face's 62 real parameters (or any group layout ``groups``, e.g.
    ``TRACK_GROUPS``: the 62 and the extended expression), gated per group (see the module docstring).

    ``param_scale (n,)``: the std unit of each value (real units), e.g. ``Aligner.param_std``; None = ones.
    Usage per frame: ``change_frame(...)`` if the ROI moved, then ``out = update(z, dt)`` with ``z (62,)`` real
    parameters and ``dt`` the frames since the last update; ``out (62,) float32`` is the filtered estimate for this
    frame. The first update (and any reset) returns the measurement itself.

    ``ParamKalman(...)`` makes the engine ``config.engine`` names: ``SharedKalman`` or ``FullKalman`` (both
    ``Smoother``s); this class holds what they share (noise levels, gates, resets, the update's frame).
    """

    def __new__(cls, param_scale: np.ndarray | None, config: KalmanConfig,
                groups: dict[str, slice] = GROUPS) -> "ParamKalman":
        if cls is ParamKalman:
            cls = ENGINES[config.engine]
        return object.__new__(cls)

    def __init__(self, param_scale: np.ndarray | None, config: KalmanConfig,
                 groups: dict[str, slice] = GROUPS) -> None:
        self.groups = groups
        self.n = layout_size(groups)
        self.config = config
        scale = np.ones(self.n) if param_scale is None else np.asarray(param_scale, dtype=np.float64).reshape(-1)
        if scale.shape != (self.n,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"param_scale must be ({self.n},) finite and > 0, got shape {scale.shape}")
        self.scale = scale
        self.initialized = False
        self.last_reset: tuple[str, ...] = ()
        #: normalised innovation squared per group at the last update (NaN after a reset of the group).
        self.nis: dict[str, float] = {}
        self.n_updates = 0
        self.n_resets = 0
        # thresholds on the normalised innovation squared (sum over the group) = n * rms^2
        self._gates = {g: (s.stop - s.start) * self.config.noise(g).gate ** 2 for g, s in self.groups.items()}
        self._soft = {g: (s.stop - s.start) * self.config.adapt_gate ** 2 for g, s in self.groups.items()}
        r = np.empty(self.n)
        a = np.empty(self.n)
        v0 = np.empty(self.n)
        for g, s in self.groups.items():
            nz = self.config.noise(g)
            r[s], a[s], v0[s] = nz.meas_std, nz.accel_std, nz.init_vel_std
        self._r, self._a, self._v0 = r, a, v0
        self._build()

    # -- what an engine provides --------------------------------------------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    def _positions(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def velocity(self) -> np.ndarray:
        """Current velocity estimate (62,) float64, real units per frame."""
        raise NotImplementedError

    def position_std(self) -> np.ndarray:
        """Posterior std (62,) of every parameter, real units."""
        raise NotImplementedError

    def _reset_group(self, g: str, zn: np.ndarray) -> None:
        raise NotImplementedError

    def _step(self, dt: float, zn: np.ndarray | None) -> list[str]:
        """Predict ``dt`` frames, then update with ``zn`` (std units; None: predict only); returns the groups reset
        by their gate and sets ``nis``."""
        raise NotImplementedError

    def change_frame(self, scale: np.ndarray, offset: np.ndarray) -> None:
        """Re-express the state in new coordinates ``p' = scale * p + offset`` (per parameter, real units).

        Velocities scale by ``scale``, covariances by ``scale^2``. Used when the crop (ROI) moves: the pose part of
        the parameters is in crop coordinates.
        """
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------------------------------
    @property
    def value(self) -> np.ndarray:
        """Current estimate (62,) float32, real units (posterior after the last update)."""
        return (self._positions() * self.scale).astype(np.float32)

    # -- operations -------------------------------------------------------------------------------------------------
    def reset(self, z: np.ndarray) -> np.ndarray:
        """Restart every group at measurement ``z (62,)`` real units (velocity 0); returns ``z`` as float32."""
        zn = self._normalise(z)
        for g in self.groups:
            self._reset_group(g, zn)
        self.initialized = True
        self.last_reset = tuple(self.groups)
        self.nis = {g: float("nan") for g in self.groups}
        self.n_resets += 1
        return self.value

    def update(self, z: np.ndarray, dt: float = 1.0) -> np.ndarray:
        """Predict ``dt`` frames ahead, then update with measurement ``z (62,)`` (real units).

        Returns the filtered estimate (62,) float32 for the frame of ``z``. Resets (whole filter) on the first call,
        on a gap ``dt > max_gap``; resets a group whose innovation is over its gate. ``last_reset`` names the groups
        reset by this call. A ``z`` with non-finite values is ignored: the prediction is returned.
        """
        self.n_updates += 1
        if not self.initialized or dt > self.config.max_gap:
            return self.reset(z)
        if dt <= 0:
            dt = 1e-3  # two measurements of the same instant: no motion in between
        zf = np.asarray(z, dtype=np.float64).reshape(-1)
        if zf.shape != (self.n,):
            raise ValueError(f"measurement must have {self.n} values, got {zf.shape}")
        zn = self._normalise(zf) if bool(np.all(np.isfinite(zf))) else None
        reset = self._step(float(dt), zn)
        self.last_reset = tuple(reset)
        if reset:
            self.n_resets += 1
        return self.value

    def _normalise(self, z: np.ndarray) -> np.ndarray:
        zf = np.asarray(z, dtype=np.float64).reshape(-1)
        if zf.shape != (self.n,):
            raise ValueError(f"measurement must have {self.n} values, got {zf.shape}")
        return zf / self.scale


class SharedKalman(ParamKalman):
    """Engine ``"shared"``: one 2-state filterpy filter per group whose state columns are the group's parameters
    (every parameter of a group has the same covariance and gain; module docstring)."""

    def _build(self) -> None:
        self._kfs = {g: self._group_filter(g) for g in self.groups}

    def _group_filter(self, g: str) -> KalmanFilter:
        n = self.groups[g].stop - self.groups[g].start
        nz = self.config.noise(g)
        kf = KalmanFilter(dim_x=2, dim_z=1)
        kf.x = np.zeros((2, n))
        kf.H = np.array([[1.0, 0.0]])
        kf.R = np.array([[nz.meas_std ** 2]])
        kf.P = np.diag([nz.meas_std ** 2, nz.init_vel_std ** 2])
        return kf

    def _positions(self) -> np.ndarray:
        return np.concatenate([self._kfs[g].x[0] for g in self.groups])

    @property
    def velocity(self) -> np.ndarray:
        """Current velocity estimate (62,) float64, real units per frame."""
        return np.concatenate([self._kfs[g].x[1] for g in self.groups]) * self.scale

    def position_std(self) -> np.ndarray:
        """Posterior std (62,) of every parameter, real units."""
        sd = np.concatenate([np.full(s.stop - s.start, np.sqrt(self._kfs[g].P[0, 0])) for g, s in self.groups.items()])
        return sd * self.scale

    def _reset_group(self, g: str, zn: np.ndarray) -> None:
        s = self.groups[g]
        nz = self.config.noise(g)
        kf = self._kfs[g]
        kf.x = np.vstack([zn[s], np.zeros(s.stop - s.start)])
        kf.P = np.diag([nz.meas_std ** 2, nz.init_vel_std ** 2])

    def _step(self, dt: float, zn: np.ndarray | None) -> list[str]:
        reset: list[str] = []
        for g, s in self.groups.items():
            kf = self._kfs[g]
            f, q = _cv_matrices(dt, self.config.noise(g).accel_std ** 2)
            kf.predict(F=f, Q=q)
            if zn is None:
                continue
            zg = zn[s][None, :]
            y = zg - kf.x[0:1]
            s_var = kf.P[0, 0] + kf.R[0, 0]
            nis = float(np.sum(y * y) / s_var)
            self.nis[g] = nis
            if nis > self._gates[g]:
                reset.append(g)
                self._reset_group(g, zn)
            else:
                if nis > self._soft[g]:
                    kf.P = kf.P * (nis / self._soft[g])
                kf.update(zg, H=kf.H)
        return reset

    def change_frame(self, scale: np.ndarray, offset: np.ndarray) -> None:
        """``p' = scale * p + offset`` (real units); a group's covariance takes the group's mean ``scale^2`` (exact
        for square ROIs, where all pose rows scale alike)."""
        if not self.initialized:
            return
        a = np.asarray(scale, dtype=np.float64).reshape(self.n)
        b = np.asarray(offset, dtype=np.float64).reshape(self.n) / self.scale
        for g, s in self.groups.items():
            kf = self._kfs[g]
            if np.all(a[s] == 1.0) and not np.any(b[s]):
                continue
            kf.x = np.vstack([a[s] * kf.x[0] + b[s], a[s] * kf.x[1]])
            kf.P = kf.P * float(np.mean(a[s] ** 2))


class FullKalman(ParamKalman):
    """Engine ``"full"``: one 2n-state filterpy filter (values and velocities, block-diagonal Q and R): the textbook
    reference ``SharedKalman`` is tested against."""

    def _build(self) -> None:
        kf = KalmanFilter(dim_x=2 * self.n, dim_z=self.n)
        kf.H = np.hstack([np.eye(self.n), np.zeros((self.n, self.n))])
        kf.R = np.diag(self._r ** 2)
        kf.P = np.diag(np.concatenate([self._r ** 2, self._v0 ** 2]))
        self._full_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._kf = kf

    def _full_fq(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        if dt not in self._full_cache:
            n = self.n
            f = np.eye(2 * n)
            f[:n, n:] = dt * np.eye(n)
            a2 = self._a ** 2
            q = np.zeros((2 * n, 2 * n))
            idx = np.arange(n)
            q[idx, idx] = a2 * dt ** 4 / 4
            q[idx, idx + n] = q[idx + n, idx] = a2 * dt ** 3 / 2
            q[idx + n, idx + n] = a2 * dt ** 2
            self._full_cache[dt] = (f, q)
        return self._full_cache[dt]

    def _positions(self) -> np.ndarray:
        return self._kf.x[:self.n, 0].copy()

    @property
    def velocity(self) -> np.ndarray:
        """Current velocity estimate (62,) float64, real units per frame."""
        return self._kf.x[self.n:, 0] * self.scale

    def position_std(self) -> np.ndarray:
        """Posterior std (62,) of every parameter, real units."""
        return np.sqrt(np.diag(self._kf.P)[:self.n]) * self.scale

    def _reset_group(self, g: str, zn: np.ndarray) -> None:
        s = self.groups[g]
        nz = self.config.noise(g)
        kf = self._kf
        rows = np.arange(s.start, s.stop)
        idx = np.r_[rows, rows + self.n]
        kf.x[s.start:s.stop, 0] = zn[s]
        kf.x[self.n + s.start:self.n + s.stop, 0] = 0.0
        kf.P[idx, :] = 0.0
        kf.P[:, idx] = 0.0
        kf.P[rows, rows] = nz.meas_std ** 2
        kf.P[rows + self.n, rows + self.n] = nz.init_vel_std ** 2

    def _step(self, dt: float, zn: np.ndarray | None) -> list[str]:
        kf = self._kf
        f, q = self._full_fq(dt)
        kf.predict(F=f, Q=q)
        if zn is None:
            return []
        y = zn - kf.x[:self.n, 0]
        s_var = np.diag(kf.P)[:self.n] + self._r ** 2
        d = np.ones(2 * self.n)
        for g, s in self.groups.items():
            self.nis[g] = float(np.sum(y[s] ** 2 / s_var[s]))
            if self._soft[g] < self.nis[g] <= self._gates[g]:
                d[s] = d[self.n + s.start:self.n + s.stop] = np.sqrt(self.nis[g] / self._soft[g])
        if np.any(d != 1.0):
            kf.P = d[:, None] * kf.P * d[None, :]
        kf.update(zn[:, None])
        reset = [g for g in self.groups if self.nis[g] > self._gates[g]]
        for g in reset:
            self._reset_group(g, zn)
        return reset

    def change_frame(self, scale: np.ndarray, offset: np.ndarray) -> None:
        """``p' = scale * p + offset`` (real units), exactly."""
        if not self.initialized:
            return
        a = np.asarray(scale, dtype=np.float64).reshape(self.n)
        b = np.asarray(offset, dtype=np.float64).reshape(self.n) / self.scale
        kf = self._kf
        d = np.concatenate([a, a])
        kf.x = d[:, None] * kf.x
        kf.x[:self.n, 0] += b
        kf.P = d[:, None] * kf.P * d[None, :]


#: ``KalmanConfig.engine`` -> the class ``ParamKalman(...)`` makes.
ENGINES: dict[str, type[ParamKalman]] = {"shared": SharedKalman, "full": FullKalman}


def make_smoother(kind: str = "kalman", param_scale: np.ndarray | None = None,
                  config: KalmanConfig | None = None, groups: dict[str, slice] = GROUPS) -> Smoother:
    """``kind``: ``"kalman"`` (``ParamKalman``) or ``"none"`` (``NoSmoother``, the ``--smooth none`` choice);
    ``groups`` the value layout (``GROUPS``: the 62 parameters; ``TRACK_GROUPS``: with the extended expression)."""
    if kind == "kalman":
        if config is None:
            raise ValueError("a Kalman smoother needs its KalmanConfig")
        return ParamKalman(param_scale, config, groups)
    if kind == "none":
        return NoSmoother(param_scale, config, groups)
    raise ValueError(f"unknown smoother '{kind}' (expected kalman or none)")
