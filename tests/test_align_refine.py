"""The landmark re-crop after the detector crop (``model.align_images.align_boxes``): what crop each pass uses, the guard
against a fit gone astray, and that it is more accurate on real labelled photos with detector crops."""
from __future__ import annotations

import numpy as np
import pytest

from model.align_images import REFINE_MIN_IOU, align_boxes
from model.roi import iou_matrix, roi_from_box, roi_from_landmarks, rounded_roi


class _Result:
    def __init__(self, rois: np.ndarray, landmarks: np.ndarray) -> None:
        self.roi, self.landmarks = rois, landmarks

    def __len__(self) -> int:
        return len(self.roi)


class _Scripted:
    """An aligner that records the ROIs it gets and returns given landmarks for each call in turn."""

    def __init__(self, *landmarks: np.ndarray) -> None:
        self.calls, self.dense, self.out = [], [], list(landmarks)

    def align(self, img, rois, dense=False):
        self.calls.append(np.asarray(rois, np.float32).copy())
        self.dense.append(dense)
        return _Result(rounded_roi(np.asarray(rois, np.float32)), self.out[len(self.calls) - 1])


def _face(cx: float, cy: float, side: float) -> np.ndarray:
    """(68, 3) points filling a box of ``side`` px about (cx, cy)."""
    g = np.random.default_rng(0).uniform(-0.5, 0.5, (68, 3)) * side
    g[:2, :2] = [[-0.5 * side, -0.5 * side], [0.5 * side, 0.5 * side]]
    return (g + [cx, cy, 0]).astype(np.float32)


def test_each_pass_crops_from_the_previous_landmarks():
    boxes = np.array([[100, 100, 200, 220], [300, 50, 380, 150]], np.float32)
    first = np.stack([_face(152, 165, 96), _face(342, 104, 76)])
    second = np.stack([_face(150, 168, 98), _face(340, 106, 78)])
    al = _Scripted(first, second, second)
    align_boxes(np.zeros((400, 500, 3), np.uint8), al, boxes, dense=True, refine=2)
    np.testing.assert_allclose(al.calls[0], roi_from_box(boxes))
    np.testing.assert_allclose(al.calls[1], roi_from_landmarks(first))
    np.testing.assert_allclose(al.calls[2], roi_from_landmarks(second))
    assert al.dense == [False, False, True]  # dense vertices only on the last pass
    al0 = _Scripted(first)
    align_boxes(np.zeros((400, 500, 3), np.uint8), al0, boxes, dense=True, refine=0)
    assert len(al0.calls) == 1 and al0.dense == [True]
    with pytest.raises(ValueError, match="refine"):
        align_boxes(np.zeros((400, 500, 3), np.uint8), al0, boxes, refine=-1)


def test_a_recrop_far_from_the_detection_is_not_taken():
    boxes = np.array([[100, 100, 200, 220], [300, 50, 380, 150]], np.float32)
    first = np.stack([_face(152, 165, 96), _face(600, 400, 60)])  # the second fit went astray
    al = _Scripted(first, first)
    res = align_boxes(np.zeros((400, 500, 3), np.uint8), al, boxes, dense=False, refine=1)
    det = roi_from_box(boxes)
    assert iou_matrix(roi_from_landmarks(first[1:]), det[1:])[0, 0] < REFINE_MIN_IOU
    np.testing.assert_allclose(al.calls[1][0], roi_from_landmarks(first[:1])[0])
    np.testing.assert_allclose(al.calls[1][1], rounded_roi(det[1:])[0])  # kept its detector crop
    assert len(res) == 2


def test_no_boxes_no_faces():
    al = _Scripted(np.zeros((0, 68, 3), np.float32), np.zeros((0, 68, 3), np.float32))
    res = align_boxes(np.zeros((50, 50, 3), np.uint8), al, np.zeros((0, 4), np.float32), refine=1)
    assert len(res) == 0


def test_the_calibrated_box_rule_is_more_accurate_on_labelled_photos(assets_dir):
    """Real AFLW2000-3D photos with ground truth (the PRNet samples, evaluation only), YuNet crops, the teacher's
    weights: the calibrated detector crop (``BOX_SIDE`` 1.26) beats 3DDFA's rule (side 1.58) and matches a landmark
    re-crop (validation set: 4.75 -> 4.22 in one pass, 4.24 with 3DDFA's rule and a re-crop)."""
    import cv2

    from model.aligner import Aligner
    from model.assets import AssetStore
    from model.detect import FaceDetector
    from model.groundtruth import find_labels, read_groundtruth
    from model.metrics import nme
    from model.roi import BOX_SIDE, box_from_landmarks

    folder = assets_dir / "YadiraF" / "PRNet" / "TestImages" / "AFLW2000"
    if not folder.is_dir():
        pytest.skip("no AFLW2000 samples")
    store = AssetStore(str(assets_dir))
    al = Aligner.from_checkpoint("3ddfa-v2-mb05", device="cpu", store=store)
    det = FaceDetector.create("yunet", store)
    err = {"3ddfa": [], "3ddfa+recrop": [], "calibrated": []}
    for lab in find_labels(folder):
        gt = read_groundtruth(lab)
        img = cv2.imread(str(gt.image))
        boxes, _ = det(img)
        if not len(boxes):
            continue
        box = boxes[[int(np.argmax(iou_matrix(box_from_landmarks(gt.landmarks[None]), boxes)[0]))]]
        old = al.align(img, roi_from_box(box, side=1.58, down=0.14))
        err["3ddfa"].append(nme(old.landmarks[0], gt.landmarks))
        err["3ddfa+recrop"].append(nme(al.align(img, roi_from_landmarks(old.landmarks)).landmarks[0], gt.landmarks))
        err["calibrated"].append(nme(align_boxes(img, al, box, dense=False).landmarks[0], gt.landmarks))
    assert BOX_SIDE < 1.4 and len(err["3ddfa"]) >= 5
    mean = {k: float(np.mean(v)) for k, v in err.items()}
    assert mean["calibrated"] < mean["3ddfa"] - 0.1, mean
    assert mean["calibrated"] < mean["3ddfa+recrop"] + 0.2, mean
