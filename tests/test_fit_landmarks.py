"""Landmark fitting (model.fit_landmarks): known answers on synthetic faces, the prior, jaw marching, real labels."""
from __future__ import annotations

import numpy as np
import pytest

from model.fit_landmarks import (FitConfig, LandmarkFitter, apply_step, point_nme, residuals_jacobian,
                                 rodrigues, state_from_params)
from model.morphable import MorphableModel, Whitening, angles_to_matrix, params_from_pose, pose_from_params


@pytest.fixture(scope="module")
def morph(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def whitening(assets_dir):
    return Whitening.load("v1")


def _face(whitening, yaw: float, pitch: float = 5.0, roll: float = -4.0, seed: int = 0) -> np.ndarray:
    """Real v1 params of a plausible face centred in a 120 crop (coefficients 0.7 std around the mean)."""
    rng = np.random.default_rng(seed)
    r = angles_to_matrix(*(np.radians([a]) for a in (yaw, pitch, roll)))
    coef = whitening.mean[12:] + rng.normal(0, 0.7, 50) * whitening.std[12:]
    return params_from_pose(np.array([4.3e-4]), r, np.array([[60.0, 58.0, -70.0]]), coef[None, :40],
                            coef[None, 40:])[0]


def _perturb(whitening, p: np.ndarray, seed: int = 1) -> np.ndarray:
    """A start a few degrees, pixels and half a std off."""
    rng = np.random.default_rng(seed)
    q = np.array(p, np.float64)
    rot = rodrigues(np.radians(rng.uniform(-6, 6, 3)))
    q[:12] = (np.concatenate([q[:12].reshape(3, 4)[:, :3] @ rot * 1.04, q[:12].reshape(3, 4)[:, 3:]
                              + np.array([[3.0], [-2.5], [0.0]])], 1)).reshape(12)
    q[12:] += rng.normal(0, 0.5, 50) * whitening.std[12:]
    return q.astype(np.float32)


def test_rotation_helpers_and_jacobian_match_finite_differences(morph, whitening):
    w = np.array([0.3, -0.2, 0.5])
    r = rodrigues(w)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1.0)
    f = LandmarkFitter.create(morph, whitening)
    st = state_from_params(_face(whitening, 30.0), f.mean, f.std)
    v = f.landmark_vertices
    tgt = np.random.default_rng(0).uniform(20, 100, (68, 2))
    wts = np.random.default_rng(1).uniform(0.5, 2.0, 68)
    args = (f.u[v], f.w[v], tgt, wts, f.mean, f.std, f.prior())
    r0, j = residuals_jacobian(st, *args)
    num = np.empty_like(j)
    for k in range(56):
        d = np.zeros(56)
        d[k] = 1e-6
        num[:, k] = (residuals_jacobian(apply_step(st, d), *args, jac=False)[0] - r0) / 1e-6
    assert np.abs(num - j).max() < 1e-3 * max(np.abs(j).max(), 1.0)


@pytest.mark.parametrize("yaw", [12.0, -55.0])
def test_fit_recovers_known_parameters(morph, whitening, yaw):
    """Noise-free landmarks of known params (jaw on its silhouette) from a perturbed start: recovered to ~1e-3."""
    f = LandmarkFitter.create(morph, whitening, FitConfig(prior_shape=1e-6, prior_exp=1e-6, rounds=10,
                                                          iterations=40))
    truth = _face(whitening, yaw)
    target = f.landmarks(truth)
    res = f.fit(_perturb(whitening, truth), target)
    assert res.rms < 1e-3
    assert np.array_equal(res.vertices, f.vertices_for(state_from_params(truth, f.mean, f.std)))
    # the whole 62-vector: pose to 1e-3 degrees, coefficients to 1e-3 of their std
    pt, pr = pose_from_params(truth[None])[0], pose_from_params(res.params[None])[0]
    assert np.abs(pt[:3] - pr[:3]).max() < 1e-3 and abs(pt[3] / pr[3] - 1) < 1e-4
    assert np.abs((res.params[12:] - truth[12:]) / whitening.std[12:]).max() < 1e-3
    assert res.costs[-1] < res.costs[0] * 1e-6


def test_prior_pulls_coefficients_to_the_mean(morph, whitening):
    f = LandmarkFitter.create(morph, whitening, FitConfig(prior_shape=1e4, prior_exp=1e4))
    truth = _face(whitening, 5.0)
    res = f.fit(_perturb(whitening, truth), f.landmarks(truth))
    b = (res.params[12:] - whitening.mean[12:]) / whitening.std[12:]
    assert np.abs(b).max() < 1e-2  # only the pose is fitted
    assert res.rms < 3.0  # the mean face in the right pose is still close


def test_marching_keeps_frontal_jaw_and_moves_the_far_side_inward(morph, whitening):
    f = LandmarkFitter.create(morph, whitening)
    k = f.landmark_vertices
    front = _face(whitening, 0.0, 0.0, 0.0)
    moved = np.linalg.norm(f.landmarks(front) - f.landmarks(front, k), axis=1)
    assert moved.max() < 1.0  # frontal: the silhouette is (within the grid's folds) the 3D jaw line
    # yaw > 0 turns the image-left side (points 0-7) away from the camera
    for yaw, far, near in ((60.0, slice(0, 7), slice(10, 17)), (-60.0, slice(10, 17), slice(0, 7))):
        p = _face(whitening, yaw, 0.0, 0.0)
        v = f.vertices_for(state_from_params(p, f.mean, f.std))
        cols_k, cols_v = k % 64, v % 64
        assert np.all(cols_v[far] != cols_k[far])  # far side marched ...
        assert np.all(np.abs(cols_v[far] - 32) <= np.abs(cols_k[far] - 32))  # ... toward the midline only
        shift = np.linalg.norm(f.landmarks(p) - f.landmarks(p, k), axis=1)
        assert shift[far].min() > 3.0 and shift[near].max() < 1.0  # the near side's jaw line is its silhouette
        assert v[8] == k[8]  # the chin stays


def test_nan_points_are_ignored(morph, whitening):
    f = LandmarkFitter.create(morph, whitening, FitConfig(prior_shape=1e-3, prior_exp=1e-3))
    truth = _face(whitening, 20.0)
    target = f.landmarks(truth)
    bad = target.copy()
    bad[40:44] = np.nan
    res = f.fit(_perturb(whitening, truth), bad)
    assert np.isfinite(res.params).all()
    assert np.abs(res.landmarks - target).max() < 0.05  # the rest pins the face


def test_point_nme_is_metrics_nme():
    from model.metrics import nme

    rng = np.random.default_rng(0)
    g = rng.uniform(0, 100, (3, 68, 2))
    p = g + rng.normal(0, 2, g.shape)
    assert np.allclose(point_nme(p, g).mean(1), nme(p, g))


def test_fits_to_human_labels_beat_the_teacher(assets_dir, morph, whitening, tmp_path):
    """Five faces300w faces: the fit is much closer to the human landmarks than its teacher start."""
    from model.data.cache import PhotoCache, build_human

    root = assets_dir / "faces300w"
    if not root.is_dir():
        pytest.skip("no faces300w")
    n, report = build_human(root / "helen_trainset", tmp_path / "hc", limit=5, progress=False)
    assert n == 5 and "teacher start" in report and (tmp_path / "hc" / "fit_report.md").is_file()
    c = PhotoCache.load(tmp_path / "hc")
    assert c.human.all() and (c.fit_nme < 3.0).all()
    f = LandmarkFitter.create(morph, whitening)
    from model.data.cache import OFFSET

    target = c.landmarks - OFFSET
    fits = np.stack([f.landmarks(p) for p in c.params])
    assert np.allclose(point_nme(fits, target).mean(1), c.fit_nme, atol=1e-3)
    # the teacher start is clearly worse (the report's rows: teacher start, fit)
    rows = [line for line in report.splitlines() if line.startswith("| teacher") or line.startswith("| fit, contour")]
    t_all, f_all = (float(r.split("|")[2]) for r in rows)
    assert f_all < 0.8 * t_all
