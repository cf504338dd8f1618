"""Per-track ARKit blendshapes: each track learns its own neutral face (``NeutralAdapter``) and maps its smoothed
3DMM fit through ``model.blendshapes``' table (``BlendshapeTracker``, one per stream, beside the ``FaceTracker``).

The neutral of a measure = the identity's prior (its expression at 0) + a learned offset:

- **warm-up** (the track's first ``warmup_s`` seconds): the offset is a quantile (``model.blendshapes.QUANTILES``:
  the median, a low quantile for the lip gap and the chin, whose rest is the closed end of their range) of the
  observed offsets of the frames so far (this one included) where the head faces the camera (``|yaw| <= max_yaw``,
  ``|pitch| <= max_pitch``), optionally shrunk toward 0 by ``prior_frames`` pseudo-samples. A quantile: blinks and
  words during the first seconds do not move it; a track's first frame reads 0 (it is its own neutral so far).
- **afterwards**: a running quantile: each frame (frontal head) moves each offset toward the observed one by a fixed
  step, whatever the size of the difference: up by ``2 q`` and down by ``2 (1 - q)`` steps of one full-scale unit
  per ``adapt_s`` seconds (the median's up and down steps are equal). Brief expressions (a blink, a word, a smile
  of a few seconds) barely move it; a slow drift (a tired face, the fit settling) is followed; an expression held
  for ``adapt_s`` seconds becomes neutral. ``adapt_s = 0`` freezes it after warm-up.
- the offset never strays beyond ``model.blendshapes.MAX_OFFSET`` of each unit from the prior.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from model.blendshapes import (N_BLEND, N_SIGNALS, QUANTILES, activations, clamp_offset, coefficients, model_points,
                               raw_signals, units)


@dataclass(frozen=True)
class NeutralConfig:
    """``warmup_s`` seconds of a track's start that set its neutral; ``adapt_s`` seconds the slow adaptation after it
    takes to move a neutral by one full-scale unit (0: none): run settings, their values in configs/default.yaml
    (``blendshapes.*``, turned into this by ``stream.analyze.neutral_config``). Library settings: ``prior_frames``
    [0] pseudo-samples of the prior during warm-up; ``max_yaw`` [30], ``max_pitch`` [25] degrees: frames turned
    further teach nothing; ``max_samples`` [240] warm-up samples kept."""

    warmup_s: float
    adapt_s: float
    prior_frames: int = 0
    max_yaw: float = 30.0
    max_pitch: float = 25.0
    max_samples: int = 240


class NeutralAdapter:
    """One track's learned neutral offset (``offset`` (N_SIGNALS,), measure units, added to the prior)."""

    def __init__(self, config: NeutralConfig, quantiles: np.ndarray = QUANTILES) -> None:
        self.config = config
        self.quantiles = np.asarray(quantiles, np.float64)
        self.offset = np.zeros(N_SIGNALS)
        self._samples = np.empty((self.config.max_samples, N_SIGNALS))
        self._count = 0
        self._start: float | None = None
        self._last: float | None = None
        self.frames = 0

    @property
    def warming(self) -> bool:
        """Still in the warm-up (or never updated)."""
        return self._start is None or (self._last or 0.0) - self._start < self.config.warmup_s

    def update(self, signals: np.ndarray, prior: np.ndarray, time: float, pose: np.ndarray) -> None:
        """Learn from one frame: its measures and prior (N_SIGNALS,), its time (s), pose (yaw, pitch, ... degrees)."""
        cfg = self.config
        t = float(time)
        if self._start is None:
            self._start = t
        dt = 0.0 if self._last is None else max(0.0, t - self._last)
        self._last = t
        self.frames += 1
        if abs(float(pose[0])) > cfg.max_yaw or abs(float(pose[1])) > cfg.max_pitch:
            return
        observed = signals - prior
        if t - self._start < cfg.warmup_s:
            if self._count < cfg.max_samples:
                self._samples[self._count] = observed
                self._count += 1
            k = self._count
            q = quantiles(self._samples[:k], self.quantiles)
            self.offset = clamp_offset(q * (k / (k + cfg.prior_frames)), prior)
        elif cfg.adapt_s > 0 and dt > 0:
            step = units(prior) * min(dt, 1.0) / cfg.adapt_s
            d = observed - self.offset
            up = np.where(d > 0, 2.0 * self.quantiles, np.where(d < 0, -2.0 * (1.0 - self.quantiles), 0.0))
            self.offset = clamp_offset(self.offset + step * up, prior)


def quantiles(samples: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Column ``j``'s quantile ``q[j]`` of ``samples`` (K, M) -> (M,) (``np.quantile`` at each distinct level)."""
    levels, which = np.unique(q, return_inverse=True)
    return np.quantile(samples, levels, axis=0)[which, np.arange(samples.shape[1])]


class BlendshapeTracker:
    """The ARKit coefficients of a stream's faces, with a ``NeutralAdapter`` per track id.

    ``basis``: ``MorphableModel.sparse`` (the 68 landmarks' bases, with ``w_ext``). Call ``update`` once per frame
    with that frame's faces; ``prune(alive)`` forgets tracks that ended.
    """

    def __init__(self, basis, config: NeutralConfig) -> None:
        self.basis = basis
        self.config = config
        self.adapters: dict[int, NeutralAdapter] = {}

    def update(self, track_ids: Sequence[int], params: np.ndarray, ext: np.ndarray | None, poses: np.ndarray,
               time: float, learn: bool = True) -> np.ndarray:
        """The coefficients ``(N, N_BLEND)`` float32 of this frame's faces: track ids (N,), smoothed params (N, 62),
        ext (N, N_EXT)|None, poses (N, 6) (yaw, pitch degrees first), the frame's time (s). ``learn=False`` (photos):
        each face against its prior alone, nothing kept."""
        n = len(track_ids)
        if n == 0:
            return np.zeros((0, N_BLEND), np.float32)
        pts, prior_pts = model_points(self.basis, params, ext)
        both = raw_signals(np.concatenate([pts, prior_pts]))
        sig, prior = both[:n], both[n:]
        if not learn:
            return coefficients(activations(sig, prior))
        offsets = np.empty((n, N_SIGNALS))
        for i, t in enumerate(track_ids):
            a = self.adapters.get(int(t)) or self.adapters.setdefault(int(t), NeutralAdapter(self.config))
            a.update(sig[i], prior[i], time, poses[i])  # this frame counts in its own neutral (warm-up median)
            offsets[i] = a.offset
        return coefficients(activations(sig, prior + offsets))

    def prune(self, alive: set[int]) -> None:
        """Forget the neutral of every track not in ``alive``."""
        for tid in [t for t in self.adapters if t not in alive]:
            del self.adapters[tid]
