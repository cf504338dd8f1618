"""model.detect: YuNet and the Haar fallback on a real photo; empty results on a blank frame."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.assets import AssetError, AssetStore
from model.detect import FaceDetector, HaarDetector, YuNetDetector
from model.roi import iou_matrix

SAMPLE = "cleardusk/3DDFA/samples/test1.jpg"
# the two debaters' faces in test1.jpg (1536 x 689), located by eye from the picture
FACES = np.array([[220, 100, 465, 400], [1020, 125, 1260, 440]], np.float32)


@pytest.fixture(scope="module")
def store(assets_dir) -> AssetStore:
    return AssetStore(root=assets_dir, allow_download=False)


@pytest.fixture(scope="module")
def sample(assets_dir) -> np.ndarray:
    return cv2.imread(str(assets_dir / SAMPLE), cv2.IMREAD_COLOR)


def test_yunet_finds_both_faces(store, sample):
    det = FaceDetector.create("yunet", store)
    assert isinstance(det, YuNetDetector) and det.kind == "yunet"
    boxes, scores = det(sample)
    assert boxes.shape == (2, 4) and scores.shape == (2,)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0) and np.all(scores >= 0.6)
    iou = iou_matrix(boxes, FACES)
    assert np.all(iou.max(axis=0) > 0.6), iou  # each face found, box in full-frame pixels (downscale undone)


def test_yunet_full_resolution_agrees_with_downscaled(store, sample):
    a, _ = FaceDetector.create("yunet", store)(sample)
    b, _ = FaceDetector.create("yunet", store, max_side=2000)(sample)
    assert len(a) == len(b) == 2
    assert np.all(iou_matrix(a, b).max(axis=1) > 0.85)


def test_haar_finds_at_least_one_face(sample):
    det = FaceDetector.create("haar")
    assert isinstance(det, HaarDetector)
    boxes, scores = det(sample)
    assert len(boxes) >= 1 and boxes.shape[1:] == (4,) and scores.shape == (len(boxes),)
    assert iou_matrix(boxes, FACES).max() > 0.5  # at least one real face among them


@pytest.mark.parametrize("kind", ["yunet", "haar"])
@pytest.mark.parametrize("shape", [(480, 640, 3), (120, 90, 3), (1080, 1920, 3)])
def test_blank_frame_gives_empty_arrays(store, kind, shape):
    det = FaceDetector.create(kind, store)
    boxes, scores = det(np.full(shape, 127, np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32


def test_auto_falls_back_to_haar_without_yunet(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAMDNET_MIRROR", raising=False)
    det = FaceDetector.create("auto", AssetStore(root=tmp_path, allow_download=False))
    assert det.kind == "haar"
    assert "Haar" in capsys.readouterr().err
    with pytest.raises(AssetError):
        FaceDetector.create("yunet", AssetStore(root=tmp_path, allow_download=False))
    with pytest.raises(ValueError):
        FaceDetector.create("mtcnn")
