"""The extended expression: closed eyes and lopsided mouths are representable, fitted, smoothed and written."""
from __future__ import annotations

import numpy as np
import pytest

from model.expression_ext import eye_aspect_ratio, mouth_openness
from model.expression_fit import FitWeights, fit_expression
from model.expression_patches import PARTS, apply_affine, cut, part_affines, part_frames, to_units, units_to_frame
from model.morphable import MorphableModel, frame_to_crop_xy

ROI = np.array([[100, 50, 340, 290]], np.float32)


@pytest.fixture(scope="module")
def morph() -> MorphableModel:
    return MorphableModel.load()


def frontal(scale: float = 6e-4) -> np.ndarray:
    p = np.zeros((1, 62), np.float32)
    p[0, :12] = np.array([[scale, 0, 0, 60], [0, scale, 0, 60], [0, 0, scale, 0]], np.float32).ravel()
    return p


def ext_of(**values: float) -> np.ndarray:
    from model.expression_ext import ext_vector

    return ext_vector(**values)


def test_pca_alone_cannot_close_an_eye(morph: MorphableModel) -> None:
    """Why the extension exists: +-3 std of each PCA component leaves the eye aspect ratio above 0.2."""
    from model.morphable import Whitening

    std = Whitening.load("v1").std[52:]
    for k in range(10):
        for s in (-3, 3):
            p = frontal()
            p[0, 52 + k] = s * std[k]
            assert eye_aspect_ratio(morph.landmarks(p, ROI)).min() > 0.2


def test_extension_closes_one_eye_alone(morph: MorphableModel) -> None:
    open_ear = eye_aspect_ratio(morph.landmarks(frontal(), ROI))[0]
    ear = eye_aspect_ratio(morph.landmarks(frontal(), ROI, "v1", ext_of(eye_close_r=1.0)))[0]
    assert ear[0] < 0.08  # the subject's right eye (36-41) is closed
    assert ear[1] == pytest.approx(open_ear[1], abs=1e-6)  # the other stays as it was
    half = eye_aspect_ratio(morph.landmarks(frontal(), ROI, "v1", ext_of(eye_close_l=0.5)))[0]
    assert half[1] == pytest.approx(open_ear[1] / 2, rel=0.02)


def test_one_mouth_corner_moves_alone(morph: MorphableModel) -> None:
    lm0 = morph.landmarks(frontal(), ROI)[0]
    lm = morph.landmarks(frontal(), ROI, "v1", ext_of(mouth_corner_up_r=1.0))[0]
    d = lm - lm0
    assert d[48, 1] < -3.0  # corner 48 (subject's right) rises in the image (y down)
    assert np.abs(d[54]).max() < 1e-4 and np.abs(d[64]).max() < 1e-4  # the left corner does not move
    jaw = morph.landmarks(frontal(), ROI, "v1", ext_of(jaw_open=1.5))
    assert mouth_openness(jaw)[0] > 0.45  # wider than the PCA opens (0.43 at best)


def test_dense_mesh_follows_the_extension(morph: MorphableModel) -> None:
    e = ext_of(eye_close_l=1.0, mouth_corner_out_r=1.0, jaw_open=1.0)
    dense = morph.dense(frontal(), ROI, "v1", e)[0]
    lm = morph.landmarks(frontal(), ROI, "v1", e)[0]
    k = morph.landmark_vertices
    inner = [i for i in range(17, 68)]  # the contour's vertices sit on the cut outline (model.face_mesh)
    np.testing.assert_allclose(dense[k[inner]], lm[inner], atol=1e-2)
    assert np.abs(dense - morph.dense(frontal(), ROI)[0]).max() > 3.0


def test_fit_recovers_a_known_expression(morph: MorphableModel) -> None:
    """Targets made by the model itself with known coefficients are fitted back (weak prior)."""
    from model.morphable import Whitening

    std = Whitening.load("v1").std[52:]
    truth = frontal()
    truth[0, 52:] = 0.8 * std * np.linspace(-1, 1, 10)
    e_true = ext_of(eye_close_r=0.9, eye_close_l=0.2, mouth_corner_up_l=0.7, jaw_open=0.5, lips_part=-0.7)
    targets = frame_to_crop_xy(morph.landmarks(truth, ROI, "v1", e_true)[..., :2], ROI)
    start = frontal()  # pose and shape right, expression zero
    params, ext = fit_expression(start, targets, np.ones(68), morph.sparse, std,
                                 FitWeights(prior_exp=1e-6, prior_ext=1e-6))
    np.testing.assert_allclose(ext, e_true, atol=2e-3)
    np.testing.assert_allclose(params[0, 52:], truth[0, 52:], atol=2e-3 * std.max())


def test_lips_part_moves_the_inner_lips_alone(morph: MorphableModel) -> None:
    """lips_part opens the inner lip line by 0.1 mouth widths per unit, half each lip; nothing else moves."""
    lm0 = morph.landmarks(frontal(), ROI)[0]
    lm = morph.landmarks(frontal(), ROI, "v1", ext_of(lips_part=1.0))[0]
    d = lm - lm0
    width = np.linalg.norm(lm0[54, :2] - lm0[48, :2])
    gap = lambda p: p[66, 1] - p[62, 1]  # noqa: E731 (image y down: the lower lip below)
    assert gap(lm) - gap(lm0) == pytest.approx(0.1 * width, rel=0.02)
    assert d[62, 1] == pytest.approx(-d[66, 1], rel=0.02)  # the upper lip up, the lower down, alike
    moved = np.flatnonzero(np.abs(d).max(1) > 1e-4)
    assert set(moved) == {61, 62, 63, 65, 66, 67}  # corners, outer lips, jaw held


def test_fuller_lips_close_the_inner_gap(morph: MorphableModel) -> None:
    """A closed mouth of fuller lips than the model's: the outer lips where the mean face has them, the inner lips
    nearly touching (gap 0.5 px; the mean face's 3.5 px, its mouth 60 px wide). With lips_part the fit closes most of
    the gap (1.3 px); the PCA and the jaw alone kept it 2.6 px apart (the fit matches the outer lips and the model's
    lips are thin), and an opening then read too small."""
    from model.morphable import Whitening

    std = Whitening.load("v1").std[52:]
    lm = morph.landmarks(frontal(), ROI)[..., :2].astype(np.float64).copy()
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        mid = (lm[0, up, 1] + lm[0, lo, 1]) / 2
        lm[0, up, 1], lm[0, lo, 1] = mid - 0.25, mid + 0.25
    params, ext = fit_expression(frontal(), frame_to_crop_xy(lm, ROI), np.ones(68), morph.sparse, std)
    out = morph.landmarks(params, ROI, "v1", ext)[0]
    assert out[66, 1] - out[62, 1] < 1.5
    assert ext[0, -1] < -0.2  # lips_part closed it
    fw = FitWeights()
    held = FitWeights(prior_ext=fw.prior_ext[:-1] + (1e9,))  # lips_part held at 0: the model without it
    params, ext = fit_expression(frontal(), frame_to_crop_xy(lm, ROI), np.ones(68), morph.sparse, std, held)
    out = morph.landmarks(params, ROI, "v1", ext)[0]
    assert out[66, 1] - out[62, 1] > 2.3


def _reference_fit(params, targets_crop, point_weights, basis, exp_std, weights):
    """The fit written plainly in numpy (batched normal equations, slack columns built whole): the kernel's reference."""
    from model.expression_ext import N_EXT
    from model.expression_fit import PART_SCALE_PX, SLACK_PARTS, FitBasis
    from model.morphable import split_params

    fb = FitBasis.of(basis)
    p = np.asarray(params, np.float64).reshape(-1, 62)
    n = len(p)
    k_exp = 10 + N_EXT
    r, t, a, e0 = split_params(p)
    pred0 = (fb.u[None] + (a @ fb.w_shp.T).reshape(n, 68, 3)) @ r[:, :2, :].transpose(0, 2, 1) + t[:, None, :2]
    jac = (r[:, :2, :] @ fb.w_all).reshape(n, 2, 68, k_exp).transpose(0, 2, 1, 3)
    lam = list(weights.prior_exp / np.asarray(exp_std, np.float64) ** 2) + list(weights.prior_ext)
    if weights.part_slack is not None:
        cols = np.zeros((n, 68, 2, 3 * len(SLACK_PARTS)))
        for q, part in enumerate(SLACK_PARTS):
            cols[:, part, 0, 3 * q] = 1.0
            cols[:, part, 1, 3 * q + 1] = 1.0
            cols[:, part, :, 3 * q + 2] = (pred0[:, part] - pred0[:, part].mean(1, keepdims=True)) / PART_SCALE_PX
        jac = np.concatenate([jac, cols], axis=3)
        lam += [weights.part_slack] * cols.shape[3]
    k = jac.shape[3]
    tgt = np.asarray(targets_crop, np.float64).reshape(n, 68, 2)
    wts = np.broadcast_to(np.asarray(point_weights, np.float64), (n, 68)).copy()
    ok = np.isfinite(tgt).all(-1)
    wts[~ok] = 0.0
    res = np.where(ok[..., None], tgt - pred0, 0.0)
    lam = np.array(lam)
    prior_mean = np.concatenate([e0, np.zeros((n, k - 10))], axis=1)
    sw = np.sqrt(wts)[..., None]
    jw = (jac * sw[..., None]).reshape(n, 136, k)
    rw = (res * sw).reshape(n, 136, 1)
    a_mat = jw.transpose(0, 2, 1) @ jw + np.diag(lam)[None]
    sol = np.linalg.solve(a_mat, ((jw.transpose(0, 2, 1) @ rw)[..., 0] + lam * prior_mean)[..., None])[..., 0]
    ext = np.clip(sol[:, 10:k_exp], weights.ext_min, weights.ext_max)
    for i in np.flatnonzero((ext != sol[:, 10:k_exp]).any(1)):  # the rest again with the extension fixed
        free = np.r_[0:10, k_exp:k]
        j2 = jw[i][:, free]
        b2 = j2.T @ (rw[i, :, 0] - jw[i][:, 10:k_exp] @ ext[i]) + lam[free] * prior_mean[i, free]
        sol[i, :10] = np.linalg.solve(j2.T @ j2 + np.diag(lam[free]), b2)[:10]
    out = p.copy()
    out[:, 52:] = sol[:, :10]
    return out, ext


def test_fit_kernel_matches_the_plain_numpy_fit(morph: MorphableModel) -> None:
    """Random faces, poses and targets (some missing, some weights 0, some extension values clamped), with and
    without the parts' slack: the numba kernel gives the plain fit's numbers."""
    from model.morphable import Whitening

    std = Whitening.load("v1").std[52:]
    rng = np.random.default_rng(3)
    n = 40
    params = np.repeat(frontal(), n, 0).astype(np.float64)
    params[:, 12:52] = rng.normal(0, 1, (n, 40)) * Whitening.load("v1").std[12:52]
    params[:, 52:] = rng.normal(0, 0.5, (n, 10)) * std
    yaw = rng.uniform(-0.6, 0.6, n)
    for i in range(n):
        c, s_ = np.cos(yaw[i]), np.sin(yaw[i])
        params[i, :12] = (np.array([[6e-4 * c, 0, 6e-4 * s_, 60], [0, 6e-4, 0, 60], [-6e-4 * s_, 0, 6e-4 * c, 0]])).ravel()
    targets = morph.landmarks_crop(params.astype(np.float32))[..., :2].astype(np.float64)
    targets += rng.normal(0, 3.0, targets.shape)
    targets[:, 36:42, 1] -= rng.uniform(0, 8, (n, 1))  # some eyes wide open past the clamp
    targets[rng.random((n, 68)) < 0.05] = np.nan
    weights = rng.uniform(0, 1, (n, 68)) * (rng.random((n, 68)) > 0.1)
    for fw in (FitWeights(), FitWeights(part_slack=None), FitWeights(prior_exp=0.01, prior_ext=(0.01,) * 8)):
        got_p, got_e = fit_expression(params, targets, weights, morph.sparse, std, fw)
        ref_p, ref_e = _reference_fit(params, targets, weights, morph.sparse, std, fw)
        np.testing.assert_allclose(got_e, ref_e, atol=1e-4)
        np.testing.assert_allclose(got_p[:, 52:] / std, ref_p[:, 52:] / std, atol=1e-4)
        assert (got_e == np.float32(fw.ext_min[0])).any()  # the clamp's second solve ran


def test_a_misplaced_part_is_not_read_as_an_expression(morph: MorphableModel) -> None:
    """The aligner put both eyes 4 px too high and the mouth 4 px too low, with the true shapes: the fit keeps the
    eyes open and the mouth shut (without the parts' slack the offsets came out as closing lids and an open jaw),
    and a real blink on the same offset still closes."""
    from model.morphable import Whitening

    std = Whitening.load("v1").std[52:]
    lm = morph.landmarks(frontal(), ROI)[..., :2].copy()
    lm[0, 36:48, 1] -= 4.0
    lm[0, 48:68, 1] += 4.0
    _, ext = fit_expression(frontal(), frame_to_crop_xy(lm, ROI), np.ones(68), morph.sparse, std)
    assert np.abs(ext[0, [0, 1, 6]]).max() < 0.1
    _, ext_old = fit_expression(frontal(), frame_to_crop_xy(lm, ROI), np.ones(68), morph.sparse, std,
                                FitWeights(part_slack=None))
    assert np.abs(ext_old[0, [0, 1, 6]]).max() > 0.2  # what the slack prevents
    blink = morph.landmarks(frontal(), ROI, "v1", ext_of(eye_close_r=1.0, eye_close_l=1.0))[..., :2].copy()
    blink[0, 36:48, 1] -= 4.0
    _, ext = fit_expression(frontal(), frame_to_crop_xy(blink, ROI), np.ones(68), morph.sparse, std)
    assert ext[0, 0] > 0.8 and ext[0, 1] > 0.8


def test_fit_clamps_the_extension_to_its_range(morph: MorphableModel) -> None:
    from model.morphable import Whitening

    std = Whitening.load("v1").std[52:]
    lm = morph.landmarks(frontal(), ROI)[..., :2].copy()
    lm[0, [37, 38]] += [0, 40.0]  # upper lids far below the lower lids: more than closed
    params, ext = fit_expression(frontal(), frame_to_crop_xy(lm, ROI), np.ones(68), morph.sparse, std)
    assert ext[0, 0] == pytest.approx(FitWeights().ext_max[0])


def _reference_frames(lm: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The anchor frame (a, ex, ey) of one part, written out in numpy (the kernel's reference)."""
    a = lm[:, spec.anchors[0]]
    ex = lm[:, spec.anchors[1]] - a
    r = lm[:, 45] - lm[:, 36]
    down = np.stack([-r[:, 1], r[:, 0]], 1)
    ey = down * (np.sqrt((ex * ex).sum(1)) / np.maximum(np.sqrt((down * down).sum(1)), 1e-9))[:, None]
    return a, ex, ey


def _reference_affine(a: np.ndarray, ex: np.ndarray, ey: np.ndarray, spec) -> np.ndarray:
    """``origin + ANCHOR_GAP * [ex | ey]^-1 (x - a)`` as (N, 2, 3), in numpy."""
    from model.expression_patches import ANCHOR_GAP

    det = ex[:, 0] * ey[:, 1] - ey[:, 0] * ex[:, 1]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    lin = np.stack([np.stack([ey[:, 1], -ey[:, 0]], 1), np.stack([-ex[:, 1], ex[:, 0]], 1)], 1) \
        * (ANCHOR_GAP / det)[:, None, None]
    off = np.array(spec.origin)[None] - np.einsum("nij,nj->ni", lin, a)
    return np.concatenate([lin, off[:, :, None]], axis=2)


def test_stage_frames_kernel_matches_the_training_geometry(morph: MorphableModel) -> None:
    """The one-pass kernel (the stage's and the trainer's patch geometry) gives the anchor frames and patch affines
    of the numpy reference above (turned, rolled and scaled faces)."""
    from model.expression_patches import frames_and_affines

    rng = np.random.default_rng(3)
    lm = morph.landmarks(frontal(), ROI)[..., :2].astype(np.float64)
    faces = []
    for _ in range(6):
        ang, s = rng.uniform(-0.6, 0.6), rng.uniform(0.3, 2.0)
        rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        faces.append(lm[0] @ rot.T + rng.uniform(-80, 80, 2) + rng.normal(0, 1.5, lm[0].shape))
    lm = np.stack(faces)
    frames, affines = frames_and_affines(lm)
    for i, spec in enumerate(PARTS):
        ref = _reference_frames(lm, spec)
        np.testing.assert_allclose(frames[i].transpose(1, 0, 2), np.stack(ref), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(affines[i], _reference_affine(*ref, spec), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(np.stack(part_frames(lm)[spec.name]), np.stack(ref), rtol=1e-12, atol=1e-9)


def test_patch_points_map_back_to_the_frame(morph: MorphableModel) -> None:
    lm = morph.landmarks(frontal(), ROI)[..., :2].astype(np.float64)
    aff = part_affines(lm)
    for spec in PARTS:
        a = aff[spec.name]
        units = to_units(apply_affine(a, lm[:, list(spec.points)]), spec)
        assert units[0, 0] == pytest.approx([0.0, 0.0], abs=1e-6)  # the first anchor is the origin
        back = units_to_frame(units, *part_frames(lm)[spec.name])  # the stage's way back to the frame
        np.testing.assert_allclose(back, lm[:, list(spec.points)], atol=1e-6)
    # both eyes read alike: the mirrored left eye's upper lid is above (smaller y) in its patch too
    for name in ("eye_r", "eye_l"):
        spec = next(p for p in PARTS if p.name == name)
        u = to_units(apply_affine(aff[name], lm[:, list(spec.points)]), spec)[0]
        assert u[1, 1] < 0 and u[5, 1] > 0 and u[3, 0] == pytest.approx(1.0, abs=1e-6)


def test_smoothing_keeps_a_blinks_depth_and_timing() -> None:
    """A 5-frame blink with measurement noise through the tracker's Kalman filter: depth within 10% of the
    unsmoothed one, no lag over one frame; between blinks the lids are smoothed (less jitter than measured)."""
    from tests.run_defaults import kalman_defaults
    from tracking.kalman import TRACK_GROUPS, ParamKalman, layout_size

    rng = np.random.default_rng(0)
    n = 120
    truth = np.zeros(n)
    blink = [0.3, 0.8, 1.0, 0.8, 0.3]
    truth[50:55] = blink
    meas = truth + rng.normal(0, 0.03, n)
    kf = ParamKalman(np.ones(layout_size(TRACK_GROUPS)), kalman_defaults(), TRACK_GROUPS)
    out = np.empty(n)
    for i in range(n):
        z = np.zeros(layout_size(TRACK_GROUPS))
        z[62] = z[63] = meas[i]
        out[i] = kf.update(z)[62]
    depth_raw = meas[50:55].max() - np.median(meas)
    depth = out[50:55].max() - np.median(out)
    assert depth >= 0.9 * depth_raw
    assert abs(int(np.argmax(out)) - int(np.argmax(meas))) <= 1
    assert np.std(np.diff(out[:45])) < np.std(np.diff(meas[:45]))


def _tracks(tmp_path, expression: str) -> list[dict]:
    import csv
    import subprocess
    import sys
    from pathlib import Path

    from model.assets import resolve_root

    root = Path(__file__).resolve().parents[1]
    video = resolve_root() / "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
    out = tmp_path / f"d0_{expression}.csv"
    res = subprocess.run([sys.executable, str(root / "run_stream.py"), "--source", str(video), "--tracks", str(out),
                          "--weights", "3ddfa-v2-mb05", "--expression", expression, "--progress", "false"],
                         capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stderr[-500:]
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


# d0 (a test video): MediaPipe FaceMesh sees both eyes under half their median openness on frames 65-67 (the one blink;
# ../shared/tools/expression_check.py's definition) and open eyes on the others
BLINK = (65, 66, 67)


def test_a_real_blink_comes_through_the_cli_into_the_tracks(tmp_path) -> None:
    rows = _tracks(tmp_path, "true")
    lm = np.array([[[float(r[f"{a}{i}"]) for a in "xy"] for i in range(68)] for r in rows])
    frames = np.array([int(r["frame"]) for r in rows])
    ear = eye_aspect_ratio(lm).mean(1)
    closure = np.array([(float(r["eye_close_r"]) + float(r["eye_close_l"])) / 2 for r in rows])
    blink = np.isin(frames, BLINK)
    calm = (frames < 60) | (frames > 72)
    assert ear[blink].min() < 0.5 * np.median(ear)  # the landmarks' eyes close
    assert closure[blink].max() > 0.6 and np.median(closure[calm]) < 0.2
    assert np.mean(ear[calm] < 0.5 * np.median(ear)) < 0.02  # and stay open elsewhere
    before = _tracks(tmp_path, "false")  # the network's expression alone: no blink in the landmarks
    lm0 = np.array([[[float(r[f"{a}{i}"]) for a in "xy"] for i in range(68)] for r in before])
    ear0 = eye_aspect_ratio(lm0).mean(1)
    assert ear0[blink].min() > 0.7 * np.median(ear0)
    assert all(r["eye_close_r"] == "nan" for r in before)


def test_mediapipe_map_recovers_a_known_combination() -> None:
    """Our points made as fixed weighted sums of 'MediaPipe' points (each centred on one of them, so the fit picks
    that neighbourhood) are fitted back within numerical error, and map() applies the weights."""
    from model.data.mediapipe_map import TARGETS, MediaPipeMap

    rng = np.random.default_rng(0)
    n = 300
    mp = rng.uniform(0, 400, (1, 478, 2)) + rng.normal(0, 6, (n, 478, 2))
    human = np.zeros((n, 68, 2))
    centre = rng.choice(478, len(TARGETS), replace=False)
    for q, j in enumerate(TARGETS):
        human[:, j] = mp[:, centre[q]]
    fit = MediaPipeMap.fit(mp, human, k=4, ridge=0.0)
    assert (fit.index[:, 0] == centre).all()  # each target's nearest point on the mean face
    np.testing.assert_allclose(fit.weight.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(fit.map(mp), human[:, TARGETS], atol=1e-6)


def test_a_gaping_mouth_fits_in_its_patch(morph: MorphableModel) -> None:
    """The widest mouths people open (lip gap over the mouth's width: the labels' widest span from 0.69 corner widths
    above the corners to 0.99 below) lie inside the mouth patch with a margin, so the network sees both lips."""
    from model.expression_patches import ANCHOR_GAP, MOUTH

    lm = morph.landmarks(frontal(), ROI, ext=ext_of(jaw_open=3.0)[None])[..., :2].astype(np.float64)
    assert mouth_openness(lm)[0] > 1.0
    frame = part_frames(lm)["mouth"]
    u = to_units(apply_affine(part_affines(lm)["mouth"], lm[:, list(MOUTH.points)]), MOUTH)[0]
    upper = [1, 2, 3, 4, 5, 12, 13, 14, 15, 16]  # 49-53, 60-64 (by position in MOUTH.points)
    u[upper, 1] -= 0.5  # the upper lip raised as a yawn raises it
    assert u[:, 1].min() < -0.69 and u[:, 1].max() > 0.99
    px = MOUTH.origin[1] + u[:, 1] * ANCHOR_GAP
    assert px.min() >= 2 and px.max() <= MOUTH.size[0] - 2
    assert np.isfinite(units_to_frame(u[None], *frame)).all()


def test_training_patches_put_the_anchors_at_their_units(morph: MorphableModel) -> None:
    from model.train_expression import CTX, FaceSet, make_batch

    lm = morph.landmarks(frontal(), np.array([[0, 0, CTX, CTX]], np.float32))[0, :, :2].astype(np.float64)
    pts = np.full((1, 68, 2), np.nan)
    pts[0, 36:] = lm[36:]
    faces = FaceSet(np.full((1, CTX, CTX), 128, np.uint8), pts, np.array(["x"]), np.ones(1))
    eyes, eye_pts, mouths, mouth_pts = make_batch(faces, np.array([0]), np.random.default_rng(0), augment=False)
    assert eyes.shape == (2, 32, 48) and mouths.shape == (1, 56, 48)
    np.testing.assert_allclose(eye_pts[:, 0], 0, atol=1e-9)  # the outer corner is the origin of both eyes
    np.testing.assert_allclose(eye_pts[:, 3], [[1, 0], [1, 0]], atol=1e-9)  # the inner corner is at (1, 0)
    np.testing.assert_allclose(mouth_pts[0, [0, 6]], [[0, 0], [1, 0]], atol=1e-9)
    assert (eye_pts[:, 1:3, 1] < 0).all() and (eye_pts[:, 4:, 1] > 0).all()  # upper lids up, lower lids down


def test_trainer_draws_the_videos_share_and_a_frozen_part_keeps_its_weights(morph: MorphableModel, tmp_path) -> None:
    """Fine-tuning one part: ``video_share`` sets the training videos' share of the draws (the rare-expression
    weights kept within each group), and with ``parts=("mouth",)`` the eye network leaves training as it came, batch-norm
    statistics included, while the mouth's changes."""
    import torch

    from model.expression_net import ExpressionNet, save_expression_net
    from model.train_expression import CTX, FaceSet, draw_probabilities, train

    lm = morph.landmarks(frontal(), np.array([[0, 0, CTX, CTX]], np.float32))[0, :, :2].astype(np.float64)
    rng = np.random.default_rng(0)
    pts = np.full((8, 68, 2), np.nan)
    pts[:, 36:] = lm[36:] + rng.normal(0, 1.5, (8, 32, 2))  # openings that differ, so the validation slopes exist
    images = rng.integers(0, 255, (8, CTX, CTX), dtype=np.uint8)
    source = np.array(["photos"] * 5 + ["d11"] * 3)
    weight = np.array([1.0, 1.0, 8.0, 1.0, 1.0, 1.0, 3.0, 1.0])
    faces = FaceSet(images, pts, source, weight)
    p = draw_probabilities(faces, 0.3)
    assert p.sum() == pytest.approx(1.0) and p[5:].sum() == pytest.approx(0.3)
    assert p[6] / p[5] == pytest.approx(3.0) and p[2] / p[0] == pytest.approx(8.0)
    np.testing.assert_allclose(draw_probabilities(faces), weight / weight.sum())
    with pytest.raises(ValueError, match="video_share"):
        draw_probabilities(faces, 1.5)

    init = tmp_path / "init.pth"
    save_expression_net(init, ExpressionNet(), {"width": 8})
    before = torch.load(init, weights_only=True)["state_dict"]
    out = tmp_path / "ft.pth"
    train(faces, faces, 0.02, out, batch=4, log_every=2, init=str(init), parts=("mouth",), video_share=0.5,
          video_like=0.5)
    after = torch.load(out.with_suffix(".last.pth"), weights_only=True)["state_dict"]
    for k, v in before.items():
        if k.startswith("eye."):
            assert torch.equal(v, after[k]), k
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith("mouth.") and v.is_floating_point())


def test_video_like_patches_lose_detail_and_keep_their_size() -> None:
    """The trainer's video losses (compression, motion blur) keep a patch's size and mean and soften its edges."""
    from model.train_expression import _video_like

    patch = np.zeros((56, 48), np.uint8)
    patch[::4] = 255  # a hard-edged stripe pattern: all detail
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = _video_like(patch, rng)
        assert out.shape == patch.shape and out.dtype == np.uint8
        assert abs(float(out.mean()) - float(patch.mean())) < 12
        edges = lambda a: np.abs(np.diff(a.astype(float), axis=0)).mean()  # noqa: E731
        assert edges(out) < 0.8 * edges(patch)


def test_close_eye_shuts_the_lids_and_moves_the_labels_with_them() -> None:
    """The trainer's synthetic blink: a drawn eye (a dark eyeball between two lid curves) shut all the way keeps
    only SLIVER of its gap in the labels and its dark eyeball only in a line along the lower lid; the corners and
    lower lid stay, rows below the lower lid are untouched, t = 0 changes nothing."""
    import cv2

    from model.train_expression import SLIVER, close_eye

    h, w = 32, 48
    patch = np.full((h, w), 200, np.uint8)
    q = np.array([[10.0, 17.0], [19.0, 12.0], [29.0, 12.0], [38.0, 17.0], [29.0, 21.0], [19.0, 21.0]])
    eye = np.array([q[0], q[1], q[2], q[3], q[4], q[5]], np.float32)
    cv2.fillPoly(patch, [np.round(eye * 16).astype(np.int32)], 40, cv2.LINE_AA, shift=4)
    same, q0 = close_eye(patch, q, 0.0)
    assert np.array_equal(same, patch) and np.allclose(q0, q)
    shut, qs = close_eye(patch, q, 1.0)
    assert shut.shape == patch.shape and shut.dtype == np.uint8
    assert np.allclose(qs[[0, 3, 4, 5]], q[[0, 3, 4, 5]])  # corners and lower lid stay
    gap0 = (q[5, 1] - q[1, 1] + q[4, 1] - q[2, 1]) / 2
    gap1 = (qs[5, 1] - qs[1, 1] + qs[4, 1] - qs[2, 1]) / 2
    assert gap1 == pytest.approx(SLIVER * gap0, abs=1e-6)
    assert np.array_equal(shut[23:], patch[23:])  # below the lower lid: as it was
    dark0 = int((patch < 120).sum())
    dark1 = int((shut < 120).sum())
    assert dark1 < 0.35 * dark0  # the eyeball squeezed into a line along the lower lid
    assert not (shut[:16] < 120).any() and (patch[12:16] < 120).any()  # none of it left where the eye was open
    half, qh = close_eye(patch, q, 0.5)
    assert qs[1, 1] > qh[1, 1] > q[1, 1]  # half way is between


def _visibility_reference(params: np.ndarray) -> np.ndarray:
    """The fit weights' yaw fades in numpy (the numba kernel's reference)."""
    from model.expression_stage import FAR_EYE_YAW, MOUTH_YAW, NEAR_EYE_YAW, POINT_WEIGHTS

    def ramp(a: np.ndarray, span: tuple[float, float]) -> np.ndarray:
        return np.clip((span[1] - a) / (span[1] - span[0]), 0.0, 1.0)

    p = np.asarray(params, np.float64).reshape(-1, 62)
    r1, r2 = p[:, 0:3], p[:, 4:7]
    yaw = np.degrees(np.arcsin(np.clip(np.cross(r1, r2)[:, 0] / np.linalg.norm(r1, axis=1) / np.linalg.norm(r2, axis=1),
                                       -1, 1)))
    far, near = ramp(np.abs(yaw), FAR_EYE_YAW), ramp(np.abs(yaw), NEAR_EYE_YAW)
    w = np.tile(POINT_WEIGHTS.astype(np.float64), (len(p), 1))
    w[:, 36:42] *= np.where(yaw > 0, far, near)[:, None]
    w[:, 42:48] *= np.where(yaw > 0, near, far)[:, None]
    w[:, 48:68] *= ramp(np.abs(yaw), MOUTH_YAW)[:, None]
    return w


def test_spread_lips_moves_the_inner_lips_apart_about_their_midline() -> None:
    """Known answers: with gain 1.3 and pivot 0.03 a 0.10 gap becomes 0.121, a 0.02 gap 0.017, a shut mouth stays
    shut (no lips crossing); each pair keeps its midpoint, x and every other point stay where they were."""
    from model.dense_fit import INNER_LIP_PAIRS
    from model.expression_patches import MOUTH
    from model.expression_stage import spread_lips

    rng = np.random.default_rng(0)
    pm = rng.normal(0, 0.3, (3, 20, 2)).astype(np.float32)
    gaps = (0.10, 0.02, 0.0)
    for i, g in enumerate(gaps):
        for up, down in INNER_LIP_PAIRS:
            u, d = MOUTH.points.index(up), MOUTH.points.index(down)
            pm[i, d, 1] = pm[i, u, 1] + g
    before = pm.copy()
    spread_lips(pm, 1.3, 0.03)
    for i, want in enumerate((0.121, 0.017, 0.0)):
        for up, down in INNER_LIP_PAIRS:
            u, d = MOUTH.points.index(up), MOUTH.points.index(down)
            assert pm[i, d, 1] - pm[i, u, 1] == pytest.approx(want, abs=1e-6)
            assert pm[i, d, 1] + pm[i, u, 1] == pytest.approx(before[i, d, 1] + before[i, u, 1], abs=1e-6)
    inner = [MOUTH.points.index(j) for j in (61, 62, 63, 65, 66, 67)]
    others = [k for k in range(20) if k not in inner]
    np.testing.assert_array_equal(pm[:, others], before[:, others])
    np.testing.assert_array_equal(pm[..., 0], before[..., 0])


def test_visibility_weights_fade_the_far_eye_and_the_mouth_with_yaw() -> None:
    from scipy.spatial.transform import Rotation

    from model.expression_stage import visibility_weights

    yaws = np.array([-80.0, -50.0, -35.0, -10.0, 0.0, 22.0, 30.0, 40.0, 60.0, 89.0])
    p = np.zeros((len(yaws), 62))
    rot = Rotation.from_euler("y", yaws[:, None], degrees=True).as_matrix() * 7e-4  # scaled rotations, as params hold
    p[:, 0:3], p[:, 4:7], p[:, 8:11] = rot[:, 0], rot[:, 1], rot[:, 2]
    w = visibility_weights(p)
    np.testing.assert_allclose(w, _visibility_reference(p), atol=1e-12)
    frontal = w[4]
    assert frontal[36:68].min() == 1.0 and frontal[:17].max() == 0.0
    # turning away fades the far eye first, then the mouth; the near eye last
    from model.expression_stage import FAR_EYE_YAW, NEAR_EYE_YAW

    a = np.abs(yaws)
    np.testing.assert_allclose(np.minimum(w[:, 36], w[:, 42]), np.clip((FAR_EYE_YAW[1] - a) / 25.0, 0, 1), atol=1e-9)
    np.testing.assert_allclose(np.maximum(w[:, 36], w[:, 42]), np.clip((NEAR_EYE_YAW[1] - a) / 25.0, 0, 1), atol=1e-9)
    assert (w[a >= 45, 48:] == 0).all() and (w[a <= 25, 48:] == 1).all()
    side = np.sign(w[:, 42] - w[:, 36])  # which eye is the near one: it flips with the turn's direction
    pos, neg = side[(yaws > 25) & (yaws < 70)], side[(yaws < -25) & (yaws > -70)]
    assert len(set(pos)) == 1 and len(set(neg)) == 1 and pos[0] == -neg[0] != 0


def _reference_points(stage, frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The stage's points for one frame's faces the plain way: each patch cut, turned gray and scaled on its own,
    the network run, the mouth re-anchored ``MOUTH_PASSES - 1`` times, every part's units mapped back one by one."""
    import cv2

    from model.expression_patches import frames_and_affines
    from model.expression_stage import MOUTH_PASSES

    def patch(affine: np.ndarray, spec) -> np.ndarray:
        p = cut(frame, affine, spec)
        p = cv2.cvtColor(p, cv2.COLOR_BGR2GRAY) if p.ndim == 3 else p
        return p[None] * np.float32(1 / 255.0) - np.float32(0.5)

    lm = np.asarray(lm, np.float64)[..., :2].copy()
    frames, aff = frames_and_affines(lm)
    n = len(lm)
    eyes = np.stack([patch(aff[0, i], PARTS[0]) for i in range(n)] + [patch(aff[1, i], PARTS[1]) for i in range(n)])
    pe, pm = stage._run(eyes, np.stack([patch(aff[2, i], PARTS[2]) for i in range(n)]))
    for _ in range(MOUTH_PASSES - 1):
        lm[:, 48:68] = units_to_frame(pm, frames[2, :, 0], frames[2, :, 1], frames[2, :, 2])
        frames, aff = frames_and_affines(lm)
        pm = stage._run(eyes[:0], np.stack([patch(aff[2, i], PARTS[2]) for i in range(n)]))[1]
    from model.dense_fit import INNER_LIP_PAIRS

    pm = np.array(pm, np.float64)
    for up, down in INNER_LIP_PAIRS:  # the inner lips' gaps spread about the pivot
        u, d = up - 48, down - 48
        gain, pivot = stage.lip_gain
        mid, gap = (pm[:, u, 1] + pm[:, d, 1]) / 2, pm[:, d, 1] - pm[:, u, 1]
        gap = np.maximum(pivot + gain * (gap - pivot), 0)
        pm[:, u, 1], pm[:, d, 1] = mid - gap / 2, mid + gap / 2
    parts = [units_to_frame(u, frames[k, :, 0], frames[k, :, 1], frames[k, :, 2])
             for k, u in enumerate((pe[:n], pe[n:], pm))]
    out = np.empty((n, 32, 2))
    for k, spec in enumerate(PARTS):
        out[:, np.array(spec.points) - 36] = parts[k]
    return out


def test_stage_points_of_many_faces_at_once_equal_the_plain_way(morph: MorphableModel) -> None:
    """``points_many`` cuts every patch into one buffer and maps the points back in one kernel: the points of two
    frames with one and two faces (one turned and rolled) equal the plain patch-by-patch computation, and a gray
    frame reads as its BGR copy."""
    import cv2

    from model.assets import resolve_root
    from model.expression_stage import ExpressionStage
    from model.morphable import Whitening

    stage = ExpressionStage(morph, "v1", Whitening.load("v1").std)
    img = cv2.imread(str(resolve_root(None) / "LeiJiangJNU/DAMDNet/imgs/jolie.jpg"))
    frame_a, frame_b = img, np.ascontiguousarray(img[:, ::-1])
    lm = morph.landmarks(frontal(4e-4), ROI)[..., :2].astype(np.float64)
    ang = 0.3
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    turned = (lm[0] - lm[0].mean(0)) @ rot.T * 0.8 + lm[0].mean(0) + [40, 10]
    items = [(frame_a, lm), (frame_b, np.stack([lm[0] + [5, -3], turned]))]
    got = stage.points_many(items)
    assert [g.shape for g in got] == [(1, 32, 2), (2, 32, 2)]
    for (frame, faces), g in zip(items, got):
        np.testing.assert_allclose(g, _reference_points(stage, frame, faces), rtol=0, atol=1e-9)
        np.testing.assert_allclose(stage.points(frame, faces), g, rtol=0, atol=1e-9)
    gray = cv2.cvtColor(frame_a, cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(stage.points(gray, lm), stage.points(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), lm),
                               rtol=0, atol=1e-9)
