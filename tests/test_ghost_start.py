"""A ghost at the start of a clip (issue 24): a face-like patch that the detector saw on the first frames only
(scores 0.99, 0.83, then 0.51, under the threshold) must never be reported, while the real face present from frame 0
keeps its frame-0 row. ``ConfirmWindow`` on its own, then the product's file pipeline (``open_run_stages`` +
``Pipeline``, as ``run`` and ``batch`` build it) on a synthetic video, and the live policy (reported from
confirmation on)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from model.roi import iou_matrix
from stream.config import load_config
from stream.lookahead import ConfirmWindow

CORNERS = [np.array(b, np.float32) for b in ([540, 380, 600, 440], [540, 10, 600, 70], [10, 380, 70, 440],
                                             [10, 10, 70, 70])]  # 60 px, like the reported "face" in the leaves
SCORES = (0.99, 0.83, 0.51)  # the ghost's detector scores on frames 0, 1, 2
THRESHOLD = 0.6  # detect_score: the third is not reported by the detector
# the face classifier was fooled by the leaves: take it out so that only the tracker's rules stand between the false
# detection and the outputs (on today's code the ghost is then reported from frame 0)
FOOLED = {"tracker.confirm_confidence": 0.0, "tracker.drop_confidence": 0.0}


@dataclass
class Row:
    track_id: int


def test_window_keeps_the_first_rows_of_a_confirmed_track_and_drops_a_dead_one():
    w: ConfirmWindow = ConfirmWindow(10)
    assert w.push("f0", [Row(1), Row(2)], confirmed=set(), alive={1, 2}) == []  # both new: held
    assert w.push("f1", [Row(1), Row(2)], confirmed=set(), alive={1, 2}) == []
    out = w.push("f2", [Row(1)], confirmed={1}, alive={1})  # 1 confirmed, 2 died unconfirmed
    assert [(item, [r.track_id for r in rows]) for item, rows in out] == [("f0", [1]), ("f1", [1]), ("f2", [1])]
    assert w.push("f3", [Row(1)], confirmed={1}, alive={1})[0][0] == "f3"  # nothing new: no wait
    assert w.dropped_rows == 2 and len(w) == 0


def test_window_waits_at_most_its_size_and_flushes_in_order():
    w: ConfirmWindow = ConfirmWindow(2)
    out = []
    for i in range(4):
        out += w.push(i, [Row(5)], confirmed=set(), alive={5})  # never confirmed, never dead
    assert [(i, rows) for i, rows in out] == [(0, []), (1, [])]  # waited 2 frames, then left without the row
    out = w.flush()
    assert [(i, rows) for i, rows in out] == [(2, []), (3, [])]
    live: ConfirmWindow = ConfirmWindow(0)  # no look-ahead: unconfirmed rows go at once
    assert [(i, [r.track_id for r in rows]) for i, rows in live.push(0, [Row(1), Row(2)], {1}, {1, 2})] == [(0, [1])]


class GhostDetector:
    """The real detector plus a 60 px box on the background on the clip's first frames (recognised by their
    pixels: the pipeline may run the detector ahead, on its own thread), with falling scores."""

    def __init__(self, inner, first_frames: list[np.ndarray], box: np.ndarray) -> None:
        self.inner, self.first, self.box = inner, first_frames, box
        self.kind = "ghost"

    def __call__(self, image):
        boxes, scores = self.inner(image)
        k = next((i for i, f in enumerate(self.first) if np.array_equal(f, image)), None)
        if k is not None and SCORES[k] >= THRESHOLD:
            boxes = np.concatenate([boxes.reshape(-1, 4), self.box[None]]).astype(np.float32)
            scores = np.concatenate([scores.reshape(-1), [SCORES[k]]]).astype(np.float32)
        return boxes, scores


@pytest.fixture(scope="module")
def engine(assets_dir):
    from stream.app import build_engine

    return build_engine(load_config(overrides={"weights": "3ddfa-v2-mb05", "assets": str(assets_dir)}))


def _clip(seconds: float = 1.2):
    """18 frames of the synthetic face (a scene cut at frame 11 starts a second track)."""
    from stream.synthetic import SyntheticSource

    return SyntheticSource(seconds=seconds, fps=15.0)


@pytest.fixture(scope="module")
def ghost(engine):
    """(GhostDetector, its box): a background corner the synthetic face never comes near."""
    ref = _clip()
    box = next(c for c in CORNERS if iou_matrix(c[None], ref.rois).max() == 0)
    firsts = [ref.render(i).copy() for i in range(len(SCORES))]
    return GhostDetector(engine.detector, firsts, box), box


def _on(box: np.ndarray, rec_box) -> bool:
    b = np.asarray(rec_box, np.float32)
    return float(iou_matrix(b[None], box[None])[0, 0]) > 0.1


async def _run_file(engine, detector, tmp_path, overrides: dict) -> dict:
    """The clip through the file pipeline of ``run``/``batch`` into a CSV and per-track NPZ meshes."""
    from stream.app import open_run_stages
    from stream.pipeline import Pipeline
    from stream.sinks import load_tracks

    cfg = load_config(overrides={"weights": "3ddfa-v2-mb05", "detect_every": 5, "tracks": str(tmp_path / "t.csv"),
                                 "meshes": str(tmp_path / "meshes"), **overrides})
    source = _clip()
    renderer, sinks, analyzer = open_run_stages(cfg, replace(engine, detector=detector), source, live=False)
    await Pipeline(source, analyzer, renderer, sinks, live=False).run()
    return load_tracks(tmp_path / "t.csv")


@pytest.mark.parametrize("overrides", [FOOLED, {}], ids=["classifier-fooled", "defaults"])
async def test_file_run_never_reports_the_ghost_and_keeps_frame_0(engine, ghost, tmp_path, overrides):
    det, box = ghost
    tracks = await _run_file(engine, det, tmp_path, overrides)
    n = len(_clip())
    rows = [(tid, int(f), b) for tid, t in tracks.items() for f, b in zip(t["frames"], t["boxes"])]
    assert not [r for r in rows if _on(box, r[2])], "the ghost was reported"
    assert sorted(f for _, f, _ in rows) == list(range(n))  # the real face on every frame, frame 0 included
    first = min(tracks, key=lambda t: tracks[t]["frames"][0])
    assert tracks[first]["frames"][0] == 0 and first != 1  # id 1 went to the ghost (the higher score), unreported
    assert sorted(p.name for p in (tmp_path / "meshes").iterdir()) == sorted(f"track{t}.npz" for t in tracks)


async def test_live_reports_a_new_face_from_its_confirmation_on(engine, ghost):
    """Live (no look-ahead): the real face is reported from its 3rd frame (2 frames to confirm), the ghost never."""
    from stream.analyze import FaceAnalyzer, tracker_config
    from stream.frames import Frame
    from stream.stats import Stats

    det, box = ghost
    src = _clip()
    cfg = load_config(overrides={"detect_every": 5, **FOOLED})
    an = FaceAnalyzer(engine.service, det, tracker_config(cfg))
    reported = []
    try:
        for i in range(8):
            reported.append(await an.analyze(Frame(i, i / 15.0, src.render(i)), Stats()))
    finally:
        an.close()
    assert [len(r) for r in reported] == [0, 0] + [1] * 6
    assert not [r for recs in reported for r in recs if _on(box, r.box)]
