"""The annotated video sink (PyAV): ``VideoSink``."""
from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stream.atomic import AtomicPath
from stream.audio import AudioError, AudioMuxer
from stream.frames import AudioTrack, VideoInfo


log = logging.getLogger("stream.sinks")  # one logger for every sink, as before the split

from stream.sinks.base import SinkError, _Sink, os_reason

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


