"""The synthetic source: deterministic frames of a textured 3DMM face whose ground truth is known."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.morphable import MorphableModel
from stream.sources import SourceError, open_source
from stream.synthetic import SyntheticSource, face_triangles


@pytest.fixture(scope="module")
def src(assets_dir: Path) -> SyntheticSource:
    s = open_source("synthetic", seconds=8.0, width=640, height=480, fps=30)
    yield s
    s.close()


@pytest.fixture(scope="module")
def clean(assets_dir: Path) -> SyntheticSource:
    """Same video without sensor noise: background pixels are exactly the background."""
    s = SyntheticSource(seconds=8.0, width=640, height=480, fps=30, noise=0.0)
    yield s
    s.close()


def face_mask(s: SyntheticSource, i: int) -> np.ndarray:
    return np.any(s.render(i) != s.background, axis=2)


def test_info_and_ground_truth_shapes(src: SyntheticSource) -> None:
    n = 240
    assert len(src) == n
    info = src.info
    assert (info.width, info.height, info.fps, info.frame_count) == (640, 480, 30.0, n)
    assert not info.is_live and info.name == "synthetic"
    assert src.ground_truth.shape == (n, 68, 3) and src.ground_truth.dtype == np.float32
    assert src.params.shape == (n, 62) and src.rois.shape == (n, 4) and src.pose.shape == (n, 6)
    assert np.all(np.isfinite(src.ground_truth)) and np.all(np.isfinite(src.params))
    # the truth is the 3DMM decode of the params with the v1 convention
    morph = MorphableModel.load()
    np.testing.assert_allclose(morph.landmarks(src.params, src.rois, "v1"), src.ground_truth, atol=1e-3)


def test_frames_index_time_image(assets_dir: Path) -> None:
    with open_source("synthetic:1", fps=20, width=320, height=240) as s:
        frames = list(s)
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(20))
    assert [f.time for f in frames] == pytest.approx([i / 20 for i in range(20)])
    img = frames[0].image
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8 and img.flags.c_contiguous


def test_max_frames(assets_dir: Path) -> None:
    with open_source("synthetic", seconds=2.0, fps=10, max_frames=5) as s:
        assert s.info.frame_count == 5
        assert len(list(s)) == 5
        assert s.ground_truth.shape[0] == 20  # the truth covers the whole video


def test_deterministic_per_seed(assets_dir: Path) -> None:
    a = SyntheticSource(seconds=1.0, width=320, height=240, fps=10, seed=3)
    b = SyntheticSource(seconds=1.0, width=320, height=240, fps=10, seed=3)
    c = SyntheticSource(seconds=1.0, width=320, height=240, fps=10, seed=4)
    for i in (0, 4, 9):
        np.testing.assert_array_equal(a.render(i), b.render(i))
    fa, fb = [f.image for f in a], [f.image for f in b]
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    np.testing.assert_array_equal(a.ground_truth, b.ground_truth)
    assert not np.array_equal(a.background, c.background)
    assert not np.array_equal(a.render(0), c.render(0))


def test_motion_covers_the_brief(src: SyntheticSource) -> None:
    yaw, pitch, roll = src.pose[:, 0], src.pose[:, 1], src.pose[:, 2]
    assert yaw.max() >= 65 and yaw.min() <= -65 and np.abs(yaw).max() <= 72
    assert pitch.max() >= 20 and pitch.min() <= -20 and np.abs(pitch).max() <= 27
    assert np.ptp(roll) >= 15
    gt = src.ground_truth
    size = np.sqrt(np.ptp(gt[..., 0], axis=1) * np.ptp(gt[..., 1], axis=1))
    mouth_open = (gt[:, 66, 1] - gt[:, 62, 1]) / size  # inner lips
    assert mouth_open.min() < 0.03 and mouth_open.max() > 0.08
    assert np.ptp(src.params[:, 52:], axis=0).max() > 2.0  # expressions move
    assert np.ptp(src.rois[:, 2] - src.rois[:, 0]) > 60  # scale changes
    centre = gt[..., :2].mean(1)
    assert np.ptp(centre[:, 0]) > 60 and np.ptp(centre[:, 1]) > 30  # translation


def test_cut_is_an_abrupt_jump(src: SyntheticSource) -> None:
    assert len(src.cuts) == 1
    c = src.cuts[0]
    assert 0.4 * len(src) < c < 0.9 * len(src)
    centre = src.ground_truth[..., :2].mean(1)
    step = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    others = np.delete(step, c - 1)
    assert step[c - 1] > 5 * np.percentile(others, 99)
    yaw_step = np.abs(np.diff(src.pose[:, 0]))
    assert yaw_step[c - 1] > 5 * np.percentile(np.delete(yaw_step, c - 1), 99)


@pytest.mark.parametrize("which", ["first", "max_yaw", "min_yaw", "max_pitch", "mouth_open", "cut", "last"])
def test_landmarks_lie_on_the_rendered_face(clean: SyntheticSource, which: str) -> None:
    gt = clean.ground_truth
    size = np.sqrt(np.ptp(gt[..., 0], axis=1) * np.ptp(gt[..., 1], axis=1))
    i = {"first": 0, "max_yaw": int(np.argmax(clean.pose[:, 0])), "min_yaw": int(np.argmin(clean.pose[:, 0])),
         "max_pitch": int(np.argmax(clean.pose[:, 1])),
         "mouth_open": int(np.argmax((gt[:, 66, 1] - gt[:, 62, 1]) / size)),
         "cut": clean.cuts[0], "last": len(clean) - 1}[which]
    mask = face_mask(clean, i)
    ys, xs = np.nonzero(mask)
    lm = gt[i, :, :2]
    # the landmarks' box lies inside the face's box (rendered pixels), within 1 px
    assert lm[:, 0].min() >= xs.min() - 1 and lm[:, 0].max() <= xs.max() + 1
    assert lm[:, 1].min() >= ys.min() - 1 and lm[:, 1].max() <= ys.max() + 1
    # and every landmark is on a face pixel (3 px of slack for the contour points on the silhouette)
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    px = np.round(lm).astype(int)
    assert grown[px[:, 1], px[:, 0]].all()
    # inner points (brows, eyes, nose, mouth) are inside, within 1 px (points on the silhouette at strong turns)
    inner = px[17:]
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert near[inner[:, 1], inner[:, 0]].mean() >= 0.95
    # the face fills most of the landmarks' box: the truth is not a box around the wrong place
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    assert mask[y0:y1, x0:x1].mean() > 0.8


def test_landmarks_are_vertices_of_the_rendered_mesh(src: SyntheticSource) -> None:
    """The grid drawn passes exactly through the 68 true landmarks, expressions included (mouth open, smile)."""
    k = src.landmark_vertex
    assert len(set(k.tolist())) == 68
    for i in range(0, len(src), 7):
        np.testing.assert_allclose(src.vertices(i)[k], src.ground_truth[i], atol=1e-3)


def test_mouth_opens_on_the_rendered_mesh(clean: SyntheticSource) -> None:
    gt = clean.ground_truth
    size = np.sqrt(np.ptp(gt[..., 0], axis=1) * np.ptp(gt[..., 1], axis=1))
    opening = (gt[:, 66, 1] - gt[:, 62, 1]) / size
    assert opening.max() > 3 * opening.min()
    i = int(np.argmax(opening))
    img = clean.render(i).astype(np.float32)
    cx, cy = np.round(gt[i, [62, 66], :2].mean(0)).astype(int)  # between the inner lips
    gap = img[cy - 1:cy + 2, cx - 1:cx + 2].mean()
    nx, ny = np.round(gt[i, 29, :2]).astype(int)  # the nose (skin)
    skin = img[ny - 1:ny + 2, nx - 1:nx + 2].mean()
    assert gap < 0.6 * skin, (gap, skin)  # the open mouth shows a dark opening between the lips


def test_face_follows_the_truth_over_time(clean: SyntheticSource) -> None:
    gt = clean.ground_truth
    for i in range(0, len(clean), 12):
        ys, xs = np.nonzero(face_mask(clean, i))
        lm = gt[i, :, :2]
        size = np.sqrt(np.ptp(lm[:, 0]) * np.ptp(lm[:, 1]))
        # the rendered face's centre is near the centre of the landmarks' box (the mesh reaches the forehead)
        cx = (xs.min() + xs.max()) / 2
        assert abs(cx - (lm[:, 0].min() + lm[:, 0].max()) / 2) < 0.35 * size


def test_face_mesh_is_cut_to_the_face() -> None:
    from stream.synthetic import _consistent_model

    morph = _consistent_model(MorphableModel.load())[0]  # the whole grid: the synthetic face makes its own cut
    tri = face_triangles(morph)
    assert 0.6 * len(morph.tri) < len(tri) < len(morph.tri)
    assert len(face_triangles(morph, margin=None)) == len(morph.tri)
    # the kept vertices are one connected region around the nose
    kept = np.zeros(morph.n_dense, bool)
    kept[tri.ravel()] = True
    from scipy import ndimage

    assert ndimage.label(kept.reshape(morph.grid_shape))[1] == 1


def test_drawn_texture_without_photo(assets_dir: Path) -> None:
    s = SyntheticSource(seconds=0.5, width=320, height=240, fps=10, face="drawn", noise=0.0)
    mask = np.any(s.render(0) != s.background, axis=2)
    lm = s.ground_truth[0, :, :2]
    px = np.round(lm[17:]).astype(int)
    assert mask[px[:, 1], px[:, 0]].mean() > 0.95


def test_bad_specs_and_options(assets_dir: Path) -> None:
    with pytest.raises(SourceError, match="SECONDS"):
        open_source("synthetic:abc")
    with pytest.raises(SourceError, match="unknown option"):
        open_source("synthetic", colour="red")
    with pytest.raises(SourceError, match="positive"):
        open_source("synthetic", seconds=-1)
    with pytest.raises(SourceError, match="no such face photo"):
        open_source("synthetic", face="/nonexistent/face.jpg")


@pytest.mark.slow
def test_real_detector_and_network_work_on_it(src: SyntheticSource) -> None:
    """Realism: YuNet finds the face and the mb05 peer aligns it about as well as on real photos."""
    from model.aligner import Aligner
    from model.detect import FaceDetector
    from model.roi import roi_from_box
    from tracking.jitter import nme

    det = FaceDetector.create("auto")
    al = Aligner.from_checkpoint("3ddfa-v2-mb05", device="cpu")
    errors, yaws = [], []
    for i in range(0, len(src), 10):
        img = src.render(i)
        boxes, _ = det(img)
        assert len(boxes) == 1, f"frame {i}: {len(boxes)} faces detected"
        res = al.align(img, roi_from_box(boxes))
        errors.append(float(nme(res.landmarks, src.ground_truth[i:i + 1])[0]))
        yaws.append(abs(float(src.pose[i, 0])))
    errors = np.array(errors)
    assert np.mean(errors) < 5.0 and errors.max() < 8.0, errors.round(2)
    assert max(yaws) > 55  # strong turns were among the frames checked
