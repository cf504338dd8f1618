"""The dense grid fitted to the 68-point model: passes through the landmarks and shows expressions."""
from __future__ import annotations

import numpy as np

from model.morphable import MorphableModel, angles_to_matrix, crop_to_frame, params_from_pose, project_crop


def _params(exp: np.ndarray, yaw: float = 0.3) -> np.ndarray:
    r = angles_to_matrix(np.array([yaw]), np.array([0.1]), np.array([0.05]))
    return params_from_pose(np.array([1e-3]), r, np.array([[60.0, 60.0, 0.0]]), np.zeros((1, 40)), exp[None])


def test_grid_passes_through_the_landmarks(assets_dir):
    mm = MorphableModel.load()
    rng = np.random.default_rng(0)
    p = _params(rng.normal(0, 1, 10).astype(np.float32))
    p[:, 12:52] = rng.normal(0, 3e4, 40)
    roi = np.array([[10.0, 20.0, 250.0, 260.0]], np.float32)
    dense = mm.dense(p, roi, "v1")[0]
    lm = mm.landmarks(p, roi, "v1")[0]
    k = mm.landmark_vertices
    assert k is not None and len(set(k.tolist())) == 68
    # the whole fitted grid passes through all 68; the face cut moves a few jaw vertices onto its outline
    full = crop_to_frame(project_crop(p, mm.dense_full.shape_model(p)), roi, "v1")[0]
    np.testing.assert_allclose(full[k], lm, atol=1e-2)
    fixed = ~np.isin(k, mm.topology.moved)
    assert fixed.sum() >= 60 and fixed[17:].all()  # only jaw points may sit on the outline
    np.testing.assert_allclose(dense[k[fixed]], lm[fixed], atol=1e-2)


def test_expression_moves_the_fitted_grid_not_the_raw_one(assets_dir):
    fitted, raw = MorphableModel.load(), MorphableModel.load(follow_landmarks=False)
    roi = np.array([[0.0, 0.0, 120.0, 120.0]], np.float32)
    open_mouth = np.zeros(10, np.float32)
    open_mouth[0] = -1.0  # the first expression component opens the jaw
    for model, moves in ((fitted, True), (raw, False)):
        rest = model.dense(_params(np.zeros(10, np.float32)), roi, "v1")[0]
        act = model.dense(_params(open_mouth), roi, "v1")[0]
        shift = np.linalg.norm(act - rest, axis=1).max()
        assert (shift > 1.0) == moves, shift  # pixels of a 120-px crop
