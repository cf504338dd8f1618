"""Known-answer tests of the per-track parameter filter (tracking.kalman)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.run_defaults import kalman_defaults
from tracking.kalman import GROUPS, GroupNoise, KalmanConfig, NoSmoother, ParamKalman, make_smoother
from tracking.jitter import estimate_lag

SCALE = np.linspace(0.5, 3.0, 62)  # a non-trivial std unit per parameter


def _noise_std(cfg: KalmanConfig) -> np.ndarray:
    return np.concatenate([np.full(s.stop - s.start, cfg.noise(g).meas_std) for g, s in GROUPS.items()]) * SCALE


def _run(kf, z: np.ndarray) -> np.ndarray:
    return np.array([kf.update(zz) for zz in z])


def test_first_update_is_the_measurement_and_no_smoother_passes_through():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 62)) * SCALE
    kf = ParamKalman(SCALE, kalman_defaults())
    np.testing.assert_allclose(kf.update(z[0]), z[0], rtol=1e-6)
    assert set(kf.last_reset) == set(GROUPS)
    ns = make_smoother("none", SCALE)
    assert isinstance(ns, NoSmoother)
    for zz in z:
        np.testing.assert_array_equal(ns.update(zz), zz.astype(np.float32))
    ns.change_frame(np.full(62, 2.0), np.ones(62))  # no state: nothing to move
    np.testing.assert_array_equal(ns.update(z[1], dt=3), z[1].astype(np.float32))


# The 124-d "full" engine is checked against the shared one in test_engines_agree (it is slow: BLAS on busy cores).
def test_constant_signal_variance_cut(engine: str = "shared"):
    cfg = kalman_defaults(engine=engine)
    rng = np.random.default_rng(1)
    truth = rng.normal(size=62) * SCALE
    z = truth + rng.normal(size=(400, 62)) * _noise_std(cfg)
    out = _run(ParamKalman(SCALE, cfg), z)
    ratio = {g: np.mean((z - truth)[100:, s] ** 2) / np.mean((out - truth)[100:, s] ** 2) for g, s in GROUPS.items()}
    assert ratio["pose"] > 2.5 and ratio["expression"] > 1.8 and ratio["shape"] > 30, ratio
    # heavier smoothing (smaller random acceleration) cuts more: the trade-off is in the config
    heavy = kalman_defaults(pose=GroupNoise(0.04, 0.0002, 0.3, gate=3.0), engine=engine)
    out_h = _run(ParamKalman(SCALE, heavy), truth + rng.normal(size=(400, 62)) * _noise_std(heavy))
    r_h = np.mean(_noise_std(heavy)[:12] ** 2) / np.mean((out_h - truth)[100:, :12] ** 2)
    assert r_h > 10, r_h


def test_shape_barely_moves_under_noise():
    cfg = kalman_defaults()
    rng = np.random.default_rng(2)
    truth = rng.normal(size=62) * SCALE
    z = truth + rng.normal(size=(300, 62)) * _noise_std(cfg)
    out = _run(ParamKalman(SCALE, cfg), z)
    sh = GROUPS["shape"]
    step_raw = np.abs(np.diff(z[50:, sh], axis=0)).mean()
    step_out = np.abs(np.diff(out[50:, sh], axis=0)).mean()
    assert step_out < step_raw / 30, (step_out, step_raw)
    # and sits on the truth far closer than one measurement
    assert np.sqrt(np.mean((out[-1, sh] - truth[sh]) ** 2)) < 0.3 * np.mean(_noise_std(cfg)[sh])


def test_ramp_has_no_steady_lag(engine: str = "shared"):
    cfg = kalman_defaults(engine=engine)
    rng = np.random.default_rng(3)
    t = np.arange(300)[:, None]
    slope = np.zeros(62)
    slope[GROUPS["pose"]] = 0.02  # std units per frame: a steady head turn
    slope[GROUPS["expression"]] = 0.01
    truth = (rng.normal(size=62) + slope * t) * SCALE
    noise = rng.normal(size=truth.shape) * _noise_std(cfg)
    out = _run(ParamKalman(SCALE, cfg), truth + noise)
    err = (out - truth)[100:] / SCALE
    for g in ("pose", "expression"):
        s = GROUPS[g]
        bias = err[:, s].mean()
        assert abs(bias) < 0.1 * cfg.noise(g).meas_std, (g, bias)  # a lagging filter would sit ~slope*lag behind
    lag = estimate_lag(out[100:, :12], truth[100:, :12], max_lag=10)
    assert abs(lag) < 0.5, lag


@pytest.mark.parametrize("engine", ["shared", "full"])
def test_step_over_the_gate_resets_at_the_cut(engine):
    cfg = kalman_defaults(engine=engine)
    rng = np.random.default_rng(4)
    a = rng.normal(size=62) * SCALE
    b = a.copy()
    b[GROUPS["pose"]] += 1.0 * SCALE[GROUPS["pose"]]  # 25 measurement sigmas: a cut / very fast turn
    z = np.concatenate([a + rng.normal(size=(40, 62)) * _noise_std(cfg), b + rng.normal(size=(20, 62)) * _noise_std(cfg)])
    kf = ParamKalman(SCALE, cfg)
    out = []
    for k, zz in enumerate(z):
        out.append(kf.update(zz))
        if k == 40:
            assert kf.last_reset == ("pose",)
            np.testing.assert_allclose(out[-1][:12], zz[:12], rtol=1e-5, atol=1e-6)  # measurement at the cut
            # the other groups kept smoothing
            assert not np.allclose(out[-1][12:], zz[12:], rtol=1e-3)
        elif k > 0:
            assert kf.last_reset == (), (k, kf.last_reset, kf.nis)
    out = np.array(out)
    # a smear would pull the following frames back towards a: they stay within noise of b
    assert np.abs((out[41:, :12] - b[:12]) / SCALE[:12]).max() < 0.2


def test_small_step_is_smoothed_not_reset():
    cfg = kalman_defaults()
    kf = ParamKalman(SCALE, cfg)
    a = np.ones(62) * SCALE
    for _ in range(30):
        kf.update(a)
    b = a.copy()
    b[:12] += 0.5 * cfg.pose.meas_std * SCALE[:12]
    out = kf.update(b)
    assert kf.last_reset == ()
    assert np.all(np.abs(out[:12] - a[:12]) < np.abs(b[:12] - a[:12]))


def test_gap_longer_than_max_gap_resets():
    kf = ParamKalman(SCALE, kalman_defaults(max_gap=5))
    z = np.ones(62) * SCALE
    for _ in range(10):
        kf.update(z)
    z2 = z + 0.001 * SCALE
    out = kf.update(z2, dt=6)
    assert set(kf.last_reset) == set(GROUPS)
    np.testing.assert_allclose(out, z2, rtol=1e-6)
    kf.update(z2, dt=2)  # a short gap just predicts further
    assert kf.last_reset == ()


def test_engines_agree():
    """The shared-covariance engine is exactly the 124-d filter (same F, Q, R per parameter in std units)."""
    rng = np.random.default_rng(5)
    z = np.cumsum(rng.normal(size=(80, 62)) * 0.05, axis=0) * SCALE
    z[50, :12] += 2.0 * SCALE[:12]  # one gated reset on the way
    ks = ParamKalman(SCALE, kalman_defaults(engine="shared"))
    kfull = ParamKalman(SCALE, kalman_defaults(engine="full"))
    for k, zz in enumerate(z):
        dt = 2.0 if k == 30 else 1.0
        if k == 20:  # a ROI change: uniform per pose group, as for square ROIs
            sc, off = np.ones(62), np.zeros(62)
            sc[:12] = 1.3
            off[[3, 7, 11]] = [5.0, -4.0, 0.0]
            ks.change_frame(sc, off)
            kfull.change_frame(sc, off)
        np.testing.assert_allclose(ks.update(zz, dt), kfull.update(zz, dt), rtol=1e-5, atol=1e-5)
        assert ks.last_reset == kfull.last_reset
    np.testing.assert_allclose(ks.velocity, kfull.velocity, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ks.position_std(), kfull.position_std(), rtol=1e-6)


def test_change_frame_commutes_with_filtering():
    """A pure shift of the crop: filtering in crop A then shifting == shifting the measurements and filtering."""
    rng = np.random.default_rng(6)
    sc, off = np.ones(62), np.zeros(62)
    off[[3, 7, 11]] = [10.0, -3.0, 1.0]
    z = (rng.normal(size=62) + np.arange(40)[:, None] * 0.01 + rng.normal(size=(40, 62)) * 0.05) * SCALE
    ka, kb = ParamKalman(SCALE, kalman_defaults()), ParamKalman(SCALE, kalman_defaults())
    for zz in z[:20]:
        ka.update(zz)
        kb.update(sc * zz + off)
    ka.change_frame(sc, off)
    for zz in z[20:]:
        np.testing.assert_allclose(ka.update(sc * zz + off), kb.update(sc * zz + off), rtol=1e-5, atol=1e-5)
    # a zoom maps the state exactly: values affinely, velocities by the scale
    sc[:12] = 0.8
    v0, x0 = ka.velocity.copy(), ka.value.astype(np.float64)
    ka.change_frame(sc, off)
    np.testing.assert_allclose(ka.value, sc * x0 + off, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ka.velocity, sc * v0, rtol=1e-9, atol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError):
        ParamKalman(np.ones(61), kalman_defaults())
    with pytest.raises(ValueError):
        kalman_defaults(engine="x")
    with pytest.raises(ValueError):
        make_smoother("median")
    kf = ParamKalman(SCALE, kalman_defaults())
    z = np.ones(62) * SCALE
    kf.update(z)
    bad = z.copy()
    bad[3] = np.nan
    np.testing.assert_allclose(kf.update(bad), z, rtol=1e-6)  # non-finite measurement: prediction only


def test_update_cost_per_frame():
    """Per-frame cost of one track's filter (predict + gate + update of all 62 parameters)."""
    rng = np.random.default_rng(7)
    z = rng.normal(size=(600, 62)) * SCALE
    res = {}
    for engine, n in (("shared", 600), ("full", 30)):
        kf = ParamKalman(SCALE, kalman_defaults(engine=engine))
        kf.update(z[0])
        t0 = time.perf_counter()
        for zz in z[1:n]:
            kf.update(zz * 0.01)
        res[engine] = (time.perf_counter() - t0) / (n - 1) * 1e6
    print(f"\nKalman update per frame and track: shared {res['shared']:.0f} us, full 124-d {res['full']:.0f} us")
    assert res["shared"] < 5000  # only catches a pathological regression: the test machine is shared
