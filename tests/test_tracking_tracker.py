"""Tracker tests on a synthetic world: faces are 68-point templates placed in the frame; a fake aligner returns exact
3DMM-style parameters (pose in the crop of the given ROI, v1 convention) for the face under each ROI, and a fake
detector returns their boxes. No assets, no network."""
from __future__ import annotations

import numpy as np
import pytest

from model.morphable import crop_to_frame, project_crop
from model.roi import box_from_landmarks, iou_matrix, roi_from_box
from tracking.jitter import acceleration_jitter, estimate_lag, nme
from tests.run_defaults import kalman_defaults, tracker_defaults
from tracking.tracker import FaceTracker

SHAPE = (480, 640, 3)
_rng = np.random.default_rng(0)
TEMPLATE = np.concatenate([_rng.uniform(-0.5, 0.5, (68, 1)), _rng.uniform(-0.6, 0.6, (68, 1)),
                           _rng.uniform(-0.2, 0.2, (68, 1))], axis=1)  # model units, y up


def truth_landmarks(face: tuple[float, float, float]) -> np.ndarray:
    """(cx, cy, size) -> (68, 3) frame px."""
    cx, cy, s = face
    return np.stack([cx + s * TEMPLATE[:, 0], cy - s * TEMPLATE[:, 1], s * TEMPLATE[:, 2]], 1)


def params_for(face: tuple[float, float, float] | None, roi: np.ndarray) -> np.ndarray:
    """Exact v1 params of ``face`` as seen in the crop ``roi``; None -> a collapsed, implausible face."""
    x1, y1, x2, y2 = (float(v) for v in roi)
    sx, sy = (x2 - x1) / 120, (y2 - y1) / 120
    sz = (sx + sy) / 2
    if face is None:  # nothing in the crop: the network outputs some tiny blob in the middle
        face = ((x1 + x2) / 2, (y1 + y2) / 2, 1.0)
    cx, cy, s = face
    p = np.zeros(62)
    p[0:4] = [s / sx, 0, 0, (cx - x1) / sx]
    p[4:8] = [0, s / sy, 0, 121 - (cy - y1) / sy]
    p[8:12] = [0, 0, s / sz, 0]
    return p


# std units of the parameters for the filters (the aligner's whitening std in real use): chosen so that the jitter of
# ``fake_align(noise=0.5)`` is ~0.04 std, the default pose measurement noise
P_SCALE = np.ones(62)
P_SCALE[[0, 5, 10]] = 70 * 0.005 / 0.04
P_SCALE[[3, 7, 11]] = 0.5 / 0.04


def decode(params: np.ndarray, rois: np.ndarray) -> np.ndarray:
    p = np.asarray(params, np.float64)
    verts = np.repeat(TEMPLATE[None], p.shape[0], axis=0)
    return crop_to_frame(project_crop(p, verts), np.asarray(rois, np.float64), "v1").astype(np.float32)


def face_box(face: tuple[float, float, float]) -> np.ndarray:
    return box_from_landmarks(truth_landmarks(face)[None])[0]


def fake_align(faces: list, rois: np.ndarray, noise: float = 0.0, rng=None):
    """For each ROI the face whose box overlaps it most (None if none) -> params (N, 62), landmarks (N, 68, 3)."""
    out = []
    live = [f for f in faces if f is not None]
    for roi in rois:
        face = None
        if live:
            iou = iou_matrix(roi[None], np.stack([face_box(f) for f in live]))[0]
            if iou.max() > 0.1:
                face = live[int(np.argmax(iou))]
        p = params_for(face, roi)
        if noise and face is not None:  # network jitter: ``noise`` x 1% of the scale, x 1 crop px of translation
            p[[0, 5, 10]] *= 1 + 0.01 * noise * rng.normal(size=3)
            p[[3, 7]] += noise * rng.normal(size=2)
        out.append(p)
    params = np.array(out, np.float32).reshape(-1, 62)
    return params, decode(params, np.asarray(rois).reshape(-1, 4))


def detect(faces: list) -> tuple[np.ndarray, np.ndarray]:
    live = [f for f in faces if f is not None]
    boxes = np.array([face_box(f) for f in live], np.float32).reshape(-1, 4)
    return boxes, np.linspace(0.9, 0.8, len(boxes)).astype(np.float32)


def step(tracker: FaceTracker, i: int, faces: list, det_faces: list | None = None, noise: float = 0.0, rng=None,
         order=None):
    """One frame of the protocol; returns (faces out, detector ran?)."""
    ran = tracker.need_detection(i)
    det = None
    if ran:
        boxes, scores = detect(faces if det_faces is None else det_faces)
        if order is not None and len(boxes):
            boxes, scores = boxes[order], scores[order]
        det = (boxes, scores)
    todo = tracker.rois_for_frame(det, frame_index=i)
    ids = [t for t, _ in todo]
    rois = np.array([r for _, r in todo], np.float32).reshape(-1, 4)
    params, lms = fake_align(faces, rois, noise, rng)
    return tracker.update(ids, params, lms, SHAPE, time=i / 30, rois=rois), ran


def nearest_face(out_face, faces) -> int:
    c = (out_face.box[:2] + out_face.box[2:]) / 2
    return int(np.argmin([np.hypot(c[0] - f[0], c[1] - f[1]) for f in faces]))


def test_fake_world_is_consistent():
    face = (300.0, 200.0, 80.0)
    roi = roi_from_box(face_box(face)[None])[0]
    p, lm = fake_align([face], roi[None])
    np.testing.assert_allclose(lm[0], truth_landmarks(face), atol=1e-3)


@pytest.mark.parametrize("smooth", ["kalman", "none"])
def test_two_faces_moving_apart_keep_ids(smooth):
    tr = FaceTracker(tracker_defaults(detect_every=5, smooth=smooth), convention="v1", decode=decode)
    seen: dict[int, int] = {}
    for i in range(60):
        faces = [(250.0 - 2.5 * i, 240.0, 70.0), (390.0 + 2.5 * i, 240.0 + 0.5 * i, 70.0)]
        out, _ = step(tr, i, faces)
        assert len(out) == 2 and all(f.is_confirmed == (i >= 2) for f in out)  # min_hits 3
        for f in out:
            k = nearest_face(f, faces)
            assert seen.setdefault(f.track_id, k) == k  # an id never jumps to the other face
            if smooth == "kalman" and f.hits > 3:
                np.testing.assert_allclose(f.landmarks, truth_landmarks(faces[k]), atol=0.5)
    assert sorted(seen) == [1, 2]


def test_face_disappears_dies_after_max_misses():
    tr = FaceTracker(tracker_defaults(detect_every=8, max_misses=4, min_hits=1), decode=decode)  # one detection run
    face = (320.0, 240.0, 80.0)
    for i in range(10):
        out, _ = step(tr, i, [face])
        assert [f.track_id for f in out] == [1]
    for i in range(10, 20):
        out, ran = step(tr, i, [None])
        assert out == []
        assert ran == (i > 10)  # a lost track makes the detector run every frame from the next one
        alive = [t.track_id for t in tr.tracks]
        assert alive == ([1] if i < 13 else []), (i, alive)


def test_face_leaving_the_frame_is_lost():
    tr = FaceTracker(tracker_defaults(detect_every=100, max_misses=3), decode=decode)
    lost_at = None
    for i in range(60):
        face = (400.0 + 12 * i, 240.0, 80.0)
        out, _ = step(tr, i, [face], det_faces=[face] if face[0] < 640 else [None])
        if not out and lost_at is None:
            lost_at = i
    # centre beyond ~x = 640 + a little: less than 60% of the landmarks inside
    assert lost_at is not None and 640 <= 400 + 12 * lost_at <= 700, lost_at
    assert tr.tracks == []


def test_new_face_is_born_after_min_hits():
    tr = FaceTracker(tracker_defaults(detect_every=10, min_hits=3), decode=decode)
    a, b = (200.0, 240.0, 70.0), (450.0, 240.0, 70.0)
    for i in range(5):
        out, _ = step(tr, i, [a])
    assert [f.track_id for f in out] == [1] and out[0].is_confirmed
    assert not tr.need_detection(5)
    confirmed_at = None
    for i in range(5, 30):
        out, ran = step(tr, i, [a, b])
        new = [f for f in out if f.track_id != 1]
        if i < 12:  # the detector ran on frames 0-2 (track 1 was new), then every 10
            assert not new and not ran  # b is only found at the next scheduled detection
        else:
            assert len(new) == 1 and new[0].track_id == 2
            assert new[0].hits == i - 11 and new[0].age == i - 11
            assert ran == (i <= 14 or i == 24)  # b's first 3 frames, then every 10
            if new[0].is_confirmed and confirmed_at is None:
                confirmed_at = i
    assert confirmed_at == 14  # 3rd valid alignment


def test_false_detection_of_two_frames_is_never_confirmed():
    """The reported ghost: a face-like patch that the detector saw on frames 0 and 1 only (its score fell under the
    threshold on frame 2) while its crop still aligns. With the defaults it is never confirmed, while the real face
    present from frame 0 is confirmed on its 3rd frame."""
    tr = FaceTracker(tracker_defaults(), decode=decode)
    real, ghost = (200.0, 240.0, 80.0), (480.0, 120.0, 60.0)
    for i in range(20):
        out, ran = step(tr, i, [real, ghost], det_faces=[real, ghost] if i < 2 else [real])
        assert ran == (i <= 2 or i == 12)  # every frame while a track is new, then every 10
        assert [f.track_id for f in out if f.is_confirmed] == ([1] if i >= 2 else [])
        assert {t.track_id for t in tr.tracks} == ({1, 2} if i < 2 else {1})  # the ghost died on frame 2


def test_swapped_detection_order_keeps_ids():
    tr = FaceTracker(tracker_defaults(detect_every=1), decode=decode)
    faces = [(200.0, 200.0, 70.0), (420.0, 260.0, 60.0), (300.0, 380.0, 50.0)]
    first = None
    for i in range(12):
        order = np.array([2, 0, 1]) if i % 2 else np.array([1, 2, 0])
        out, ran = step(tr, i, faces, order=order)
        assert ran
        got = {f.track_id: nearest_face(f, faces) for f in out}
        first = first or got
        assert got == first and len(got) == 3


def test_detect_every_k_schedule():
    k = 4
    tr = FaceTracker(tracker_defaults(detect_every=k, min_hits=1), decode=decode)  # no new-track runs
    assert all(tr.need_detection(i) for i in range(3))  # no tracks: every frame
    ran_at, expected = [], []
    for i in range(3, 30):
        # what a look-ahead (file prefetch) predicts for the next frames must be what then happens
        expected.append([j for j in range(i, i + 6) if tr.detection_expected(j)])
        _, ran = step(tr, i, [(320.0, 240.0, 80.0)])
        if ran:
            ran_at.append(i)
    assert ran_at == list(range(3, 30, k))
    assert expected[0] == list(range(3, 9))  # no track yet: every frame
    for i, exp in zip(range(4, 30), expected[1:]):
        assert exp == [j for j in range(i, i + 6) if (j - 3) % k == 0], (i, exp)
    tr2 = FaceTracker(tracker_defaults(detect_every=1), decode=decode)
    assert all(step(tr2, i, [(320.0, 240.0, 80.0)])[1] for i in range(5))


def test_occluded_face_keeps_its_id_when_detected_again():
    tr = FaceTracker(tracker_defaults(detect_every=10, max_misses=6), decode=decode)
    face = (320.0, 240.0, 80.0)
    for i in range(5):
        step(tr, i, [face])
    for i in range(5, 9):  # a hand over the face: no alignment, no detection
        out, ran = step(tr, i, [None])
        assert out == [] and ran == (i > 5)
    out, _ = step(tr, 9, [face])
    assert [f.track_id for f in out] == [1]
    assert out[0].hits == 6


def test_drifting_track_is_recropped_from_the_detection():
    tr = FaceTracker(tracker_defaults(detect_every=5), decode=decode)
    face = (320.0, 240.0, 80.0)
    for i in range(5):
        step(tr, i, [face])
    t = tr.tracks[0]
    side = t.roi[2] - t.roi[0]
    t.roi = t.roi + np.array([0.35, 0.2, 0.35, 0.2], np.float32) * side  # drifted: IoU ~0.35 with the detection
    det = detect([face])
    todo = tr.rois_for_frame(det, frame_index=5)
    assert [tid for tid, _ in todo] == [1]
    np.testing.assert_allclose(todo[0][1], roi_from_box(det[0])[0])


def test_duplicate_tracks_are_merged():
    tr = FaceTracker(tracker_defaults(detect_every=10), decode=decode)
    face = (320.0, 240.0, 80.0)
    box = face_box(face)
    w = box[2] - box[0]
    boxes = np.stack([box, box + np.array([0.5, 0.1, 0.5, 0.1], np.float32) * w])  # ROI IoU between 0.3 and 0.6
    todo = tr.rois_for_frame((boxes, np.array([0.9, 0.8], np.float32)), frame_index=0)
    assert len(todo) == 2
    rois = np.stack([r for _, r in todo])
    params, lms = fake_align([face], rois)
    out = tr.update([t for t, _ in todo], params, lms, SHAPE)
    assert [f.track_id for f in out] == [1]  # both crops found the same face: the younger track goes
    assert [t.track_id for t in tr.tracks] == [1]


def test_static_face_with_moving_crops_is_not_moved():
    """ROI changes (re-crops) must not look like motion to the filter (crop_change before each update)."""
    tr = FaceTracker(tracker_defaults(detect_every=3), decode=decode)
    face = (320.0, 240.0, 80.0)
    truth = truth_landmarks(face)
    rng = np.random.default_rng(1)
    for i in range(40):
        tr.need_detection(i)
        todo = tr.rois_for_frame(detect([face]) if i % 3 == 0 else None, frame_index=i)
        rois = np.stack([r for _, r in todo]) + rng.normal(size=(1, 4)).astype(np.float32) * 6  # jittered crops
        params, lms = fake_align([face], rois)
        out = tr.update([t for t, _ in todo], params, lms, SHAPE, rois=rois)
        assert len(out) == 1
        np.testing.assert_allclose(out[0].landmarks, truth, atol=1e-2)


def test_smoothing_noisy_moving_face_cuts_jitter_without_lag():
    tr = FaceTracker(tracker_defaults(detect_every=10), param_scale=P_SCALE, decode=decode)
    rng = np.random.default_rng(2)
    raw, smooth, truth = [], [], []
    for i in range(150):
        face = (200.0 + 1.5 * i, 240.0 + 40 * np.sin(i / 25), 90.0)
        out, _ = step(tr, i, [face], noise=0.5, rng=rng)
        assert [f.track_id for f in out] == [1]
        raw.append(out[0].raw_landmarks)
        smooth.append(out[0].landmarks)
        truth.append(truth_landmarks(face))
    raw, smooth, truth = (np.array(a)[20:] for a in (raw, smooth, truth))
    j_raw, j_s = acceleration_jitter(raw), acceleration_jitter(smooth)
    assert j_s < j_raw / 2.5, (j_s, j_raw)
    assert nme(smooth, truth).mean() < nme(raw, truth).mean()
    lag = estimate_lag(smooth.reshape(len(smooth), -1), truth.reshape(len(truth), -1))
    assert abs(lag) < 0.5, lag


def test_update_protocol_errors_and_empty_frames():
    tr = FaceTracker(tracker_defaults(), decode=decode)
    assert tr.rois_for_frame(None, frame_index=0) == []
    assert tr.update([], np.zeros((0, 62)), np.zeros((0, 68, 3)), SHAPE) == []
    todo = tr.rois_for_frame((np.array([[100, 100, 180, 180]], np.float32), np.array([0.9], np.float32)), 1)
    with pytest.raises(ValueError):
        tr.update([99], np.zeros((1, 62)), np.zeros((1, 68, 3)), SHAPE)
    with pytest.raises(ValueError):
        tracker_defaults(smooth="median")
    assert todo[0][0] == 1


def test_kalman_config_reaches_the_tracks():
    cfg = tracker_defaults(kalman=kalman_defaults(engine="full"))
    tr = FaceTracker(cfg, param_scale=np.ones(62), decode=decode)
    step(tr, 0, [(320.0, 240.0, 80.0)])
    assert tr.tracks[0].smoother.config.engine == "full"


def test_track_the_detector_no_longer_sees_ends_after_n_scheduled_runs():
    tr = FaceTracker(tracker_defaults(detect_every=4, max_unmatched_detections=2, min_hits=1), decode=decode)
    face = (320.0, 240.0, 80.0)  # min_hits 1: confirmed on its one detection (with 3 it would die at frame 1)
    alive_at = {}
    for i in range(12):
        out, _ = step(tr, i, [face], det_faces=[face] if i == 0 else [None])  # a face only seen once
        alive_at[i] = [f.track_id for f in out]
    assert all(alive_at[i] == [1] for i in range(8))
    assert alive_at[8] == []  # not matched for 2 x 4 frames at the run of frame 8


@pytest.mark.parametrize("same_place", [True, False])
def test_scene_cut_recrops_on_the_cut_frame(same_place):
    """A cut: the tracks go lost and the detection of that very frame re-crops (same place: the track continues with a
    restarted filter) or replaces them (elsewhere: the old track is gone at once, a new one aligns this frame)."""
    tr = FaceTracker(tracker_defaults(detect_every=10, smooth="kalman"), param_scale=P_SCALE, convention="v1",
                     decode=decode)
    for i in range(12):
        out, _ = step(tr, i, [(320.0, 240.0, 70.0)])
    new = (330.0, 245.0, 72.0) if same_place else (150.0, 300.0, 60.0)
    tr.scene_cut()
    assert tr.need_detection(12) and all(t.lost for t in tr.tracks)
    out, ran = step(tr, 12, [new])
    assert ran and len(out) == 1 and len(tr.tracks) == 1
    assert nme(out[0].raw_landmarks[None].astype(np.float64), truth_landmarks(new)[None])[0] < 1e-3
    if same_place:
        assert out[0].track_id == 1 and set(out[0].reset_groups) == {"pose", "shape", "expression"}
    else:
        assert out[0].track_id == 2
    out, ran = step(tr, 13, [new])
    assert len(out) == 1 and ran == (not same_place)  # a new track (elsewhere) is checked on its first 3 frames
    step(tr, 14, [new])
    out, ran = step(tr, 15, [new])
    assert not ran and len(out) == 1  # no lost track left behind to keep the detector running every frame
