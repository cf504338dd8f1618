"""Pipeline drop policy with fakes (in-process, asyncio): live sources drop stale frames and keep the delay bounded,
file sources drop nothing; stop() ends the source and still finishes and closes everything."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from stream.frames import Frame
from stream.pipeline import Job, Pipeline
from stream.stats import Stats

FPS = 100.0  # the fake camera: a frame every 10 ms
WORK = 0.04  # the fake analyser: 40 ms a frame, 4x slower than the camera


class PacedSource:
    """A fake camera: frame i is captured at start + i / fps (``capture_ns`` is that instant, as a camera stamps
    it); ``read()`` blocks until then. With ``paced=False`` frames come at once (a file)."""

    def __init__(self, n: int, fps: float = FPS, paced: bool = True) -> None:
        self.n, self.fps, self.paced = n, fps, paced
        self.i = 0
        self.start_ns: int | None = None
        self.closed = 0

    def read(self) -> Frame | None:
        if self.i >= self.n:
            return None
        if self.start_ns is None:
            self.start_ns = time.perf_counter_ns()
        due = self.start_ns + int(self.i / self.fps * 1e9)
        if self.paced:
            wait = (due - time.perf_counter_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
        else:
            due = time.perf_counter_ns()
        frame = Frame(index=self.i, time=self.i / self.fps, image=np.full((24, 32, 3), self.i % 256, np.uint8),
                      capture_ns=due)
        self.i += 1
        return frame

    def close(self) -> None:
        self.closed += 1


class SlowAnalyzer:
    """Takes ``work`` seconds of (executor) time per frame; no faces."""

    def __init__(self, work: float = WORK) -> None:
        self.work = work
        self.seen: list[int] = []

    async def analyze(self, frame: Frame, stats: Stats) -> list:
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, self.work)
        self.seen.append(frame.index)
        return []


class Collect:
    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.e2e_ms: list[float] = []
        self.closed = 0

    def write_job(self, job: Job) -> None:
        self.jobs.append(job)
        self.e2e_ms.append((time.perf_counter_ns() - job.frame.capture_ns) / 1e6)

    def close(self) -> None:
        self.closed += 1


async def test_live_source_drops_stale_frames_and_delay_stays_bounded() -> None:
    n, queue = 150, 2
    source, analyzer, sink = PacedSource(n), SlowAnalyzer(), Collect()
    stats = await Pipeline(source, analyzer, None, [sink], live=True, queue_size=queue).run()
    assert stats.frames_in == n  # the camera was read on time, never held back
    assert stats.total_dropped > 0.5 * n  # the analyser keeps up with ~1 frame in 4
    assert stats.dropped.get("analyze", 0) == stats.total_dropped
    assert stats.frames_out + stats.total_dropped == n  # every frame is either delivered or counted as dropped
    assert len(sink.jobs) == stats.frames_out == len(analyzer.seen)
    idx = [j.frame.index for j in sink.jobs]
    assert idx == sorted(idx) and idx[-1] == n - 1  # in order, the newest frame gets through at the end
    # bounded delay: a frame waits at most for the queue ahead of it and the frame in work
    bound_ms = (queue + 2) * WORK * 1e3 + 150  # slack for a busy machine
    e2e = np.array(sink.e2e_ms)
    assert e2e.max() < bound_ms, e2e.round()
    # and does not grow over the run (overload is constant)
    assert np.median(e2e[-10:]) < np.median(e2e[2:12]) + 60
    assert source.closed == 1 and sink.closed == 1


async def test_file_source_drops_nothing_and_delay_grows_instead() -> None:
    n, queue = 60, 2
    source, analyzer, sink = PacedSource(n), SlowAnalyzer(), Collect()
    stats = await Pipeline(source, analyzer, None, [sink], live=False, queue_size=queue).run()
    assert stats.total_dropped == 0 and stats.frames_in == stats.frames_out == n
    assert [j.frame.index for j in sink.jobs] == list(range(n)) == analyzer.seen
    # with a paced camera and no drops the backlog, hence the delay, keeps growing: why live mode drops
    e2e = np.array(sink.e2e_ms)
    assert e2e[-1] > e2e[5] + 0.5 * (n - 6) * (WORK - 1 / FPS) * 1e3
    assert source.closed == 1 and sink.closed == 1


async def test_file_source_back_pressure_bounds_reading_ahead() -> None:
    n, queue = 40, 2
    source, analyzer, sink = PacedSource(n, paced=False), SlowAnalyzer(0.01), Collect()
    pipeline = Pipeline(source, analyzer, None, [sink], live=False, queue_size=queue)
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0.1)
    # the reader is held back by the full queues: it is at most 3 queues + the frames in the stages ahead
    assert source.i - len(analyzer.seen) <= 3 * queue + 4
    stats = await task
    assert stats.total_dropped == 0 and [j.frame.index for j in sink.jobs] == list(range(n))


async def test_stop_ends_the_source_and_finishes_frames_in_flight() -> None:
    n = 1000
    source, analyzer, sink = PacedSource(n, fps=200.0), SlowAnalyzer(0.005), Collect()
    pipeline = Pipeline(source, analyzer, None, [sink], live=False, queue_size=3)
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0.3)
    pipeline.stop()
    stats = await asyncio.wait_for(task, 10)
    assert 0 < stats.frames_out < n
    assert stats.frames_out == stats.frames_in == len(sink.jobs)  # every frame read reached the sink
    assert [j.frame.index for j in sink.jobs] == list(range(stats.frames_out))
    assert source.closed == 1 and sink.closed == 1  # closed exactly once
