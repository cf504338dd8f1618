"""model.morphable: the 3DMM decode against real ground truth, numpy/torch agreement, conventions, pose, mesh layout."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from model.assets import AssetStore
from model.groundtruth import load_mat, params_from_mat
from model.metrics import nme
from model.morphable import (MorphableModel, Whitening, angles_to_matrix, crop_to_frame, grid_triangles,
                             matrix_to_angles, params_from_pose, pose_from_params, rotation_from_params)

AFLW = "YadiraF/PRNet/TestImages/AFLW2000"


@pytest.fixture(scope="module")
def mm(assets_dir) -> MorphableModel:
    return MorphableModel.load(AssetStore(root=assets_dir))


def _random_params(n: int, seed: int = 0) -> np.ndarray:
    """Plausible real parameters: a scaled rotation near frontal, offset near the crop centre, coefficients ~ std."""
    rng = np.random.default_rng(seed)
    ang = np.radians(rng.uniform(-60, 60, (3, n)))
    r = angles_to_matrix(*ang)
    s = rng.uniform(4e-4, 8e-4, n)
    t = np.stack([rng.uniform(50, 70, n), rng.uniform(50, 70, n), rng.uniform(-10, 10, n)], 1)
    shp = rng.normal(0, 2e5, (n, 40)) * np.linspace(1, 0.1, 40)
    exp = rng.normal(0, 1.0, (n, 10))
    return params_from_pose(s, r, t, shp, exp)


def _signed_area(v2: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = v2[tri[:, 0]], v2[tri[:, 1]], v2[tri[:, 2]]
    return (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]


def test_ground_truth_params_reproduce_pt3d_68(mm, assets_dir):
    mats = sorted((assets_dir / AFLW).glob("*.mat"))
    assert len(mats) == 8
    errs = {}
    for f in mats:
        m = load_mat(f)
        h = cv2.imread(str(f.with_suffix(".jpg"))).shape[0]
        p = params_from_mat(m)[None]
        lm = crop_to_frame(mm.landmarks_crop(p), np.array([[0, 0, h, h]], np.float32), "v1", size=h)
        errs[f.stem] = float(nme(lm[0], np.asarray(m["pt3d_68"])[:2].T))
    print("\nGT-parameter decode NME (%): " + ", ".join(f"{k} {v:.3f}" for k, v in errs.items()))
    assert all(v < 1.5 for v in errs.values()), errs
    # the 40 + 10 truncated basis allows ~0.7% on average; a flipped axis or a wrong basis order gives >> 5%
    assert np.mean(list(errs.values())) < 1.0


def test_ground_truth_decode_fails_when_geometry_is_wrong(mm, assets_dir):
    """The check above can fail: a wrong convention or a dropped expression visibly raises the error."""
    f = assets_dir / AFLW / "image00050.mat"
    m = load_mat(f)
    p = params_from_mat(m)[None]
    gt = np.asarray(m["pt3d_68"])[:2].T
    roi = np.array([[0, 0, 450, 450]], np.float32)
    good = nme(crop_to_frame(mm.landmarks_crop(p), roi, "v1", size=450)[0], gt)
    no_flip = nme(mm.landmarks_crop(p)[0], gt)
    assert good < 1.5 < no_flip


@pytest.mark.parametrize("convention", ["v1", "v2"])
def test_numpy_and_torch_decode_agree(mm, convention):
    p = _random_params(6, seed=1)
    roi = np.array([[10, 20, 130, 140], [0, 0, 120, 120], [-30, 5, 270, 305], [100, 50, 160, 110],
                    [5.5, 7.25, 125.5, 127.25], [200, 300, 440, 540]], np.float32)
    lm_np = mm.landmarks(p, roi, convention)
    de_np = mm.dense(p, roi, convention)
    pt = torch.from_numpy(p)
    lm_t = mm.landmarks(pt, torch.from_numpy(roi), convention)
    de_t = mm.dense(pt, roi, convention)
    assert isinstance(lm_t, torch.Tensor) and isinstance(de_t, torch.Tensor)
    assert lm_np.dtype == np.float32 and lm_t.dtype == torch.float32
    assert lm_np.shape == (6, 68, 3) and de_np.shape == (6, mm.n_dense, 3) and mm.n_dense == 4096
    for a, b in ((lm_np, lm_t.numpy()), (de_np, de_t.numpy())):
        scale = np.abs(a).max()
        assert np.abs(a - b).max() <= 1e-4 * scale
    # crop-space decode agrees too (float64 torch vs float32 numpy)
    c64 = mm.landmarks_crop(pt.double()).numpy()
    assert np.abs(c64 - mm.landmarks_crop(p)).max() <= 1e-4 * np.abs(c64).max()


def test_landmarks_are_the_projected_basis(mm):
    """Known answer from the formula: S = u + W a, v = R S + t, v1 flip, ROI map."""
    p = _random_params(1, seed=3)
    u = mm.sparse.u.astype(np.float64).reshape(-1)
    w = np.concatenate([mm.sparse.w_shp, mm.sparse.w_exp], 2).reshape(204, 50).astype(np.float64)
    s = (u + w @ p[0, 12:].astype(np.float64)).reshape(68, 3)
    pm = p[0, :12].astype(np.float64).reshape(3, 4)
    v = s @ pm[:, :3].T + pm[:, 3]
    roi = np.array([[40, 60, 280, 300]], np.float32)  # 2x scale
    want = np.stack([v[:, 0] * 2 + 40, (121 - v[:, 1]) * 2 + 60, v[:, 2] * 2], 1)
    got = mm.landmarks(p, roi, "v1")[0]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("as_torch", [False, True])
def test_v1_v2_conventions_differ_as_documented(mm, as_torch):
    p = _random_params(3, seed=2)
    roi = np.array([[0, 0, 120, 120], [10, 20, 250, 260], [-5, 40, 55, 100]], np.float32)
    sx = ((roi[:, 2] - roi[:, 0]) / 120)[:, None]
    sy = ((roi[:, 3] - roi[:, 1]) / 120)[:, None]
    for crop in (mm.landmarks_crop(p), mm.dense_crop(p)):
        c = torch.from_numpy(crop) if as_torch else crop
        v1 = crop_to_frame(c, roi, "v1")
        v2 = crop_to_frame(c, roi, "v2")
        if as_torch:
            v1, v2 = v1.numpy(), v2.numpy()
        tol = 1e-4 * np.abs(v1).max()
        assert np.abs(v2[..., 0] - (v1[..., 0] - sx)).max() < tol  # x - 1 (crop px)
        assert np.abs(v2[..., 1] - (v1[..., 1] - sy)).max() < tol  # 120 - y versus 121 - y
        assert np.abs(v2[..., 2] - (v1[..., 2] - v1[..., 2].min(1, keepdims=True))).max() < tol  # z min 0
        assert np.abs(v2[..., 2].min(1)).max() < tol
    # identity ROI, v1: x unchanged, y = 121 - y, z unchanged
    crop = mm.landmarks_crop(p)
    v1 = crop_to_frame(crop, np.tile([[0, 0, 120, 120]], (3, 1)).astype(np.float32), "v1")
    assert np.allclose(v1[..., 0], crop[..., 0]) and np.allclose(v1[..., 1], 121 - crop[..., 1])
    assert np.allclose(v1[..., 2], crop[..., 2])
    with pytest.raises(ValueError):
        crop_to_frame(crop, roi, "v3")


@pytest.mark.parametrize("ypr", [(0, 0, 0), (30, -20, 10), (-45, 15, -25), (70, 5, 3), (-80, -30, 40),
                                 (85, 20, -15), (-85, 10, 10), (10, 80, -60)])
def test_pose_round_trip(ypr):
    yaw, pitch, roll = np.radians(ypr)
    r = angles_to_matrix(yaw, pitch, roll)
    assert np.allclose(r[0] @ r[0].T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r[0]), 1)
    p = params_from_pose([6e-4], r, np.array([[61.0, 58.0, 3.0]]), np.zeros((1, 40)), np.zeros((1, 10)))
    pose = pose_from_params(p)
    assert pose.shape == (1, 6) and pose.dtype == np.float32
    assert np.allclose(pose[0, :3], ypr, atol=1e-2), pose
    assert np.isclose(pose[0, 3], 6e-4, rtol=1e-4) and np.allclose(pose[0, 4:], [61, 58], atol=1e-4)
    assert np.allclose(rotation_from_params(p)[0], r[0], atol=1e-5)
    assert np.allclose(pose_from_params(torch.from_numpy(p)), pose)


@pytest.mark.parametrize("yaw_deg", [90.0, -90.0, 89.5, -88.0])
@pytest.mark.parametrize("pitch_deg", [0.0, 25.0])
def test_pose_near_profile_gimbal_guard(yaw_deg, pitch_deg):
    """Beyond |yaw| 86.4 deg (R[2,0] > 0.998) yaw snaps to +-90 with roll 0, as 3DDFA_V2's matrix2angle does;
    at exactly +-90 the returned angles rebuild the same rotation."""
    r = angles_to_matrix(np.radians(yaw_deg), np.radians(pitch_deg), 0.0)
    ang = np.degrees(matrix_to_angles(r))[0]
    assert np.all(np.isfinite(ang))
    assert np.isclose(ang[0], np.sign(yaw_deg) * 90.0)
    assert abs(ang[0] - yaw_deg) < 3.7 and ang[2] == 0.0
    assert np.isclose(ang[1], pitch_deg, atol=1e-6), ang  # with roll 0 the pitch survives the guard exactly
    if abs(yaw_deg) == 90.0:
        assert np.allclose(angles_to_matrix(*np.radians(ang)), r, atol=1e-9)
    # at the singularity pitch and roll are one degree of freedom: the guard returns a rotation equal to the input
    r2 = angles_to_matrix(np.radians(yaw_deg), np.radians(pitch_deg), np.radians(-20.0))
    if abs(yaw_deg) == 90.0:
        assert np.allclose(angles_to_matrix(*matrix_to_angles(r2)[0]), r2, atol=1e-9)
    # batched call over many poses (no NaN anywhere)
    many = angles_to_matrix(np.radians(np.linspace(-90, 90, 181)), np.radians(np.linspace(-40, 40, 181)),
                            np.radians(np.linspace(20, -20, 181)))
    a = np.degrees(matrix_to_angles(many))
    assert np.all(np.isfinite(a)) and np.all(np.abs(a[:, 0]) <= 90 + 1e-9)


def test_ground_truth_yaw_agrees_with_pose_para(assets_dir):
    """Our yaw of the ground-truth fit has the sign and size of AFLW2000's Pose_Para yaw (its pitch/roll compose in
    another order, so only yaw is compared)."""
    for f in sorted((assets_dir / AFLW).glob("*.mat")):
        m = load_mat(f)
        ours = pose_from_params(params_from_mat(m)[None])[0, 0]
        theirs = np.degrees(m["Pose_Para"][0, 1])
        assert abs(ours - theirs) < 5.0, (f.name, ours, theirs)


def test_grid_triangles_count_and_orientation():
    tri = grid_triangles()
    assert tri.shape == (2 * 63 * 63, 3) and tri.dtype == np.int32
    assert tri.min() == 0 and tri.max() == 64 * 64 - 1
    assert len({tuple(sorted(t)) for t in tri.tolist()}) == len(tri)  # no duplicates
    r, c = np.divmod(np.arange(64 * 64), 64)
    flat = np.stack([c, r], 1).astype(np.float64)  # x = col, y = row (image, y down)
    area = _signed_area(flat, tri)
    assert np.all(area == -1.0)  # every triangle: same (CCW on screen) orientation, half a cell (cross = 2x area)
    # every interior edge is shared by exactly two triangles with opposite directions (consistent orientation)
    edges = {}
    for t in tri.tolist():
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            assert (a, b) not in edges
            edges[(a, b)] = True
    interior = sum((b, a) in edges for a, b in edges)
    assert interior == 2 * (63 * 62 * 2 + 63 * 63)
    assert grid_triangles(3, 4).shape == (2 * 2 * 3, 3)


def _frontal_mean(scale: float = 6e-4) -> np.ndarray:
    return params_from_pose([scale], np.eye(3)[None], np.array([[60.0, 60.0, 0.0]]), np.zeros((1, 40)),
                            np.zeros((1, 10)))


def test_dense_frontal_mean_face_faces_the_camera(mm):
    p = _frontal_mean()
    v = mm.dense(p, np.array([[0, 0, 120, 120]], np.float32), "v1")[0]
    g = v.reshape(64, 64, 3)
    assert g[0, :, 1].mean() < g[63, :, 1].mean()  # row 0 (forehead) above row 63 (chin) in the image
    assert g[:, 0, 0].mean() < g[:, 63, 0].mean()  # col 0 left of col 63
    area = _signed_area(v[:, :2].astype(np.float64), mm.tri)
    cols = mm.tri % 64
    central = (cols.min(1) >= 8) & (cols.max(1) <= 55)
    assert central.sum() > 0.7 * len(area)
    assert np.all(area[central] < 0)  # every camera-facing triangle: same sign as the flat grid
    # only the folded sides of the surface turn away, and they cover a tiny area
    assert area[area > 0].sum() < 0.02 * -area[area < 0].sum()
    # the face is in front: the central nose region is nearer the camera (z toward camera) than the border
    assert g[28:36, 28:36, 2].mean() > g[:, [0, 63], 2].mean()


def test_dense_grid_mirror_symmetry(assets_dir):
    """Raw PAF mean shape: column c mirrors column 63 - c (x reflected about the centre, y and z equal)."""
    raw = MorphableModel.load(follow_landmarks=False)
    g = raw.dense_basis.u.reshape(64, 64, 3).astype(np.float64)
    m = g[:, ::-1]
    width = np.ptp(g[..., 0])
    cx = np.median((g[..., 0] + m[..., 0]) / 2)
    assert abs(cx) < 0.01 * width
    dx = np.abs(g[..., 0] + m[..., 0] - 2 * cx) / width
    dy = np.abs(g[..., 1] - m[..., 1]) / width
    dz = np.abs(g[..., 2] - m[..., 2]) / width
    assert np.median(dx) < 0.005 and dx.max() < 0.1, (np.median(dx), dx.max())
    assert dy.max() < 0.01 and np.median(dz) < 0.01 and dz.max() < 0.1
    # a transposed layout (rows <-> cols) would break it
    t = g.transpose(1, 0, 2)
    assert np.median(np.abs(t[..., 0] + t[:, ::-1, 0] - 2 * cx) / width) > 0.05


def test_dense_and_sparse_agree_on_the_face(mm):
    """The dense surface and the 68 landmarks come from the same space: under a frontal mean pose the nose-tip
    landmark lies inside the dense face near its central columns."""
    p = _frontal_mean()
    roi = np.array([[0, 0, 120, 120]], np.float32)
    lm = mm.landmarks(p, roi)[0]
    v = mm.dense(p, roi)[0]
    assert v[:, 0].min() < lm[:, 0].min() + 5 and v[:, 0].max() > lm[:, 0].max() - 5
    d = np.linalg.norm(v[:, :2] - lm[30, :2], axis=1)
    col = int(np.argmin(d)) % 64
    assert 26 <= col <= 37 and d.min() < 2.0


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_whitening_round_trip_and_known_values(assets_dir, which):
    store = AssetStore(root=assets_dir)
    wh = Whitening.load(which, store)
    assert wh.mean.shape == (62,) and wh.std.shape == (62,) and wh.name == which
    x = np.random.default_rng(0).normal(size=(5, 62)).astype(np.float32)
    real = wh.unwhiten(x)
    assert np.allclose(wh.whiten(real), x, atol=1e-4)
    assert np.allclose(real, x * wh.std + wh.mean)
    xt = torch.from_numpy(x).double()
    assert torch.allclose(wh.whiten(wh.unwhiten(xt)), xt, atol=1e-6)
    # cross-check against the same statistics shipped in another format
    if which == "v1":
        pkl = assets_dir / "cleardusk/3DDFA/train.configs/param_whitening.pkl"
        if not pkl.is_file():
            pytest.skip("param_whitening.pkl not in the mirror")
        with open(pkl, "rb") as f:
            d = pickle.load(f)
        mean, std = d["param_mean"], d["param_std"]
    else:
        with open(store.path("whitening-v2-pkl"), "rb") as f:
            d = pickle.load(f)
        mean, std = d["mean"], d["std"]
    mean, std = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
    # the c++/weights text files are rounded to 6 decimals: v1 pose entries differ from the training pickle by up
    # to 0.2% (mean, in units of std) and 0.5% (std); v2 is exact
    tol = 1e-2 if which == "v1" else 1e-6
    assert np.max(np.abs(wh.mean - mean) / std) < tol
    assert np.max(np.abs(wh.std / std - 1)) < tol
    with pytest.raises(ValueError):
        Whitening.load("v3", store)
