"""The asyncio pipeline: source -> analyse (detect, align, track, smooth) -> render -> sinks.

Each stage is an asyncio task; stages talk through bounded queues; CPU work runs in one single-thread executor per
stage (torch, numba and OpenCV release the GIL, so stages overlap on different frames and the event loop stays free
for I/O and WebRTC). Live sources favour latency: when a stage falls behind, the oldest waiting frame is dropped and
counted, so delay never grows. File sources favour completeness: nothing is dropped; back-pressure slows decoding;
the analysis stage looks a few frames ahead (``analyzer.lookahead``, ``stream.lookahead``): a frame where a new
track is not confirmed yet waits until it is, so a confirmed face keeps its first frames and a false one is never
reported.
One end-of-stream marker flows through every stage; ``stop()`` (Ctrl-C, SIGTERM, a peer leaving) ends the source
early and the frames already read still reach the sinks, which are then closed (files finalised).

Errors: when any stage raises (a sink on a full disk, a source, the analyser), every other stage is cancelled at
once (no stage waits on a queue whose other end is gone), the source is closed, every sink is *aborted* (its
temporary file removed, the final name left as it was: a failed run never commits a truncated file) and the first
error propagates from ``run()``. Sink write/close errors come as ``SinkError`` naming the file and the cause. When a
sink fails only while finishing (a full disk on its last write), the sinks after it are aborted too; those already
closed are complete files.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, Sequence

import numpy as np

from stream.frames import Frame
from stream.lookahead import ConfirmWindow
from stream.stats import Stats
from tracking.face import Face

EOS = object()  # end-of-stream marker


@dataclass
class Job:
    """A frame on its way through the stages."""

    frame: Frame
    faces: list[Face] = field(default_factory=list)
    output: np.ndarray | None = None  # rendered frame


class FrameSource(Protocol):
    """What the pipeline reads: ``read()`` blocks for the next frame, None at the end."""

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class Analyzer(Protocol):
    async def analyze(self, frame: Frame, stats: Stats) -> list[Face]: ...


class Renderer(Protocol):
    def render(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray: ...


class Sink(Protocol):
    """``close()`` commits what was written; ``abort()`` (optional: sinks without it are closed) discards it."""

    def write_job(self, job: Job) -> None: ...

    def close(self) -> None: ...


class StageQueue:
    """Bounded FIFO between two stages. ``live``: a full queue drops its oldest item (counted) instead of waiting."""

    def __init__(self, maxsize: int, live: bool, stats: Stats, name: str) -> None:
        self._q: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
        self.live = live
        self.stats = stats
        self.name = name

    async def put(self, item: Any) -> None:
        if item is EOS or not self.live:
            await self._q.put(item)
            return
        while self._q.full():
            old = self._q.get_nowait()
            if old is EOS:  # never drop the end marker
                self._q.put_nowait(old)
                return
            self.stats.drop(self.name)
        self._q.put_nowait(item)

    async def get(self) -> Any:
        return await self._q.get()


class Pipeline:
    """Runs one source through analyser, renderer and sinks. ``run()`` returns the Stats of the run."""

    def __init__(self, source: FrameSource, analyzer: Analyzer, renderer: Renderer | None, sinks: Sequence[Sink],
                 live: bool, queue_size: int = 4, stats: Stats | None = None,
                 on_frame: Callable[[Job], Awaitable[None] | None] | None = None,
                 on_stats: Callable[[Stats], None] | None = None, stats_every: float = 0.0) -> None:
        self.source = source
        self.analyzer = analyzer
        self.renderer = renderer
        self.sinks = list(sinks)
        self.live = live
        self.queue_size = queue_size
        self.stats = stats or Stats()
        self.on_frame = on_frame
        self.on_stats = on_stats
        self.stats_every = stats_every
        self._stop = asyncio.Event()
        self._prefetch = None if live else getattr(analyzer, "prefetch", None)
        self._pools = {name: ThreadPoolExecutor(1, thread_name_prefix=f"stage-{name}")
                       for name in ("decode", "render", "sink")}

    def stop(self) -> None:
        """Ask the source to end; frames already read still flow to the sinks."""
        self._stop.set()

    async def _in(self, pool: str, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pools[pool], fn, *args)

    async def _read(self, out: StageQueue) -> None:
        # The end marker goes out only at a normal end (source finished or stop()). On an error or a cancel it must
        # not be awaited: the downstream stages are being cancelled, a full queue would never drain (a hang).
        while not self._stop.is_set():
            t0 = time.perf_counter()
            frame = await self._in("decode", self.source.read)
            if frame is None:
                break
            self.stats.add_stage("decode", (time.perf_counter() - t0) * 1e3)
            self.stats.frames_in += 1
            if self._prefetch is not None:  # file sources: every frame is analysed, so work can start early
                self._prefetch(frame)
            await out.put(Job(frame))
        await out.put(EOS)

    async def _analyze(self, inp: StageQueue, out: StageQueue) -> None:
        size = 0 if self.live else int(getattr(self.analyzer, "lookahead", 0) or 0)
        analyze_all = getattr(self.analyzer, "analyze_all", None)
        if size and analyze_all is not None:
            await self._analyze_ahead(inp, out, ConfirmWindow(size), analyze_all)
            return
        while (job := await inp.get()) is not EOS:
            job.faces = await self.analyzer.analyze(job.frame, self.stats)
            await out.put(job)
        await out.put(EOS)

    async def _analyze_ahead(self, inp: StageQueue, out: StageQueue, window: ConfirmWindow,
                             analyze_all: Callable) -> None:
        """File sources: frames with a face of a track not confirmed yet wait (at most ``window.size`` frames) until
        the track is confirmed (its rows are kept) or dies (dropped); frames leave in order."""
        while (job := await inp.get()) is not EOS:
            res = await analyze_all(job.frame, self.stats)
            for ready, faces in window.push(job, res.faces, res.confirmed, res.alive):
                ready.faces = faces
                await out.put(ready)
        for ready, faces in window.flush():
            ready.faces = faces
            await out.put(ready)
        await out.put(EOS)

    async def _render(self, inp: StageQueue, out: StageQueue) -> None:
        while (job := await inp.get()) is not EOS:
            if self.renderer is not None:
                t0 = time.perf_counter()
                job.output = await self._in("render", self.renderer.render, job.frame.image, job.faces)
                self.stats.add_stage("render", (time.perf_counter() - t0) * 1e3)
            await out.put(job)
        await out.put(EOS)

    def _write(self, job: Job) -> None:
        for sink in self.sinks:
            sink.write_job(job)

    async def _sink(self, inp: StageQueue) -> None:
        while (job := await inp.get()) is not EOS:
            t0 = time.perf_counter()
            if self.sinks:
                await self._in("sink", self._write, job)
            if self.on_frame is not None:
                res = self.on_frame(job)
                if asyncio.iscoroutine(res):
                    await res
            self.stats.add_stage("sink", (time.perf_counter() - t0) * 1e3)
            self.stats.frame_done(job.frame.capture_ns, len(job.faces))

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.stats_every)
            if self.on_stats is not None:
                self.on_stats(self.stats)

    async def run(self) -> Stats:
        """Run to the end of the source (or ``stop()``); always closes the source and the sinks (aborts the sinks
        when a stage failed, see the module docstring). A cancel (a second Ctrl-C) closes them with what was
        written."""
        q1 = StageQueue(self.queue_size, self.live, self.stats, "analyze")
        q2 = StageQueue(self.queue_size, self.live, self.stats, "render")
        q3 = StageQueue(self.queue_size, self.live, self.stats, "sink")
        tasks = [asyncio.create_task(c) for c in (self._read(q1), self._analyze(q1, q2), self._render(q2, q3),
                                                  self._sink(q3))]
        reporter = asyncio.create_task(self._report()) if self.stats_every > 0 and self.on_stats else None
        failed = False
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            failed = not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if reporter is not None:
                reporter.cancel()
            # Wait for work already handed to the stage threads (a cancelled task leaves its thread running), then
            # close the source and every sink, so files are finalised exactly once and never mid-write. Shielded:
            # a cancel arriving now must not leave the sinks half closed.
            shutdown = asyncio.get_running_loop().run_in_executor(None, self._shutdown, not failed)
            try:
                await asyncio.shield(shutdown)
            except asyncio.CancelledError:
                await shutdown
                raise
        return self.stats

    def _shutdown(self, commit: bool = True) -> None:
        """Close the source (a blocked ``read`` returns), drain the stage threads, then close (``commit``) or
        abort every sink. The first sink error is raised unless an error is already on its way (``not commit``)."""
        errors: list[BaseException] = []
        self._call(self.source.close, errors)
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        close = getattr(self.analyzer, "close", None)
        if close is not None:
            self._call(close, errors)
        sink_failed = False
        for sink in self.sinks:  # after a sink fails to finish, the rest are aborted, not committed
            ok = commit and not sink_failed
            sink_failed |= not self._call(sink.close if ok else getattr(sink, "abort", sink.close), errors) and ok
        if errors and commit:
            raise errors[0]

    @staticmethod
    def _call(fn: Callable[[], Any], errors: list[BaseException]) -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # close every sink even when one fails
            errors.append(exc)
            return False
