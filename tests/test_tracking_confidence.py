"""Tracker rules on face confidence and box size (tracking.tracker): a track is confirmed only when its confidence
holds, dropped when it falls or when its box collapses; an unconfirmed doubtful track is never reported. Uses the
fake world of test_tracking_tracker (exact fake aligner and detector); the confidence per crop is given by the test."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_tracking_tracker import SHAPE, decode, detect, fake_align
from tests.run_defaults import tracker_defaults
from tracking.tracker import FaceTracker


def run(tracker: FaceTracker, i: int, faces: list, conf_of, det_faces: list | None = None):
    """One frame; ``conf_of(roi) -> float`` scores each crop. Returns the faces out."""
    det = detect(faces if det_faces is None else det_faces) if tracker.need_detection(i) else None
    todo = tracker.rois_for_frame(det, frame_index=i)
    ids = [t for t, _ in todo]
    rois = np.array([r for _, r in todo], np.float32).reshape(-1, 4)
    params, lms = fake_align(faces, rois)
    conf = np.array([conf_of(r) for r in rois], np.float32)
    return tracker.update(ids, params, lms, SHAPE, time=i / 30, rois=rois, confidence=conf)


def test_a_track_whose_confidence_falls_is_dropped():
    tr = FaceTracker(tracker_defaults(detect_every=5, confirm_confidence=0.5, drop_confidence=0.3,
                                   confidence_memory=0.5, min_hits=1), decode=decode)  # confirmed on frame 0
    face = (320.0, 240.0, 80.0)
    score = {"v": 0.95}
    for i in range(10):
        out = run(tr, i, [face], lambda r: score["v"])
        assert [f.track_id for f in out] == [1] and out[0].is_confirmed
        assert out[0].confidence == pytest.approx(0.95, abs=1e-6) and out[0].raw_confidence == pytest.approx(0.95)
    score["v"] = 0.05  # the crop no longer holds a face (the classifier says so; the detector still does)
    out = run(tr, 10, [face], lambda r: score["v"])
    assert [f.track_id for f in out] == [1] and out[0].confidence == pytest.approx(0.5, abs=1e-6)  # 0.5*.95+.5*.05
    out = run(tr, 11, [face], lambda r: score["v"])
    assert out == [] and tr.tracks == [] and tr.dropped["confidence"] == 1  # 0.275 < 0.3: gone at once
    # a new track of the same detection is born but, still doubtful, is never reported
    for i in range(12, 30):
        assert run(tr, i, [face], lambda r: score["v"]) == []


def test_a_collapsing_box_is_dropped():
    tr = FaceTracker(tracker_defaults(detect_every=100, min_face_size=20.0, drop_confidence=0.0,
                                   confirm_confidence=0.0), decode=decode)
    sizes = []
    for i in range(40):
        face = (320.0, 240.0, 80.0 * 0.85 ** i)
        out = run(tr, i, [face], lambda r: 0.9)
        if not out:
            break
        b = out[0].box
        sizes.append(float(np.sqrt((b[2] - b[0]) * (b[3] - b[1]))))
    assert sizes and min(sizes) >= 20.0 and tr.dropped["small"] == 1
    assert tr.tracks == []
    # without the rule the same shrinking face is followed down to a few pixels
    tr = FaceTracker(tracker_defaults(detect_every=100, min_face_size=0.0), decode=decode)
    last = None
    for i in range(20):
        out = run(tr, i, [(320.0, 240.0, 80.0 * 0.85 ** i)], lambda r: 0.9)
        last = out[0].box if out else last
    assert np.sqrt((last[2] - last[0]) * (last[3] - last[1])) < 10


def test_unconfirmed_low_confidence_track_is_never_reported():
    tr = FaceTracker(tracker_defaults(detect_every=3, confirm_confidence=0.6, drop_confidence=0.2, min_hits=1),
                     decode=decode)  # min_hits 1: only confidence holds the ghost back
    real, ghost = (200.0, 240.0, 80.0), (480.0, 240.0, 70.0)

    def conf(roi):  # the ghost's crops hold no face: mid-low scores, never reaching the confirm threshold
        return 0.45 if (roi[0] + roi[2]) / 2 > 340 else 0.9

    reported = set()
    for i in range(40):
        out = run(tr, i, [real, ghost], conf)
        reported |= {f.track_id for f in out}
        assert all(f.is_confirmed for f in out if (f.box[0] + f.box[2]) / 2 < 340)
        assert not any(f.is_confirmed for f in out if (f.box[0] + f.box[2]) / 2 > 340)
    assert any(not t.confirmed(1) for t in tr.tracks)  # the ghost's track lives on, tentative


def test_confident_track_outlives_the_detector_at_profile():
    """The detector stops seeing the face (profile) but the crop still holds a face: kept with
    confidence_keeps_tracks, ended after max_unmatched_detections runs without it."""
    face = (320.0, 240.0, 80.0)
    for keeps, alive in ((True, True), (False, False)):
        tr = FaceTracker(tracker_defaults(detect_every=4, max_unmatched_detections=2, confidence_keeps_tracks=keeps,
                                       min_hits=1), decode=decode)  # confirmed on its one detection
        out = []
        for i in range(30):
            out = run(tr, i, [face], lambda r: 0.9, det_faces=[face] if i == 0 else [None])
        assert bool(out) == alive


def test_confidence_config_is_validated():
    """Ranges here; drop <= confirm where the run's config is loaded (tests/test_confidence_config.py)."""
    with pytest.raises(ValueError, match="confirm_confidence"):
        tracker_defaults(confirm_confidence=1.5)
    with pytest.raises(ValueError, match="min_face_size"):
        tracker_defaults(min_face_size=-1)
