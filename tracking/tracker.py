"""Multi-face tracker: detection schedule, IoU association (Hungarian), track life, per-track parameter smoothing.

One ``FaceTracker`` per video stream. Per frame, in this order::

    tracker = FaceTracker(config, param_scale=aligner.param_std, convention=aligner.convention,
                          decode=lambda p, r: aligner.morph.landmarks(p, r, aligner.convention))
    det = detector(frame) if tracker.need_detection(i) else None         # (boxes (N, 4), scores (N,)) or None
    todo = tracker.rois_for_frame(det, frame_index=i)                     # [(track_id, roi (4,)), ...]
    res = aligner.align(frame, np.array([r for _, r in todo]).reshape(-1, 4))
    faces = tracker.update([t for t, _ in todo], res.params, res.landmarks, frame.shape, time=ts, rois=res.roi,
                           confidence=res.confidence)
    for f in faces:                                                       # list[Face], by track id
        if f.is_confirmed: ... f.params (smoothed, decode with f.roi), f.landmarks (smoothed, when decode given),
                           f.confidence (the track's face confidence in [0, 1])

``config`` is a ``TrackerConfig`` (a run's: ``stream.analyze.tracker_config``). ``update`` must be called once per
processed frame, also with no faces (it counts the misses). Frames the caller
skips (dropped live frames) just leave a gap in ``frame_index``; the filters predict across it.

Policy (``TrackerConfig``):
- Detection runs every ``detect_every`` frames, and on any frame where there are no tracks, a track is lost or a
  track is new (fewer than ``min_hits`` hits: each of its first frames must be confirmed by the detector).
- Between detections each track is cropped from its previous landmarks (``tracking.crop_follow.next_roi``).
- On detection frames, detector boxes become ROIs (``model.roi.roi_from_box``) and are matched one-to-one to the
  tracks' ROIs by IoU (``scipy.optimize.linear_sum_assignment``), pairs under ``iou_threshold`` rejected. A matched
  track keeps its landmark ROI unless the IoU is under ``redetect_iou`` (drift) or the track was lost: then the
  detection's ROI replaces it. Unmatched detections start tentative tracks (new integer ids, never reused), unless
  they overlap an existing track by ``duplicate_iou`` or more.
- A track is confirmed after ``min_hits`` valid alignments, each on a frame where the detector saw it (a new track makes
  the detector run on every frame, and a tentative track dies at the first run that does not see it): a false detection
  on one or two frames never becomes a reported face. Callers report confirmed faces only; a file pipeline may hold a
  new track's first frames until it is confirmed (``stream.lookahead``). An alignment is invalid ("lost": out of frame,
  degenerate or collapsed landmark box, low IoU with its ROI; ``tracking.crop_follow.check_landmarks``); a lost track is not
  cropped again until a detection matches it. It dies after ``max_misses`` consecutive frames without a valid alignment,
  or when the detector has not seen it for ``max_unmatched_detections`` scheduled runs (a tentative track after one miss
  of either kind). Of two tracks on the same face (landmark boxes overlapping ``duplicate_iou``) the one with fewer hits
  is removed.
- Face confidence (``update(..., confidence=)``, the aligner's per-crop face classifier, ``model.confidence``): each
  track keeps an exponential average (``confidence_memory``) of its crops' scores. A track is confirmed only once its
  confidence reaches ``confirm_confidence`` (and ``min_hits``); it is deleted (never output again) as soon as its
  confidence falls under ``drop_confidence`` or its landmark box collapses under ``min_face_size`` px (sqrt of the
  box area). With ``confidence_keeps_tracks`` a confirmed track at ``confirm_confidence`` or more is not deleted
  because the detector stopped seeing it (the detector fails at profile; the classifier does not). Without
  confidence (None) these rules are off, except ``min_face_size``.
- Smoothing: each track has a ``ParamKalman`` (``tracking.kalman``; ``smooth="none"`` passes through) over the real
  62 parameters, reset at birth. Before each update the filter state is re-expressed in the crop of the ROI used this
  frame (``tracking.crop_follow.crop_change``), so ROI motion is not mistaken for head motion. The output for frame t is the
  filtered estimate after the update with frame t (no added delay).
- With ``decode`` the tracker decodes the smoothed parameters to landmarks (``Face.landmarks``) and takes the
  next ROI from them (steadier crops); without it the next ROI and ``Face.landmarks`` are the raw landmarks.

Each output face is the one face record (``tracking.face.Face``) that the stream's analyzer completes (dense
vertices, blendshapes) and every sink and the API read.

Parameters are the real 3DMM space of every backbone; the tracker never looks inside them except through the crop
map (``convention`` "v1"/"v2" of the aligner).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from model.expression_ext import N_EXT
from model.morphable import pose_from_params
from model.roi import box_from_landmarks, iou_matrix, roi_from_box
from tracking.blendshape_tracker import NeutralConfig
from tracking.face import Face
from tracking.kalman import GROUPS, TRACK_GROUPS, KalmanConfig, Smoother, make_smoother
from tracking.crop_follow import RoiConfig, check_landmarks, crop_change, next_roi

DecodeFn = Callable[..., np.ndarray]  # (params (N, 62), rois (N, 4)[, ext (N, N_EXT)]) -> landmarks (N, 68, 3)
Detections = tuple[np.ndarray, np.ndarray] | np.ndarray


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """Track life and detection schedule. The run settings have no defaults here: their values (chosen for 25-60 fps
    video) and comments are in configs/default.yaml, turned into this config by ``stream.analyze.tracker_config``;
    the library settings' defaults are in brackets.

    ``detect_every``: run the detector every K frames (<= 1: every frame); also whenever a track is lost or there is
    none. New faces therefore appear within K frames.
    ``iou_threshold``: least IoU between a track's ROI and a detection's ROI to match them.
    ``redetect_iou`` [0.5]: a matched track whose ROI overlaps its detection less is re-cropped from the detection.
    ``min_hits``: valid alignments, each matched by the detector, before a track is confirmed (1: a face is output
    from its first frame; 3 hides false detections of one or two frames). The detector runs on every frame while a
    track has fewer hits; files keep a confirmed face's first frames by looking ahead (``stream.lookahead``), live
    sources report it from its confirmation on.
    ``max_misses``: consecutive frames without a valid alignment before a confirmed track is deleted (short
    occlusions keep their id; the detector runs every frame meanwhile); a tentative track goes after 1.
    ``max_unmatched_detections``: a confirmed, not lost track is deleted at a detector run that does not see it
    when no detection has matched it for ``max_unmatched_detections * detect_every`` frames (0: never); a tentative
    track at its first unmatched run. Bounds the life of false positives (in units of scheduled detections, however
    often the detector runs for other reasons); it also ends tracks of faces the detector cannot see (strong
    profiles) after about ``max_unmatched_detections`` K frames.
    ``lookahead``: frames a file pipeline may hold a new track's first frames until it is confirmed
    (``stream.lookahead``; the tracker itself does not use it; 0: reported from confirmation on, as live).
    ``duplicate_iou`` [0.6]: overlap above which two tracks (or a detection and a track) are the same face.
    ``max_tracks`` [32]: no new tracks beyond this many.
    ``confirm_confidence``: least track confidence (in [0, 1]) to confirm a track (0: off).
    ``drop_confidence``: a track whose confidence falls under this is deleted (0: off); not above
    ``confirm_confidence`` (checked where the run's config is loaded, ``stream.config.load_config``).
    ``confidence_memory``: weight of the previous confidence in the per-track average (0: this frame only).
    ``min_face_size``: a track whose landmark box (sqrt of its area, px) is smaller is deleted (0: off).
    ``confidence_keeps_tracks``: a confirmed, confident track outlives ``max_unmatched_detections``.
    ``cut_threshold``: scene-cut threshold of the thumbnail change (``tracking.cut``; 0: off).
    ``smooth``: "kalman" or "none". ``kalman``, ``roi`` [``RoiConfig()``]: sub-configs. ``neutral``: how each track
    learns its neutral face for the ARKit blendshapes (``tracking.blendshape_tracker``; used by the stream's analyzer).
    """

    detect_every: int
    iou_threshold: float
    redetect_iou: float = 0.5
    min_hits: int
    lookahead: int
    max_misses: int
    max_unmatched_detections: int
    duplicate_iou: float = 0.6
    max_tracks: int = 32
    confirm_confidence: float
    drop_confidence: float
    confidence_memory: float
    min_face_size: float
    confidence_keeps_tracks: bool
    cut_threshold: float
    smooth: str
    kalman: KalmanConfig
    roi: RoiConfig = field(default_factory=RoiConfig)
    neutral: NeutralConfig

    def __post_init__(self) -> None:
        if self.smooth not in ("kalman", "none"):
            raise ValueError(f"smooth must be 'kalman' or 'none', got '{self.smooth}'")
        if self.min_hits < 1 or self.max_misses < 1 or self.max_unmatched_detections < 0 or self.lookahead < 0:
            raise ValueError("need min_hits >= 1, max_misses >= 1, max_unmatched_detections >= 0, lookahead >= 0")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1]: {self.iou_threshold}")
        for name in ("confirm_confidence", "drop_confidence", "confidence_memory"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]: {getattr(self, name)}")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size must be >= 0: {self.min_face_size}")


@dataclass
class Track:
    """Internal state of one track (read-only for callers: ``FaceTracker.tracks``)."""

    track_id: int
    smoother: Smoother
    roi: np.ndarray
    born: int
    hits: int = 0
    misses: int = 0
    last_matched: int | None = None
    lost: bool = False
    lost_reason: str = ""
    last_frame: int | None = None
    filter_roi: np.ndarray | None = None
    box: np.ndarray | None = None
    restart: bool = False  # a scene cut: the next valid alignment restarts the filter instead of updating it
    confidence: float | None = None  # average face confidence of its crops (None: no scores given)
    trusted: bool = False  # its confidence reached confirm_confidence once (stays until the track is deleted)

    def confirmed(self, min_hits: int) -> bool:
        return self.hits >= min_hits and self.trusted


def _parse_detections(detections: Detections | None) -> tuple[np.ndarray, np.ndarray] | None:
    if detections is None:
        return None
    if isinstance(detections, tuple):
        boxes, scores = detections
    else:
        boxes, scores = detections, None
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    return boxes, scores


class FaceTracker:
    """Multi-face tracker of one stream (see the module docstring for the per-frame protocol and the policy).

    ``param_scale (62,)``: std unit of each real parameter for the filters (``Aligner.param_std``); None = ones.
    ``convention``: the aligner's crop convention ("v1" DAMDNet, "v2" 3DDFA_V2).
    ``decode``: optional ``(params (N, 62), rois (N, 4)[, ext (N, N_EXT)]) -> landmarks (N, 68, 3)`` frame px, to
    output smoothed landmarks and crop the next frame from them (``ext`` is passed when the aligner gave one).
    """

    def __init__(self, config: TrackerConfig, param_scale: np.ndarray | None = None,
                 convention: str = "v1", decode: DecodeFn | None = None) -> None:
        self.config = config
        self.param_scale = None if param_scale is None else np.asarray(param_scale, dtype=np.float64)
        # the filters run on the 62 parameters and the extended expression (unit scale: 1 = a closed eye)
        self._filter_scale = np.concatenate([np.ones(62) if self.param_scale is None else self.param_scale.reshape(62),
                                             np.ones(N_EXT)])
        self.convention = convention
        self.decode = decode
        self._tracks: dict[int, Track] = {}
        self._next_id = 1
        self._frame = -1
        self._last_detection: int | None = None
        self._handed: dict[int, np.ndarray] = {}
        self.dropped = {"confidence": 0, "small": 0}  # tracks deleted for low confidence / a collapsed box

    # -- queries -----------------------------------------------------------------------------------------------------
    @property
    def tracks(self) -> list[Track]:
        """Live tracks (tentative, confirmed and lost), by id."""
        return [self._tracks[k] for k in sorted(self._tracks)]

    def scene_cut(self) -> None:
        """The frame about to start begins a new shot: every track's crop is stale. Tracks become lost (so only a
        detection on this frame re-crops them: call ``need_detection``, it says yes) and their filters restart at
        their next valid alignment instead of blending two shots."""
        for t in self._tracks.values():
            t.lost, t.lost_reason, t.restart = True, "scene cut", True

    @property
    def confirming(self) -> bool:
        """Is a new track short of ``min_hits``? (the detector must see each of its frames to confirm it)."""
        return any(t.hits < self.config.min_hits for t in self._tracks.values())

    def need_detection(self, frame_index: int) -> bool:
        """Should the detector run on frame ``frame_index``? (no tracks, a lost or new track, or K frames since the
        last)."""
        since = self._frames_since_detection(frame_index)
        return since is None or since >= self.config.detect_every

    def detection_expected(self, frame_index: int) -> bool:
        """Will the detector run on ``frame_index``, a frame not started yet, if tracking goes on as it is now? (no
        tracks, a lost or new track: every frame; else every K frames counted from the last detection)."""
        since = self._frames_since_detection(frame_index)
        return since is None or (since > 0 and since % self.config.detect_every == 0)

    def _frames_since_detection(self, frame_index: int) -> int | None:
        """Frames from the last detection to ``frame_index``; None where every frame needs the detector now (no
        tracks, a lost track, a new track short of ``min_hits``, ``detect_every`` <= 1, no detection yet)."""
        if not self._tracks or self.confirming or any(t.lost for t in self._tracks.values()):
            return None
        if self.config.detect_every <= 1 or self._last_detection is None:
            return None
        return frame_index - self._last_detection

    # -- per frame ---------------------------------------------------------------------------------------------------
    def rois_for_frame(self, detections: Detections | None = None,
                       frame_index: int | None = None) -> list[tuple[int, np.ndarray]]:
        """Start a frame: the ROIs to align, as ``[(track_id, roi (4,) float32), ...]``.

        ``detections``: None when the detector did not run, else ``(boxes (N, 4), scores (N,))`` (or just boxes) in
        frame px. Returns the tracked ROIs (from the last landmarks) of the live, not lost tracks, the detection ROIs
        that re-crop drifting or lost tracks, and the ROIs of new tracks born from unmatched detections.
        ``frame_index`` defaults to the previous frame's + 1.
        """
        fi = self._frame + 1 if frame_index is None else int(frame_index)
        self._frame = fi
        det = _parse_detections(detections)
        if det is not None:
            self._associate(*det, fi)
        self._handed = {t.track_id: t.roi.copy() for t in self.tracks if not t.lost}
        return list(self._handed.items())

    def _associate(self, boxes: np.ndarray, scores: np.ndarray, fi: int) -> None:
        cfg = self.config
        self._last_detection = fi
        det_rois = roi_from_box(boxes) if len(boxes) else np.zeros((0, 4), np.float32)
        tracks = self.tracks
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if tracks and len(det_rois):
            iou = iou_matrix(np.stack([t.roi for t in tracks]), det_rois)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] < cfg.iou_threshold:
                    continue
                t = tracks[r]
                matched_t.add(t.track_id)
                matched_d.add(int(c))
                if t.lost or iou[r, c] < cfg.redetect_iou:
                    t.roi = det_rois[c].astype(np.float32).copy()
                    t.lost = False
                    t.lost_reason = ""
        for t in tracks:
            if t.track_id in matched_t:
                t.last_matched = fi
                continue
            if t.restart:  # lost at a scene cut: its shot ended and no face of the new one matches it
                del self._tracks[t.track_id]
                continue
            if t.lost:  # a lost track lives on its miss count (max_misses)
                continue
            if not t.confirmed(cfg.min_hits):
                del self._tracks[t.track_id]
                continue
            if cfg.confidence_keeps_tracks and t.confidence is not None and cfg.confirm_confidence > 0 \
                    and t.confidence >= cfg.confirm_confidence:
                continue  # the classifier still sees a face where the detector does not (profile)
            unseen = fi - (t.born if t.last_matched is None else t.last_matched)
            if cfg.max_unmatched_detections and unseen >= cfg.max_unmatched_detections * max(cfg.detect_every, 1):
                del self._tracks[t.track_id]
        live = self.tracks
        for c in np.argsort(-scores, kind="stable"):
            if int(c) in matched_d or len(self._tracks) >= cfg.max_tracks:
                continue
            if live and float(iou_matrix(det_rois[c][None], np.stack([t.roi for t in live])).max()) >= cfg.duplicate_iou:
                continue
            t = Track(self._next_id, make_smoother(cfg.smooth, self._filter_scale, cfg.kalman, TRACK_GROUPS),
                      det_rois[c].astype(np.float32).copy(), born=fi)
            self._tracks[t.track_id] = t
            live.append(t)
            self._next_id += 1

    def update(self, track_ids: Sequence[int], params: np.ndarray, landmarks: np.ndarray,
               frame_shape: tuple[int, ...], time: float | None = None,
               rois: np.ndarray | None = None, confidence: np.ndarray | None = None,
               ext: np.ndarray | None = None) -> list[Face]:
        """Finish the frame with the aligner's results for the ROIs ``rois_for_frame`` gave.

        track_ids (N,) in any order; params (N, 62) real; landmarks (N, 68, 3) frame px (raw, from ``params``);
        frame_shape (H, W[, C]); time: the frame's timestamp (s), carried to the output; rois (N, 4): the ROIs the
        aligner actually cropped (``AlignResult.roi``, rounded), default the ROIs handed out; confidence (N,) in
        [0, 1]: each crop's face score (``AlignResult.confidence``), None: no confidence rules; ext (N, N_EXT): the
        extended expression (``AlignResult.ext``), smoothed with the parameters, or None.
        Returns the validly aligned faces of this frame (``tracking.face.Face``: smoothed params, landmarks, ext and
        their pose, the frame, the raw values), by track id (tentative ones too: see ``is_confirmed``);
        tracks deleted for low confidence or a collapsed box on this frame are not among them.
        """
        cfg = self.config
        fi = self._frame
        ids = [int(i) for i in track_ids]
        params = np.asarray(params, dtype=np.float32).reshape(len(ids), 62)
        landmarks = np.asarray(landmarks, dtype=np.float32)
        landmarks = landmarks.reshape(len(ids), -1, landmarks.shape[-1]) if ids else landmarks.reshape(0, 68, 3)
        if rois is not None:
            rois = np.asarray(rois, dtype=np.float32).reshape(len(ids), 4)
        if confidence is not None:
            confidence = np.asarray(confidence, dtype=np.float32).reshape(len(ids))
        if ext is not None:
            ext = np.asarray(ext, dtype=np.float32).reshape(len(ids), N_EXT)
        faces: dict[int, Face] = {}
        dropped: list[int] = []
        for k, tid in enumerate(ids):
            if tid not in self._handed or tid not in self._tracks:
                raise ValueError(f"track {tid} was not given out by rois_for_frame for this frame")
            t = self._tracks[tid]
            roi = rois[k] if rois is not None else self._handed[tid]
            reason = "non-finite parameters" if not np.all(np.isfinite(params[k])) else \
                check_landmarks(landmarks[k], roi, frame_shape, cfg.roi)
            if reason:
                t.lost, t.lost_reason = True, reason
                continue
            face = self._observe(t, params[k], landmarks[k], roi, frame_shape, fi, time,
                                 None if confidence is None else float(confidence[k]),
                                 None if ext is None else ext[k])
            if self._collapsed_or_doubtful(t):
                dropped.append(tid)
                continue
            faces[tid] = face
        for tid in dropped:
            del self._tracks[tid]
        for t in self.tracks:
            if t.track_id in faces:
                continue
            t.misses += 1
            t.lost = True
            t.lost_reason = t.lost_reason or "not aligned"
            if t.misses >= (cfg.max_misses if t.confirmed(cfg.min_hits) else 1):
                del self._tracks[t.track_id]
        self._remove_duplicates(faces)
        self._handed = {}
        out = [faces[k] for k in sorted(faces)]
        if out:  # the smoothed poses of the frame's faces in one batch
            for f, pose in zip(out, pose_from_params(np.stack([f.params for f in out]))):
                f.pose = pose
        return out

    def _collapsed_or_doubtful(self, t: Track) -> bool:
        """Should track ``t`` be deleted after this frame's alignment? (box under ``min_face_size``, confidence
        under ``drop_confidence``)."""
        cfg = self.config
        b = t.box
        if cfg.min_face_size > 0 and b is not None and \
                float(np.sqrt(max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0))) < cfg.min_face_size:
            self.dropped["small"] += 1
            return True
        if t.confidence is not None and cfg.drop_confidence > 0 and t.confidence < cfg.drop_confidence:
            self.dropped["confidence"] += 1
            return True
        return False

    def _observe(self, t: Track, p: np.ndarray, lm: np.ndarray, roi: np.ndarray, frame_shape: tuple[int, ...],
                 fi: int, time: float | None, conf: float | None = None,
                 ext: np.ndarray | None = None) -> Face:
        cfg = self.config
        if conf is not None:
            m = cfg.confidence_memory
            t.confidence = conf if t.confidence is None else m * t.confidence + (1 - m) * conf
            if t.confidence >= cfg.confirm_confidence:
                t.trusted = True
        else:
            t.trusted = True
        sm = t.smoother
        z = np.concatenate([p, np.zeros(N_EXT, np.float32) if ext is None else ext])
        if t.restart:
            both = sm.reset(z)
            t.restart = False
        else:
            if sm.initialized and t.filter_roi is not None:
                scale, offset = crop_change(t.filter_roi, roi, self.convention)
                sm.change_frame(np.concatenate([scale, np.ones(N_EXT)]), np.concatenate([offset, np.zeros(N_EXT)]))
            dt = 1.0 if t.last_frame is None else float(fi - t.last_frame)
            both = sm.update(z, dt)
        smoothed = both[:62]
        ext_s = None if ext is None else both[62:].copy()
        t.filter_roi = np.asarray(roi, dtype=np.float32).copy()
        lm_s = None
        if self.decode is not None:
            args = (smoothed[None], t.filter_roi[None]) + (() if ext_s is None else (ext_s[None],))
            lm_s = np.asarray(self.decode(*args), dtype=np.float32)[0]
        lm_used = lm if lm_s is None else lm_s
        t.roi = next_roi(lm_used, roi, frame_shape, self.config.roi)
        t.box = box_from_landmarks(lm_used[None])[0]
        if t.hits >= cfg.min_hits or fi in (t.born, t.last_matched):
            t.hits += 1  # a new track's hits count only on frames where the detector saw it
        t.misses = 0
        t.lost, t.lost_reason = False, ""
        t.last_frame = fi
        reset = tuple(g for g in sm.last_reset if ext is not None or g in GROUPS)
        return Face(box=t.box.copy(), landmarks=lm.copy() if lm_s is None else lm_s,
                    pose=np.zeros(6, np.float32), params=smoothed,  # pose: set in update, all at once
                    roi=t.filter_roi.copy(), track_id=t.track_id, confidence=t.confidence, ext=ext_s,
                    frame=fi, time=time, is_confirmed=t.confirmed(self.config.min_hits), age=fi - t.born + 1,
                    hits=t.hits, reset_groups=reset, raw_params=p.copy(), raw_landmarks=lm.copy(), raw_confidence=conf,
                    raw_ext=None if ext is None else ext.copy())

    def _remove_duplicates(self, faces: dict[int, Face]) -> None:
        ids = sorted(faces)
        if len(ids) < 2:
            return
        iou = iou_matrix(np.stack([faces[i].box for i in ids]), np.stack([faces[i].box for i in ids]))
        gone: set[int] = set()
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                if ids[a] in gone or ids[b] in gone or iou[a, b] < self.config.duplicate_iou:
                    continue
                ta, tb = self._tracks[ids[a]], self._tracks[ids[b]]
                loser = tb if (ta.hits, -ta.track_id) >= (tb.hits, -tb.track_id) else ta
                gone.add(loser.track_id)
        for i in gone:
            del self._tracks[i]
            del faces[i]

    def reset(self) -> None:
        """Forget every track (ids keep counting up)."""
        self._tracks.clear()
        self._handed = {}
        self._last_detection = None
