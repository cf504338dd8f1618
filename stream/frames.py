"""Plain records that flow through the streaming pipeline: frames in (the faces out are ``tracking.face.Face``).

Conventions (DESIGN.md section 7): images ``(H, W, 3) uint8 BGR``; landmarks ``(68, 3) float32`` in frame pixels
(x right, y down, z toward the camera scaled like x); boxes/ROIs ``(x1, y1, x2, y2)`` float pixels.
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass
class Frame:
    """One decoded frame.

    index: 0-based position of the frame among the frames the source produced.
    time: seconds from the source's timestamps (PTS for videos, relative to the first frame; variable frame rates
        are kept as they are; index / fps for image folders; capture clock for webcams).
    image: ``(H, W, 3) uint8 BGR``, already rotated upright.
    capture_ns: ``time.perf_counter_ns()`` when the source produced the frame (for end-to-end latency).
    """

    index: int
    time: float
    image: np.ndarray
    capture_ns: int = field(default_factory=_time.perf_counter_ns)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class AudioTrack:
    """The audio of a file source, for output videos that keep it (``stream.audio``).

    path: the file (or URL) to read it from; index: which of its audio streams (0: the first); start: time in seconds
    of the source's first video frame in the file's clock (output time 0: the audio is shifted by it); codec: name.
    """

    path: str
    index: int = 0
    start: float = 0.0
    codec: str = ""


@dataclass
class VideoInfo:
    """What a source knows about its stream before the first frame is used.

    width, height: pixels of the frames as delivered (after rotation).
    fps: average frame rate (frames per second; a nominal value for live sources and image folders).
    time_base: resolution of the source's timestamps in seconds (e.g. ``Fraction(1, 12800)``).
    frame_count: number of frames when known in advance (files, image folders), else None.
    rotation: display rotation found in the file, degrees counter-clockwise (PyAV/FFmpeg display-matrix
        convention), already applied to the frames; 0 when none.
    is_live: True for webcams and network streams (latency matters more than completeness).
    name: short human-readable name of the source (file name, ``webcam:0``...).
    stills: True when the frames are unrelated still images (an image folder that is not a numbered sequence):
        every frame is analysed on its own (detector on each, no tracking across frames, ids per image).
    audio: the file's audio track (``AudioTrack``), None without one (and for live sources, images, synthetic).
    """

    width: int
    height: int
    fps: float
    time_base: Fraction = Fraction(1, 1000)
    frame_count: int | None = None
    rotation: int = 0
    is_live: bool = False
    name: str = ""
    stills: bool = False
    audio: AudioTrack | None = None

    @property
    def duration(self) -> float | None:
        """Nominal duration in seconds (frame_count / fps) or None when unknown."""
        if self.frame_count is None or not self.fps:
            return None
        return self.frame_count / self.fps


POSE_NAMES = ("yaw", "pitch", "roll", "scale", "tx", "ty")
