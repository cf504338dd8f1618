"""In-process WebRTC load and churn on the product pipeline: aiortc client peers on loopback send a real video (the
frames of a file, looped, each stamped with the latency probe) to the server built by ``build_app`` with one
``PipelinePeer`` per client, recording each peer (``out`` + ``tracks``). Used by bench/bench_webrtc_load.py (8 peers
for 60 s, 50 churn cycles) and by the slow test tests/test_webrtc_load.py (a short version).

``sever(client)`` leaves abruptly: the client's UDP sockets are closed under it (no DTLS close, no RTCP BYE), as a
killed browser or a lost network would; the server can only notice that the video stopped.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from stream.webrtc import probe


def pin_loopback_ice() -> None:
    """ICE candidates on 127.0.0.1 only: nothing leaves the machine."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def load_frames(path: str | os.PathLike[str], size: tuple[int, int], max_frames: int = 150) -> list[np.ndarray]:
    """The first ``max_frames`` frames of a video, resized to ``size`` (w, h): BGR uint8."""
    import cv2

    from stream.sources import open_source

    frames = []
    with open_source(str(path), max_frames=max_frames) as src:
        for f in src:
            frames.append(cv2.resize(f.image, size, interpolation=cv2.INTER_AREA))
    if not frames:
        raise RuntimeError(f"no frames in {path}")
    return frames


class FileTrack(VideoStreamTrack):
    """The frames at 30 fps, looped, each stamped with the latency probe (ms clock, 24 bits)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__()
        self.frames = frames
        self.sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        img = self.frames[self.sent % len(self.frames)].copy()
        probe.encode_probe(img, int(time.monotonic() * 1000) & probe.VALUE_MASK)
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


class _BlackHole:
    """A datagram transport that sends nothing; closing it closes the real one."""

    def __init__(self, real) -> None:  # noqa: ANN001
        self.real = real

    def sendto(self, data, addr=None) -> None:  # noqa: ANN001
        pass

    def get_extra_info(self, name, default=None):  # noqa: ANN001
        return self.real.get_extra_info(name, default)

    def close(self) -> None:
        self.real.close()


class LoadClient:
    """One aiortc peer: sends FileTrack, reads the processed video back, records (time, loop latency ms)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = FileTrack(frames)
        self.pc.addTrack(self.track)
        self.pc.createDataChannel("control")
        self.pc.on("track", self._on_track)
        self.peer_id: str | None = None
        self.received = 0
        self.first_frame = asyncio.Event()
        self.latencies: list[tuple[float, float]] = []
        self._reader: asyncio.Task | None = None

    def _on_track(self, track) -> None:  # noqa: ANN001
        async def read() -> None:
            try:
                while True:
                    frame = await track.recv()
                    img = frame.to_ndarray(format="bgr24")
                    self.received += 1
                    self.first_frame.set()
                    value = probe.decode_probe(img)
                    if value is not None:
                        now = int(time.monotonic() * 1000)
                        lat = ((now & probe.VALUE_MASK) - value) % (probe.VALUE_MASK + 1)
                        self.latencies.append((time.monotonic(), float(lat)))
            except (MediaStreamError, asyncio.CancelledError):
                pass

        self._reader = asyncio.ensure_future(read())

    async def connect(self, url: str, session: aiohttp.ClientSession) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with session.post(url + "/offer", json=body) as r:
            data = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {r.status} {data}")
        self.peer_id = data["peer_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))

    def sever(self) -> None:
        """Leave abruptly: the connection's UDP sockets turn into black holes (nothing sent, nothing read; no DTLS
        close_notify, no BYE, no more ICE consent answers), as when a browser is killed or its network drops. The
        sockets themselves are closed by ``close()`` later."""
        for transceiver in self.pc.getTransceivers():
            ice = transceiver.sender.transport.transport
            for protocol in list(getattr(ice._connection, "_protocols", [])):
                real = getattr(protocol, "transport", None)
                if real is not None and not isinstance(real, _BlackHole):
                    protocol.transport = _BlackHole(real)
                    protocol.datagram_received = lambda data, addr: None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 10)


@asynccontextmanager
async def running_server(config, factory) -> AsyncIterator[tuple[object, str]]:  # noqa: ANN001
    from aiohttp import web

    from stream.webrtc.server import build_app

    app = build_app(config, factory)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def resources() -> dict:
    """This process now: RSS (MiB), open file descriptors, threads."""
    gc.collect()
    rss = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return {"rss_mb": round(rss, 1), "fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count()}


def is_final(folder: Path, peer_id: str) -> bool:
    """The peer's recordings are committed under their final names and no temporary file of it remains."""
    names = [p.name for p in folder.iterdir()]
    final = [n for n in names if peer_id in n and ".partial" not in n]
    partial = [n for n in names if peer_id in n and ".partial" in n]
    return len(final) >= 2 and not partial


@dataclass
class LoadResult:
    windows: list[dict] = field(default_factory=list)  # per window: p50/p95 of all peers' latencies, resources
    received: list[int] = field(default_factory=list)


async def run_load(url: str, frames: list[np.ndarray], peers: int, seconds: float, window: float,
                   first_frame_s: float = 300.0, sample: Callable[[], dict] = resources) -> LoadResult:
    """``peers`` clients for ``seconds`` (counted from the moment every peer got its first processed frame, which
    may take ``first_frame_s`` on a loaded machine); per ``window``: loop latency p50/p95 (all peers), resources."""
    clients = [LoadClient(frames) for _ in range(peers)]
    out = LoadResult()
    async with aiohttp.ClientSession() as session:
        try:
            await asyncio.gather(*(c.connect(url, session) for c in clients))
            await asyncio.wait_for(asyncio.gather(*(c.first_frame.wait() for c in clients)), first_frame_s)
            t0 = time.monotonic()
            start = t0
            while start - t0 < seconds - 1e-6:
                await asyncio.sleep(window)
                end = time.monotonic()
                lats = [lat for c in clients for t, lat in c.latencies if start <= t < end]
                fps = sum(sum(1 for t, _ in c.latencies if start <= t < end) for c in clients) / (end - start)
                row = {"window": f"{start - t0:.0f}-{end - t0:.0f} s", "n": len(lats),
                       "fps_per_peer": round(fps / peers, 1),
                       "p50": round(float(np.percentile(lats, 50)), 1) if lats else None,
                       "p95": round(float(np.percentile(lats, 95)), 1) if lats else None, **sample()}
                out.windows.append(row)
                start = end
            out.received = [c.received for c in clients]
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return out


async def churn_once(url: str, frames: list[np.ndarray], session: aiohttp.ClientSession, app, record_dir: Path,
                     timeout: float = 30.0) -> dict:
    """Connect, wait for processed video, leave abruptly; -> seconds until the server freed the peer and its
    recordings were final (measured from the moment the client severed)."""
    from stream.webrtc.server import PEERS

    c = LoadClient(frames)
    try:
        await c.connect(url, session)
        await asyncio.wait_for(c.first_frame.wait(), 60)
        await asyncio.sleep(0.3)  # a few frames recorded
        t_left = time.monotonic()
        c.sever()
        deadline = t_left + timeout
        freed_at = final_at = None
        while time.monotonic() < deadline and (freed_at is None or final_at is None):
            now = time.monotonic()
            if freed_at is None and c.peer_id not in app[PEERS]:
                freed_at = now
            if final_at is None and is_final(record_dir, c.peer_id):
                final_at = now
            await asyncio.sleep(0.02)
        return {"peer_id": c.peer_id,
                "freed_s": None if freed_at is None else freed_at - t_left,
                "final_s": None if final_at is None else final_at - t_left}
    finally:
        await c.close()


async def wait_until(pred: Callable[[], bool], timeout: float, what: str,
                     state: Callable[[], object] | None = None) -> None:
    """Poll ``pred`` every 20 ms; AssertionError naming ``what`` (and ``state()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f": {state()}" if state else ""))
        await asyncio.sleep(0.02)
