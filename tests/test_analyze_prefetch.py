"""File sources start the detector ahead (FaceAnalyzer.prefetch): the same tracks as detecting on demand, with the
prefetched detections really used, and nothing left running at the end."""
from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from stream.analyze import FaceAnalyzer, tracker_config
from stream.app import build_engine
from stream.config import load_config
from stream.frames import Frame
from stream.pipeline import Pipeline
from stream.sources import open_source
from tests.test_pipeline_synthetic import Collect


class ListSource:
    """Frames from a list (a face-less stretch, then a face)."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images, self.i = images, 0

    def read(self) -> Frame | None:
        if self.i >= len(self.images):
            return None
        self.i += 1
        return Frame(self.i - 1, (self.i - 1) / 30, self.images[self.i - 1].copy())

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def setup(assets_dir):
    cfg = load_config(None, {"weights": "3ddfa-v2-mb05", "device": "cpu", "progress": False, "detect_every": 4,
                             "assets": str(assets_dir)})
    engine = build_engine(cfg)
    yield cfg, engine
    engine.service.close()


def run(cfg, engine, source, prefetch: bool):
    sink = Collect()
    analyzer = FaceAnalyzer(engine.service, engine.detector, tracker_config(cfg))
    pipeline = Pipeline(source, analyzer, None, [sink], live=False)
    if not prefetch:
        pipeline._prefetch = None
    stats = asyncio.run(pipeline.run())
    assert not analyzer._prefetched  # nothing left behind
    return sink.faces, stats, analyzer


@pytest.mark.slow
def test_prefetch_gives_the_same_tracks_as_detecting_on_demand(setup):
    cfg, engine = setup
    out = {}
    for prefetch in (True, False):
        source = open_source("synthetic", **{**dataclasses.asdict(cfg.synthetic), "seconds": 3.0})
        out[prefetch] = run(cfg, engine, source, prefetch)
    (fa, sa, aa), (fb, sb, ab) = out[True], out[False]
    assert aa.prefetch_used >= 0.8 * sa.detections and sa.detections >= 90 // 4  # the prefetched jobs were used
    assert ab.prefetch_used == 0
    assert sa.detections == sb.detections and sa.cuts == sb.cuts == 1
    assert sorted(fa) == sorted(fb) == list(range(90))
    for i in fa:
        assert [f.track_id for f in fa[i]] == [f.track_id for f in fb[i]], i
        for x, y in zip(fa[i], fb[i]):
            assert np.array_equal(x.params, y.params) and np.array_equal(x.box, y.box), i  # exactly the same


def test_prefetch_on_frames_without_a_face_then_a_face(setup, assets_dir):
    import cv2

    cfg, engine = setup
    face = cv2.imread(str(assets_dir / "LeiJiangJNU/DAMDNet/imgs/obama.jpg"))
    face = cv2.resize(face, (480, int(face.shape[0] * 480 / face.shape[1])))
    images = [np.full_like(face, 90)] * 6 + [face] * 6
    faces, stats, analyzer = run(cfg, engine, ListSource(images), True)
    assert [len(faces[i]) for i in range(12)] == [0] * 6 + [1] * 6
    assert stats.detections >= 7  # every face-less frame, and the first with the face
    assert analyzer.prefetch_used >= 6
