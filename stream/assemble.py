r"""The one assembly of the pipeline: ``build_run(cfg, engine, source, ...) -> Pipeline``.

Every way in goes through it: ``run_stream.py run`` and the Python API (``stream.app.run_source``), each file of
``batch`` (``stream.batch.actor``), each WebRTC peer (``stream.webrtc.app_bridge.PipelinePeer``) and the benches.
What a caller adds (a progress bar, the ``--show`` window, the API's consumer, batch's counters, a peer's data
channel) is an *observer*: a callable on each finished ``Job``, in order, not a branch inside the pipeline.

    RunConfig (stream.config) --build_engine--> Engine (aligner, AlignService, detector, store)
           \                                              |
            +--open_source--> Source --build_run(cfg, engine, source, observers=...)--> Pipeline
                                          |  open_run_stages: FrameRenderer, FaceAnalyzer, sinks (open_outputs)
                                          v
                              Pipeline.run(): decode -> analyze -> render -> sinks -> observers
"""
from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

import numpy as np

from model.aligner import Aligner
from model.assets import AssetStore
from model.checkpoint import model_label
from model.detect import FaceDetector
from model.errors import UserError
from stream.align_batcher import AlignService
from stream.analyze import FaceAnalyzer, tracker_config
from stream.config import RunConfig
from stream.outputs import FrameRenderer, open_outputs
from stream.pipeline import Job, Pipeline
from stream.sinks import SinkError
from stream.sources import SourceError, open_source
from stream.stats import Stats

#: an observer of a run: called with each finished Job, in order; may return an awaitable
Observer = Callable[[Job], "Awaitable[Any] | Any"]


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


def build_engine(cfg: RunConfig) -> Engine:
    set_threads(cfg.threads)
    store = AssetStore(cfg.assets)
    aligner = Aligner.from_checkpoint(cfg.weights, device=cfg.device, store=store,
                                      fast_path=cfg.fast_path, expression=cfg.expression)
    if cfg.backbone and cfg.backbone != aligner.backbone:
        raise UserError(f"--backbone {cfg.backbone} but the weights '{cfg.weights}' are a {aligner.backbone}")
    detector = FaceDetector.create(cfg.detector, store, score_threshold=cfg.detect_score,
                                   max_side=cfg.detect_max_side)
    print(f"model: {model_label(aligner.name, aligner.backbone, aligner.why)} on {aligner.device} "
          f"via {aligner.fast_path}; detector: {detector.kind}", file=sys.stderr)
    return Engine(store, aligner, AlignService(aligner), detector)


def fit_swap_texture(image: np.ndarray, engine: Engine):
    """Fit the 3DMM to the largest face of ``image`` and sample its texture (``build_texture``: UV image of the face
    mesh, its inner eyes, inner mouth and occluders left out and filled), with its 3DMM shape coefficients
    (``FaceTexture.shape``).

    Raises ValueError when the image has no face.
    """
    from model.align_images import align_boxes, align_steady
    from stream.render.texture import build_texture

    boxes, _ = engine.detector(image)
    if len(boxes) == 0:
        raise ValueError("no face found in the swap source image")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    first = align_boxes(image, engine.aligner, boxes[int(np.argmax(areas))][None], dense=False)
    # the fit kept for the whole stream: averaged over crops around the first one (``align_steady``), so the texture
    # does not depend on where the detector's box happened to fall
    res = align_steady(image, engine.aligner, first.roi[0])
    morph = engine.aligner.morph
    tex = build_texture(image, res.vertices[0], morph.tri, morph.grid_shape, landmarks=res.landmarks[0],
                        uv=morph.uv)
    tex.shape = np.asarray(res.params[0, 12:52], np.float32)  # the source's 3DMM shape (the full swap renders it)
    return tex


def load_swap_texture(path: str, engine: Engine):
    """Swap texture from an image file, or from the first frame with a face among a video's first 60 frames."""
    import cv2

    p = _swap_source_file(path)
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:  # maybe a video
        try:
            with open_source(str(p), max_frames=60) as src:
                for frame in src:
                    if len(engine.detector(frame.image)[0]):
                        img = frame.image
                        break
        except SourceError as exc:
            raise SourceError(f"swap source {path}: {exc}") from None
    if img is None:
        raise UserError(f"swap source {path}: not a readable image or a video with a face")
    try:
        return fit_swap_texture(img, engine)
    except ValueError as exc:
        raise UserError(f"swap source {path}: {exc}") from None


def open_run_stages(cfg: RunConfig, engine: Engine, source, *, live: bool, show: bool = False,
                    swap_texture=None, dense: bool = False) -> tuple:
    """The renderer, sinks and analyzer of one ``run`` over ``source`` (what ``run`` and each file of ``batch`` use):
    ``(renderer | None, sinks, analyzer)`` from ``cfg``'s ``out``/``tracks``/``meshes``/``mode``/``audio`` keys (the
    video keeps the source's sound unless ``audio`` is false). ``swap_texture`` skips fitting ``swap_source`` again;
    ``dense`` asks for vertices without meshes (the API). Raises SinkError for outputs that cannot be opened; closes
    ``source`` on any error."""
    renderer = make_renderer(cfg, engine) if (cfg.out or show) else None
    try:
        if renderer is not None and cfg.mode == "swap":
            if swap_texture is None and not cfg.swap_source:
                raise UserError("--mode swap needs --swap-source IMAGE")
            renderer.set_swap_texture(swap_texture or load_swap_texture(cfg.swap_source, engine))
        sinks = open_outputs(cfg.out, cfg.tracks, cfg.meshes, source.info, engine.aligner.morph.tri,
                             cfg.mesh_format, morph=engine.aligner.morph, inputs=run_inputs(cfg, source),
                             tracks_params=cfg.tracks_params, audio=cfg.audio,
                             tracks_format=cfg.tracks_format)
    except OSError as exc:
        source.close()
        raise SinkError(str(exc)) from None
    except BaseException:
        source.close()
        raise
    dense = dense or bool(cfg.meshes) or (renderer is not None and renderer.needs_dense)
    analyzer = make_analyzer(cfg, engine, live=live, dense=dense, stills=source.info.stills)
    return renderer, sinks, analyzer


def _swap_source_file(path: str) -> Path:
    """``path`` as a Path; UserError (one line) when it is not a file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"swap source: no such file: {path}")
    return p


def check_swap_source(cfg: RunConfig) -> None:
    """UserError (one line, before the model loads) when ``--mode swap`` names a ``swap_source`` that is not a file,
    whether or not this run draws anything (a typo is reported, not ignored)."""
    if cfg.mode == "swap" and cfg.swap_source:
        _swap_source_file(cfg.swap_source)


def check_vmc(cfg: RunConfig) -> None:
    """VMCError (a bad ``--vmc`` value) or UserError (a missing ``python-osc``), one line, before the model
    loads."""
    if not cfg.vmc:
        return
    try:
        import pythonosc  # noqa: F401  (the [vmc] extra)
    except ImportError as exc:
        from stream.extras import missing_extra

        raise UserError(missing_extra("--vmc", "vmc", exc)) from None
    from stream.vmc import parse_target

    parse_target(cfg.vmc)


def open_vmc(cfg: RunConfig, sender=None, owner=None):
    """The ``--vmc`` sink (``stream.vmc.VMCOut``) on the running loop: its own sender, or a shared ``sender``."""
    from stream.vmc import VMCOut

    return VMCOut(sender if sender is not None else cfg.vmc, vrm=cfg.vmc_vrm, owner=owner)


def run_inputs(cfg: RunConfig, source) -> list:
    """The files a run reads (the source's, the swap image, a weights file): no output may be one of them."""
    return [*getattr(source, "input_paths", []), cfg.swap_source, cfg.weights]


def make_renderer(cfg: RunConfig, engine: Engine, mode: str | None = None) -> FrameRenderer:
    """The frame renderer of ``cfg`` (``mode`` overrides ``cfg.mode``; a swap keeps the target's eyes and brows with
    ``cfg.swap_keep_target_eyes``)."""
    renderer = FrameRenderer(mode or cfg.mode, engine.aligner.morph, cfg.draw_ids, cfg.blendshape_bars)
    renderer.keep_target_eyes = bool(cfg.swap_keep_target_eyes)
    return renderer


def make_analyzer(cfg: RunConfig, engine: Engine, *, live: bool, dense: bool, stills: bool = False) -> FaceAnalyzer:
    """The face analyzer (detector, aligner through the service, tracker of ``cfg``) of one stream."""
    return FaceAnalyzer(engine.service, engine.detector, tracker_config(cfg), dense=dense,
                        async_detect=live if cfg.detect_async == "auto" else bool(cfg.detect_async),
                        stills=stills)


class Observers:
    """The observers of one run, called in order on each finished Job; awaitables they return are awaited in order
    once the plain ones have run."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = [o for o in observers if o is not None]

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def __call__(self, job: Job) -> Awaitable[None] | None:
        pending = []
        for observer in self.observers:
            res = observer(job)
            if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future):
                pending.append(res)
        return self._wait(pending) if pending else None

    @staticmethod
    async def _wait(pending: list) -> None:
        for res in pending:
            await res


def build_run(cfg: RunConfig, engine: Engine, source, *, live: bool, show: bool = False, swap_texture=None,
              dense: bool = False, renderer: FrameRenderer | None = None, analyzer: FaceAnalyzer | None = None,
              sinks: Sequence | None = None, extra_sinks: Sequence = (), observers: Iterable[Observer] = (),
              stats: Stats | None = None, on_stats: Callable[[Stats], None] | None = None,
              queue_size: int | None = None) -> Pipeline:
    """The pipeline of one ``source`` from ``cfg``: the one place a ``Pipeline`` is put together.

    Without ``renderer``/``analyzer``/``sinks`` they come from ``open_run_stages`` (``cfg``'s out, tracks, meshes,
    mode keys); a caller that made them earlier (a WebRTC peer builds its renderer and analyzer before its first
    frame) passes them. ``extra_sinks`` (the VMC sink) are appended; ``observers`` see each finished Job in order.
    On an error every opened sink is aborted and ``source`` closed."""
    if renderer is None and analyzer is None and sinks is None:
        renderer, sinks, analyzer = open_run_stages(cfg, engine, source, live=live, show=show,
                                                    swap_texture=swap_texture, dense=dense)
    sinks = [*(sinks or ()), *extra_sinks]
    if analyzer is None:
        analyzer = make_analyzer(cfg, engine, live=live, stills=source.info.stills,
                                 dense=dense or bool(cfg.meshes) or (renderer is not None and renderer.needs_dense))
    return Pipeline(source, analyzer, renderer, sinks, live=live,
                    queue_size=cfg.queue_size if queue_size is None else queue_size, stats=stats or Stats(),
                    on_frame=Observers(observers), on_stats=on_stats,
                    stats_every=cfg.stats_every if on_stats is not None else 0.0)
