"""Face profiling and the photo cache: exact label algebra, identity render, labels that the teacher agrees with."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.cache import CONTEXT, OFFSET, PhotoCache, build
from model.data.photos import Augment
from model.data.profile import (Profiler, affine_to_params, apply_affine, params_to_affine, rotate_affine,
                                rotation_yaw_pitch, transform_affine)
from model.data.sampler import BatchMaker, CacheSampler, ProfileConfig
from model.data.teacher import Teacher
from model.morphable import MorphableModel, Whitening, angles_to_matrix, crop_to_frame, params_from_pose, pose_from_params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def morph(assets_dir):
    return MorphableModel.load()


@pytest.fixture(scope="module")
def cache(assets_dir, tmp_path_factory):
    faces = assets_dir / "faces" / "utkface_crop_part1"
    if not faces.is_dir():
        pytest.skip("no faces folder")
    out = tmp_path_factory.mktemp("photocache")
    assert build(faces, out, limit=12, progress=False) == 12
    return PhotoCache.load(out)


def _params(n: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yaw, pitch, roll = (np.radians(rng.uniform(-40, 40, n)) for _ in range(3))
    t = np.stack([rng.uniform(50, 70, n), rng.uniform(50, 70, n), rng.uniform(-90, -60, n)], 1)
    std = Whitening.load("v1").std
    return params_from_pose(np.full(n, 4.2e-4), angles_to_matrix(yaw, pitch, roll), t,
                            rng.normal(0, 0.5, (n, 40)) * std[12:52], rng.normal(0, 0.5, (n, 10)) * std[52:])


def test_affine_is_the_v1_crop_projection_and_round_trips(morph):
    for p in _params():
        f = params_to_affine(p)
        got = apply_affine(f, morph.sparse.shape_model(p[None])[0])
        want = crop_to_frame(morph.landmarks_crop(p[None]), np.array([[0, 0, 120, 120]], np.float32), "v1")[0]
        assert np.abs(got - want).max() < 1e-3
        assert np.allclose(affine_to_params(f, p), p, rtol=1e-6, atol=1e-6)


def test_similarity_and_rotation_act_on_landmarks_exactly(morph):
    p = _params(1)[0]
    f = params_to_affine(p)
    x = morph.sparse.shape_model(p[None])[0]
    lm = apply_affine(f, x).astype(np.float64)
    a, k = np.radians(17.0), 1.3
    m = np.array([[k * np.cos(a), k * np.sin(a), 5.0], [-k * np.sin(a), k * np.cos(a), -3.0]])
    moved = apply_affine(transform_affine(f, m), x)
    assert np.abs(moved[:, :2] - (lm[:, :2] @ m[:, :2].T + m[:, 2])).max() < 1e-3
    assert np.abs(moved[:, 2] - k * lm[:, 2]).max() < 1e-3
    c = lm.mean(0)
    rot = rotation_yaw_pitch(30.0, -10.0)
    assert np.abs(apply_affine(rotate_affine(f, rot, c), x) - ((lm - c) @ rot.T + c)).max() < 1e-3
    # the label of a rotated face is a valid pose: same scale, rotation still orthonormal
    s0 = pose_from_params(p[None])[0, 3]
    s1 = pose_from_params(affine_to_params(rotate_affine(f, rot, c), p)[None])[0, 3]
    assert abs(s1 - s0) / s0 < 1e-5


def test_zero_rotation_renders_the_photo_back(cache, morph):
    prof = Profiler.from_morphable(morph)
    s = CacheSampler(cache, morph)
    for i in range(3):
        img = cache.image(i)
        out, f1, mask = prof.render(img, s.context_affine(i), cache.params[i], 0.0, 0.0)
        assert np.allclose(f1, s.context_affine(i))
        inner = mask.copy()
        inner[:2] = inner[-2:] = False
        diff = np.abs(out.astype(np.float32) - img)[inner & (np.roll(mask, 2, 0) & np.roll(mask, -2, 0)
                                                              & np.roll(mask, 2, 1) & np.roll(mask, -2, 1))]
        assert mask.mean() > 0.2 and diff.mean() < 4.0, (mask.mean(), diff.mean())


def _nme(morph, a: np.ndarray, b: np.ndarray) -> float:
    la, lb = morph.landmarks_crop(a[None])[0], morph.landmarks_crop(b[None])[0]
    size = np.sqrt(np.ptp(la[:, 0]) * np.ptp(la[:, 1]))
    return float(np.linalg.norm((la - lb)[:, :2], axis=1).mean() / size)


def test_profiled_labels_match_what_the_teacher_sees(cache, morph):
    """The teacher on a profiled crop agrees with its exact label at moderate yaw: the rendering, the framing, the
    jitter, the flip and the v1 conventions all line up (a sign or offset slip gives errors of 10-30%)."""
    teacher = Teacher()
    aug = Augment(flip=0.5)
    s = CacheSampler(cache, morph, aug, ProfileConfig(max_yaw=40.0, min_delta=15.0, pitch=10.0))
    errs, yaw_err = [], []
    for k in range(12):
        i = k % len(cache)
        rng = np.random.default_rng(k)
        dyaw, _ = s.target_pose(cache.params[i], np.random.default_rng(k))
        crop, label, w = s.sample(i, rng, profiled=True)
        assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8 and label.shape == (62,)
        pred = teacher.real_params(crop[None]).numpy()[0]
        errs.append(_nme(morph, label, pred))
        yaw_err.append(abs(abs(pose_from_params(label[None])[0, 0])
                           - abs(pose_from_params(cache.params[i][None])[0, 0] + dyaw)))
    assert np.median(errs) < 0.05, errs
    assert np.median(yaw_err) < 6.0, yaw_err  # the label turned by the asked yaw (sign folded by flips)


def test_batches_are_deterministic_and_mix_teacher_and_exact_rows(cache, morph):
    s = CacheSampler(cache, morph, Augment(), ProfileConfig(fraction=0.5, max_flip_gap=1.0))
    maker = BatchMaker(s, batch=10, seed=3)
    a, b = maker.make(7), maker.make(7)
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True)
    exact = ~np.isnan(a["labels"][:, 0])
    assert 0 < exact.sum() < 10
    assert np.isfinite(a["labels"][exact]).all() and a["crops"].shape == (10, 120, 120, 3)
    assert not np.array_equal(maker.make(8)["crops"], a["crops"])


def test_cache_round_trip_and_errors(cache, tmp_path):
    assert cache.image(0).shape == (CONTEXT, CONTEXT, 3) and len(cache) == 12
    assert OFFSET == (CONTEXT - 120) // 2
    assert cache.flip_gap.shape == (12,) and (cache.flip_gap >= 0).all()
    assert np.median(cache.flip_gap) < 0.08  # aligned UTKFace crops: the teacher agrees with its mirror
    with pytest.raises(FileNotFoundError, match="build it"):
        PhotoCache.load(tmp_path)


def test_extend_grid_continues_the_lattice_and_keeps_the_face():
    from model.data.profile import extend_grid

    r, c = np.meshgrid(np.arange(5.0), np.arange(4.0), indexing="ij")
    pts = np.stack([c, r, 0.5 * c + 0.25 * r], -1).reshape(-1, 3).astype(np.float32)  # a plane: exact continuation
    big = extend_grid(pts, (5, 4), 2).reshape(9, 8, 3)
    rr, cc = np.meshgrid(np.arange(-2.0, 7.0), np.arange(-2.0, 6.0), indexing="ij")
    assert np.allclose(big, np.stack([cc, rr, 0.5 * cc + 0.25 * rr], -1), atol=1e-5)
    assert np.array_equal(big[2:7, 2:6].reshape(-1, 3), pts)
    assert extend_grid(pts, (5, 4), 0) is pts


def test_ring_render_at_zero_rotation_is_the_photo(cache, morph):
    s = CacheSampler(cache, morph, profile=ProfileConfig(ring=12))
    assert s.profiler.tri.max() == (64 + 24) ** 2 - 1 and s.profiler.inner.sum() == 64 * 64
    img = cache.image(1)
    out, _, mask = s.profiler.render(img, s.context_affine(1), cache.params[1], 0.0, 0.0)
    inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
    assert np.abs(out.astype(np.float32) - img)[inner].mean() < 4.0


def test_cache_takes_video_frames(assets_dir, tmp_path):
    from model.data.cache import main as cache_main

    video = assets_dir / "KwaiVGI" / "LivePortrait" / "assets" / "examples" / "driving" / "d0.mp4"
    if not video.is_file():
        pytest.skip("no shared video")
    out = tmp_path / "vc"
    assert cache_main(["build", "--videos", str(video), "--every", "40", "--out", str(out), "--no-progress"]) == 0
    c = PhotoCache.load(out)
    assert len(c) >= 2 and all(str(s) == "video:d0" for s in c.source)
    assert "#0." in str(c.name[0]) and np.median(c.flip_gap) < 0.08
    assert cache_main(["build", "--out", str(tmp_path / "none")]) == 2  # nothing to cache: a clear error
