"""Scene-cut detector: quiet on real talking-head video, lighting and small motion; fires on a change of shot."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from tracking.cut import CutDetector


def _frames(path, n: int = 60) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


@pytest.fixture(scope="module")
def videos(assets_dir):
    root = assets_dir / "KwaiVGI" / "LivePortrait" / "assets" / "examples" / "driving"
    paths = [root / "d10.mp4", root / "d13.mp4"]  # not d11, d14: their backgrounds trained the face classifier
    if not all(p.is_file() for p in paths):
        pytest.skip("no shared videos")
    return [_frames(p) for p in paths]


def test_quiet_within_a_shot_and_fires_at_a_cut(videos):
    a, b = videos
    cd = CutDetector()
    assert not cd(a[0]) and cd.last_score == 0.0  # the first frame is never a cut
    within = [cd(f) for f in a[1:]]
    assert not any(within)
    assert max(CutDetector().score(f) for f in a) < 0.3
    assert cd(b[0]) and cd.last_score > 0.6  # a different video: a cut
    assert not cd(b[1])  # and the next frame of the new shot is not


def test_lighting_and_small_motion_are_not_cuts(videos):
    f = videos[0][10]
    cd = CutDetector()
    cd(f)
    assert not cd(cv2.convertScaleAbs(f, alpha=1.3, beta=25))  # brighter, more contrast
    cd(f)
    assert not cd(np.roll(f, 6, axis=1))  # a 6 px pan
    off = CutDetector(0.0)
    off(f)
    assert not off(videos[1][0])  # threshold 0: off
