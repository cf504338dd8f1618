"""model.aligner + model.fastpath + model.roi: fast path vs eager, batching, a real face, the ROI/crop rules."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from model.aligner import Aligner, normalise_crops
from model.assets import AssetStore
from model.fastpath import build_fast_path, fold_all_bn
from model.morphable import pose_from_params
from model.roi import box_from_landmarks, crop_roi, iou_matrix, roi_from_box, roi_from_landmarks, rounded_roi

SAMPLE = "cleardusk/3DDFA/samples/test1.jpg"


@pytest.fixture(scope="module")
def store(assets_dir) -> AssetStore:
    return AssetStore(root=assets_dir, allow_download=False)


def _aligner(store, which: str) -> Aligner:
    name = str(store.path("compat-checkpoint")) if which == "damdnet" else "3ddfa-v2-mb05"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = Aligner.from_checkpoint(name, device="cpu", store=store)
    _no_fallback(caught)
    return a


def _no_fallback(caught) -> None:
    """A fast path that fell back to eager says so with a warning."""
    msgs = [str(w.message) for w in caught if "fast path" in str(w.message)]
    assert not msgs, msgs


@pytest.fixture(scope="module")
def aligners(store) -> dict[str, Aligner]:
    return {k: _aligner(store, k) for k in ("damdnet", "mobilenet_v1")}


@pytest.fixture(scope="module")
def sample(assets_dir) -> np.ndarray:
    img = cv2.imread(str(assets_dir / SAMPLE), cv2.IMREAD_COLOR)
    assert img is not None
    return img


# -- fast path ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["damdnet", "mobilenet_v1"])
def test_fast_path_matches_eager(aligners, which):
    a = aligners[which]
    assert a.backbone == which and a.fast_path == "onnxruntime"  # the CPU default
    assert type(a._forward.session).__name__ == "InferenceSession"  # really an ORT session
    torch.manual_seed(0)
    for n in (1, 3, 8):
        x = torch.randn(n, 3, 120, 120)
        out = a.forward_crops(x)
        assert out.shape == (n, 62) and out.dtype == torch.float32
        with torch.no_grad():
            ref = a.net(x)
        assert (out - ref).abs().max().item() < 1e-4
    # real-looking crops too (uint8 -> normalised)
    crops = np.random.default_rng(1).integers(0, 256, (4, 120, 120, 3), dtype=np.uint8)
    x = normalise_crops(crops, torch.device("cpu"))
    with torch.no_grad():
        assert (a.forward_crops(x) - a.net(x)).abs().max().item() < 1e-4


def test_fold_bn_removes_batchnorm_and_keeps_output(store):
    from model.checkpoint import load_file

    net = load_file(store.path("compat-checkpoint"), store).net
    folded = fold_all_bn(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # original untouched
    x = torch.from_numpy(np.load(store.path("compat-io"))["input"])
    with torch.no_grad():
        assert (folded(x) - net(x)).abs().max().item() < 1e-4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast_cl = build_fast_path(net, channels_last=True)
    _no_fallback(caught)
    with torch.no_grad():
        assert (fast_cl(x) - net(x)).abs().max().item() < 1e-4


def test_fast_path_falls_back_when_tolerance_is_impossible(store):
    from model.checkpoint import load_model

    net = load_model("3ddfa-v2-mb05", store).net
    with pytest.warns(UserWarning, match="differs from eager"):
        fwd = build_fast_path(net, tol=-1.0)
    x = torch.randn(2, 3, 120, 120)
    with torch.no_grad():
        assert torch.equal(fwd(x), net(x))


# -- batching -----------------------------------------------------------------------------------------------------
def test_align_many_is_one_forward_pass_and_equals_align(aligners, sample):
    a = aligners["mobilenet_v1"]
    h, w = sample.shape[:2]
    frame2 = cv2.flip(sample, 1)
    items = [(sample, np.array([[200, 60, 500, 420], [990, 90, 1300, 470]], np.float32)),
             (frame2, np.array([[w - 500, 60, w - 200, 420]], np.float32)),
             (sample, np.zeros((0, 4), np.float32)),
             (sample, np.array([[-50, -40, 150, 160]], np.float32))]  # partly outside the frame
    single = [a.align(f, r) for f, r in items]
    calls = []
    orig = a._forward

    def counting(x):
        calls.append(tuple(x.shape))
        return orig(x)

    a._forward = counting
    try:
        many = a.align_many(items)
    finally:
        a._forward = orig
    assert calls == [(4, 3, 120, 120)]
    assert [len(r) for r in many] == [2, 1, 0, 1]
    assert a.last_timing["faces"] == 4
    for s, m in zip(single, many):
        assert m.params.shape == (len(m), 62) and m.landmarks.shape == (len(m), 68, 3)
        assert m.pose.shape == (len(m), 6) and m.roi.shape == (len(m), 4) and m.vertices is None
        assert np.array_equal(m.pose, pose_from_params(m.params)) and m.pose is m.pose  # computed once, when read
        assert np.allclose(s.params, m.params, atol=1e-4, rtol=1e-4)
        assert np.allclose(s.landmarks, m.landmarks, atol=1e-2)
        assert m.landmarks.dtype == np.float32
    # the mirrored frame's face is the mirror of the first face: x maps to w - 1 - x up to model asymmetry
    lm0, lm1 = many[0].landmarks[0], many[1].landmarks[0]
    assert abs((w - 1 - lm1[:, 0]).mean() - lm0[:, 0].mean()) < 15


def test_dense_on_request(aligners, sample):
    a = aligners["mobilenet_v1"]
    r = a.align(sample, np.array([[200, 60, 500, 420]], np.float32), dense=True)
    assert r.vertices.shape == (1, a.morph.n_dense, 3) and r.vertices.dtype == np.float32
    assert a.param_std.shape == (62,) and a.convention == "v2"


@pytest.mark.parametrize("which", ["damdnet", "mobilenet_v1"])
def test_frame_without_faces_gives_empty_results(aligners, sample, which):
    """A frame where the detector found nobody (0 ROIs) is normal in a video: empty arrays, no exception."""
    a = aligners[which]
    r = a.align(sample, np.zeros((0, 4), np.float32), dense=True)
    assert len(r) == 0
    assert r.params.shape == (0, 62) and r.landmarks.shape == (0, 68, 3) and r.pose.shape == (0, 6)
    assert r.roi.shape == (0, 4) and r.vertices.shape == (0, a.morph.n_dense, 3)
    empty = torch.zeros((0, 62))
    assert tuple(a.morph.landmarks(empty, torch.zeros((0, 4)), a.convention).shape) == (0, 68, 3)


def test_landmarks_of_real_faces_fall_in_the_detector_boxes(aligners, sample, store):
    from model.detect import FaceDetector

    boxes, _ = FaceDetector.create("yunet", store)(sample)
    assert len(boxes) == 2
    res = aligners["mobilenet_v1"].align(sample, roi_from_box(boxes))
    assert np.array_equal(res.roi, rounded_roi(roi_from_box(boxes)))
    for lm, b in zip(res.landmarks, boxes):
        m = 0.1 * (b[2] - b[0])  # the jaw line may poke ~4% outside YuNet's box
        assert np.all(lm[:, 0] > b[0] - m) and np.all(lm[:, 0] < b[2] + m)
        assert np.all(lm[:, 1] > b[1] - m) and np.all(lm[:, 1] < b[3] + m)
        # the face fills the box: landmark box covers most of its width
        lb = box_from_landmarks(lm[None])[0]
        assert (lb[2] - lb[0]) > 0.7 * (b[2] - b[0])
        # eyes above the nose tip above the mouth (image y down), left eye left of right eye
        eye_l, eye_r, nose, mouth = lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48:60].mean(0)
        assert eye_l[1] < nose[1] < mouth[1] and eye_l[0] < eye_r[0]
    assert np.all(np.abs(res.pose[:, :3]) < 45)  # two near-frontal debaters


# -- ROI rules ----------------------------------------------------------------------------------------------------
def test_roi_from_box_known_values():
    boxes = np.array([[0, 0, 100, 100], [10, 20, 50, 80]], np.float32)
    got = roi_from_box(boxes, side=1.58, down=0.14)
    # 3DDFA's rule: old = mean side; centre y += 0.14 old; side = 1.58 old, floored to an even number of pixels
    # box 2: old = 50, centre (30, 50 + 7), side 79 -> 78
    assert np.allclose(got, [[-29, -15, 129, 143], [30 - 39, 57 - 39, 30 + 39, 57 + 39]])
    assert got.dtype == np.float32 and roi_from_box(np.zeros((0, 4))).shape == (0, 4)
    # the default: the calibrated rule, side 1.26 and down 0.14 (box 1: centre (50, 64), side 126)
    assert np.allclose(roi_from_box(boxes)[0], [-13, 1, 113, 127])


def test_roi_from_landmarks_known_values():
    lm = np.zeros((1, 68, 3), np.float32)
    lm[0, :, 0] = np.linspace(10, 50, 68)
    lm[0, :, 1] = np.linspace(20, 100, 68)
    half = 80 * np.sqrt(2) / 2  # side max(40, 80), enlarged to its diagonal
    assert np.allclose(roi_from_landmarks(lm), [[30 - half, 60 - half, 30 + half, 60 + half]], atol=1e-4)
    assert np.allclose(roi_from_landmarks(lm[..., :2]), roi_from_landmarks(lm))
    assert np.allclose(box_from_landmarks(lm), [[10, 20, 50, 100]])


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [1, 1, 3, 3]], np.float32)
    want = [[1, 50 / 150, 0, 4 / 100], [4 / 100, 0, 0, 1 / 7]]
    got = iou_matrix(a, b)
    assert got.shape == (2, 4) and np.allclose(got, want)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)
    assert iou_matrix(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))[0, 0] == 0  # empty boxes: 0, not NaN


def test_crop_roi_zero_pads_outside_and_matches_inside():
    img = np.full((40, 60, 3), 200, np.uint8)
    img[:, 30:] = 100
    c = crop_roi(img, np.array([-20, -20, 20, 20]))  # top-left quadrant outside the image
    assert c.shape == (120, 120, 3) and c.dtype == np.uint8
    assert np.all(c[:55, :55] == 0) and np.all(c[:55, 65:] == 0) and np.all(c[65:, :55] == 0)
    assert np.all(c[65:, 65:] == 200)
    inside = crop_roi(img, np.array([10.4, 5.6, 50.2, 35.4]))  # rounded to (10, 6, 50, 35)
    assert np.array_equal(inside, cv2.resize(img[6:35, 10:50], (120, 120), interpolation=cv2.INTER_LINEAR))
    far = crop_roi(img, np.array([100, 100, 140, 140]))
    assert far.shape == (120, 120, 3) and not far.any()
    assert np.array_equal(rounded_roi(np.array([[10.4, 5.6, 50.5, 35.49]])), [[10, 6, 50, 35]])
