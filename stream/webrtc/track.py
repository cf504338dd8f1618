"""ProcessedTrack: the outgoing video of one peer, latest-frame-wins between network and processor.

Three loops, none of which can make delay build up:

- reader (task): pulls every decoded frame off the incoming track as soon as it arrives and keeps only the
  newest in a one-slot mailbox; a frame that is replaced before the worker took it counts as `drops_in`.
  (aiortc's RemoteStreamTrack queue is unbounded: whoever stops reading it lets delay grow; aiortc issues
  #104, #1192.)
- worker (task): takes the newest waiting frame, converts it to BGR (downscaled when larger than
  `max_frame_pixels`), awaits `processor.process(image, time)`, and puts the result in a second one-slot
  mailbox; a processed frame replaced before the encoder asked for it counts as `drops_out`.
- recv() (called by aiortc's sender): waits for the next processed frame and returns it with the source
  frame's pts/time_base, so RTP timestamps follow the camera's clock.

A processor error does not end the stream: the frame goes out unprocessed and `errors` counts it.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from typing import Any, Callable, Optional

import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from . import probe as _probe

log = logging.getLogger(__name__)


def fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Largest even (w, h) with the same aspect ratio and w * h <= max_pixels (unchanged when it fits)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / float(width * height))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


class _Window:
    """Recent samples (value, wall time) for rates and percentiles over the last `span` seconds."""

    def __init__(self, span: float = 2.0, cap: int = 600):
        self.span = span
        self.items: collections.deque[tuple[float, float]] = collections.deque(maxlen=cap)

    def add(self, value: float, now: Optional[float] = None) -> None:
        self.items.append((time.monotonic() if now is None else now, value))

    def _recent(self, now: float) -> list[float]:
        return [v for t, v in self.items if now - t <= self.span]

    def rate(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        ts = [t for t, _ in self.items if now - t <= self.span]
        if len(ts) < 2:
            return float(len(ts)) / self.span
        return (len(ts) - 1) / max(ts[-1] - ts[0], 1e-6)

    def percentiles(self, now: Optional[float] = None) -> dict[str, Optional[float]]:
        now = time.monotonic() if now is None else now
        vals = self._recent(now)
        if not vals:
            return {"p50": None, "p95": None, "last": None}
        arr = np.asarray(vals)
        return {"p50": round(float(np.percentile(arr, 50)), 2),
                "p95": round(float(np.percentile(arr, 95)), 2),
                "last": round(float(arr[-1]), 2)}


class ProcessedTrack(MediaStreamTrack):
    """Video track that sends `processor.process` of the newest frame of `source`."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, processor: Any, *, max_frame_pixels: int = 1920 * 1080,
                 probe: bool = False, on_ended: Optional[Callable[[], None]] = None):
        super().__init__()
        self._source = source
        self._processor = processor
        self.max_frame_pixels = int(max_frame_pixels)
        self.probe = bool(probe)
        self._on_ended = on_ended
        self._in: Optional[tuple[VideoFrame, float]] = None
        self._in_event = asyncio.Event()
        self._out: Optional[tuple[VideoFrame, float, float]] = None
        self._out_event = asyncio.Event()
        self._ended = False
        self._tasks: list[asyncio.Task] = []
        # counters
        self.frames_in = 0
        self.last_in: Optional[float] = None  # time.monotonic() of the last incoming frame
        self.frames_processed = 0
        self.frames_out = 0
        self.drops_in = 0
        self.drops_out = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.source_size: Optional[tuple[int, int]] = None
        self.frame_size: Optional[tuple[int, int]] = None
        self.last_frame: Optional[dict] = None
        self._in_times = _Window()
        self._out_times = _Window()
        self._lat_server = _Window()    # frame decoded -> handed to the encoder (ms)
        self._lat_process = _Window()   # processor.process (ms)
        self._lat_wait = _Window()      # decoded -> taken by the worker (ms)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._reader()), asyncio.ensure_future(self._worker())]

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._ended = True
        self._out_event.set()
        super().stop()

    async def wait_stopped(self) -> None:
        """Stop and wait until the reader and worker tasks have finished."""
        self.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._in_event.set()
            self._out_event.set()
            if self._on_ended is not None:
                try:
                    self._on_ended()
                except Exception:  # noqa: BLE001 - a callback must not break the track
                    log.exception("on_ended callback failed")

    def media_idle_s(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds since the last incoming frame (None before the first); 0 when a decoded frame is already waiting
        in aiortc's queue (a busy event loop is no sign of a peer gone)."""
        if self.last_in is None:
            return None
        queue = getattr(self._source, "_queue", None)
        try:
            if queue is not None and queue.qsize() > 0:
                return 0.0
        except Exception:  # noqa: BLE001 - another track type
            pass
        return (time.monotonic() if now is None else now) - self.last_in

    # ---- loops -----------------------------------------------------------------------------------
    async def _reader(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                now = time.monotonic()
                if self._in is not None:
                    self.drops_in += 1
                self._in = (frame, now)
                self.last_in = now
                self.frames_in += 1
                self._in_times.add(1.0, now)
                self._in_event.set()
        except MediaStreamError:
            log.info("incoming track ended")
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("reader failed")
        finally:
            self._end()

    def _prepare(self, frame: VideoFrame) -> np.ndarray:
        image = frame.to_ndarray(format="bgr24")
        h, w = image.shape[:2]
        tw, th = fit_pixels(w, h, self.max_frame_pixels)
        if (tw, th) != (w, h):
            image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image)

    @staticmethod
    def _to_frame(image: np.ndarray, src: VideoFrame) -> VideoFrame:
        out = VideoFrame.from_ndarray(image, format="bgr24")
        out.pts = src.pts
        out.time_base = src.time_base
        return out

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._in_event.wait()
                self._in_event.clear()
                if self._ended and self._in is None:
                    return
                if self._in is None:
                    continue
                frame, t_in = self._in
                self._in = None
                t_take = time.monotonic()
                self._lat_wait.add((t_take - t_in) * 1000.0, t_take)
                image = await loop.run_in_executor(None, self._prepare, frame)
                self.source_size = (frame.width, frame.height)
                self.frame_size = (image.shape[1], image.shape[0])
                strip = None
                if self.probe:
                    rows = _probe.strip_rows(image.shape[0])
                    strip = image[-rows:].copy()
                media_time = float(frame.time) if frame.time is not None else t_in
                t0 = time.monotonic()
                try:
                    out = await self._processor.process(image, media_time)
                    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3
                            and out.shape[2] == 3 and out.shape[:2] == image.shape[:2]):
                        raise TypeError(f"processor returned {getattr(out, 'shape', type(out))} "
                                        f"{getattr(out, 'dtype', '')}, expected {image.shape} uint8")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep streaming, count and report
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    if self.errors <= 3 or self.errors % 100 == 0:
                        log.exception("processor failed (%d errors so far)", self.errors)
                    out = image
                t1 = time.monotonic()
                self._lat_process.add((t1 - t0) * 1000.0, t1)
                if strip is not None:
                    out = np.ascontiguousarray(out)
                    out[-strip.shape[0]:] = strip
                vf = await loop.run_in_executor(None, self._to_frame, out, frame)
                self.frames_processed += 1
                if self._out is not None:
                    self.drops_out += 1
                self._out = (vf, t_in, media_time)
                self._out_event.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("worker failed")
            self._end()

    async def recv(self) -> VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._out is not None:
                vf, t_in, media_time = self._out
                self._out = None
                now = time.monotonic()
                self.frames_out += 1
                self._out_times.add(1.0, now)
                lat = (now - t_in) * 1000.0
                self._lat_server.add(lat, now)
                self.last_frame = {"pts": vf.pts, "time_base": str(vf.time_base), "media_time": round(media_time, 4),
                                   "server_ms": round(lat, 2)}
                return vf
            if self._ended:
                raise MediaStreamError
            self._out_event.clear()
            await self._out_event.wait()

    # ---- stats -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        now = time.monotonic()
        return {
            "fps_in": round(self._in_times.rate(now), 2),
            "fps_out": round(self._out_times.rate(now), 2),
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "frames_out": self.frames_out,
            "drops_in": self.drops_in,
            "drops_out": self.drops_out,
            "errors": self.errors,
            "last_error": self.last_error,
            "source_size": list(self.source_size) if self.source_size else None,
            "frame_size": list(self.frame_size) if self.frame_size else None,
            "downscaled": bool(self.source_size and self.frame_size and self.source_size != self.frame_size),
            "latency_ms": {
                "server": self._lat_server.percentiles(now),
                "process": self._lat_process.percentiles(now),
                "queue_wait": self._lat_wait.percentiles(now),
            },
            "last_frame": self.last_frame,
        }
