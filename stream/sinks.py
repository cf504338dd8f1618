"""Output sinks: annotated video, per-face tracks (CSV / JSONL / NPZ) and dense meshes.

All sinks write under a hidden temporary name in the destination folder and rename on ``close()``
(:mod:`stream.atomic`): an interrupted run leaves complete files, never half ones. ``close()`` is idempotent and is
what the pipeline calls on Ctrl-C too, so closing after a partial run gives a valid file of the frames written so
far; ``abort()`` discards instead. Sinks are synchronous and thread-safe (a lock serialises write/close), meant to
be called from an executor thread.

Track sinks write one row per frame x track. A frame without faces (``records == []``) writes no row: a video
where nobody is visible gives a CSV with only the header, and "frames in == frames with rows" holds only for
frames where a face was present.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import threading
import zipfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from model.blendshapes import ARKIT_NAMES, BLENDSHAPES_VERSION, ESTIMATED_MASK, N_BLEND
from model.expression_ext import EXT_NAMES, EXT_VERSION, N_EXT
from stream.atomic import AtomicPath, atomic_write_bytes, temp_path_for
from stream.audio import AudioError, AudioMuxer
from stream.frames import POSE_NAMES, AudioTrack, FaceRecord, VideoInfo

log = logging.getLogger(__name__)


class SinkError(Exception):
    """A problem with an output the user can fix; ``str(error)`` is one line meant for them."""


def os_reason(exc: BaseException) -> str:
    """The cause of an OS-level error in a few words (``No space left on device``), for one-line messages."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).strip().rstrip(".")


def write_error(path: str | os.PathLike[str], exc: BaseException) -> SinkError:
    """``SinkError("cannot write PATH: CAUSE")`` for an OSError while writing ``path``."""
    return SinkError(f"cannot write {path}: {os_reason(exc)}")


class _Sink:
    """Shared close/abort/context-manager logic; subclasses implement ``_finish()`` and ``_discard()``.

    Record sinks (tracks, meshes) take ``write(frame_index, time, records)``; ``write_job(job)`` is the pipeline
    adapter (``job.frame.index``, ``job.frame.time``, ``job.faces``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._closed = False
        self._result: Path | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _finish(self) -> Path | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _discard(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"write to a closed sink ({self.path})")

    def _failed(self, exc: BaseException) -> BaseException:
        """A write failed: discard what was written (a later ``close()`` commits nothing), and return the error to
        raise (an OSError becomes a one-line ``SinkError`` naming the file and the cause)."""
        if not self._closed:
            self._closed = True
            try:
                self._discard()
            except Exception:  # the first error is the one the user needs
                log.debug("discard after a failed write of %s failed", self.path, exc_info=True)
        return write_error(self.path, exc) if isinstance(exc, OSError) else exc

    def close(self) -> Path | None:
        """Finish and rename into place; returns the final path (None when nothing was written). Idempotent.
        After a failed write it commits nothing (returns None). An OSError while finishing (a full disk on the last
        flush) removes the temporary file and raises ``SinkError``."""
        with self._lock:
            if self._closed:
                return self._result
            self._closed = True
            try:
                self._result = self._finish()
            except BaseException as exc:
                self._discard()
                if isinstance(exc, OSError):
                    raise write_error(self.path, exc) from exc
                raise
            return self._result

    def abort(self) -> None:
        """Drop what was written; the final path is left as it was. Idempotent (no-op after close())."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._discard()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RecordSink(_Sink):
    """A sink of FaceRecords: ``write(frame_index, time, records)``."""

    def write(self, frame_index: int, time: float, records: list[FaceRecord]) -> None:  # pragma: no cover
        raise NotImplementedError

    def write_job(self, job: Any) -> None:
        """Pipeline adapter: ``write(job.frame.index, job.frame.time, job.faces)``."""
        self.write(job.frame.index, job.frame.time, list(job.faces))


# --------------------------------------------------------------------------------------------------------------
# Video


_VIDEO_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".avi": ("mpeg4",),  # AVI has no per-frame timestamps worth the name: keep it simple and compatible
    ".webm": ("libvpx", "libvpx-vp9"),
}


def _encoder_available(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def _even(image: np.ndarray) -> np.ndarray:
    """Pad an odd width/height by one replicated pixel row/column (yuv420p needs even sizes)."""
    import cv2

    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class VideoSink(_Sink):
    """Video file through PyAV: H.264 (libx264, yuv420p) in .mp4/.mov/.mkv, MPEG-4 in .avi, VP8 in .webm.

    Falls back to MPEG-4 Part 2 (with a warning) when libx264 is missing from the PyAV build. Frame rate from
    ``info.fps`` (or ``fps``); presentation times from the ``time`` given to :meth:`write`, in the source's time base
    when it is fine enough, so variable frame rates survive; times are forced strictly increasing.
    Frame size is the first image's, padded to even numbers; later images of another size are resized to it.
    ``audio``: the source's sound to keep (``stream.audio``: copied where the container takes its codec, else
    re-encoded; shifted so the source's first video frame is time 0, cut at the last written frame); a source whose
    audio cannot be read gives a warning and a silent video.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        info: VideoInfo | None = None,
        *,
        fps: float | None = None,
        codec: str | None = None,
        crf: int = 20,
        preset: str = "veryfast",
        bit_rate: int | None = None,
        options: dict[str, str] | None = None,
        audio: AudioTrack | None = None,
    ) -> None:
        import av

        super().__init__(path)
        suffix = self.path.suffix.lower()
        if suffix not in _VIDEO_CODECS:
            raise SinkError(f"cannot write video {self.path}: use one of {', '.join(sorted(_VIDEO_CODECS))}")
        self.fps = float(fps or (info.fps if info and info.fps else 0) or 25.0)
        candidates = (codec,) if codec else _VIDEO_CODECS[suffix]
        chosen = next((c for c in candidates if _encoder_available(c)), None)
        if chosen is None:
            raise SinkError(f"cannot write video {self.path}: no encoder among {', '.join(candidates)} "
                            "in this PyAV build")
        if chosen != candidates[0]:
            log.warning("%s is not available in this PyAV build; writing %s instead", candidates[0], chosen)
        self.codec_name = chosen
        rate = Fraction(self.fps).limit_denominator(1001 * 1000)
        if suffix == ".avi":  # AVI counts frames: one tick per frame (constant frame rate)
            self.time_base = 1 / rate
        else:
            self.time_base = self._pick_time_base(info.time_base if info else None, self.fps, chosen)
        self.frames_written = 0
        self.resized_frames = 0
        self._last_pts: int | None = None
        self._size: tuple[int, int] | None = None  # (w, h) of the encoded stream
        self._target = AtomicPath(self.path)
        container_options = {"movflags": "+faststart"} if suffix in (".mp4", ".m4v", ".mov") else {}
        try:
            self._container = av.open(str(self._target.tmp), mode="w", options=container_options)
        except (av.error.FFmpegError, OSError) as e:
            self._target.abort()
            raise SinkError(f"cannot write video {self.path}: {os_reason(e)}") from e
        stream = self._container.add_stream(chosen, rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        opts: dict[str, str] = {}
        if chosen in ("libx264",):
            opts.update({"crf": str(crf), "preset": preset})
        elif chosen in ("libvpx", "libvpx-vp9"):
            opts.update({"crf": str(max(4, min(63, crf + 10))), "deadline": "realtime", "cpu-used": "8"})
            stream.bit_rate = bit_rate or 2_000_000
        elif chosen == "mpeg4":
            stream.codec_context.qscale = True  # fixed quantiser (like ffmpeg -q:v 3): no bit rate guess needed
            stream.codec_context.global_quality = 3 * 118  # FF_QP2LAMBDA
        if bit_rate and chosen not in ("libvpx", "libvpx-vp9"):
            stream.bit_rate = bit_rate
        opts.update(options or {})
        stream.options = opts
        self._stream = stream
        self._audio: AudioMuxer | None = None
        if audio is not None:
            try:
                self._audio = AudioMuxer(audio, self._container)
            except AudioError as exc:
                log.warning("%s: %s; writing the video without sound", self.path.name, exc)

    @staticmethod
    def _pick_time_base(source_tb: Fraction | None, fps: float, codec: str) -> Fraction:
        limit = 65535 if codec == "mpeg4" else 1 << 30
        if source_tb:
            tb = Fraction(source_tb)
            if 0 < tb <= Fraction(1, max(1, math.ceil(fps))) and tb.denominator <= limit and tb.numerator == 1:
                return tb
        return Fraction(1, 60000) if codec == "mpeg4" else Fraction(1, 90000)

    def write(self, frame_index: int, time: float | None, image_bgr: np.ndarray) -> None:
        """Encode one ``(H, W, 3) uint8 BGR`` image shown at ``time`` seconds (None: previous + 1/fps).

        A disk or encoder error (full disk, read-only or failing device) discards the file and raises SinkError."""
        import av

        with self._lock:
            self._check_open()
            try:
                self._encode(time, image_bgr)
            except (OSError, av.error.FFmpegError) as exc:  # the disk or the encoder failed: the file is lost
                raise self._failed(exc) from exc

    def _encode(self, time: float | None, image_bgr: np.ndarray) -> None:
        import av
        import cv2

        image = np.asarray(image_bgr)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"VideoSink.write expects (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
        if self._size is None:
            image = _even(image)
            h, w = image.shape[:2]
            self._size = (w, h)
            self._stream.width, self._stream.height = w, h
        elif (image.shape[1], image.shape[0]) != self._size:
            w, h = self._size
            if image.shape[1] in (w, w - 1) and image.shape[0] in (h, h - 1):  # odd size of the first one
                image = _even(image)
            else:
                if self.resized_frames == 0:
                    log.warning("%s: frame size changed from %dx%d to %dx%d; resizing", self.path.name,
                                *self._size, image.shape[1], image.shape[0])
                self.resized_frames += 1
                image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if time is None or not math.isfinite(time):
            pts = 0 if self._last_pts is None else self._last_pts + max(1, round(1 / (self.fps * self.time_base)))
        else:
            pts = int(round(time / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        yuv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1
        if self._audio is not None:  # the sound up to this frame, interleaved with the pictures
            self._audio_step(self._audio.write_until, float(pts * self.time_base))

    def _audio_step(self, step: Any, t: float) -> None:
        """Run an audio step; a fault of the source's audio (a corrupt packet) ends the sound with a warning, a
        fault of the output (disk, muxer) propagates."""
        try:
            step(t)
        except AudioError as exc:
            log.warning("%s: %s; the rest of the video is without sound", self.path.name, exc)
            self._audio.close()
            self._audio = None

    def write_job(self, job: Any) -> None:
        """Pipeline adapter: writes ``job.output`` (the rendered image) or else ``job.frame.image``."""
        image = job.output if getattr(job, "output", None) is not None else job.frame.image
        self.write(job.frame.index, job.frame.time, image)

    def _finish(self) -> Path | None:
        if self.frames_written == 0:
            log.warning("%s: no frames were written; no video file created", self.path)
            self._discard()
            return None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self._audio is not None:  # the sound up to the end of the last frame
            end = float(self._last_pts * self.time_base) + 1.0 / self.fps
            self._audio_step(self._audio.finish, end)
        self._container.close()
        return self._target.commit()

    @property
    def audio_codec(self) -> str | None:
        """The codec of the kept sound (None: video only); ``audio_copied``: copied, not re-encoded."""
        return None if self._audio is None else self._audio.codec

    @property
    def audio_copied(self) -> bool:
        return self._audio is not None and self._audio.copied

    def _discard(self) -> None:
        if self._audio is not None:
            self._audio.close()
        try:
            self._container.close()
        except Exception:
            pass
        self._target.abort()


# --------------------------------------------------------------------------------------------------------------
# Tracks


def _f(values: Iterable[float], fmt: str) -> list[str]:
    return [format(float(v), fmt) for v in values]


def tracks_csv_header(include_params: bool = False, include_roi: bool = False) -> list[str]:
    """Column names: frame, time, track_id, box_x1..box_y2, pose (6), confidence, the extended expression
    (``EXT_NAMES``: eye_close_r, eye_close_l, mouth_corner_up_r, ..., jaw_open), the 52 ARKit blendshapes
    (``ARKIT_NAMES``: eyeBlinkLeft ... tongueOut), x0,y0,z0..x67,y67,z67 [, roi] [, p0..p61]. ``confidence``: the
    face confidence in [0, 1] (``FaceRecord.confidence``; nan when unknown); the extension's values are nan when the
    run had no expression stage; the blendshapes are nan when not computed (names not estimated are 0).

    The box columns carry a ``box_`` prefix: plain x1, y1, x2, y2 would collide with landmark 1 and 2 columns.
    """
    cols = ["frame", "time", "track_id", "box_x1", "box_y1", "box_x2", "box_y2", *POSE_NAMES, "confidence",
            *EXT_NAMES, *ARKIT_NAMES]
    cols += [f"{a}{i}" for i in range(68) for a in "xyz"]
    if include_roi:
        cols += ["roi_x1", "roi_y1", "roi_x2", "roi_y2"]
    if include_params:
        cols += [f"p{i}" for i in range(62)]
    return cols


class _TextTracksSink(_RecordSink):
    """Line-oriented track file, flushed after every frame so it is complete up to the last frame written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        try:
            self._target = AtomicPath(self.path)
            self._file = open(self._target.tmp, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise write_error(self.path, e) from e
        self.rows_written = 0
        self.frames_written = 0

    def _put(self, text: str) -> None:
        """Write and flush ``text``; a failure discards the file and raises SinkError (see ``_failed``)."""
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            raise self._failed(exc) from exc

    def write(self, frame_index: int, time: float, records: list[FaceRecord]) -> None:
        """Write the faces of one frame (an empty list writes nothing) and flush."""
        with self._lock:
            self._check_open()
            if records:
                self._put("".join(self._row(frame_index, time, r) for r in records))
                self.rows_written += len(records)
            self.frames_written += 1

    def _row(self, frame_index: int, time: float, record: FaceRecord) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> Path | None:
        self._file.close()
        return self._target.commit()

    def _discard(self) -> None:
        try:
            self._file.close()
        except Exception:
            pass
        self._target.abort()


class TracksCSVSink(_TextTracksSink):
    """CSV, one row per frame x track; columns :func:`tracks_csv_header`.

    Params are not in the CSV by default (62 opaque numbers; the NPZ and JSONL have them): pass
    ``include_params=True`` to append ``p0..p61`` (and ``include_roi=True`` for the crop ROI).
    Pixels with 3 decimals, time with 6, pose and params with 7 significant digits.
    """

    def __init__(self, path: str | os.PathLike[str], *, include_params: bool = False, include_roi: bool = False):
        super().__init__(path)
        self.include_params = include_params
        self.include_roi = include_roi
        self.columns = tracks_csv_header(include_params, include_roi)
        self._put(",".join(self.columns) + "\n")

    def _row(self, frame_index: int, time: float, r: FaceRecord) -> str:
        parts = [str(int(frame_index)), format(float(time), ".6f"), str(int(r.track_id))]
        parts += _f(np.ravel(r.box)[:4], ".3f")
        parts += _f(np.ravel(r.pose)[:6], ".7g")
        parts.append(format(_confidence(r), ".4f"))
        parts += _f(_ext(r), ".4f")
        parts += _f(_blend(r), ".4f")
        parts += _f(np.ravel(np.asarray(r.landmarks)[:68, :3]), ".3f")
        if self.include_roi:
            parts += _f(np.ravel(r.roi)[:4], ".3f")
        if self.include_params:
            parts += _f(np.ravel(r.params)[:62], ".7g")
        return ",".join(parts) + "\n"


class TracksJSONLSink(_TextTracksSink):
    """JSON Lines, one object per frame x track::

        {"frame": 0, "time": 0.0, "track_id": 1, "box": [4], "roi": [4],
         "pose": {"yaw": .., "pitch": .., "roll": .., "scale": .., "tx": .., "ty": ..}, "confidence": 0.97,
         "ext": {"eye_close_r": .., ..., "jaw_open": ..}, "ext_version": "ext-v1",
         "blendshapes": {"eyeBlinkLeft": .., ..., "tongueOut": 0.0}, "blendshapes_version": "arkit-v1",
         "landmarks": [[x, y, z] x 68], "params": [62]}

    ``confidence`` is null when unknown; ``ext`` (the extended expression, ``model.expression_ext``) is null when
    the run had no expression stage; ``blendshapes`` (the 52 ARKit coefficients, ``model.blendshapes``) null when
    not computed.
    """

    def _row(self, frame_index: int, time: float, r: FaceRecord) -> str:
        def px(a: Any) -> list[float]:
            return [round(float(v), 3) for v in np.ravel(a)]

        def sig(a: Any) -> list[float]:
            return [float(format(float(v), ".7g")) for v in np.ravel(a)]

        obj = {
            "frame": int(frame_index),
            "time": round(float(time), 6),
            "track_id": int(r.track_id),
            "box": px(r.box),
            "roi": px(r.roi),
            "pose": dict(zip(POSE_NAMES, sig(r.pose))),
            "confidence": None if r.confidence is None else round(float(r.confidence), 4),
            "ext": None if r.ext is None else {k: round(float(v), 4) for k, v in zip(EXT_NAMES, np.ravel(r.ext))},
            "ext_version": EXT_VERSION,
            "blendshapes": None if r.blendshapes is None else
            {k: round(float(v), 4) for k, v in zip(ARKIT_NAMES, np.ravel(r.blendshapes))},
            "blendshapes_version": BLENDSHAPES_VERSION,
            "landmarks": [px(p) for p in np.asarray(r.landmarks)[:, :3]],
            "params": sig(r.params),
        }
        return json.dumps(obj, separators=(",", ":"), allow_nan=True) + "\n"


_NPZ_KEYS = ("frames", "times", "landmarks", "params", "pose", "boxes", "rois", "confidence", "ext", "blendshapes")


def _confidence(r: FaceRecord) -> float:
    """The record's face confidence, nan when unknown."""
    return float("nan") if r.confidence is None else float(r.confidence)


def _ext(r: FaceRecord) -> np.ndarray:
    """The record's extended expression (N_EXT,) float32, nan when the run had none."""
    return np.full(N_EXT, np.nan, np.float32) if r.ext is None else np.asarray(r.ext, np.float32).reshape(N_EXT)


def _blend(r: FaceRecord) -> np.ndarray:
    """The record's ARKit blendshapes (N_BLEND,) float32, nan when not computed."""
    b = getattr(r, "blendshapes", None)
    return np.full(N_BLEND, np.nan, np.float32) if b is None else np.asarray(b, np.float32).reshape(N_BLEND)


class TracksNPZSink(_RecordSink):
    """NPZ with arrays per track, written at close (temp + rename)::

        track_ids (K,) int64
        track{ID}_frames (T,) int64, _times (T,) float64, _landmarks (T,68,3) float32, _params (T,62) float32,
        _pose (T,6) float32, _boxes (T,4) float32, _rois (T,4) float32, _confidence (T,) float32 (nan: unknown),
        _ext (T,N_EXT) float32 (the extended expression; nan: no expression stage),
        _blendshapes (T,52) float32 (the ARKit coefficients; nan: not computed)
        ext_names (N_EXT,) str, ext_version () str, blendshape_names (52,) str, blendshape_estimated (52,) bool,
        blendshapes_version () str
    """

    def __init__(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        super().__init__(path)
        self.compress = compress
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.path, e) from e
        self._tracks: dict[int, dict[str, list[Any]]] = {}
        self.rows_written = 0
        self.frames_written = 0

    def write(self, frame_index: int, time: float, records: list[FaceRecord]) -> None:
        """Buffer the faces of one frame (an empty list adds nothing)."""
        with self._lock:
            self._check_open()
            for r in records:
                t = self._tracks.setdefault(int(r.track_id), {k: [] for k in _NPZ_KEYS})
                t["frames"].append(int(frame_index))
                t["times"].append(float(time))
                t["landmarks"].append(np.asarray(r.landmarks, np.float32)[:, :3])
                t["params"].append(np.asarray(r.params, np.float32).reshape(-1))
                t["pose"].append(np.asarray(r.pose, np.float32).reshape(-1))
                t["boxes"].append(np.asarray(r.box, np.float32).reshape(-1))
                t["rois"].append(np.asarray(r.roi, np.float32).reshape(-1))
                t["confidence"].append(_confidence(r))
                t["ext"].append(_ext(r))
                t["blendshapes"].append(_blend(r))
            self.rows_written += len(records)
            self.frames_written += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the NPZ will hold (see class docstring)."""
        out: dict[str, np.ndarray] = {"track_ids": np.array(sorted(self._tracks), dtype=np.int64),
                                      "ext_names": np.array(EXT_NAMES), "ext_version": np.array(EXT_VERSION),
                                      "blendshape_names": np.array(ARKIT_NAMES),
                                      "blendshape_estimated": ESTIMATED_MASK.copy(),
                                      "blendshapes_version": np.array(BLENDSHAPES_VERSION)}
        shapes = {"landmarks": (68, 3), "params": (62,), "pose": (6,), "boxes": (4,), "rois": (4,), "confidence": (),
                  "ext": (N_EXT,), "blendshapes": (N_BLEND,)}
        for tid in sorted(self._tracks):
            t = self._tracks[tid]
            out[f"track{tid}_frames"] = np.asarray(t["frames"], np.int64)
            out[f"track{tid}_times"] = np.asarray(t["times"], np.float64)
            for key, shape in shapes.items():
                stacked = np.stack(t[key]).astype(np.float32) if t[key] else np.zeros((0, *shape), np.float32)
                out[f"track{tid}_{key}"] = stacked
        return out

    def _finish(self) -> Path | None:
        target = AtomicPath(self.path)
        try:
            with open(target.tmp, "wb") as f:
                (np.savez_compressed if self.compress else np.savez)(f, **self.arrays())
            result = target.commit()
        except BaseException:
            target.abort()
            raise
        self._tracks.clear()
        return result

    def _discard(self) -> None:
        self._tracks.clear()


# Apple's Live Link Face app (Epic Games): the CSV of a recorded take, which Unreal's, Blender's and Maya's importers
# read. Its blendshape columns are ARKit's in the app's order (JawRight before JawLeft, MouthRight before MouthLeft),
# PascalCase, then the head and eye rotations; BlendShapeCount is 61 (52 + 9).
LLF_HEADER: tuple[str, ...] = (
    "Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft",
    "EyeLookUpLeft", "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft",
    "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft",
    "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight",
    "MouthStretchLeft", "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower",
    "MouthShrugUpper", "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight",
    "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight",
    "TongueOut", "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
    "RightEyePitch", "RightEyeRoll")
LLF_COUNT = 61
_LLF_BLEND = [ARKIT_NAMES.index(n[0].lower() + n[1:]) for n in LLF_HEADER[2:54]]  # LLF column -> ARKit index


def llf_timecode(t: float, rate: int) -> str:
    """Seconds -> the app's timecode ``HH:MM:SS:FF.mmm`` at ``rate`` frames per second (``FF`` the frame within the
    second, ``.mmm`` thousandths of a frame)."""
    sub = max(0, int(round(float(t) * rate * 1000)))
    frames, milli = divmod(sub, 1000)
    secs, ff = divmod(frames, rate)
    hh, rest = divmod(secs, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{milli:03d}"


def parse_llf_timecode(text: str, rate: int) -> float:
    """Inverse of :func:`llf_timecode`: ``HH:MM:SS:FF[.fff]`` -> seconds."""
    hh, mm, ss, ff = text.split(":")
    return int(hh) * 3600 + int(mm) * 60 + int(ss) + float(ff) / rate


class LiveLinkFaceSink(_RecordSink):
    """Live Link Face CSV (``--tracks-format livelinkface`` or a ``.llf.csv`` name): one row per frame of one face,
    the app's header (``LLF_HEADER``) and timecode (``llf_timecode`` of the frame's source time at ``rate`` =
    the source's frame rate, rounded), the 52 ARKit blendshapes in the app's column order, ``HeadYaw``,
    ``HeadPitch``, ``HeadRoll`` in radians (our yaw, pitch, roll: > 0 the subject turns to their right, looks down,
    tilts to their right) and the 6 eye rotations 0 (gaze is not estimated).

    The format holds one face: the file gets the track with the most frames (ties: the lowest id); the others are
    named in a warning. Rows are kept in memory (a few hundred bytes per frame) and written at close (temp +
    rename).
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: float | None = None) -> None:
        super().__init__(path)
        self.rate = max(1, int(round(fps or 30.0)))
        self._tracks: dict[int, list[tuple[float, np.ndarray, np.ndarray]]] = {}
        self.rows_written = 0
        self.frames_written = 0
        self.track_id: int | None = None

    def write(self, frame_index: int, time: float, records: list[FaceRecord]) -> None:
        with self._lock:
            self._check_open()
            for r in records:
                b = _blend(r)
                pose = np.radians(np.asarray(r.pose, np.float64).reshape(-1)[:3])
                self._tracks.setdefault(int(r.track_id), []).append((float(time), np.nan_to_num(b), pose))
            self.frames_written += 1

    def _finish(self) -> Path | None:
        target = AtomicPath(self.path)
        rows = []
        if self._tracks:
            self.track_id = max(sorted(self._tracks), key=lambda k: len(self._tracks[k]))
            rows = self._tracks[self.track_id]
            others = sorted(set(self._tracks) - {self.track_id})
            if others:
                log.warning("%s: Live Link Face holds one face: wrote track %d, not track(s) %s", self.path.name,
                            self.track_id, ", ".join(map(str, others)))
        try:
            with open(target.tmp, "w", encoding="utf-8", newline="") as f:
                f.write(",".join(LLF_HEADER) + "\n")
                for t, b, pose in rows:
                    vals = _f(b[_LLF_BLEND], ".6f") + _f(pose, ".6f") + ["0"] * 6
                    f.write(f"{llf_timecode(t, self.rate)},{LLF_COUNT}," + ",".join(vals) + "\n")
            result = target.commit()
        except BaseException:
            target.abort()
            raise
        self.rows_written = len(rows)
        self._tracks.clear()
        return result

    def _discard(self) -> None:
        self._tracks.clear()


def load_livelinkface(path: str | os.PathLike[str], rate: int = 30) -> dict[str, Any]:
    """Read a Live Link Face CSV: ``{"header": [...], "timecode": [str], "seconds" (T,), "blendshapes" (T, 52) in
    ``ARKIT_NAMES`` order, "head" (T, 3) yaw, pitch, roll as written, "eyes" (T, 6)}`` (``rate``: the timecode's
    frames per second)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if r]
    col = {n: i for i, n in enumerate(header)}
    vals = np.array([[float(r[col[n]]) for n in LLF_HEADER[2:]] for r in rows], np.float64).reshape(-1, 61)
    blend = np.zeros((len(rows), N_BLEND))
    blend[:, _LLF_BLEND] = vals[:, :52]
    return {"header": header, "timecode": [r[0] for r in rows],
            "seconds": np.array([parse_llf_timecode(r[0], rate) for r in rows]),
            "count": [int(r[1]) for r in rows], "blendshapes": blend, "head": vals[:, 52:55], "eyes": vals[:, 55:]}


TracksSink = TracksCSVSink | TracksJSONLSink | TracksNPZSink | LiveLinkFaceSink

_TRACK_FORMATS = {".csv": TracksCSVSink, ".jsonl": TracksJSONLSink, ".ndjson": TracksJSONLSink, ".npz": TracksNPZSink}
TRACK_FORMATS = ("auto", "csv", "jsonl", "npz", "livelinkface")


def tracks_format(path: str | os.PathLike[str], fmt: str = "auto") -> str:
    """The format a tracks path is written in: ``fmt`` unless "auto", then by name (``.llf.csv``: livelinkface,
    ``.csv``, ``.jsonl``/``.ndjson``, ``.npz``). SinkError for a name no format takes."""
    if fmt != "auto":
        if fmt not in TRACK_FORMATS:
            raise SinkError(f"unknown tracks format {fmt!r}: use one of {', '.join(TRACK_FORMATS)}")
        return fmt
    name = Path(path).name.lower()
    if name.endswith(".llf.csv"):
        return "livelinkface"
    suffix = Path(path).suffix.lower()
    if suffix not in _TRACK_FORMATS:
        raise SinkError(f"cannot write tracks to {path}: use a .csv, .llf.csv, .jsonl or .npz file name "
                        "(or --tracks-format)")
    return {".ndjson": "jsonl"}.get(suffix, suffix[1:])


def open_tracks_sink(path: str | os.PathLike[str], fmt: str = "auto", fps: float | None = None,
                     **options: Any) -> TracksSink:
    """Track sink of ``fmt`` (``tracks_format``: by extension when "auto"); ``fps`` (the source's rate) sets the
    Live Link Face timecode; other options go to the sink's constructor."""
    kind = tracks_format(path, fmt)
    if kind == "livelinkface":
        return LiveLinkFaceSink(path, fps=fps)
    cls = {"csv": TracksCSVSink, "jsonl": TracksJSONLSink, "npz": TracksNPZSink}[kind]
    return cls(path, **options)


def load_tracks(path: str | os.PathLike[str]) -> dict[int, dict[str, np.ndarray]]:
    """Read a tracks file written by any track sink: ``{track_id: {"frames", "times", "boxes", "pose",
    "landmarks", ["params"], ["rois"], ["confidence"], ["ext"], ["blendshapes"]}}`` with the NPZ shapes. CSV has
    params/rois only when written with them; files written before the confidence column have no ``confidence``,
    before the extended expression no ``ext``, before the ARKit blendshapes no ``blendshapes``. A Live Link Face CSV
    (``.llf.csv``, :func:`load_livelinkface`) has its own reader."""
    path = Path(path)
    suffix = path.suffix.lower()
    out: dict[int, dict[str, np.ndarray]] = {}
    if suffix == ".npz":
        with np.load(path) as z:
            for tid in z["track_ids"].tolist():
                out[int(tid)] = {k: z[f"track{tid}_{k}"] for k in _NPZ_KEYS if f"track{tid}_{k}" in z}
        return out
    rows: dict[int, dict[str, list[Any]]] = {}
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            col = {name: i for i, name in enumerate(header)}
            lm_idx = [col[f"{a}{i}"] for i in range(68) for a in "xyz"]
            for row in reader:
                vals = np.array(row, dtype=np.float64)
                t = rows.setdefault(int(vals[col["track_id"]]), {})
                t.setdefault("frames", []).append(int(vals[col["frame"]]))
                t.setdefault("times", []).append(vals[col["time"]])
                t.setdefault("boxes", []).append(vals[[col[f"box_{c}"] for c in ("x1", "y1", "x2", "y2")]])
                t.setdefault("pose", []).append(vals[[col[c] for c in POSE_NAMES]])
                t.setdefault("landmarks", []).append(vals[lm_idx].reshape(68, 3))
                if "confidence" in col:
                    t.setdefault("confidence", []).append(vals[col["confidence"]])
                if EXT_NAMES[0] in col:
                    t.setdefault("ext", []).append(vals[[col[k] for k in EXT_NAMES]])
                if ARKIT_NAMES[0] in col:
                    t.setdefault("blendshapes", []).append(vals[[col[k] for k in ARKIT_NAMES]])
                if "roi_x1" in col:
                    t.setdefault("rois", []).append(vals[[col[f"roi_{c}"] for c in ("x1", "y1", "x2", "y2")]])
                if "p0" in col:
                    t.setdefault("params", []).append(vals[[col[f"p{i}"] for i in range(62)]])
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                o = json.loads(line)
                t = rows.setdefault(int(o["track_id"]), {})
                t.setdefault("frames", []).append(int(o["frame"]))
                t.setdefault("times", []).append(o["time"])
                t.setdefault("boxes", []).append(o["box"])
                t.setdefault("rois", []).append(o["roi"])
                t.setdefault("pose", []).append([o["pose"][k] for k in POSE_NAMES])
                t.setdefault("landmarks", []).append(o["landmarks"])
                t.setdefault("params", []).append(o["params"])
                if "confidence" in o:
                    t.setdefault("confidence", []).append(np.nan if o["confidence"] is None else o["confidence"])
                if "ext" in o:
                    t.setdefault("ext", []).append([np.nan] * N_EXT if o["ext"] is None else
                                                   [o["ext"][k] for k in EXT_NAMES])
                if "blendshapes" in o:
                    t.setdefault("blendshapes", []).append([np.nan] * N_BLEND if o["blendshapes"] is None else
                                                           [o["blendshapes"][k] for k in ARKIT_NAMES])
    else:
        raise SinkError(f"cannot read tracks from {path}: use a .csv, .jsonl or .npz file")
    for tid, t in rows.items():
        out[tid] = {k: np.asarray(v, np.int64 if k == "frames" else np.float64 if k == "times" else np.float32)
                    for k, v in t.items()}
    return out


# --------------------------------------------------------------------------------------------------------------
# Meshes


def _write_npz_streamed(path: Path, small: dict[str, np.ndarray], big_name: str, raw_path: Path,
                        shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Write an uncompressed NPZ whose array ``big_name`` is copied from raw C-order bytes on disk (no RAM copy)."""
    with open(path, "wb") as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in small.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        with zf.open(f"{big_name}.npy", "w", force_zip64=True) as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            with open(raw_path, "rb") as raw:
                shutil.copyfileobj(raw, f, 1 << 20)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # pragma: no cover - e.g. the folder turned read-only
        log.warning("could not remove %s: %s", path, os_reason(exc))


class _MeshTrack:
    def __init__(self, raw_path: Path) -> None:
        self.raw_path = raw_path
        self.raw = open(raw_path, "wb")
        self.frames: list[int] = []
        self.times: list[float] = []
        self.n_vertices: int | None = None


class MeshSink(_RecordSink):
    """Dense meshes per track: ``{directory}/track{ID}.npz`` with ``vertices (T,V,3) float32`` (frame pixels, y
    down, like the landmarks), ``frames (T,) int64``, ``times (T,) float64``, ``triangles (F,3) int32``.

    Vertices are appended to a hidden raw file in ``directory`` as they come (RAM stays flat on long videos) and
    packed into the NPZ at close (temp + rename). ``per_frame="obj"|"ply"`` also writes
    ``track{ID}_frame{N:06d}.obj|ply`` per frame (OBJ text with 1-based faces; PLY binary little-endian). With ``uv``
    (V, 2) in [0, 1] (origin top-left, as :func:`stream.gltf.mesh_uv` gives) the OBJ files carry ``vt`` lines
    (OBJ's v points up: ``1 - v``) and ``f v/vt`` faces.
    """

    def __init__(self, directory: str | os.PathLike[str], tri: np.ndarray, per_frame: str | None = None,
                 uv: np.ndarray | None = None) -> None:
        super().__init__(directory)
        if per_frame not in (None, "obj", "ply"):
            raise SinkError(f"per-frame mesh format must be obj or ply, got {per_frame!r}")
        self.directory = self.path
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot create mesh folder {self.directory}: {e.strerror or e}") from e
        self.tri = np.ascontiguousarray(np.asarray(tri, dtype=np.int32).reshape(-1, 3))
        self.per_frame = per_frame
        self.uv = None if uv is None else np.asarray(uv, np.float64).reshape(-1, 2)
        self._tracks: dict[int, _MeshTrack] = {}
        self._obj_faces: bytes | None = None
        self._ply_faces: bytes | None = None
        self.meshes_written = 0
        self.skipped_records = 0
        self.files: list[Path] = []

    def write(self, frame_index: int, time: float, records: list[FaceRecord]) -> None:
        """Append the dense vertices of each record; records without vertices are skipped (and counted)."""
        with self._lock:
            self._check_open()
            try:
                self._append(frame_index, time, records)
            except OSError as exc:
                raise self._failed(exc) from exc

    def _append(self, frame_index: int, time: float, records: list[FaceRecord]) -> None:
        for r in records:
            if r.vertices is None:
                self.skipped_records += 1
                continue
            v = np.ascontiguousarray(np.asarray(r.vertices, dtype=np.float32)[:, :3])
            tid = int(r.track_id)
            track = self._tracks.get(tid)
            if track is None:
                raw = temp_path_for(self.directory / f"track{tid}.vertices")
                track = self._tracks[tid] = _MeshTrack(raw)
                track.n_vertices = v.shape[0]
            if v.shape[0] != track.n_vertices:
                raise ValueError(f"track {tid}: {v.shape[0]} vertices, expected {track.n_vertices}")
            track.raw.write(v.tobytes())
            track.frames.append(int(frame_index))
            track.times.append(float(time))
            self.meshes_written += 1
            if self.per_frame:
                name = self.directory / f"track{tid}_frame{int(frame_index):06d}.{self.per_frame}"
                encode = self._obj_bytes if self.per_frame == "obj" else self._ply_bytes
                data = encode(v, frame_index, time, tid)
                self.files.append(atomic_write_bytes(name, data))

    def _obj_bytes(self, v: np.ndarray, frame_index: int, time: float, tid: int) -> bytes:
        if self._obj_faces is None:
            faces = self.tri.astype(np.int64) + 1
            if self.uv is not None and len(self.uv) == len(v):
                vt = np.stack([self.uv[:, 0], 1 - self.uv[:, 1]], 1)
                self._obj_faces = (("vt %.6f %.6f\n" * len(vt)) % tuple(vt.ravel().tolist())).encode()
                self._obj_faces += (("f %d/%d %d/%d %d/%d\n" * len(faces))
                                    % tuple(np.repeat(faces.ravel(), 2).tolist())).encode()
            else:
                self._obj_faces = (("f %d %d %d\n" * len(faces)) % tuple(faces.ravel().tolist())).encode()
        head = f"# track {tid} frame {frame_index} time {time:.6f}; frame pixels, y down\n".encode()
        verts = (("v %.3f %.3f %.3f\n" * len(v)) % tuple(v.ravel().tolist())).encode()
        return head + verts + self._obj_faces

    def _ply_bytes(self, v: np.ndarray, frame_index: int, time: float, tid: int) -> bytes:
        if self._ply_faces is None:
            faces = np.empty(len(self.tri), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
            faces["n"] = 3
            faces["idx"] = self.tri
            self._ply_faces = faces.tobytes()
        head = (
            "ply\nformat binary_little_endian 1.0\n"
            f"comment track {tid} frame {frame_index} time {time:.6f}; frame pixels, y down\n"
            f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
            f"element face {len(self.tri)}\nproperty list uchar int vertex_indices\nend_header\n"
        ).encode("ascii")
        return head + v.astype("<f4").tobytes() + self._ply_faces

    def _finish(self) -> Path | None:
        for tid in sorted(self._tracks):
            track = self._tracks[tid]
            track.raw.close()
            target = AtomicPath(self.directory / f"track{tid}.npz")
            small = {
                "frames": np.asarray(track.frames, np.int64),
                "times": np.asarray(track.times, np.float64),
                "triangles": self.tri,
            }
            try:
                _write_npz_streamed(target.tmp, small, "vertices", track.raw_path,
                                    (len(track.frames), int(track.n_vertices or 0), 3), np.dtype("<f4"))
                self.files.append(target.commit())
            except BaseException:
                target.abort()
                raise
            finally:
                track.raw_path.unlink(missing_ok=True)
        self._tracks.clear()
        return self.directory

    def _discard(self) -> None:
        """Remove the raw vertex files and every file this sink already committed (per-frame meshes, the NPZ of
        earlier tracks when a later one failed): a failed run leaves no part of its meshes behind."""
        for track in self._tracks.values():
            try:
                track.raw.close()
            except Exception:
                pass
            _unlink_quietly(track.raw_path)
        self._tracks.clear()
        for path in self.files:
            _unlink_quietly(path)
        self.files.clear()


__all__ = [
    "SinkError", "VideoSink", "TracksCSVSink", "TracksJSONLSink", "TracksNPZSink", "TracksSink", "MeshSink",
    "open_tracks_sink", "load_tracks", "tracks_csv_header", "LiveLinkFaceSink", "load_livelinkface", "LLF_HEADER",
    "llf_timecode", "tracks_format",
]
