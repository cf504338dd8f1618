"""Build the pipeline from a validated configuration and run it (``run``) or serve it over WebRTC (``serve``)."""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from typing import Any, Awaitable, Callable

from model.align_images import no_face_message
# the assembly lives in stream.assemble; these names stay importable from here
from stream.assemble import (Engine, UserError, build_engine, build_run, check_swap_source, check_vmc,  # noqa: F401
                             fit_swap_texture, load_swap_texture, open_run_stages, open_vmc, run_inputs, set_threads)
from stream.config import RunConfig
from stream.outputs import check_not_inputs, check_writable
from stream.pipeline import Job, Pipeline
from stream.sinks import SinkError
from stream.sources import open_source
from stream.stats import Stats
from stream.window import Window, display_problem


def run(cfg: RunConfig) -> int:
    """``run_stream.py [run]``: one source through the pipeline into the configured sinks."""
    try:
        return asyncio.run(run_source(cfg))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # before the run's own handlers (model loading): a signal ends it here
        print("interrupted", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", 2))


class ProgressBar:
    """Observer: a tqdm bar over a file's frames; ``log`` writes lines above it (on stderr)."""

    def __init__(self, total: int | None, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="frame", desc=desc, disable=None, dynamic_ncols=True)

    def __call__(self, job: Job) -> None:
        self.bar.update(1)

    def log(self, line: str) -> None:  # tqdm.write goes to stdout unless told: keep messages on stderr with the bar
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class FaceCount:
    """Observer: frames and faces seen (the no-face warning, batch's figures)."""

    def __init__(self) -> None:
        self.frames = 0
        self.faces = 0
        self.tracks: set[int] = set()

    def __call__(self, job: Job) -> None:
        self.frames += 1
        self.faces += len(job.faces)
        self.tracks.update(f.track_id for f in job.faces)


class StopOnSignal:
    """SIGINT/SIGTERM while the pipeline runs: the first stops it cleanly (outputs committed), the second cancels
    ``task``. A context manager around ``Pipeline.run``; ``count`` says how many came."""

    def __init__(self, pipeline: Pipeline, log: Callable[[str], None]) -> None:
        self.pipeline, self.log = pipeline, log
        self.count = 0
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()

    def _on_signal(self) -> None:
        self.count += 1
        if self.count == 1:
            self.log("stopping: finishing the frames in flight and closing the outputs (Ctrl-C again to abort)")
            self.pipeline.stop()
        elif self.task is not None:
            self.task.cancel()

    def __enter__(self) -> "StopOnSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.loop.add_signal_handler(sig, self._on_signal)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


def _window(info, source_spec: str, renderer, analyzer, log: Callable[[str], None], stop: Callable[[], None],
            stats: Stats):
    """The ``--show`` window as an observer (keys change the renderer's mode and bars)."""
    def set_mode(mode: str) -> None:
        renderer.set_mode(mode)
        analyzer.dense = analyzer.dense or renderer.needs_dense  # mesh modes need the dense vertices
        log(f"show: mode {mode}")

    def toggle_bars() -> None:
        renderer.bars = not renderer.bars
        log(f"show: blendshape bars {'on' if renderer.bars else 'off'}")

    window = Window(f"run_stream: {info.name or source_spec}", renderer.mode, set_mode, stop, toggle_bars=toggle_bars)

    def observe(job: Job) -> None:
        window.show(job.output if job.output is not None else job.frame.image, stats)

    return window, observe


async def run_source(cfg: RunConfig, engine: Engine | None = None,
                     on_job: Callable[[Job], Awaitable[bool | None]] | None = None, dense: bool = False,
                     on_no_face: Callable[[str], None] | None = None) -> int:
    """The run command. The Python API (``damdnet.api``) passes its loaded ``engine``, an ``on_job`` awaited for
    every finished frame, in order (returning False stops the run as Ctrl-C does; no demo outputs and no summary
    lines then), ``dense`` for vertices and ``on_no_face``, called with the ``no_face_message`` line when no frame
    had a face (the CLI prints it as ``warning: ...``; not an error either way)."""
    api = on_job is not None
    source_spec = cfg.source
    if source_spec.startswith("synthetic") and not (api or cfg.out or cfg.tracks or cfg.meshes or cfg.show
                                                    or cfg.vmc):
        cfg = cfg.replace(out="out/demo.mp4", tracks="out/demo_tracks.csv")
        print("demo: synthetic face -> out/demo.mp4 and out/demo_tracks.csv (give --source to use a video, "
              "webcam:0 or images)", file=sys.stderr)
    options: dict[str, Any] = {"max_frames": cfg.max_frames, "sequence": cfg.sequence}
    if source_spec.startswith("webcam"):
        options.update(dataclasses.asdict(cfg.webcam))
    elif source_spec.startswith("synthetic"):
        options.update(dataclasses.asdict(cfg.synthetic))
    source = open_source(source_spec, **options)
    inputs = run_inputs(cfg, source)
    outputs = {"--out": cfg.out, "--tracks": cfg.tracks, "--meshes": cfg.meshes}
    try:  # before the model loads: an output that would replace an input, or cannot be written, is refused at once
        check_not_inputs(outputs, inputs)
        check_writable(outputs)
        check_swap_source(cfg)
        check_vmc(cfg)
    except BaseException:
        source.close()
        raise
    try:
        engine = build_engine(cfg) if engine is None else engine
    except BaseException:
        source.close()
        raise
    info = source.info
    live = info.is_live if cfg.live == "auto" else bool(cfg.live)
    show = bool(cfg.show)
    if show and (why := display_problem()):
        print(f"note: --show ignored: {why}", file=sys.stderr)
        show = False
    renderer, sinks, analyzer = open_run_stages(cfg, engine, source, live=live, show=show, dense=dense)
    extra = []
    if cfg.vmc:
        try:
            extra.append(open_vmc(cfg))
        except BaseException:
            for sink in sinks:
                sink.abort()
            source.close()
            raise
    stats = Stats()
    bar = ProgressBar(info.frame_count, info.name or source_spec) if cfg.progress and not live else None
    log = bar.log if bar is not None else (lambda line: print(line, file=sys.stderr))
    count = FaceCount()
    pipeline = build_run(cfg, engine, source, live=live, renderer=renderer, analyzer=analyzer, sinks=sinks,
                         extra_sinks=extra, observers=[count, bar], stats=stats,
                         on_stats=(lambda s: log("stats: " + s.line())) if cfg.stats else None)
    window = None
    if show:
        window, show_frame = _window(info, source_spec, renderer, analyzer, log, pipeline.stop, stats)
        pipeline.on_frame.add(show_frame)
    if on_job is not None:  # the Python API: its consumer runs after the progress bar and the window
        async def consume(job: Job) -> None:
            if await on_job(job) is False:  # the consumer left: finish the frames in flight, close the outputs
                pipeline.stop()

        pipeline.on_frame.add(consume)
    signals = StopOnSignal(pipeline, log)
    try:
        with signals:
            await pipeline.run()
    except asyncio.CancelledError:
        log("aborted; outputs were closed with the frames written so far")
        return 130
    except SinkError as exc:  # a full disk, a read-only or failing device: the outputs were removed
        raise SinkError(f"{exc} (the run stopped; its unfinished outputs were removed)") from None
    finally:
        if bar is not None:
            bar.close()
        engine.service.close()
        if window is not None:
            window.close()
    if count.frames and not count.faces:  # not an error: the outputs are written, with no faces in them
        message = no_face_message(source_spec, count.frames, "image" if info.stills else "frame")
        if on_no_face is not None:
            on_no_face(message)
        else:
            print(f"warning: {message}", file=sys.stderr)
    if api:
        return 130 if signals.count else 0
    s = stats.summary()
    outputs = [x for x in (cfg.out, cfg.tracks, cfg.meshes) if x]
    print(f"done: {s['frames_out']} frames in {s['seconds']:.1f} s ({s['fps']:.1f} fps), "
          f"{stats.total_dropped} dropped" + (f"; wrote {', '.join(outputs)}" if outputs else ""), file=sys.stderr)
    if cfg.stats:
        print("stats: " + stats.line(), file=sys.stderr)
    return 130 if signals.count else 0


def serve(cfg: RunConfig) -> int:
    """``run_stream.py serve``: the WebRTC server with the pipeline as each peer's processor."""
    try:
        import aiohttp  # noqa: F401  (the [webrtc] extra; imported by the server only once the run starts)
        import aiortc  # noqa: F401

        from stream.webrtc.app_bridge import serve_pipeline
    except ImportError as exc:
        from stream.extras import missing_extra

        print(f"error: {missing_extra('serve', 'webrtc', exc)}", file=sys.stderr)
        return 2
    try:
        return serve_pipeline(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
