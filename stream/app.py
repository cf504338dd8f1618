"""Build the pipeline from a validated configuration and run it (``run``) or serve it over WebRTC (``serve``)."""
from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from model.align import no_face_message
from model.aligner import Aligner
from model.assets import AssetError, AssetStore
from model.checkpoint import CheckpointError, model_label
from model.detect import FaceDetector
from stream.align_service import AlignService
from stream.analyze import FaceAnalyzer, tracker_config
from stream.outputs import FrameRenderer, check_not_inputs, check_writable, open_outputs
from stream.pipeline import Job, Pipeline
from stream.sinks import SinkError
from stream.sources import SourceError, open_source
from stream.stats import Stats
from stream.window import Window, display_problem


class UserError(RuntimeError):
    """Something the user can fix; printed as one line."""


@dataclass
class Engine:
    """What all streams of a process share: the model (batched through the service), the detector, the store."""

    store: AssetStore
    aligner: Aligner
    service: AlignService
    detector: FaceDetector


def set_threads(threads: int) -> int:
    """Set torch's CPU threads: ``threads``, or for 0 one thread on <= 2 cores (decode, detection and rendering run
    beside the network there), half the cores otherwise. Returns the number set."""
    import os

    import torch

    n = threads or (1 if (os.cpu_count() or 1) <= 2 else max(1, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(n)
    return n


def build_engine(cfg: dict) -> Engine:
    set_threads(cfg["threads"])
    store = AssetStore(cfg["assets"])
    try:
        aligner = Aligner.from_checkpoint(cfg["weights"], device=cfg["device"], store=store,
                                          fast_path=cfg["fast_path"], expression=cfg["expression"])
        if cfg["backbone"] and cfg["backbone"] != aligner.backbone:
            raise UserError(f"--backbone {cfg['backbone']} but the weights '{cfg['weights']}' are a {aligner.backbone}")
        detector = FaceDetector.create(cfg["detector"], store, score_threshold=cfg["detect_score"],
                                       max_side=cfg["detect_max_side"])
    except (AssetError, CheckpointError, ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    print(f"model: {model_label(aligner.name, aligner.backbone, aligner.why)} on {aligner.device} "
          f"via {aligner.fast_path}; detector: {detector.kind}", file=sys.stderr)
    return Engine(store, aligner, AlignService(aligner), detector)


def fit_swap_texture(image: np.ndarray, engine: Engine):
    """Fit the 3DMM to the largest face of ``image`` and sample its skin texture (``build_texture``: UV image of the
    face mesh, eyes, inner mouth and non-skin left out and filled).

    Raises ValueError when the image has no face.
    """
    from model.align import align_boxes
    from stream.render.texture import build_texture

    boxes, _ = engine.detector(image)
    if len(boxes) == 0:
        raise ValueError("no face found in the swap source image")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    res = align_boxes(image, engine.aligner, boxes[int(np.argmax(areas))][None], dense=True)
    morph = engine.aligner.morph
    return build_texture(image, res.vertices[0], morph.tri, morph.grid_shape, landmarks=res.landmarks[0],
                         uv=morph.uv)


def load_swap_texture(path: str, engine: Engine):
    """Swap texture from an image file, or from the first frame with a face among a video's first 60 frames."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise UserError(f"swap source: no such file: {path}")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:  # maybe a video
        try:
            with open_source(str(p), max_frames=60) as src:
                for frame in src:
                    if len(engine.detector(frame.image)[0]):
                        img = frame.image
                        break
        except SourceError as exc:
            raise UserError(f"swap source {path}: {exc}") from None
    if img is None:
        raise UserError(f"swap source {path}: not a readable image or a video with a face")
    try:
        return fit_swap_texture(img, engine)
    except ValueError as exc:
        raise UserError(f"swap source {path}: {exc}") from None


def open_run_stages(cfg: dict, engine: Engine, source, *, live: bool, show: bool = False,
                    swap_texture=None, dense: bool = False) -> tuple:
    """The renderer, sinks and analyzer of one ``run`` over ``source`` (what ``run`` and each file of ``batch`` use):
    ``(renderer | None, sinks, analyzer)`` from ``cfg``'s ``out``/``tracks``/``meshes``/``mode``/``audio`` keys (the
    video keeps the source's sound unless ``audio`` is false). ``swap_texture`` skips fitting ``swap_source`` again;
    ``dense`` asks for vertices without meshes (the API). Raises UserError for outputs that cannot be opened; closes
    ``source`` on any error."""
    renderer = FrameRenderer(cfg["mode"], engine.aligner.morph, cfg["draw_ids"], cfg["blendshape_bars"]) \
        if (cfg["out"] or show) else None
    try:
        if renderer is not None and cfg["mode"] == "swap":
            if swap_texture is None and not cfg["swap_source"]:
                raise UserError("--mode swap needs --swap-source IMAGE")
            renderer.set_swap_texture(swap_texture or load_swap_texture(cfg["swap_source"], engine),
                                      keep_target_eyes=cfg["swap_keep_target_eyes"])
        sinks = open_outputs(cfg["out"], cfg["tracks"], cfg["meshes"], source.info, engine.aligner.morph.tri,
                             cfg["mesh_format"], morph=engine.aligner.morph, inputs=run_inputs(cfg, source),
                             tracks_params=cfg["tracks_params"], audio=cfg["audio"],
                             tracks_format=cfg["tracks_format"])
    except (SinkError, OSError) as exc:
        source.close()
        raise UserError(str(exc)) from None
    except BaseException:
        source.close()
        raise
    dense = dense or bool(cfg["meshes"]) or (renderer is not None and renderer.needs_dense)
    analyzer = FaceAnalyzer(engine.service, engine.detector, tracker_config(cfg), dense=dense,
                            async_detect=live if cfg["detect_async"] == "auto" else bool(cfg["detect_async"]),
                            stills=source.info.stills)
    return renderer, sinks, analyzer


def check_vmc(cfg: dict) -> None:
    """UserError (one line) for a bad ``--vmc`` value or a missing ``python-osc``, before the model loads."""
    if not cfg.get("vmc"):
        return
    try:
        import pythonosc  # noqa: F401  (the [vmc] extra)
    except ImportError as exc:
        from stream.extras import missing_extra

        raise UserError(missing_extra("--vmc", "vmc", exc)) from None
    from stream.vmc import VMCError, parse_target

    try:
        parse_target(cfg["vmc"])
    except VMCError as exc:
        raise UserError(str(exc)) from None


def open_vmc(cfg: dict, sender=None, owner=None):
    """The ``--vmc`` sink (``stream.vmc.VMCOut``) on the running loop: its own sender, or a shared ``sender``."""
    from stream.vmc import VMCError, VMCOut

    try:
        return VMCOut(sender if sender is not None else cfg["vmc"], vrm=cfg["vmc_vrm"], owner=owner)
    except VMCError as exc:
        raise UserError(str(exc)) from None


def run_inputs(cfg: dict, source) -> list:
    """The files a run reads (the source's, the swap image, a weights file): no output may be one of them."""
    return [*getattr(source, "input_paths", []), cfg["swap_source"], cfg["weights"]]


def run(cfg: dict) -> int:
    """``run_stream.py [run]``: one source through the pipeline into the configured sinks."""
    try:
        return asyncio.run(_run(cfg))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # before the run's own handlers (model loading): a signal ends it here
        print("interrupted", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", 2))


async def _run(cfg: dict, engine: Engine | None = None,
               on_job: Callable[[Job], Awaitable[bool | None]] | None = None, dense: bool = False,
               on_no_face: Callable[[str], None] | None = None) -> int:
    """The run command. The Python API (``damdnet.api``) passes its loaded ``engine``, an ``on_job`` awaited for
    every finished frame, in order (returning False stops the run as Ctrl-C does; no demo outputs and no summary
    lines then), ``dense`` for vertices and ``on_no_face``, called with the ``no_face_message`` line when no frame
    had a face (the CLI prints it as ``warning: ...``; not an error either way)."""
    api = on_job is not None
    source_spec = cfg["source"]
    if source_spec.startswith("synthetic") and not (api or cfg["out"] or cfg["tracks"] or cfg["meshes"] or cfg["show"]
                                                    or cfg["vmc"]):
        cfg = {**cfg, "out": "out/demo.mp4", "tracks": "out/demo_tracks.csv"}
        print("demo: synthetic face -> out/demo.mp4 and out/demo_tracks.csv (give --source to use a video, "
              "webcam:0 or images)", file=sys.stderr)
    options: dict[str, Any] = {"max_frames": cfg["max_frames"], "sequence": cfg["sequence"]}
    if source_spec.startswith("webcam"):
        options.update(cfg["webcam"])
    elif source_spec.startswith("synthetic"):
        options.update(cfg["synthetic"])
    try:
        source = open_source(source_spec, **options)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    inputs = run_inputs(cfg, source)
    outputs = {"--out": cfg["out"], "--tracks": cfg["tracks"], "--meshes": cfg["meshes"]}
    try:  # before the model loads: an output that would replace an input, or cannot be written, is refused at once
        check_not_inputs(outputs, inputs)
        check_writable(outputs)
        check_vmc(cfg)
    except (SinkError, UserError) as exc:
        source.close()
        raise UserError(str(exc)) from None
    try:
        engine = build_engine(cfg) if engine is None else engine
    except BaseException:
        source.close()
        raise
    info = source.info
    live = info.is_live if cfg["live"] == "auto" else bool(cfg["live"])
    show = bool(cfg["show"])
    if show and (why := display_problem()):
        print(f"note: --show ignored: {why}", file=sys.stderr)
        show = False
    renderer, sinks, analyzer = open_run_stages(cfg, engine, source, live=live, show=show, dense=dense)
    if cfg["vmc"]:
        try:
            sinks.append(open_vmc(cfg))
        except BaseException:
            for sink in sinks:
                sink.abort()
            source.close()
            raise
    stats = Stats()
    bar = None
    if cfg["progress"] and not live:
        from tqdm import tqdm

        bar = tqdm(total=info.frame_count, unit="frame", desc=info.name or source_spec, disable=None,
                   dynamic_ncols=True)

    def log(line: str) -> None:
        if bar is not None:  # tqdm.write goes to stdout unless told: keep messages on stderr with the bar
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    window = None
    if show:
        def set_mode(mode: str) -> None:
            renderer.set_mode(mode)
            analyzer.dense = analyzer.dense or renderer.needs_dense  # mesh modes need the dense vertices
            log(f"show: mode {mode}")

        def toggle_bars() -> None:
            renderer.bars = not renderer.bars
            log(f"show: blendshape bars {'on' if renderer.bars else 'off'}")

        window = Window(f"run_stream: {info.name or source_spec}", renderer.mode, set_mode,
                        lambda: pipeline.stop(), toggle_bars=toggle_bars)

    seen = {"frames": 0, "faces": 0}

    def on_frame(job: Job) -> None:
        seen["frames"] += 1
        seen["faces"] += len(job.faces)
        if bar is not None:
            bar.update(1)
        if window is not None:
            window.show(job.output if job.output is not None else job.frame.image, stats)

    if on_job is not None:  # the Python API: its consumer runs after the progress bar and the window
        ui_frame = on_frame

        async def on_frame(job: Job) -> None:  # noqa: F811
            ui_frame(job)
            if await on_job(job) is False:  # the consumer left: finish the frames in flight, close the outputs
                pipeline.stop()

    pipeline = Pipeline(source, analyzer, renderer, sinks, live=live, queue_size=cfg["queue_size"], stats=stats,
                        on_frame=on_frame, on_stats=(lambda s: log("stats: " + s.line())) if cfg["stats"] else None,
                        stats_every=cfg["stats_every"])
    loop = asyncio.get_running_loop()
    interrupts = 0
    main_task = asyncio.current_task()

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            log("stopping: finishing the frames in flight and closing the outputs (Ctrl-C again to abort)")
            pipeline.stop()
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    try:
        await pipeline.run()
    except asyncio.CancelledError:
        log("aborted; outputs were closed with the frames written so far")
        return 130
    except SinkError as exc:  # a full disk, a read-only or failing device: the outputs were removed
        raise UserError(f"{exc} (the run stopped; its unfinished outputs were removed)") from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        if bar is not None:
            bar.close()
        engine.service.close()
        if window is not None:
            window.close()
    if seen["frames"] and not seen["faces"]:  # not an error: the outputs are written, with no faces in them
        message = no_face_message(source_spec, seen["frames"], "image" if info.stills else "frame")
        if on_no_face is not None:
            on_no_face(message)
        else:
            print(f"warning: {message}", file=sys.stderr)
    if api:
        return 130 if interrupts else 0
    s = stats.summary()
    outputs = [x for x in (cfg["out"], cfg["tracks"], cfg["meshes"]) if x]
    print(f"done: {s['frames_out']} frames in {s['seconds']:.1f} s ({s['fps']:.1f} fps), "
          f"{stats.total_dropped} dropped" + (f"; wrote {', '.join(outputs)}" if outputs else ""), file=sys.stderr)
    if cfg["stats"]:
        print("stats: " + stats.line(), file=sys.stderr)
    return 130 if interrupts else 0


def serve(cfg: dict) -> int:
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
