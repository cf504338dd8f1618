"""The real pipeline (detector, peer network, tracker, Kalman) on the synthetic video whose truth is known."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stream.analyze import FaceAnalyzer, tracker_config
from stream.app import build_engine
from stream.config import load_config
from stream.pipeline import Job, Pipeline
from stream.sources import open_source
from tracking.jitter import estimate_lag, nme, nmj_per_frame

pytestmark = pytest.mark.slow

SECONDS = 6.0


class Collect:
    def __init__(self) -> None:
        self.faces: dict[int, list] = {}

    def write_job(self, job: Job) -> None:
        self.faces[job.frame.index] = list(job.faces)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def runs(assets_dir: Path) -> dict:
    cfg = load_config(None, {"weights": "3ddfa-v2-mb05", "device": "cpu", "progress": False})
    engine = build_engine(cfg)
    opts = {**dataclasses.asdict(cfg.synthetic), "seconds": SECONDS}
    out = {}
    try:
        for smooth in ("none", "kalman"):
            source = open_source("synthetic", **opts)
            truth = (source.ground_truth.astype(np.float64), list(source.cuts))
            sink = Collect()
            analyzer = FaceAnalyzer(engine.service, engine.detector, tracker_config(cfg.replace(smooth=smooth)))
            stats = asyncio.run(Pipeline(source, analyzer, None, [sink], live=False).run())
            out[smooth] = (sink.faces, stats)
    finally:
        engine.service.close()
    out["truth"] = truth
    return out


def _best(faces: dict[int, list], gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.full(gt.shape, np.nan)
    err = np.full(len(gt), np.inf)
    for i in range(len(gt)):
        for f in faces.get(i, []):
            e = float(nme(f.landmarks[None].astype(np.float64), gt[i:i + 1])[0])
            if e < err[i]:
                err[i], pred[i] = e, f.landmarks
    return pred, err


def test_every_frame_processed_and_the_face_followed(runs: dict) -> None:
    gt, cuts = runs["truth"]
    assert len(cuts) == 1
    for smooth in ("none", "kalman"):
        faces, stats = runs[smooth]
        assert stats.frames_in == stats.frames_out == len(gt) and stats.total_dropped == 0
        _, err = _best(faces, gt)
        assert np.median(err) < 4.0, (smooth, np.median(err))
        assert np.percentile(err, 95) < 7.0, (smooth, np.percentile(err, 95))
        # the cut is seen on its own frame: detection re-crops there, so no frame after it is off the face
        assert np.all(err[cuts[0]:] < 10.0), (smooth, err[cuts[0]:cuts[0] + 4])
        assert stats.cuts == 1, stats.cuts
        # one track before the cut (ids may change at the cut, never in the middle of a shot)
        ids = {f.track_id for i in range(cuts[0]) for f in faces[i]}
        assert len(ids) == 1, ids


def test_kalman_lowers_jitter_without_lag(runs: dict) -> None:
    gt, cuts = runs["truth"]
    raw, _ = _best(runs["none"][0], gt)
    kal, _ = _best(runs["kalman"][0], gt)
    c = cuts[0]
    a, b = 10, c - 1  # the first shot, settled
    j_raw = nmj_per_frame(raw[a:b], gt[a:b])
    j_kal = nmj_per_frame(kal[a:b], gt[a:b])
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    # pose and shape (contour, brows, nose: points 0-35) are smoothed hard; the lids and lips lightly (their filter
    # groups keep a blink's depth), and the synthetic face never blinks, so there all their motion is noise
    r_raw = nmj_per_frame(raw[a:b, :36], gt[a:b, :36])
    r_kal = nmj_per_frame(kal[a:b, :36], gt[a:b, :36])
    # on this first shot the smoothed pose/shape jitter is 0.72-0.73 % of the face, the raw 0.89-0.94 % (the raw
    # moves with the expression stage's network: a steadier raw leaves a smaller ratio to win), so both: the
    # smoothed output stays low, and well under the raw
    assert rms(r_kal) < 0.76 and rms(r_kal) < 0.85 * rms(r_raw), (rms(r_kal), rms(r_raw))
    assert rms(j_kal) < 0.9 * rms(j_raw), (rms(j_kal), rms(j_raw))
    e_raw = np.mean(nme(raw[a:b], gt[a:b]))
    e_kal = np.mean(nme(kal[a:b], gt[a:b]))
    assert e_kal < 1.1 * e_raw
    flat = lambda x: x[a:b, :, :2].reshape(b - a, -1)  # noqa: E731
    assert abs(estimate_lag(flat(kal), flat(raw))) < 0.5  # no added frames of delay
