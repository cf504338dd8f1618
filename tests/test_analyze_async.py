"""Live analysis with the detector off the critical path: while a face is tracked, a slow detector does not delay
frames, its boxes are used on a later frame, and the face stays tracked; file mode still waits for it."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from stream.config import load_config
from stream.frames import Frame
from stream.stats import Stats


class SlowDetector:
    """Wraps a detector and sleeps first (a slow detector on a busy machine)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.calls = inner, delay, 0
        self.kind = "slow"

    def __call__(self, image):
        self.calls += 1
        time.sleep(self.delay)
        return self.inner(image)


@pytest.fixture(scope="module")
def engine(assets_dir):
    from stream.app import build_engine

    return build_engine(load_config(overrides={"weights": "3ddfa-v2-mb05", "assets": str(assets_dir)}))


@pytest.fixture(scope="module")
def face(assets_dir):
    img = cv2.imread(str(assets_dir / "LeiJiangJNU/DAMDNet/imgs/obama.jpg"))
    return cv2.resize(img, (480, int(img.shape[0] * 480 / img.shape[1])))


@pytest.mark.parametrize("async_detect", [True, False])
async def test_detector_latency_hidden_only_when_async(engine, face, async_detect):
    from stream.analyze import FaceAnalyzer, tracker_config

    cfg = load_config(overrides={"detect_every": 3})
    det = SlowDetector(engine.detector, 0.25)
    an = FaceAnalyzer(engine.service, det, tracker_config(cfg), async_detect=async_detect)
    stats = Stats()
    times, counts = [], []
    try:
        for i in range(10):
            t0 = time.perf_counter()
            faces = await an.analyze(Frame(i, i / 30, face.copy()), stats)
            times.append(time.perf_counter() - t0)
            counts.append(len(faces))
    finally:
        an.close()
    assert min(times[:3]) >= 0.25, times  # no track yet, then the new track's first frames: awaited in both modes
    assert counts == [0, 0] + [1] * 8, counts  # confirmed on its 3rd frame (min_hits), then tracked on every frame
    assert det.calls >= 4  # the detector ran again on its schedule
    later = sorted(times[3:])
    if async_detect:
        assert later[-1] < 0.2, times  # no frame waited for the slow detector
    else:
        assert later[-1] >= 0.25, times  # file mode: detector frames wait for it


async def test_the_smoothing_in_force_again_keeps_the_tracks(engine, face):
    """A browser sends every control with each change (a new overlay mode comes with smooth=true): the same smoothing
    again keeps the confirmed track (the face stays on the next frame); a change of smoothing starts the tracks anew
    (the face is confirmed again over min_hits frames)."""
    from stream.analyze import FaceAnalyzer, tracker_config

    cfg = load_config(overrides={"detect_every": 3})
    an = FaceAnalyzer(engine.service, engine.detector, tracker_config(cfg), async_detect=False)
    stats = Stats()
    try:
        counts = [len(await an.analyze(Frame(i, i / 30, face.copy()), stats)) for i in range(4)]
        assert counts == [0, 0, 1, 1], counts
        tracker = an.tracker
        an.set_smoothing(cfg.smooth)
        assert an.tracker is tracker
        assert len(await an.analyze(Frame(4, 4 / 30, face.copy()), stats)) == 1
        an.set_smoothing("none" if cfg.smooth == "kalman" else "kalman")
        assert an.tracker is not tracker
        assert len(await an.analyze(Frame(5, 5 / 30, face.copy()), stats)) == 0
    finally:
        an.close()
