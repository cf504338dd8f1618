"""Tests of the tracking ROI policy, plausibility checks and crop-to-crop parameter maps (tracking.crop_follow)."""
from __future__ import annotations

import numpy as np
import pytest

from model.morphable import crop_to_frame, project_crop
from model.roi import roi_from_landmarks
from tracking.crop_follow import RoiConfig, check_landmarks, crop_change, next_roi, reexpress_params, roi_side

SHAPE = (480, 640, 3)
_rng = np.random.default_rng(0)
UNIT = np.concatenate([_rng.uniform(-0.5, 0.5, (68, 1)), _rng.uniform(-0.6, 0.6, (68, 1)), np.zeros((68, 1))], 1)


def face(cx: float, cy: float, s: float) -> np.ndarray:
    return np.stack([cx + s * UNIT[:, 0], cy + s * UNIT[:, 1], UNIT[:, 2]], 1)


@pytest.mark.parametrize("convention", ["v1", "v2"])
def test_reexpressed_params_decode_to_the_same_frame_points(convention):
    rng = np.random.default_rng(1)
    params = rng.normal(size=(3, 62))
    verts = rng.normal(size=(3, 50, 3)) * 40
    roi_a = np.array([[10, 20, 130, 140], [300, 50, 420, 200], [-30, -20, 60, 70]], np.float64)  # not all square
    roi_b = roi_a * 1.3 + rng.normal(size=(3, 4)) * 10
    frame_a = crop_to_frame(project_crop(params, verts), roi_a, convention)
    p_b = reexpress_params(params, roi_a, roi_b, convention)
    frame_b = crop_to_frame(project_crop(p_b, verts), roi_b, convention)
    np.testing.assert_allclose(frame_b, frame_a, atol=1e-9)
    np.testing.assert_array_equal(p_b[:, 12:], params[:, 12:])  # shape and expression untouched
    s, o = crop_change(roi_a[0], roi_a[0], convention)
    np.testing.assert_allclose(s, 1)
    np.testing.assert_allclose(o, 0, atol=1e-12)


def test_next_roi_follows_landmarks():
    lm = face(320, 240, 100)
    roi = next_roi(lm, None, SHAPE)
    np.testing.assert_allclose(roi, roi_from_landmarks(lm[None])[0], atol=1e-4)
    assert roi.dtype == np.float32 and roi.shape == (4,)


def test_next_roi_guards_collapse_and_explosion():
    cfg = RoiConfig(max_growth=1.5)
    prev = next_roi(face(320, 240, 100), None, SHAPE)
    big = next_roi(face(320, 240, 400), prev, SHAPE, cfg)  # one bad frame: 4x the size
    assert roi_side(big) == pytest.approx(roi_side(prev) * 1.5, rel=1e-5)
    small = next_roi(face(320, 240, 10), prev, SHAPE, cfg)
    assert roi_side(small) == pytest.approx(roi_side(prev) / 1.5, rel=1e-5)
    tiny = next_roi(face(320, 240, 2), None, SHAPE, cfg)
    assert roi_side(tiny) == pytest.approx(cfg.min_side)
    huge = next_roi(face(320, 240, 5000), None, SHAPE, cfg)
    assert roi_side(huge) == pytest.approx(cfg.max_side_frac * 640)
    off = next_roi(face(900, -200, 100), None, SHAPE, cfg)
    c = (off[:2] + off[2:]) / 2
    np.testing.assert_allclose(c, [639, 0])  # centre kept in the frame


def test_check_landmarks():
    lm = face(320, 240, 100)
    roi = roi_from_landmarks(lm[None])[0]
    assert check_landmarks(lm, roi, SHAPE) == ""
    assert "out of frame" in check_landmarks(face(700, 240, 100), roi_from_landmarks(face(700, 240, 100)[None])[0],
                                             SHAPE)
    assert check_landmarks(face(320, 240, 20), roi, SHAPE) != ""  # collapsed inside its crop
    assert check_landmarks(face(320, 240, 300), roi, SHAPE) != ""  # exploded
    shifted = face(320 + 120, 240 + 60, 100)  # drifted off its crop
    assert "IoU" in check_landmarks(shifted, roi, SHAPE)
    flat = lm.copy()
    flat[:, 1] = 240
    assert "degenerate" in check_landmarks(flat, roi, SHAPE)
    nan = lm.copy()
    nan[3, 0] = np.nan
    assert check_landmarks(nan, roi, SHAPE) != ""
