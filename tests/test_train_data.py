"""Training data: teacher labels (v2 -> v1, flip averaging, parameter mirror), photo crops, ground-truth loaders."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.data.gt_datasets import MatDataset, PtsDataset, params_to_crop
from model.data.photos import Augment, PhotoDataset, list_images, warp_crop
from model.data.teacher import FLIP_68, MIRROR_C, Teacher, mirror_landmarks_crop, mirror_params, model_mirror_plane, v2_to_v1
from model.morphable import MorphableModel, Whitening, angles_to_matrix, crop_to_frame, params_from_pose
from model.roi import crop_roi

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def morph(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def faces(assets_dir):
    root = assets_dir / "faces"
    if not root.is_dir():
        pytest.skip("no faces folder")
    return root


def _params(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yaw, pitch, roll = (np.radians(rng.uniform(-40, 40, n)) for _ in range(3))
    r = angles_to_matrix(yaw, pitch, roll)
    t = np.stack([rng.uniform(50, 70, n), rng.uniform(50, 70, n), np.zeros(n)], 1)
    std = Whitening.load("v1").std
    shp = rng.normal(0, 0.5, (n, 40)) * std[12:52]
    exp = rng.normal(0, 0.5, (n, 10)) * std[52:]
    return params_from_pose(np.full(n, 4.2e-4), r, t, shp, exp)


def test_flip_permutation_is_an_involution():
    assert sorted(FLIP_68.tolist()) == list(range(68))
    assert np.array_equal(FLIP_68[FLIP_68], np.arange(68))
    assert FLIP_68[0] == 16 and FLIP_68[36] == 45 and FLIP_68[30] == 30 and FLIP_68[48] == 54


def test_mirror_params_matches_mirrored_landmarks(morph):
    p = _params()
    x0 = model_mirror_plane(morph)
    mirrored = morph.landmarks_crop(mirror_params(p, MIRROR_C, x0))
    expect = mirror_landmarks_crop(morph.landmarks_crop(p))
    err = np.linalg.norm((mirrored - expect)[..., :2], axis=-1)
    assert err.mean() < 0.5 and err.max() < 2.5  # the BFM bases are nearly, not exactly, symmetric
    # the mirror is an involution, in numpy and torch
    assert np.allclose(mirror_params(mirror_params(p, MIRROR_C, x0), MIRROR_C, x0), p, rtol=1e-5, atol=1e-3)
    pt = torch.from_numpy(p)
    assert torch.allclose(mirror_params(pt, MIRROR_C, x0), torch.from_numpy(mirror_params(p, MIRROR_C, x0)))


def test_v2_to_v1_keeps_the_frame_landmarks(morph):
    p = torch.from_numpy(_params())
    roi = torch.tensor([[10.0, 20.0, 210.0, 220.0]]).repeat(len(p), 1)
    a = morph.landmarks(p, roi, "v2")
    b = morph.landmarks(v2_to_v1(p), roi, "v1")
    assert torch.allclose(a[..., :2], b[..., :2], atol=1e-3)


def test_teacher_flip_average_is_mirror_consistent(faces, morph):
    img = cv2.imread(str(sorted((faces / "utkface_crop_part1").glob("*.jpg"))[0]))
    crop = crop_roi(img, np.array([10, 10, 190, 190], np.float32))
    t = Teacher(flip=True)
    a = t.real_params(crop[None])
    b = t.real_params(crop[None, :, ::-1].copy())
    # flip-averaged labels of the mirrored crop are exactly the mirrored labels
    assert torch.allclose(mirror_params(a, MIRROR_C, t.x0), b, rtol=1e-4, atol=1e-2)
    # targets are v1-whitened: unwhitening with v1 gives back the real parameters
    assert torch.allclose(Whitening.load("v1").unwhiten(t(crop[None])), a, rtol=1e-4, atol=1e-3)
    # and the landmarks land on the face (inside the crop)
    lm = morph.landmarks_crop(a)[0, :, :2]
    assert float(lm.min()) > 0 and float(lm.max()) < 120


def test_photo_list_and_samples(faces):
    paths = list_images(faces)
    assert paths and not any("mmpose_testdata_faces" in p.parts for p in paths)
    ds = PhotoDataset(paths[:3], faces, augment=Augment.off(), weights={paths[0].relative_to(faces).parts[0]: 0.5})
    crop, w = ds.sample(0, np.random.default_rng(0))
    assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8 and w == 0.5
    img = ds.image(0)
    # without augmentation the crop is the inference crop of the ROI (same pixel grid as crop_roi)
    roi = np.round(ds.base_roi(0, img))
    diff = np.abs(warp_crop(img, roi).astype(int) - crop_roi(img, roi).astype(int))
    assert diff.mean() < 0.5
    ds2 = PhotoDataset(paths[:3], faces)
    a, _ = ds2.sample(1, np.random.default_rng(5))
    b, _ = ds2.sample(1, np.random.default_rng(5))
    assert np.array_equal(a, b)  # deterministic for a seed


def test_params_to_crop_keeps_frame_landmarks(morph):
    p = _params(3)
    p[:, 3] += 100  # full-image coordinates of a 400 px tall image
    p[:, 7] += 150
    h = 400
    full = crop_to_frame(morph.landmarks_crop(p), np.array([[0, 0, h, h]] * 3, np.float32), "v1", size=h)
    roi = np.array([[90, 120, 250, 280]] * 3, np.float32)
    pc = params_to_crop(p, h, roi)
    assert np.allclose(morph.landmarks(pc, roi, "v1")[..., :2], full[..., :2], atol=1e-2)


def test_groundtruth_loaders_refuse_evaluation_sets(assets_dir):
    aflw = assets_dir / "YadiraF" / "PRNet" / "TestImages" / "AFLW2000"
    if not aflw.is_dir():
        pytest.skip("no AFLW2000 samples")
    with pytest.raises(ValueError, match="evaluation-only"):
        MatDataset.from_folder(aflw)
    # the loader itself works (tests only: allow_eval) and yields the crop's exact parameters
    ds = MatDataset.from_folder(aflw, allow_eval=True, flip=0.0)
    crop, p, w = ds.sample(0, np.random.default_rng(0))
    assert crop.shape == (120, 120, 3) and p.shape == (62,)
    lm = MorphableModel.load().landmarks_crop(p[None])[0]
    assert 0 < lm[:, 0].min() and lm[:, 0].max() < 120


def test_teacher_takes_numpy_or_tensor_crops_alike(assets_dir):
    t = Teacher()
    crops = np.random.default_rng(0).integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    a = t.real_params(crops)
    b = t.real_params(torch.from_numpy(crops))
    assert torch.allclose(a, b)
    d, m = t.real_params_pair(crops)
    assert torch.allclose(0.5 * (d + m), a, atol=1e-4)
