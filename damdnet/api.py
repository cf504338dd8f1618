"""The Python API: still images, video files and live sources through the product's own pipeline.

    import damdnet
    faces = damdnet.align_image("photo.jpg")                       # list[Face]: 68 landmarks, pose, 3DMM params
    for frame in damdnet.track_video("talk.mp4", tracks="talk.csv"):
        print(frame.index, [(f.track_id, round(f.yaw)) for f in frame.faces])

``align_image`` is ``python -m model.align_images``'s detect-and-align (``model.align_images.detect_and_align``); ``track_video``
and ``stream`` run ``run_stream.py``'s pipeline (``stream.app.run_source``: the same sources, detection schedule, tracker,
Kalman smoothing, renderer and sinks), with every CLI flag available as a keyword (``detect_every=5``,
``kalman={"pose_gate": 4.0}``, ``out="overlay.mp4"``, ``tracks="t.csv"``, ``meshes="dir/"``). User errors raise
``DamdnetError`` (= ``model.errors.UserError``, the base of every user error: a ``SourceError``, ``ConfigError``...
as raised where the cause is known) whose message is the line the CLI prints after ``error:``; anything else is a
bug and keeps its traceback. An input with no face anywhere is not an
error (as in the CLI): empty results and a ``NoFaceWarning`` whose message is the CLI's line after ``warning:``.

A ``Session`` holds the loaded model and detector; the module-level functions share one session per model setting.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator, Protocol

import numpy as np

from model.align_images import REFINE, NoFaceWarning, detect_and_align, no_face_message, read_image
from model.errors import UserError
from stream.align_batcher import AlignService
from stream.app import Engine, build_engine, run_source
from stream.config import RunConfig, load_config
from stream.pipeline import Job
from tracking.face import Face

# Config keys that choose the model and detector (a Session's); every other key is per run.
SESSION_KEYS = ("weights", "backbone", "device", "fast_path", "assets", "threads", "detector", "detect_score",
                "detect_max_side", "expression")


#: A user error (a missing file, a bad option, no model); ``str()`` is the CLI's one-line message. The one base of
#: the project's user errors (``model.errors.UserError``): the API raises them as they are, never wrapped.
DamdnetError = UserError


@dataclass
class FrameResult:
    """One frame of a video or live source with its tracked faces.

    index: 0-based frame number; time: seconds from the source's timestamps.
    faces: the confirmed tracks of this frame (``Face.track_id`` set).
    image: (H, W, 3) uint8 BGR, the decoded frame (keep only the results you need: frames are large).
    rendered: (H, W, 3) uint8 BGR overlay when the run renders (``out=`` or ``show=True``), else None.
    """

    index: int
    time: float
    faces: list[Face] = field(default_factory=list)
    image: np.ndarray | None = None
    rendered: np.ndarray | None = None


class ResultSink(Protocol):
    """Anything ``track_video(..., sinks=[...])`` / ``stream`` can write to: ``write`` per frame, in order,
    ``close`` (optional) once at the end."""

    def write(self, result: FrameResult) -> None: ...


def _frame_result(job: Job) -> FrameResult:
    return FrameResult(index=job.frame.index, time=job.frame.time, faces=list(job.faces), image=job.frame.image,
                       rendered=job.output)


def _flatten(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Keyword options -> dotted config keys (``kalman={"pose_gate": 4}`` -> ``kalman.pose_gate``)."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config(options: dict[str, Any], config_file: str | None = None) -> RunConfig:
    """The API's keywords (``_flatten``) onto the run description, as the CLI's flags: the same checks and lines
    (a ConfigError is a DamdnetError)."""
    return load_config(config_file, _flatten(options))


class Session:
    """A loaded model and detector, shared by every call made through it (streams run through it concurrently
    batch their crops together). Keywords are the CLI's model keys: ``weights`` (auto, damdnet, damdnet-authors,
    3ddfa-v2-mb05, 3ddfa-v2-mb1 or a checkpoint path), ``device``, ``fast_path``, ``assets``, ``threads``,
    ``detector``, ``detect_score``, ``detect_max_side``, ``backbone``."""

    def __init__(self, **model_options: Any) -> None:
        unknown = sorted(set(_flatten(model_options)) - set(SESSION_KEYS))
        if unknown:
            raise DamdnetError(f"not a model option: {unknown[0]} (model options: {', '.join(SESSION_KEYS)})")
        self._cfg = _config(model_options)
        self.model_options = {k: getattr(self._cfg, k) for k in SESSION_KEYS}
        self._engine = build_engine(self._cfg)

    @property
    def model_name(self) -> str:
        """The weights that loaded (``auto`` resolved), e.g. ``damdnet``."""
        return self._engine.aligner.name

    @property
    def triangles(self) -> np.ndarray:
        """(F, 3) int32 triangles of ``Face.vertices``."""
        return self._engine.aligner.morph.tri

    def align_image(self, image: str | Path | np.ndarray, dense: bool = False, refine: int = REFINE) -> list[Face]:
        """Every face in ``image`` (a file path, or an (H, W, 3) uint8 BGR array; (H, W) gray is accepted), largest
        detector score first as the detector orders them; an image without faces gives [] and a NoFaceWarning.
        ``refine``: re-crops of each face from its own landmarks after the detector crop
        (``model.align_images.align_boxes``; 0: none). Raises DamdnetError for an unreadable file."""
        name = str(image) if isinstance(image, (str, Path)) else "the image"
        if isinstance(image, (str, Path)):
            image = read_image(image)  # ImageError: a DamdnetError
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DamdnetError(f"image: expected an (H, W, 3) uint8 BGR array, got {img.dtype} {img.shape}")
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise DamdnetError(f"refine: expected a count of re-crops (0, 1, 2...), got {refine!r}")
        boxes, scores, res = detect_and_align(img, self._engine.aligner, self._engine.detector, dense=dense,
                                              refine=refine)
        if len(boxes) == 0:
            warnings.warn(no_face_message(name, 1, "image"), NoFaceWarning, stacklevel=2)
        conf = [None] * len(res) if res.confidence is None else [float(c) for c in res.confidence]
        from model.blendshapes import blendshapes

        blend = blendshapes(self._engine.aligner.morph.sparse, res.params, res.ext) if len(res) else []
        return [Face(box=np.asarray(boxes[i], np.float32), landmarks=res.landmarks[i], pose=res.pose[i],
                     params=res.params[i], roi=res.roi[i], vertices=None if res.vertices is None else res.vertices[i],
                     score=float(scores[i]), confidence=conf[i], ext=None if res.ext is None else res.ext[i],
                     blendshape_values=blend[i])
                for i in range(len(res))]

    def _run_config(self, source: str | Path, options: dict[str, Any]) -> RunConfig:
        flat = _flatten(options)
        clash = sorted(k for k in flat if k in SESSION_KEYS and flat[k] != self.model_options[k])
        if clash:
            raise DamdnetError(f"{clash[0]} is a model option: give it to the Session (or to the module-level "
                               f"function), not to one run")
        config_file = flat.pop("config", None)
        run = {"progress": False, **flat, "source": str(source), **self.model_options}
        return _config(run, config_file)

    def _engine_for_run(self) -> Engine:
        """The session's model and detector with a fresh batching service (a run closes its service at its end)."""
        e = self._engine
        return Engine(e.store, e.aligner, AlignService(e.aligner), e.detector)

    def track_video(self, source: str | Path, *, dense: bool = False, sinks: Iterable[ResultSink] = (),
                    **options: Any) -> "VideoTracks":
        """Run a video file (or any source: an image folder, ``synthetic:SECONDS``) through the pipeline; an
        iterator of FrameResult, every frame in order, none dropped. ``options`` are the CLI's keys (``out=``,
        ``tracks=``, ``meshes=``, ``mesh_format=``, ``detect_every=``, ``smooth=``, ``mode=``, ``max_frames=``, a
        ``config=`` YAML file...); ``sinks`` are objects with ``write(FrameResult)`` (and ``close()``). Outputs are
        finalised when the iteration ends, also when it is left early (with the frames written so far). Errors of
        the source or outputs raise DamdnetError on the first ``next()``."""
        return VideoTracks(self, self._run_config(source, options), list(sinks), dense)

    async def stream(self, source: str | Path, *, dense: bool = False, sinks: Iterable[ResultSink] = (),
                     **options: Any) -> AsyncIterator[FrameResult]:
        """Async iterator of FrameResult from a live source (``webcam:0``, a URL) or a file, on the running event
        loop. Live sources keep their latency policy: while the consumer is slow, the pipeline drops the oldest
        waiting frames (counted), so results never lag further behind. Same options and errors as
        ``track_video``."""
        cfg = self._run_config(source, options)
        feed = _Feed(list(sinks))
        results: asyncio.Queue = asyncio.Queue(maxsize=1)

        async def on_job(job: Job) -> bool:
            res = feed.write(job)
            if res is None:
                return False
            await results.put(res)
            return not feed.stopped

        task = asyncio.ensure_future(run_source(cfg, self._engine_for_run(), on_job, dense=dense, on_no_face=feed.note))
        try:
            while True:
                getter = asyncio.ensure_future(results.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not results.empty():
                    yield results.get_nowait()
                break
        finally:
            feed.stopped = True  # a consumer that left: the run finishes the frames in flight and closes its outputs
            while not task.done():
                while not results.empty():
                    results.get_nowait()
                await asyncio.wait({task}, timeout=0.05)
        feed.finish(task.exception())
        feed.warn()


def _close_sinks(sinks: list) -> None:
    for s in sinks:
        close = getattr(s, "close", None)
        if close is not None:
            close()


class _Feed:
    """Turns the pipeline's jobs into FrameResults for a consumer and the user's sinks; a sink that raises stops
    the run (re-raised at the end), as does a consumer that left (``stopped``)."""

    def __init__(self, sinks: list) -> None:
        self.sinks = sinks
        self.stopped = False
        self.error: BaseException | None = None
        self.no_face: str | None = None  # the run's no-face line (``run_source``'s on_no_face), warned at the end

    def note(self, message: str) -> None:
        """``run_source``'s ``on_no_face``: keep the line for the consumer's thread."""
        self.no_face = message

    def warn(self) -> None:
        """Give the NoFaceWarning of a run without a face; called where the consumer reaches the end (not when it
        left early)."""
        if self.no_face is not None:
            warnings.warn(self.no_face, NoFaceWarning, stacklevel=3)

    def write(self, job: Job) -> FrameResult | None:
        """The job's FrameResult after the sinks wrote it; None when the run should stop."""
        if self.stopped:
            return None
        res = _frame_result(job)
        try:
            for s in self.sinks:
                s.write(res)
        except Exception as exc:
            self.error, self.stopped = exc, True
            return None
        return res

    def finish(self, run_error: BaseException | None) -> None:
        """Close the sinks, then raise the first error (the run's, or a sink's)."""
        try:
            _close_sinks(self.sinks)
        finally:
            if run_error is not None:
                raise run_error
            if self.error is not None:
                raise self.error


_END = object()


class VideoTracks:
    """Iterator of FrameResult over one run of the pipeline on a background thread (its own event loop). At most
    ``queue_size`` results wait for the consumer; the pipeline waits for the consumer beyond that (file sources
    drop nothing). ``close()`` (or leaving a ``with`` block or a ``for`` loop early and dropping the iterator)
    ends the run; ``run()`` consumes everything and returns the number of frames."""

    def __init__(self, session: Session, cfg: RunConfig, sinks: list, dense: bool = False) -> None:
        self._session = session
        self._dense = dense
        self._cfg = cfg
        self._feed = _Feed(sinks)
        self._q: queue.Queue = queue.Queue(maxsize=max(1, int(cfg.queue_size)))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        feed = self._feed

        async def on_job(job: Job) -> bool:
            res = feed.write(job)
            if res is None:
                return False
            if not await asyncio.get_running_loop().run_in_executor(None, self._put, res):
                feed.stopped = True  # the consumer left
            return not feed.stopped

        final: Any = _END
        try:
            run_error: BaseException | None = None
            try:
                asyncio.run(run_source(self._cfg, self._session._engine_for_run(), on_job, dense=self._dense,
                                 on_no_face=feed.note))
            except BaseException as exc:
                run_error = exc
            feed.finish(run_error)
        except BaseException as exc:  # handed to the consumer
            final = exc
        self._put(final)

    def __iter__(self) -> "VideoTracks":
        return self

    def __next__(self) -> FrameResult:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="damdnet-track", daemon=True)
            self._thread.start()
        item = self._q.get()
        if item is _END or isinstance(item, BaseException):
            self._done = True
            self._thread.join()
            if isinstance(item, BaseException):
                raise item
            self._feed.warn()
            raise StopIteration
        return item

    def run(self) -> int:
        """Consume the whole run (writing its outputs and sinks); the number of frames."""
        return sum(1 for _ in self)

    def close(self) -> None:
        """End the run now; outputs are closed with the frames written so far."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._done = True

    def __enter__(self) -> "VideoTracks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._done and self._thread is not None:
            self._stop.set()


@lru_cache(maxsize=4)
def _shared_session(items: tuple) -> Session:
    return Session(**dict(items))


def _split(options: dict[str, Any]) -> tuple[Session, dict[str, Any]]:
    model = {k: options.pop(k) for k in list(options) if k in SESSION_KEYS}
    return _shared_session(tuple(sorted(model.items()))), options


def session(**model_options: Any) -> Session:
    """The shared Session for these model options (loaded once, reused by the module-level functions)."""
    return _split(dict(model_options))[0]


def align_image(image: str | Path | np.ndarray, *, dense: bool = False, refine: int = REFINE,
                **model_options: Any) -> list[Face]:
    """Faces in an image file or (H, W, 3) uint8 BGR array: see ``Session.align_image``."""
    s, rest = _split(dict(model_options))
    if rest:
        raise DamdnetError(f"not a model option: {sorted(rest)[0]} (model options: {', '.join(SESSION_KEYS)})")
    return s.align_image(image, dense=dense, refine=refine)


def track_video(source: str | Path, *, dense: bool = False, sinks: Iterable[ResultSink] = (),
                **options: Any) -> VideoTracks:
    """Per-frame tracked faces of a video: see ``Session.track_video`` (model options go to the shared session)."""
    s, rest = _split(dict(options))
    return s.track_video(source, dense=dense, sinks=sinks, **rest)


def stream(source: str | Path, *, dense: bool = False, sinks: Iterable[ResultSink] = (),
           **options: Any) -> AsyncIterator[FrameResult]:
    """Async iterator of tracked faces from a live source: see ``Session.stream``."""
    s, rest = _split(dict(options))
    return s.stream(source, dense=dense, sinks=sinks, **rest)
