"""WebRTC peers on the product pipeline: each peer's frames go through the same ``Pipeline`` stages as files and
webcams (a live ``PushSource`` in, the rendered frame out), with its own tracker state; all peers share one model
through the ``AlignService`` (their crops are batched together). Optional recording per peer to the same sinks.
"""
from __future__ import annotations

import asyncio
import queue
import sys
from pathlib import Path

import numpy as np

from stream.assemble import (build_engine, build_run, check_vmc, fit_swap_texture, load_swap_texture, make_analyzer,
                             make_renderer, open_vmc)
from stream.config import RunConfig
from stream.frames import Frame, VideoInfo
from stream.outputs import open_outputs
from stream.pipeline import Job, Pipeline


class PushSource:
    """A live source fed from outside (``push``); ``read`` blocks for the next frame; latest frame wins.

    The end is a sticky flag, not only a queue item, so no thread ever blocks putting a marker back: ``read`` polls
    the flag while it waits, and frames pushed after ``close`` are ignored.
    """

    def __init__(self, info: VideoInfo) -> None:
        self.info = info
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._ended = False
        self.dropped = 0

    def push(self, frame: Frame) -> None:
        if self._ended:
            return
        while True:
            try:
                self._q.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def read(self) -> Frame | None:
        while not self._ended:
            try:
                return self._q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def close(self) -> None:
        self._ended = True


def _per_peer(path: str | None, peer_id: str) -> str | None:
    if not path:
        return None
    p = Path(path)
    return str(p.with_name(f"{p.stem}_{peer_id}{p.suffix}")) if p.suffix else str(p / peer_id)


class PipelinePeer:
    """``PeerProcessor`` backed by a live Pipeline (see ``stream.webrtc.peer.PeerProcessor``)."""

    def __init__(self, engine, cfg: RunConfig, peer_id: str, swap_texture=None, vmc=None) -> None:
        self.engine = engine
        self.vmc = vmc  # a shared stream.vmc.VMCSender (--vmc): the first peer with a face drives the avatar
        self.peer_id = peer_id
        self.cfg = cfg
        self.source = PushSource(VideoInfo(width=0, height=0, fps=30.0, is_live=True, name=f"webrtc:{peer_id}"))
        self.renderer = make_renderer(cfg, engine, cfg.mode if cfg.mode != "none" else "landmarks")
        if swap_texture is not None:
            self.renderer.set_swap_texture(swap_texture)
        self.analyzer = make_analyzer(cfg, engine, live=True, dense=True)  # peers are live
        self._sink_paths = (_per_peer(cfg.out, peer_id), _per_peer(cfg.tracks, peer_id),
                            _per_peer(cfg.meshes, peer_id))
        self._sinks: list = []
        self._pipeline: Pipeline | None = None
        self._task: asyncio.Task | None = None
        self._waiters: dict[int, tuple[asyncio.Future, np.ndarray]] = {}
        self._n = 0
        self._size: tuple[int, int] | None = None
        self._last_boxes: list[list[float]] = []
        self.face_listener = None  # set by the peer session when the client opened the "faces" channel
        self.face_probe = False
        self._face_seq = 0

    def _start(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self.source.info = VideoInfo(width=w, height=h, fps=30.0, is_live=True, name=self.source.info.name)
        self._sinks = open_outputs(*self._sink_paths, self.source.info, self.engine.aligner.morph.tri,
                                   self.cfg.mesh_format, morph=self.engine.aligner.morph,
                                   tracks_params=self.cfg.tracks_params, tracks_format=self.cfg.tracks_format)
        extra = [open_vmc(self.cfg, self.vmc, owner=self.peer_id)] if self.vmc is not None else []
        self._pipeline = build_run(self.cfg, self.engine, self.source, live=True, renderer=self.renderer,
                                   analyzer=self.analyzer, sinks=self._sinks, extra_sinks=extra, queue_size=1,
                                   observers=[self._done])
        self._task = asyncio.get_running_loop().create_task(self._pipeline.run())

    def _done(self, job: Job) -> None:
        self._last_boxes = [[float(v) for v in f.box] for f in job.faces]
        if self.face_listener is not None:
            self._send_faces(job)
        idx = job.frame.index
        for k in [k for k in self._waiters if k <= idx]:  # earlier ones were dropped: hand back their input
            fut, img = self._waiters.pop(k)
            if not fut.done():
                fut.set_result(job.output if k == idx and job.output is not None else img)

    def _send_faces(self, job: Job) -> None:
        from stream.webrtc.facedata import face_message
        from stream.webrtc.probe import decode_probe

        img = job.frame.image
        probe = decode_probe(img) if self.face_probe else None
        msg = face_message(self._face_seq, job.frame.index, job.frame.time, (img.shape[1], img.shape[0]), job.faces,
                           probe)
        self._face_seq += 1
        listener = self.face_listener
        if listener is not None:
            listener(msg)

    async def process(self, image: np.ndarray, time: float) -> np.ndarray:
        if self._pipeline is None:
            self._start(image)
        elif self._task is not None and self._task.done():
            return image  # pipeline ended (error or closed): pass frames through
        idx = self._n
        self._n += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiters[idx] = (fut, image)
        self.source.push(Frame(idx, float(time), image))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=2.0)
        except asyncio.TimeoutError:
            self._waiters.pop(idx, None)
            return image

    def set_controls(self, controls: dict) -> None:
        mode = controls.get("mode")
        if mode:
            self.renderer.set_mode(mode)
        if "smooth" in controls:
            self.analyzer.set_smoothing("kalman" if controls["smooth"] else "none")

    def set_swap_source(self, image: np.ndarray) -> None:
        self.renderer.set_swap_texture(fit_swap_texture(image, self.engine))

    def stats(self) -> dict:
        if self._pipeline is None:
            return {"faces": 0, "mode": self.renderer.mode, "boxes": []}
        s = self._pipeline.stats.summary()
        s["mode"] = self.renderer.mode
        s["boxes"] = self._last_boxes
        s["dropped"] = {**s["dropped"], "push": self.source.dropped}
        s["batches"] = self.engine.service.batches
        return s

    async def close(self) -> None:
        self.source.close()
        for fut, img in self._waiters.values():
            if not fut.done():
                fut.set_result(img)
        self._waiters.clear()
        if self._task is not None:
            # the frames in flight drain within a frame time; the bound only guards the server's peer slot (wait,
            # not wait_for: after a cancel, wait_for would also wait, unbounded, for the pipeline to unwind)
            done, _ = await asyncio.wait({self._task}, timeout=10.0)
            if not done:
                print(f"peer {self.peer_id}: pipeline did not finish within 10 s; cancelled", file=sys.stderr)
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=10.0)
            elif not self._task.cancelled() and self._task.exception() is not None:
                # a failing sink must not keep the peer alive
                print(f"peer {self.peer_id}: pipeline ended with {self._task.exception()}", file=sys.stderr)


def _face_model(engine) -> bytes:
    from stream.webrtc.facedata import face_model_bytes

    return face_model_bytes(engine.aligner.morph)


class PipelineFactory:
    """Processor factory of ``python -m stream.webrtc.server --processor stream.webrtc.app_bridge:make_processor``:
    the product pipeline with the default configuration (``$DAMDNET_CONFIG`` may name a YAML file) and one engine,
    loaded at the first peer (or the first ``GET /face-model``). The server makes one with ``processor_factory()``;
    its state is its own (no module globals)."""

    def __init__(self, cfg: RunConfig | None = None) -> None:
        self._cfg = cfg
        self._engine = None
        self._face_model: bytes | None = None

    @classmethod
    def processor_factory(cls) -> "PipelineFactory":
        return cls()

    def engine(self):
        if self._engine is None:
            import os

            from stream.config import load_config

            if self._cfg is None:
                self._cfg = load_config(os.environ.get("DAMDNET_CONFIG"))
            self._engine = build_engine(self._cfg)
        return self._engine

    def __call__(self, peer_id: str) -> PipelinePeer:
        engine = self.engine()
        return PipelinePeer(engine, self._cfg, peer_id)

    def face_model(self) -> bytes:
        """The bytes of ``GET /face-model`` (built once)."""
        if self._face_model is None:
            self._face_model = _face_model(self.engine())
        return self._face_model


make_processor = PipelineFactory  # the name ``--processor`` specs use


def serve_pipeline(cfg: RunConfig) -> int:
    """Build the shared engine and run the WebRTC server with one ``PipelinePeer`` per browser."""
    from stream.webrtc.server_config import serve_config
    from stream.webrtc.server import check_listen, serve, tls_context

    config = serve_config(cfg).validate()
    tls_context(config)  # a bad certificate fails here (ConfigError), before the model loads
    check_listen(config)  # and a port in use
    check_vmc(cfg)
    vmc = None
    if cfg.vmc:
        from stream.vmc import VMCSender, parse_target

        vmc = VMCSender(*parse_target(cfg.vmc), vrm=cfg.vmc_vrm)  # started on the server's loop by a peer
    engine = build_engine(cfg)
    texture = load_swap_texture(cfg.swap_source, engine) if cfg.swap_source else None
    face_model: list[bytes] = []  # built at the first request, once

    def face_model_once() -> bytes:
        if not face_model:
            face_model.append(_face_model(engine))
        return face_model[0]

    serve(config, lambda peer_id: PipelinePeer(engine, cfg, peer_id, texture, vmc), face_model=face_model_once)
    return 0
