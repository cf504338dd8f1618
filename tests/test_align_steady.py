"""A still's steady fit (``model.align_images.align_steady``): the fit averaged over crops around one crop, what a
swap source's texture is built from. Known answers on a scripted aligner; on real photos, a fit that moves far less
than a single crop's when the box moves."""
from __future__ import annotations

import numpy as np
import pytest

from model.align_images import STEADY_CROPS, align_boxes, align_steady, steady_rois
from model.aligner import AlignResult
from model.roi import rounded_roi


def test_steady_crops_lie_symmetrically_about_the_crop():
    roi = np.array([100.0, 50.0, 300.0, 270.0])  # 200 x 220 px: side 210
    rois = steady_rois(roi, 0.05)
    assert rois.shape == (len(STEADY_CROPS), 4) and rois.dtype == np.float32
    np.testing.assert_allclose(rois[0], roi)
    np.testing.assert_allclose(rois.mean(0), roi, atol=1e-3)  # no net shift or scale
    centres = (rois[:, :2] + rois[:, 2:]) / 2
    shifts = np.round((centres - [200.0, 160.0]) / (0.05 * 210), 6)
    assert {tuple(s) for s in shifts} == {(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)}
    widths = np.round((rois[:, 2] - rois[:, 0]) / 200.0, 6)
    assert sorted(set(widths)) == [0.95, 1.0, 1.05]
    np.testing.assert_allclose((rois[:, 3] - rois[:, 1]) / 220.0, widths, atol=1e-6)  # the aspect is kept


class _Linear:
    """An aligner whose fit of a crop is a known function of the crop (its corners), so the mean is known."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, bool]] = []

    def align(self, img, rois, dense=False):
        r = rounded_roi(np.asarray(rois, np.float32))
        self.calls.append((r, dense))
        n = len(r)
        lm = np.repeat(np.arange(68, dtype=np.float32)[None, :, None], n, 0) * np.ones((1, 1, 3), np.float32)
        lm[:, :, 0] += r[:, :1]
        lm[:, :, 1] += r[:, 1:2]
        params = np.tile(np.arange(62, dtype=np.float32), (n, 1)) + r[:, 2:3]
        verts = np.repeat(r[:, None, :3], 5, 1) if dense else None
        return AlignResult(params=params, landmarks=lm, roi=r, vertices=verts, confidence=np.full(n, 0.9, np.float32),
                           ext=r[:, :2].copy())


def test_steady_fit_is_the_mean_over_its_crops_in_one_pass():
    al = _Linear()
    roi = np.array([120.0, 80.0, 320.0, 280.0], np.float32)
    res = align_steady(np.zeros((400, 500, 3), np.uint8), al, roi)
    assert len(al.calls) == 1 and al.calls[0][1] is True  # one forward pass over every crop, dense
    crops = al.calls[0][0]
    assert len(crops) == len(STEADY_CROPS)
    assert res.params.shape == (1, 62) and res.landmarks.shape == (1, 68, 3) and res.vertices.shape == (1, 5, 3)
    np.testing.assert_allclose(res.params[0], np.arange(62) + crops[:, 2].mean(), rtol=1e-6)
    np.testing.assert_allclose(res.landmarks[0, :, 0], np.arange(68) + crops[:, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(res.vertices[0, 0], crops[:, :3].mean(0), rtol=1e-6)
    np.testing.assert_allclose(res.ext[0], crops[:, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(res.roi[0], roi)  # the crop it was asked about
    assert align_steady(np.zeros((400, 500, 3), np.uint8), _Linear(), roi, dense=False).vertices is None


@pytest.mark.parametrize("path", ["LeiJiangJNU/DAMDNet/imgs/jolie.jpg", "faces/deepface_tests/img24.jpg"],
                         ids=["jolie", "small-glasses"])
def test_steady_fit_hardly_moves_when_the_box_moves(assets_dir, path):
    """Real photos, our DAMDNet: the crop moved by 3% of its side (x, then y) moves a single crop's 68 points by
    1.0-2.1% of the eye-corner distance on average, the steady fit's by 0.3-0.5% (measured on these two photos)."""
    import cv2

    from model.aligner import Aligner
    from model.assets import AssetStore
    from model.detect import FaceDetector

    img = cv2.imread(str(assets_dir / path))
    if img is None:
        pytest.skip(f"{path} missing")
    store = AssetStore(str(assets_dir))
    al = Aligner.from_checkpoint("damdnet", device="cpu", store=store)
    boxes, _ = FaceDetector.create("auto", store)(img)
    roi = align_boxes(img, al, boxes[[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]],
                      dense=False).roi[0].astype(np.float64)
    side = (roi[2] - roi[0] + roi[3] - roi[1]) / 2
    base = align_steady(img, al, roi, dense=False).landmarks[0, :, :2]
    iod = float(np.linalg.norm(base[36] - base[45]))
    for axis in ((1, 0, 1, 0), (0, 1, 0, 1)):
        moved = roi + 0.03 * side * np.array(axis)
        single = al.align(img, np.stack([roi, moved]).astype(np.float32)).landmarks[:, :, :2]
        d_single = np.linalg.norm(single[0] - single[1], axis=1).mean() / iod
        d_steady = np.linalg.norm(align_steady(img, al, moved, dense=False).landmarks[0, :, :2] - base,
                                  axis=1).mean() / iod
        assert d_steady < 0.5 * d_single and d_steady < 0.008, (axis, d_single, d_steady)


def test_a_swap_source_texture_does_not_follow_the_detector_box(assets_dir):
    """``fit_swap_texture`` builds the texture from the steady fit: the same photo with the detector's box 3% of its
    side to the right and down gives the source's eyes within 0.8% of the eye-corner distance (a single crop's fit moved
    them ~2% on this small photo: the texture and the swap's eye outline followed the box)."""
    import cv2
    from types import SimpleNamespace

    from model.aligner import Aligner
    from model.assets import AssetStore
    from model.detect import FaceDetector
    from stream.assemble import fit_swap_texture

    img = cv2.imread(str(assets_dir / "faces/deepface_tests/img24.jpg"))
    if img is None:
        pytest.skip("faces/deepface_tests/img24.jpg missing")
    store = AssetStore(str(assets_dir))
    al = Aligner.from_checkpoint("damdnet", device="cpu", store=store)
    boxes, scores = FaceDetector.create("auto", store)(img)
    box = boxes[[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]]
    side = float(box[0, 2] - box[0, 0] + box[0, 3] - box[0, 1]) / 2
    eyes = []
    for shift in (0.0, 0.03 * side):
        det = lambda _img, b=box + shift: (b.astype(np.float32), scores[:1])  # noqa: E731
        eyes.append(fit_swap_texture(img, SimpleNamespace(aligner=al, detector=det)).eye_landmarks)
    iod = float(np.linalg.norm(eyes[0][:6].mean(0) - eyes[0][6:].mean(0)))
    assert np.linalg.norm(eyes[0] - eyes[1], axis=1).mean() / iod < 0.008
