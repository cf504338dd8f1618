"""Known values of the training losses (WPDC, VDC, Wing) and their gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.losses import CombinedLoss, LossWeights, vdc, wing, wing_from_error, wpdc, wpdc_weights
from model.morphable import MorphableModel, Whitening

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mw(assets_dir):
    return MorphableModel.load(), Whitening.load("v1")


def _target(wh: Whitening, n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 62, generator=g) * 0.3  # whitened, near the mean face


def test_wing_closed_form():
    w, eps = 10.0, 2.0
    small, large = torch.tensor([1.0, -1.0]), torch.tensor([15.0, -15.0])
    assert torch.allclose(wing_from_error(small), torch.full((2,), w * math.log(1 + 1 / eps)))
    c = w - w * math.log(1 + w / eps)
    assert torch.allclose(wing_from_error(large), torch.full((2,), 15.0 - c))
    # continuous at |x| = w
    assert abs(float(wing_from_error(torch.tensor(w - 1e-4))) - float(wing_from_error(torch.tensor(w + 1e-4)))) < 1e-3
    assert float(wing_from_error(torch.tensor(0.0))) == 0.0


def test_wing_on_landmarks_of_offset(mw):
    morph, wh = mw
    t = _target(wh)
    real = wh.unwhiten(t)
    shifted = real.clone()
    shifted[:, 3] += 1.0  # every landmark moves 1 px in x: per coordinate errors (1, 0)
    p = wh.whiten(shifted)
    expect = 0.5 * 10 * math.log(1 + 1 / 2.0)
    assert float(wing(p, t, morph, wh)) == pytest.approx(expect, rel=1e-4)


def test_vdc_zero_and_known_offset(mw):
    morph, wh = mw
    t = _target(wh)
    assert float(vdc(t, t, morph, wh)) == pytest.approx(0.0, abs=1e-6)
    real = wh.unwhiten(t)
    moved = real.clone()
    moved[:, 3] += 3.0
    moved[:, 7] += 4.0
    assert float(vdc(wh.whiten(moved), t, morph, wh)) == pytest.approx(5.0, rel=1e-4)
    assert float(vdc(wh.whiten(moved), t, morph, wh, dense=True)) == pytest.approx(5.0, rel=1e-4)
    # the z offset counts in 3D, not in the image plane
    moved[:, 11] += 12.0
    assert float(vdc(wh.whiten(moved), t, morph, wh)) == pytest.approx(13.0, rel=1e-4)
    assert float(vdc(wh.whiten(moved), t, morph, wh, xy_only=True)) == pytest.approx(5.0, rel=1e-4)
    assert float(vdc(wh.whiten(moved), t, morph, wh, dense=True, xy_only=True)) == pytest.approx(5.0, rel=1e-4)


def test_wpdc_zero_positive_and_weights(mw):
    morph, wh = mw
    t = _target(wh)
    assert float(wpdc(t, t, morph, wh)) == pytest.approx(0.0, abs=1e-12)
    p = t.clone()
    p[:, 20] += 0.5  # one shape coefficient wrong
    w = wpdc_weights(wh.unwhiten(p), wh.unwhiten(t), morph, wh)
    assert torch.allclose(w[:, 20], torch.ones(3))  # the only error gets the full (normalised) weight
    assert float(w[:, [i for i in range(62) if i != 20]].max()) < 1e-3
    assert float(wpdc(p, t, morph, wh)) == pytest.approx(float((w * (p - t) ** 2).mean()), rel=1e-6)
    assert float(wpdc(p, t, morph, wh)) > 0
    # x and y offsets move every landmark alike: equal real errors get equal weights; the z offset is ignored
    real = wh.unwhiten(t)
    q = real.clone()
    q[:, 3] += 2.0
    q[:, 7] += 2.0
    q[:, 11] += 2.0
    w = wpdc_weights(q, real, morph, wh)
    assert torch.allclose(w[:, 3], w[:, 7]) and torch.all(w[:, 11] == 0)
    # a larger error on a parameter gets a proportionally larger weight
    q2 = real.clone()
    q2[:, 3] += 2.0
    q2[:, 7] += 1.0
    w2 = wpdc_weights(q2, real, morph, wh)
    assert torch.allclose(w2[:, 7] / w2[:, 3], torch.full((3,), 0.5), atol=1e-4)


def test_gradients_flow_and_sample_weights(mw):
    morph, wh = mw
    t = _target(wh)
    p = (t + 0.2 * torch.randn_like(t)).requires_grad_(True)
    loss_fn = CombinedLoss(morph, wh, LossWeights(wpdc=1.0, vdc=0.5, wing=0.1))
    loss, parts = loss_fn(p, t)
    loss.backward()
    assert set(parts) == {"wpdc", "vdc", "wing"}
    assert torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0
    # a zero-weight sample contributes nothing
    sw = torch.tensor([1.0, 1.0, 0.0])
    bad = p.detach().clone()
    bad[2] += 5.0
    l1, _ = loss_fn(p.detach(), t, sw)
    l2, _ = loss_fn(bad, t, sw)
    assert float(l1) == pytest.approx(float(l2), rel=1e-6)


def _crop_landmarks(morph, wh, whitened: torch.Tensor) -> torch.Tensor:
    """Image px (N, 68, 2) of whitened params in the crop (y down: 121 - y)."""
    lm = morph.landmarks_crop(wh.unwhiten(whitened))[..., :2]
    return torch.stack([lm[..., 0], 121 - lm[..., 1]], -1)


def test_human_landmark_loss_zero_for_exact_and_ignores_nan_rows(mw):
    from model.losses import landmark_point_weights, landmark_wing

    morph, wh = mw
    t = _target(wh, 4)
    lm = _crop_landmarks(morph, wh, t)
    per, has = landmark_wing(t, lm, morph, wh, t)
    assert torch.allclose(per, torch.zeros(4), atol=1e-4) and has.all()
    pred = (t + 0.2 * torch.randn(4, 62, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    lm_nan = lm.clone()
    lm_nan[2] = float("nan")
    loss = CombinedLoss(morph, wh, LossWeights(wpdc=0.0, wing=0.0, human2d=1.0))
    total, parts = loss(pred, t, None, lm_nan)
    total.backward()
    assert parts["human2d"] > 0 and torch.isfinite(pred.grad).all()
    assert torch.all(pred.grad[2] == 0)  # the row without landmarks adds nothing ...
    ref, _ = loss(pred[[0, 1, 3]], t[[0, 1, 3]], None, lm[[0, 1, 3]])
    assert float(total.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)  # ... and does not dilute the mean
    # no landmarks at all: the term is zero, the others unchanged
    both = CombinedLoss(morph, wh, LossWeights(wpdc=1.0, wing=0.0, human2d=1.0))
    assert float(both(pred, t, None, torch.full_like(lm, float("nan")))[0]) == pytest.approx(
        float(both(pred, t)[0]), rel=1e-6)
    # single NaN points are skipped, the rest still counts
    lm_pt = lm.clone()
    lm_pt[:, 30] = float("nan")
    per_pt, has_pt = landmark_wing(pred.detach(), lm_pt, morph, wh, t)
    assert has_pt.all() and torch.isfinite(per_pt).all()
    # the contour points count fully frontal and not at all past jaw_yaw
    w0 = landmark_point_weights(wh.unwhiten(t), jaw=0.5, jaw_yaw=30.0)
    assert torch.all(w0[:, 17:] == 1) and torch.all(w0[:, :17] <= 0.5)


def test_human_landmark_loss_jaw_weight_follows_the_yaw(mw):
    from model.losses import landmark_wing
    from model.morphable import angles_to_matrix, params_from_pose

    morph, wh = mw
    r = angles_to_matrix(np.radians([0.0, 45.0]), np.zeros(2), np.zeros(2))
    real = params_from_pose(np.full(2, 4.2e-4), r, np.array([[60, 60, -70.0]] * 2), np.tile(wh.mean[12:52], (2, 1)),
                            np.tile(wh.mean[52:], (2, 1)))
    t = wh.whiten(torch.from_numpy(real))
    lm = _crop_landmarks(morph, wh, t)
    off = lm.clone()
    off[:, :17, 0] += 4.0  # only the contour is off
    per, _ = landmark_wing(t, off, morph, wh, t, jaw=1.0, jaw_yaw=30.0)
    assert per[0] > 0.5 and float(per[1]) == pytest.approx(0.0, abs=1e-4)  # at 45 deg the contour is ignored


def test_jaw_marcher_matches_the_fit_marching(mw):
    """The loss's torch marching picks the same silhouette as the fit's (numpy): a fit's own marched landmarks give
    a zero 2D loss at any yaw, and the fixed-jaw variant does not."""
    from model.fit_landmarks import LandmarkFitter
    from model.losses import JawMarcher, landmark_wing
    from model.morphable import angles_to_matrix, params_from_pose

    morph, wh = mw
    f = LandmarkFitter.create(morph, wh)
    yaws = np.array([0.0, 25.0, -50.0, 70.0])
    r = angles_to_matrix(np.radians(yaws), np.radians([5.0, -8, 3, 0]), np.radians([0.0, 6, -4, 2]))
    coef = wh.mean[12:] + np.random.default_rng(2).normal(0, 0.6, (4, 50)) * wh.std[12:]
    real = params_from_pose(np.full(4, 4.2e-4), r, np.array([[60, 60, -70.0]] * 4), coef[:, :40], coef[:, 40:])
    human = torch.from_numpy(np.stack([f.landmarks(p) for p in real]).astype(np.float32))
    got = JawMarcher(morph)(torch.from_numpy(real).double())[..., :2].numpy()
    got[..., 1] = 121 - got[..., 1]
    assert np.abs(got - human[:, :17].numpy()).max() < 1e-3
    t = wh.whiten(torch.from_numpy(real))
    per, has = landmark_wing(t, human, morph, wh, t, marcher=JawMarcher(morph), jaw=1.0)
    assert has.all() and float(per.abs().max()) < 1e-3
    fixed, _ = landmark_wing(t, human, morph, wh, t, jaw=1.0, jaw_yaw=90.0)
    assert float(fixed[2]) > 0.1  # at 50 degrees the fixed jaw points are off the silhouette
    # gradients reach the parameters through the chosen silhouette points
    pred = t.clone().requires_grad_(True)
    off = human.clone()
    off[:, :17, 0] += 3.0
    loss = CombinedLoss(morph, wh, LossWeights(wpdc=0.0, wing=0.0, human2d=1.0, human2d_jaw=1.0))
    total, _ = loss(pred, t, None, off)
    total.backward()
    assert float(total.detach()) > 0 and float(pred.grad.abs().sum()) > 0
