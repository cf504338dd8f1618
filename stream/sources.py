"""Frame sources: video files and URLs (PyAV), webcams (OpenCV), image folders/globs, and registered extras.

``open_source(spec, **options)`` picks the source from ``spec``:

- ``webcam`` / ``webcam:N`` / ``webcam:/dev/videoN``: OpenCV capture; options ``width``, ``height``, ``fps``.
- ``synthetic`` / ``synthetic:SECONDS`` and any other name registered with :func:`register_source`.
- a folder, a glob (``frames/*.png``) or a single image file: images in natural sorted order; option ``fps``
  (default 25) gives ``time = index / fps``. They are *stills* (``info.stills``: each image analysed on its own)
  unless they are a numbered frame sequence (``frame_0001.png``, ``frame_0002.png``... of one size, see
  :func:`is_frame_sequence`) or option ``sequence=True`` says so; ``sequence=False`` forces stills.
- anything else: a video file or URL decoded by PyAV (mp4, webm, avi, mkv, mov, rtsp://...). Rotation metadata
  (display matrix) is applied so frames come out upright; times come from the PTS (relative to the first frame).

Every source is an iterator of :class:`~stream.frames.Frame` with ``.info`` (:class:`~stream.frames.VideoInfo`),
``.read()`` (next frame or None), ``.close()`` and context-manager support. Sources are synchronous: the pipeline
calls ``read()`` from an executor thread; ``read()`` and ``close()`` may come from different threads (a lock
serialises them). Problems users can fix raise :class:`SourceError` with a one-line message; damaged data in the
middle of a stream (corrupt packets, unreadable images) is skipped and counted in ``.warnings``.
"""
from __future__ import annotations

import contextlib
import glob as _glob
import importlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import UserError
from stream.frames import Frame, VideoInfo

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm"})
LIVE_URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp"})
DEFAULT_FPS = 25.0


class SourceError(UserError):
    """A problem with the input the user can fix; ``str(error)`` is one line meant for them."""


# --------------------------------------------------------------------------------------------------------------
# Base class


class Source:
    """Iterator of frames with ``info``; subclasses implement :meth:`_frames` (a generator) and :meth:`_release`.

    Attributes: ``info`` (VideoInfo), ``warnings`` (int, problems skipped so far), ``frames_read`` (int).
    """

    info: VideoInfo

    def __init__(self, info: VideoInfo, max_frames: int | None = None) -> None:
        self.info = info
        self.max_frames = max_frames
        self.warnings = 0
        self.frames_read = 0
        self._lock = threading.RLock()
        self._gen: Iterator[Frame] | None = None
        self._closed = False
        self.input_paths: list[Path] = []  # files read (outputs must never be one of them)

    # subclasses -------------------------------------------------------------------------------------------
    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:
        """Free the underlying resources (called once by close())."""

    # public -----------------------------------------------------------------------------------------------
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the stream (or after close())."""
        with self._lock:
            if self._closed:
                return None
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                return None
            if self._gen is None:
                self._gen = self._frames()
            frame = next(self._gen, None)
            if frame is not None:
                self.frames_read += 1
            return frame

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> Frame:
        frame = self.read()
        if frame is None:
            raise StopIteration
        return frame

    def close(self) -> None:
        """Release the device/file; idempotent; safe to call while another thread is inside read()."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._gen is not None and hasattr(self._gen, "close"):
                self._gen.close()
            self._gen = None
            self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"<{type(self).__name__} {i.name!r} {i.width}x{i.height} @{i.fps:.3g}fps>"

    def _warn(self, message: str, *, log_it: bool = True) -> None:
        self.warnings += 1
        if log_it:
            log.warning("%s: %s", self.info.name, message)


# --------------------------------------------------------------------------------------------------------------
# Orientation (display matrix)


def orientation_from_matrix(matrix: np.ndarray | list[int]) -> tuple[bool, bool, bool]:
    """(transpose, flip_horizontal, flip_vertical) that turn coded frames into displayed ones.

    ``matrix``: FFmpeg display matrix, 9 int32 (16.16 fixed point; only the signs of the 2x2 part matter here).
    The display maps a coded pixel (x, y) to (a*x + c*y, b*x + d*y) with a, b, c, d = m[0], m[1], m[3], m[4];
    angles other than multiples of 90 degrees are rounded to the nearest one.
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1)
    a, b, c, d = m[0], m[1], m[3], m[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no transpose: x' ~ a x, y' ~ d y
        return False, a < 0, d < 0
    return True, c < 0, b < 0  # transposed: x' ~ c y, y' ~ b x


def orientation_from_rotation(degrees_ccw: float) -> tuple[bool, bool, bool]:
    """(transpose, flip_h, flip_v) for a display rotation of ``degrees_ccw`` (counter-clockwise, multiple of 90)."""
    r = int(round(degrees_ccw / 90.0)) % 4
    return {0: (False, False, False), 1: (True, False, True), 2: (False, True, True), 3: (True, True, False)}[r]


def apply_orientation(image: np.ndarray, orientation: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply (transpose, flip_h, flip_v) to an ``(H, W, C)`` image; returns a contiguous array."""
    import cv2

    transpose, flip_h, flip_v = orientation
    if transpose and flip_v and not flip_h:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if transpose and flip_h and not flip_v:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if transpose:
        image = cv2.transpose(image)
    if flip_h and flip_v:
        return cv2.flip(image, -1)
    if flip_h:
        return cv2.flip(image, 1)
    if flip_v:
        return cv2.flip(image, 0)
    return np.ascontiguousarray(image)


def rotate_image(image: np.ndarray, degrees_ccw: float) -> np.ndarray:
    """Rotate an image counter-clockwise by a multiple of 90 degrees (the display-matrix convention)."""
    return apply_orientation(image, orientation_from_rotation(degrees_ccw))


# --------------------------------------------------------------------------------------------------------------
# Video files and URLs (PyAV)


def _normalise_degrees(degrees: float) -> int:
    """Angle in (-180, 180] degrees, rounded to an int."""
    return -((-int(round(degrees)) + 180) % 360 - 180)


def _av_reason(error: BaseException) -> str:
    reason = getattr(error, "strerror", None) or str(error)
    return str(reason).strip().rstrip(".")


def _is_url(spec: str) -> bool:
    return re.match(r"^[A-Za-z][\w+.-]*://", spec) is not None


class VideoFileSource(Source):
    """A video file or URL decoded with PyAV (threaded decoding); frames BGR, upright, PTS-derived times.

    ``time`` of a frame is ``(pts - pts_of_first_frame) * time_base`` seconds: variable frame rates are kept; a
    frame without a PTS gets the previous time + 1/fps. Corrupt packets are skipped (``warnings`` counts them),
    frames the decoder flags as corrupt (error-concealed) are still delivered and counted.
    """

    def __init__(
        self,
        spec: str | os.PathLike[str],
        *,
        max_frames: int | None = None,
        thread_type: str | None = None,
        threads: int = 0,
        live: bool | None = None,
        av_options: dict[str, str] | None = None,
    ) -> None:
        import av

        spec = str(spec)
        is_url = _is_url(spec)
        path_name = spec if is_url else Path(spec).name
        if not is_url:
            if not os.path.exists(spec):
                raise SourceError(f"no such file: {spec}")
            if os.path.isdir(spec):
                raise SourceError(f"{spec} is a folder without images")
        try:
            container = av.open(spec, mode="r", options=av_options or {})
        except av.error.FFmpegError as e:
            raise SourceError(f"cannot decode {spec}: {_av_reason(e)}") from e
        except OSError as e:  # permission denied and the like
            raise SourceError(f"cannot open {spec}: {e.strerror or e}") from e
        self._container = container
        self._spec = spec
        try:
            if not container.streams.video:
                raise SourceError(f"no video stream in {spec}")
            stream = container.streams.video[0]
            if live is None:
                live = is_url and spec.split(":", 1)[0].lower() in LIVE_URL_SCHEMES
            # frame threading adds a few frames of delay: fine for files, slice threading for live streams
            stream.thread_type = thread_type or ("SLICE" if live else "AUTO")
            if threads:
                stream.codec_context.thread_count = threads
            self._stream = stream
            self.skipped_packets = 0
            self.corrupt_frames = 0
            self._decode_errors: list[str] = []
            self._av_frames = self._decode()
            first = next(self._av_frames, None)
            if first is None:
                why = self._decode_errors[0] if self._decode_errors else "no frame could be decoded"
                raise SourceError(f"cannot decode {spec}: {why}")
        except BaseException:
            container.close()
            raise
        self._first = first
        self._orientation, rotation = self._orientation_of(first, stream)
        transpose = self._orientation[0]
        width, height = (first.height, first.width) if transpose else (first.width, first.height)

        fps = None
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate and float(rate) > 0:
                fps = float(rate)
                break
        self._fps_known = fps is not None
        fps = fps or DEFAULT_FPS
        time_base = stream.time_base or Fraction(1, 1_000_000)
        frame_count: int | None = int(stream.frames) if stream.frames and stream.frames > 0 else None
        self._frame_count_exact = frame_count is not None
        from_duration = None
        if stream.duration and stream.time_base:
            from_duration = int(round(float(stream.duration * stream.time_base) * fps)) or None
        elif container.duration and not is_url:
            from_duration = int(round(container.duration / 1e6 * fps)) or None
        if frame_count is None and not is_url:
            frame_count = from_duration
        elif frame_count is not None and from_duration is not None and from_duration < frame_count - 1:
            # an edit list hides the first samples (the demuxer discards them): count only what is presented
            frame_count = from_duration
        audio = None
        if not live:  # live streams' audio is not kept (latency first)
            from stream.audio import probe_audio

            start = float(first.pts * time_base) if first.pts is not None else 0.0
            audio = probe_audio(container, spec, start)
        info = VideoInfo(
            width=int(width), height=int(height), fps=fps, time_base=Fraction(time_base), frame_count=frame_count,
            rotation=int(rotation), is_live=bool(live), name=path_name, audio=audio,
        )
        super().__init__(info, max_frames)
        self._time_base = float(time_base)
        self.input_paths = [] if is_url else [Path(spec)]

    @staticmethod
    def _orientation_of(frame: Any, stream: Any) -> tuple[tuple[bool, bool, bool], int]:
        """Orientation from the first frame's display matrix, else the legacy ``rotate`` tag (clockwise)."""
        import av.sidedata.sidedata as sd

        try:
            for data in frame.side_data:
                if data.type == sd.Type.DISPLAYMATRIX:
                    matrix = np.frombuffer(bytes(data), dtype=np.int32)
                    if matrix.size == 9:
                        return orientation_from_matrix(matrix), _normalise_degrees(frame.rotation)
        except Exception:  # pragma: no cover - older/newer PyAV without these details
            pass
        rotation = int(getattr(frame, "rotation", 0) or 0)
        if not rotation:
            tag = (stream.metadata or {}).get("rotate")
            try:
                rotation = -int(float(tag)) if tag else 0
            except ValueError:
                rotation = 0
        rotation = _normalise_degrees(rotation)
        return orientation_from_rotation(rotation), rotation

    def _decode(self) -> Iterator[Any]:
        """PyAV frames in presentation order; skips packets the decoder rejects."""
        import av

        container, stream = self._container, self._stream
        demux_failures = 0
        while True:
            try:
                for packet in container.demux(stream):
                    demux_failures = 0
                    try:
                        decoded = packet.decode()
                    except av.error.FFmpegError as e:
                        self.skipped_packets += 1
                        if len(self._decode_errors) < 5:
                            self._decode_errors.append(_av_reason(e))
                        log.debug("%s: skipped a corrupt packet (pts %s): %s", self._spec, packet.pts, e)
                        continue
                    yield from decoded
                return
            except av.error.FFmpegError as e:  # read error in the container: try to go on a few times
                demux_failures += 1
                self.skipped_packets += 1
                if len(self._decode_errors) < 5:
                    self._decode_errors.append(_av_reason(e))
                if demux_failures >= 5:
                    log.warning("%s: stopped reading after repeated errors: %s", self._spec, _av_reason(e))
                    return

    def _frames(self) -> Iterator[Frame]:
        tb = self._time_base
        first_pts: int | None = None
        last_time = -1.0 / self.info.fps
        index = 0
        av_frame = self._first
        self._first = None
        reported_skips = 0
        while av_frame is not None:
            if self.skipped_packets > reported_skips:
                self.warnings += self.skipped_packets - reported_skips
                reported_skips = self.skipped_packets
            pts = av_frame.pts
            if pts is None:
                t = last_time + 1.0 / self.info.fps
            else:
                if first_pts is None:
                    first_pts = pts
                t = (pts - first_pts) * tb
            last_time = t
            if av_frame.is_corrupt:
                self.corrupt_frames += 1
                self.warnings += 1
            image = av_frame.to_ndarray(format="bgr24")
            if any(self._orientation):
                image = apply_orientation(image, self._orientation)
            yield Frame(index=index, time=float(t), image=image, capture_ns=time.perf_counter_ns())
            index += 1
            av_frame = next(self._av_frames, None)
        if self.skipped_packets > reported_skips:
            self.warnings += self.skipped_packets - reported_skips
        problems = []
        if self.skipped_packets:
            problems.append(f"skipped {self.skipped_packets} corrupt packet(s)")
        if self.corrupt_frames:
            problems.append(f"{self.corrupt_frames} frame(s) decoded with errors")
        expected = self.info.frame_count
        if self._frame_count_exact and expected is not None and index < expected - 1:
            self.warnings += 1
            problems.append(f"only {index} of {expected} frames could be decoded (truncated file?)")
        if problems:
            log.warning("%s: %s", self.info.name, "; ".join(problems))

    def _release(self) -> None:
        self._av_frames = iter(())
        self._first = None
        self._container.close()


# --------------------------------------------------------------------------------------------------------------
# Webcams (OpenCV)


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV's own log (``[ WARN:0@1.2] ... can't open camera by index``) silenced for the block, then restored."""
    import cv2

    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_ is None:  # a build without cv2.utils.logging
        yield
        return
    level = logging_.getLogLevel()
    logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_.setLogLevel(level)


class WebcamSource(Source):
    """A live camera through ``cv2.VideoCapture``; ``time`` is seconds since the first frame (capture clock).

    ``width``/``height``/``fps`` are requests; the camera may choose others (``info`` has what it delivers).
    """

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        backend: int | None = None,
        max_failures: int = 10,
    ) -> None:
        import cv2

        name = f"webcam:{device}"
        with quiet_opencv():  # each backend tried logs its own failure (13 lines for no camera): ours is one line
            cap = cv2.VideoCapture(device, backend) if backend is not None else cv2.VideoCapture(device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open webcam {device}: no such camera, or it is busy or not permitted")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(width))
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(height))
        if fps:
            cap.set(cv2.CAP_PROP_FPS, float(fps))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latency over completeness (ignored by some backends)
        with quiet_opencv():
            ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(f"cannot read from webcam {device}: the camera opened but delivered no frame")
        self._first_ns = time.perf_counter_ns()
        self._cap = cap
        self._first_image = image
        self._max_failures = max_failures
        real_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        info = VideoInfo(
            width=int(image.shape[1]), height=int(image.shape[0]), fps=float(real_fps if real_fps > 0 else fps or 30.0),
            time_base=Fraction(1, 1_000_000), frame_count=None, rotation=0, is_live=True, name=name,
        )
        super().__init__(info, max_frames)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        image, ns = self._first_image, self._first_ns
        self._first_image = None
        failures = 0
        while True:
            if image is not None:
                if image.ndim == 2:
                    image = np.repeat(image[:, :, None], 3, axis=2)
                yield Frame(index=index, time=(ns - self._first_ns) / 1e9, image=image, capture_ns=ns)
                index += 1
            ok, image = self._cap.read()
            ns = time.perf_counter_ns()
            if not ok or image is None:
                image = None
                failures += 1
                self.warnings += 1
                if failures >= self._max_failures:
                    log.warning("%s: camera stopped delivering frames", self.info.name)
                    return
                time.sleep(0.01)
            else:
                failures = 0

    def _release(self) -> None:
        self._cap.release()


# --------------------------------------------------------------------------------------------------------------
# Image folders / globs


def _natural_key(path: Path) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", str(path))]


def list_images(spec: str) -> list[Path]:
    """Image files of a folder, a glob pattern or a single image path, in natural sorted order (frame2 < frame10)."""
    if os.path.isdir(spec):
        candidates = [p for p in Path(spec).iterdir() if p.is_file()]
    elif _glob.has_magic(spec):
        candidates = [Path(p) for p in _glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p)]
    else:
        candidates = [Path(spec)]
    return sorted((p for p in candidates if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header (no decoding), or None when it cannot be read."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:
        return None


def is_frame_sequence(paths: list[Path]) -> bool:
    """True when ``paths`` look like frames of one video: at least two files with one name pattern
    (``PREFIX<number>.EXT``, the same prefix and extension), numbers without gaps, and all of one size."""
    if len(paths) < 2:
        return False
    prefixes, exts, numbers = set(), set(), []
    for p in paths:
        m = _NUMBERED.match(p.stem)
        if m is None:
            return False
        prefixes.add(m.group(1))
        exts.add(p.suffix.lower())
        numbers.append(int(m.group(2)))
    if len(prefixes) != 1 or len(exts) != 1 or len(set(numbers)) != len(numbers):
        return False
    if max(numbers) - min(numbers) + 1 != len(numbers):
        return False
    sizes = {_image_size(p) for p in paths}
    return len(sizes) == 1 and None not in sizes


class ImageSource(Source):
    """Images in order: ``time = index / fps``; unreadable images are skipped and counted.

    ``stills`` (default True): unrelated photos, each analysed on its own (``info.stills``); False: frames of one
    video (tracked across images).
    """

    def __init__(self, paths: list[Path], *, name: str, fps: float = DEFAULT_FPS, max_frames: int | None = None,
                 stills: bool = True):
        import cv2

        if not paths:
            raise SourceError(f"no images in {name}")
        if fps <= 0:
            raise SourceError(f"fps must be positive, got {fps}")
        first = None
        skipped = 0
        for path in paths:
            first = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if first is not None:
                break
            skipped += 1
        if first is None:
            raise SourceError(f"cannot read any image in {name} ({len(paths)} file(s))")
        self._paths = paths[skipped:]
        self._first = first
        info = VideoInfo(
            width=int(first.shape[1]), height=int(first.shape[0]), fps=float(fps),
            time_base=Fraction(fps).limit_denominator(1_000_000) ** -1, frame_count=len(self._paths),
            rotation=0, is_live=False, name=name, stills=bool(stills),
        )
        super().__init__(info, max_frames)
        self.warnings = skipped
        self.input_paths = list(paths)

    def _frames(self) -> Iterator[Frame]:
        import cv2

        index = 0
        for i, path in enumerate(self._paths):
            image = self._first if i == 0 else cv2.imread(str(path), cv2.IMREAD_COLOR)
            if i == 0:
                self._first = None
            if image is None:
                self._warn(f"cannot read image {path}, skipped")
                continue
            yield Frame(index=index, time=index / self.info.fps, image=image, capture_ns=time.perf_counter_ns())
            index += 1


# --------------------------------------------------------------------------------------------------------------
# Registry and open_source

SourceFactory = Callable[..., Source]
"""``factory(arg, **options) -> Source``; ``arg`` is the text after ``NAME:`` in the spec, or None."""

_REGISTRY: dict[str, SourceFactory] = {}

# Optional modules that register a source kind when imported (module must call register_source(NAME, factory)).
_PLUGIN_MODULES: dict[str, str] = {"synthetic": "stream.synthetic"}


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``NAME`` and ``NAME:ARG`` specs open through ``factory(arg_or_None, **options)``."""
    _REGISTRY[name.lower()] = factory


def registered_sources() -> list[str]:
    """Names of the source kinds that ``open_source`` accepts besides paths and URLs."""
    return sorted(set(_REGISTRY) | set(_PLUGIN_MODULES))


def _open_webcam(arg: str | None, **options: Any) -> Source:
    options = _check_options("webcam", options, {"width", "height", "fps", "max_frames", "backend", "max_failures"})
    device: int | str = 0
    if arg:
        device = int(arg) if arg.strip().isdigit() else arg
    return WebcamSource(device, **options)


register_source("webcam", _open_webcam)


def _factory_for(name: str) -> SourceFactory | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    module = _PLUGIN_MODULES.get(name)
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise SourceError(f"{name} source is not available: {module.replace('.', '/')}.py is missing") from e
    if name not in _REGISTRY:
        raise SourceError(f"{name} source is not available: {module} did not register it")
    return _REGISTRY[name]


def _check_options(kind: str, options: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SourceError(f"unknown option(s) for a {kind} source: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")
    return options


def open_source(spec: str | os.PathLike[str], **options: Any) -> Source:
    """Open a frame source from a spec string (see module docstring); options set to None are ignored.

    Raises SourceError (one-line message) for missing files, undecodable videos, files without a video stream,
    cameras that cannot be opened, empty folders/globs and unknown options.
    """
    spec = os.fspath(spec)
    if not spec:
        raise SourceError("empty source: give a video file, an image folder/glob, webcam:N or synthetic")
    sequence = options.pop("sequence", None)  # images only: "auto"/None, True, False
    match = re.match(r"^([A-Za-z][\w-]*)(?::(.*))?$", spec, flags=re.S)
    if match and not _is_url(spec):
        name = match.group(1).lower()
        factory = None
        if name in _REGISTRY or name in _PLUGIN_MODULES:
            if not os.path.exists(spec) or match.group(2) is not None:
                factory = _factory_for(name)
        if factory is not None:
            options = {k: v for k, v in options.items() if v is not None}
            return factory(match.group(2) or None, **options)

    is_glob = not _is_url(spec) and _glob.has_magic(spec) and not os.path.exists(spec)
    if is_glob or os.path.isdir(spec) or Path(spec).suffix.lower() in IMAGE_EXTENSIONS:
        options = _check_options("image", options, {"fps", "max_frames"})
        if not is_glob and not os.path.exists(spec):
            raise SourceError(f"no such file: {spec}")
        paths = list_images(spec)
        if not paths:
            what = "no images match" if is_glob else "no images in folder"
            raise SourceError(f"{what} {spec}")
        if sequence in (None, "auto"):
            sequence = is_frame_sequence(paths)
        return ImageSource(paths, name=spec, stills=not sequence, **options)

    options = _check_options("video", options, {"max_frames", "thread_type", "threads", "live", "av_options"})
    return VideoFileSource(spec, **options)
