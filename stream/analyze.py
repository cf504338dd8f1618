"""The analysis stage of one stream: detect (every K frames or when a track is lost) -> align -> track + smooth.

``FaceAnalyzer.analyze(frame, stats)`` returns the tracker's faces (``tracking.face.Face``, the one face record) of
the confirmed tracks, with smoothed parameters, landmarks, pose, box and ROI, to which it adds the ARKit blendshapes
(and dense vertices when ``dense``); ``analyze_all`` returns the faces of tentative
tracks too, with the tracker's verdicts, for the file pipeline's look-ahead (``stream.lookahead``: a confirmed
face keeps its first frames). The aligner is shared through ``AlignService`` so several streams batch their crops
together.

File sources call ``prefetch(frame)`` as each frame is decoded, ahead of ``analyze``: the detector starts on frames
that the schedule will run it on, on its own thread, so detection overlaps the network instead of stalling the
stream (the result is used only on exactly that frame, so the tracks are the same as detecting on demand).

``stills=True`` (unrelated photos, ``VideoInfo.stills``): every frame is analysed on its own: a fresh tracker per
frame (ids start at 1 in each image, nothing carried from the previous image), the detector on every frame, the
raw alignment (no smoothing, no confirmation delay).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from model.detect import FaceDetector
from stream.align_batcher import AlignService
from stream.config import BlendshapesSection, KalmanSection, RunConfig
from stream.frames import Frame
from stream.stats import Stats
from tracking.cut import CutDetector
from tracking.blendshape_tracker import BlendshapeTracker, NeutralConfig
from tracking.kalman import INIT_VEL_STD, GroupNoise, KalmanConfig
from tracking.face import Face
from tracking.tracker import FaceTracker, TrackerConfig


def kalman_config(k: KalmanSection) -> KalmanConfig:
    """The filters' ``KalmanConfig`` from the ``kalman.*`` keys (each group's start velocity: ``INIT_VEL_STD``)."""
    def group(name: str, measure: float, accel: float, gate: float) -> GroupNoise:
        return GroupNoise(meas_std=measure, accel_std=accel, init_vel_std=INIT_VEL_STD[name], gate=gate)

    return KalmanConfig(pose=group("pose", k.pose_measure, k.pose_accel, k.pose_gate),
                        shape=group("shape", k.shape_measure, k.shape_accel, k.shape_gate),
                        expression=group("expression", k.exp_measure, k.exp_accel, k.exp_gate),
                        eyelids=group("eyelids", k.eyelid_measure, k.eyelid_accel, k.eyelid_gate),
                        mouth_shape=group("mouth_shape", k.mouth_measure, k.mouth_accel, k.mouth_gate),
                        adapt_gate=k.adapt_gate)


def neutral_config(b: BlendshapesSection) -> NeutralConfig:
    """How each track learns its neutral face, from the ``blendshapes.*`` keys (seconds)."""
    return NeutralConfig(warmup_s=b.warmup, adapt_s=b.adapt)


def tracker_config(cfg: RunConfig) -> TrackerConfig:
    """The tracker's ``TrackerConfig`` from the run description (``detect_every``, ``smooth``, ``tracker.*`` (the
    same names), ``kalman.*``, ``blendshapes.*``): the one place the run's keys become the tracking layer's config."""
    return TrackerConfig(**dataclasses.asdict(cfg.tracker), detect_every=cfg.detect_every, smooth=cfg.smooth,
                         kalman=kalman_config(cfg.kalman), neutral=neutral_config(cfg.blendshapes))


@dataclass
class FrameFaces:
    """One frame's analysis: ``faces`` every validly aligned face (tentative tracks too), ``confirmed`` the ids of
    confirmed tracks, ``alive`` the ids of every track alive after the frame."""

    faces: list[Face]
    confirmed: set[int]
    alive: set[int]


class FaceAnalyzer:
    """Per-stream detection schedule, tracking and smoothing around a shared AlignService."""

    def __init__(self, service: AlignService, detector: FaceDetector, config: TrackerConfig, dense: bool = False,
                 detect_pool: ThreadPoolExecutor | None = None, async_detect: bool = False,
                 stills: bool = False) -> None:
        """``async_detect`` (live sources): while faces are tracked, the detector runs beside the alignment and its
        boxes are associated on the next frame, so a detector frame costs no latency; with no track it is awaited.
        ``stills``: each frame on its own (see the module docstring). While a new track waits for confirmation the
        detector is awaited in both modes (each of its first frames must be seen). ``lookahead``: how many frames
        ``Pipeline`` may hold a new track's first frames on file sources (``TrackerConfig.lookahead``; 0 with
        stills)."""
        from dataclasses import replace

        self.stills = stills
        self.lookahead = 0 if stills else config.lookahead
        if stills:
            async_detect = False
            config = replace(config, min_hits=1, smooth="none")
        self.service = service
        self.detector = detector
        self.dense = dense
        self.async_detect = async_detect
        self._pending: asyncio.Future | None = None
        al = service.aligner
        self.convention = al.convention
        self._morph = al.morph
        self.tracker = self._new_tracker(config)
        self.blendshapes = BlendshapeTracker(al.morph.sparse, config.neutral)  # per-track neutral faces
        self._cuts = CutDetector(config.cut_threshold)
        self._pool = detect_pool or ThreadPoolExecutor(1, thread_name_prefix="detect")
        self._open = True
        service.open_stream()
        self._prefetched: dict[int, asyncio.Future] = {}  # frame index -> detector job started by prefetch
        self.prefetch_used = 0  # detections that had started ahead (file sources)

    def _new_tracker(self, config: TrackerConfig) -> FaceTracker:
        al = self.service.aligner
        return FaceTracker(config, param_scale=al.param_std, convention=self.convention,
                           decode=lambda p, r, e=None: self._morph.landmarks(p, r, self.convention, e))

    def set_smoothing(self, smooth: str) -> None:
        """Switch smoothing (``kalman`` / ``none``): a change resets the current tracks (new ones start with it); the
        setting in force again changes nothing (a page sends every control with each change of any one: a new overlay
        mode must not drop the face until its track is confirmed again)."""
        from dataclasses import replace

        if smooth == self.tracker.config.smooth:
            return
        self.tracker = self._new_tracker(replace(self.tracker.config, smooth=smooth))

    def close(self) -> None:
        """Free the detection thread and leave the align service (idempotent)."""
        for job in self._prefetched.values():
            job.cancel()
        self._prefetched.clear()
        self._pool.shutdown(wait=False)
        if self._open:
            self._open = False
            self.service.close_stream()

    def _detect_timed(self, image: np.ndarray, stats: Stats) -> tuple[np.ndarray, np.ndarray]:
        det, ms = self._detect_ms(image)
        self._count_detection(stats, ms)
        return det

    def _detect_ms(self, image: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], float]:
        t0 = time.perf_counter()
        det = self.detector(image)
        return det, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def _count_detection(stats: Stats, ms: float) -> None:
        stats.add_stage("detect", ms)
        stats.detections += 1

    def prefetch(self, frame: Frame) -> None:
        """Start the detector on ``frame`` now if the schedule will probably run it there
        (``FaceTracker.detection_expected``). Call in frame order, from the event loop, before ``analyze`` of that
        frame; synchronous detection only (not ``async_detect``)."""
        if self.async_detect or not (self.stills or self.tracker.detection_expected(frame.index)):
            return
        loop = asyncio.get_running_loop()
        self._prefetched[frame.index] = loop.run_in_executor(self._pool, self._detect_ms, frame.image)

    def _take_prefetched(self, index: int) -> asyncio.Future | None:
        """The prefetched detector job of frame ``index`` (if any); jobs of earlier frames are dropped."""
        for i in [i for i in self._prefetched if i < index]:
            self._prefetched.pop(i).cancel()
        return self._prefetched.pop(index, None)

    async def _detections(self, frame: Frame, stats: Stats):
        """Detector boxes to associate on this frame, or None. On a scene cut the tracks are stale: the detector runs
        on this frame and is awaited (a detection still running on the last shot is dropped)."""
        loop = asyncio.get_running_loop()
        cut = self._cuts(frame.image) and bool(self.tracker.tracks)
        if cut:
            self.tracker.scene_cut()
            stats.cuts += 1
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
        confirming = self.tracker.confirming  # a new track: its first frames wait for the detector
        if self._pending is not None:
            if self._pending.done() or not self.tracker.tracks or confirming:  # ready, or needed now
                det, self._pending = await self._pending, None
                return det
            return None  # still running: the tracks carry on from their landmarks
        ahead = self._take_prefetched(frame.index) if self._prefetched else None
        if not self.tracker.need_detection(frame.index):
            if ahead is not None:
                ahead.cancel()
            return None
        if ahead is not None:
            det, ms = await ahead
            self._count_detection(stats, ms)
            self.prefetch_used += 1
            return det
        job = loop.run_in_executor(self._pool, self._detect_timed, frame.image, stats)
        if self.async_detect and self.tracker.tracks and not cut and not confirming:
            self._pending = job
            return None
        return await job

    async def analyze(self, frame: Frame, stats: Stats) -> list[Face]:
        """The confirmed faces of ``frame`` (live use: a new face is reported from its confirmation on)."""
        res = await self.analyze_all(frame, stats)
        return [r for r in res.faces if r.track_id in res.confirmed]

    async def analyze_all(self, frame: Frame, stats: Stats) -> FrameFaces:
        """Every validly aligned face of ``frame``, confirmed or not, with the tracker's verdicts (what
        ``stream.lookahead.ConfirmWindow`` needs to give files a confirmed face's first frames)."""
        image = frame.image
        if self.stills:  # a new photo: nothing of the previous one carries over
            self.tracker = self._new_tracker(self.tracker.config)
        det = await self._detections(frame, stats)
        todo = self.tracker.rois_for_frame(det, frame_index=frame.index)
        ids = [tid for tid, _ in todo]
        rois = np.array([r for _, r in todo], np.float32).reshape(-1, 4)
        t0 = time.perf_counter()
        res = await self.service.align(image, rois)
        t1 = time.perf_counter()
        stats.add_stage("align", (t1 - t0) * 1e3)
        faces = self.tracker.update(ids, res.params, res.landmarks, image.shape, time=frame.time, rois=res.roi,
                                    confidence=res.confidence, ext=res.ext)
        stats.note_confidence(self.tracker.dropped, [f.confidence for f in faces if f.is_confirmed])
        min_hits = self.tracker.config.min_hits
        live = self.tracker.tracks
        confirmed = {t.track_id for t in live if t.confirmed(min_hits)}
        if faces:  # what this stage computes for the whole frame at once, added to the tracker's faces
            params = np.stack([f.params for f in faces]).astype(np.float32)
            exts = None if faces[0].ext is None else np.stack([f.ext for f in faces]).astype(np.float32)
            if self.dense:
                rois = np.stack([f.roi for f in faces]).astype(np.float32)
                verts = self._morph.dense(params, rois, self.convention, exts).astype(np.float32)
                for f, v in zip(faces, verts):
                    f.vertices = v
            poses = np.stack([f.pose for f in faces])
            blend = self.blendshapes.update([f.track_id for f in faces], params, exts, poses, frame.time,
                                            learn=not self.stills)
            for f, b in zip(faces, blend):
                f.blendshape_values = b
        self.blendshapes.prune({t.track_id for t in live})
        stats.add_stage("smooth", (time.perf_counter() - t1) * 1e3)
        return FrameFaces(faces, confirmed, {t.track_id for t in live})
