"""Known-answer tests of tracking.jitter (NME, NMJ, acceleration jitter, lag)."""
from __future__ import annotations

import numpy as np
import pytest

from tracking.jitter import acceleration_jitter, estimate_lag, face_size, nme, nmj, nmj_per_frame

_rng = np.random.default_rng(0)
GT_FACE = np.concatenate([_rng.uniform(0, 100, (68, 1)), _rng.uniform(0, 64, (68, 1)), np.zeros((68, 1))], 1)
GT_FACE[0, :2] = [0, 0]
GT_FACE[1, :2] = [100, 64]  # tight box exactly 100 x 64 -> face size 80


def seq(t: int = 20) -> np.ndarray:
    """A face translating 3 px / frame: (t, 68, 3)."""
    return GT_FACE[None] + np.arange(t)[:, None, None] * np.array([3.0, 1.0, 0.0])


def test_face_size():
    assert face_size(GT_FACE) == pytest.approx(80.0)
    np.testing.assert_allclose(face_size(seq(4)), 80.0)


def test_nme_of_a_known_offset():
    pred = GT_FACE + np.array([3.0, 4.0, 7.0])  # 5 px in 2D (z ignored)
    assert nme(pred, GT_FACE) == pytest.approx(5 / 80 * 100)
    box = np.array([0, 0, 50, 50.0])
    assert nme(pred, GT_FACE, box=box) == pytest.approx(5 / 50 * 100)
    np.testing.assert_allclose(nme(seq(5) + [0, 8.0, 0], seq(5)), 10.0)  # per frame


def test_nmj_of_a_constant_offset_is_zero():
    gt = seq()
    assert nmj(gt + np.array([6.0, -2.0, 0.0]), gt) == pytest.approx(0.0, abs=1e-12)


def test_nmj_of_alternating_error():
    gt = seq(21)
    d = np.array([3.0, 4.0, 0.0])  # |d| = 5 px
    sign = np.where(np.arange(21) % 2 == 0, 1.0, -1.0)[:, None, None]
    pred = gt + sign * d
    # every frame-to-frame change of the error is 2 d: |2 d| / 80 = 12.5 %
    np.testing.assert_allclose(nmj_per_frame(pred, gt), 12.5)
    assert nmj(pred, gt) == pytest.approx(12.5)
    # the RMS over points: half the points jitter by 2 d, half are still -> sqrt(0.5) x 12.5
    pred2 = gt.copy()
    pred2[:, :34] += sign * d
    assert nmj(pred2, gt) == pytest.approx(12.5 * np.sqrt(0.5))
    # given a size, it is used
    assert nmj(pred, gt, size=40.0) == pytest.approx(25.0)


def test_nmj_skips_missing_frames():
    gt = seq(10)
    pred = gt + 1.0
    pred[4] = np.nan
    assert nmj(pred, gt) == pytest.approx(0.0, abs=1e-12)


def test_acceleration_jitter():
    lm = seq(30)
    assert acceleration_jitter(lm) == pytest.approx(0.0, abs=1e-12)  # constant velocity: no acceleration
    sign = np.where(np.arange(30) % 2 == 0, 1.0, -1.0)[:, None, None]
    jit = lm + sign * np.array([0.5, 0.0, 0.0])
    # second difference of +-0.5 px alternation: 0.5 * (1 + 2 + 1) = 2 px -> 2 / 80 = 2.5 %
    assert acceleration_jitter(jit) == pytest.approx(2.5)
    assert acceleration_jitter(jit, size=100.0) == pytest.approx(2.0)


def test_estimate_lag():
    t = np.arange(400)
    rng = np.random.default_rng(1)
    sig = np.convolve(rng.normal(size=420), np.ones(15) / 15, mode="same")[:400]  # a smooth random trajectory
    assert estimate_lag(sig, sig) == pytest.approx(0.0, abs=1e-9)
    delayed = np.r_[np.full(3, sig[0]), sig[:-3]]
    assert estimate_lag(delayed, sig) == pytest.approx(3.0, abs=0.15)
    assert estimate_lag(sig, delayed) == pytest.approx(-3.0, abs=0.15)
    # multi-dimensional, with noise on the reference
    ref = np.stack([sig, np.sin(t / 17)], 1)
    trail = np.roll(ref, 2, axis=0)
    assert estimate_lag(trail[10:], ref[10:] + rng.normal(size=(390, 2)) * 0.01) == pytest.approx(2.0, abs=0.2)
    # a one-sided moving average of 5 frames lags by 2
    ma = np.array([sig[max(0, i - 4):i + 1].mean() for i in range(400)])
    assert estimate_lag(ma, sig) == pytest.approx(2.0, abs=0.3)
