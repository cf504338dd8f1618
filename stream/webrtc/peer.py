"""One browser peer: its RTCPeerConnection, processor, outgoing track, control channel and life cycle.

The processing is pluggable: the server calls `processor_factory(peer_id)` once per peer and talks to the
result only through `PeerProcessor`. The real pipeline (stream/pipeline.py) and the test processor
(tests/webrtc_helpers.py) both plug in here.

Control channel protocol (data channel labelled "control", created by the page, JSON text messages):
  page -> server  {"type": "controls", "mode": "landmarks|mesh|wireframe|depth|pncc|swap|none", "smooth": true, ...}
                  {"type": "ping", "t": <page ms>}
  server -> page  {"type": "hello", "peer_id": ..., "controls": {...}}
                  {"type": "controls", "controls": {...}}            (ack: the controls now in force)
                  {"type": "pong", "t": <echoed>, "server_ms": <epoch ms>}
                  {"type": "stats", ...}                             (every `stats_interval_s`, see `stats()`)
                  {"type": "error", "message": "..."}

Face data (data channel labelled "faces", opened by the client to subscribe; see stream/webrtc/facedata.py):
  server -> client {"type": "faces", ...}  one message per processed frame, dropped when the channel is backed up.
  A processor that produces face data has a ``face_listener`` attribute (None or a callable taking the message
  dict) and reads ``face_probe`` (True when the page paints latency probes, so messages can name their frame).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.config import RENDER_MODES, peer_controls

from .facedata import FACES_LABEL, FaceChannel
from .track import ProcessedTrack

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@runtime_checkable
class PeerProcessor(Protocol):
    """What the server needs from a per-peer processor. All methods are called on the event loop thread, but
    `process` usually runs its work in an executor: `set_controls` / `set_swap_source` can then run while a
    frame is being processed in another thread, so shared state (e.g. an OpenCV detector) needs a lock."""

    async def process(self, image: np.ndarray, time: float) -> np.ndarray:
        """(H, W, 3) uint8 BGR in -> same shape out. `time` is the frame's media time (s). May modify `image`.
        Run heavy work in an executor: this coroutine must not block the loop."""
        ...

    def set_controls(self, controls: dict) -> None:
        """Validated controls: {"mode": one of RENDER_MODES, "smooth": bool, other scalar keys passed through}."""
        ...

    def set_swap_source(self, image: np.ndarray) -> None:
        """A decoded, validated (H, W, 3) uint8 BGR image. Return quickly; raise ValueError (message shown to
        the user) when it cannot be used, e.g. no face in it."""
        ...

    def stats(self) -> dict:
        """JSON-serialisable; per-stage latency etc. A "faces" key (int) is shown on the page."""
        ...

    async def close(self) -> None:
        """Finalise recordings, free resources. Called exactly once, when the peer leaves."""
        ...


ProcessorFactory = Callable[[str], PeerProcessor]


class PassthroughProcessor:
    """Returns frames unchanged: for checking the network path without the pipeline."""

    def __init__(self, peer_id: str = ""):
        self.peer_id = peer_id
        self.controls = peer_controls()
        self.frames = 0

    async def process(self, image: np.ndarray, time: float) -> np.ndarray:
        self.frames += 1
        return image

    def set_controls(self, controls: dict) -> None:
        self.controls.update(controls)

    def set_swap_source(self, image: np.ndarray) -> None:
        pass

    def stats(self) -> dict:
        return {"frames": self.frames, "faces": None}

    async def close(self) -> None:
        pass


def validate_controls(message: dict) -> dict:
    """Controls from the page -> a clean dict; ValueError with a user-facing message when invalid."""
    out: dict = {}
    for key, value in message.items():
        if key == "type":
            continue
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"bad control name {key!r}")
        if key == "mode":
            if value not in RENDER_MODES:
                raise ValueError(f"mode must be one of {', '.join(RENDER_MODES)}, got {value!r}")
        elif key == "smooth":
            if not isinstance(value, bool):
                raise ValueError(f"smooth must be true or false, got {value!r}")
        elif not (value is None or isinstance(value, (bool, int, float, str))) or (
                isinstance(value, str) and len(value) > 200):
            raise ValueError(f"control {key!r} must be a short scalar")
        out[key] = value
    return out


class PeerSession:
    """Owns everything of one peer and frees it once, whichever way the peer leaves."""

    def __init__(self, peer_id: str, pc: RTCPeerConnection, processor: PeerProcessor, *,
                 max_frame_pixels: int, probe: bool = False, stats_interval_s: float = 1.0,
                 disconnect_grace_s: float = 5.0, connect_timeout_s: float = 30.0, media_timeout_s: float = 1.0,
                 controls: Optional[dict] = None, on_closed: Optional[Callable[["PeerSession"], None]] = None):
        self.peer_id = peer_id
        self.pc = pc
        self.processor = processor
        self.max_frame_pixels = max_frame_pixels
        self.probe = probe
        self.stats_interval_s = stats_interval_s
        self.disconnect_grace_s = disconnect_grace_s
        self.connect_timeout_s = connect_timeout_s
        self.media_timeout_s = media_timeout_s
        self._on_closed = on_closed
        self.created = time.monotonic()
        self.track: Optional[ProcessedTrack] = None
        self.channel = None
        self.faces: Optional[FaceChannel] = None
        self.controls = peer_controls() if controls is None else dict(controls)
        self.closed = False
        self.close_reason: Optional[str] = None
        self._closing: Optional[asyncio.Task] = None
        self._tasks: list[asyncio.Task] = []
        self._grace: Optional[asyncio.Task] = None
        self._drains: list[asyncio.Task] = []
        self._apply_controls(self.controls)

        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    # ---- wiring ----------------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.track is None:
            self.track = ProcessedTrack(track, self.processor, max_frame_pixels=self.max_frame_pixels,
                                        probe=self.probe, on_ended=lambda: self.close_soon("incoming track ended"))
            self.pc.addTrack(self.track)
        else:
            # nobody else reads it: drain it so aiortc's unbounded queue cannot grow
            self._drains.append(asyncio.ensure_future(self._drain(track)))

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except (MediaStreamError, asyncio.CancelledError):
            pass

    def start(self) -> None:
        """After the answer is set: start the frame loops, the stats loop and the connect timeout."""
        if self.track is not None:
            self.track.start()
        self._tasks.append(asyncio.ensure_future(self._stats_loop()))
        self._tasks.append(asyncio.ensure_future(self._connect_watchdog()))
        if self.media_timeout_s > 0:
            self._tasks.append(asyncio.ensure_future(self._media_watchdog()))

    def _on_datachannel(self, channel) -> None:
        if channel.label == FACES_LABEL:
            self.faces = FaceChannel(channel)
            if hasattr(self.processor, "face_listener"):
                self.processor.face_probe = self.probe
                self.processor.face_listener = self.faces.send
            return
        if channel.label != "control":
            return
        self.channel = channel

        @channel.on("message")
        def on_message(message):  # noqa: ANN001
            self._on_message(message)

        def hello():
            self.send({"type": "hello", "peer_id": self.peer_id, "controls": self.controls})

        if channel.readyState == "open":
            hello()
        else:
            channel.on("open", hello)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("peer %s: connection %s", self.peer_id, state)
        if state in ("failed", "closed"):
            self.close_soon(f"connection {state}")
        elif state == "disconnected":
            if self._grace is None:
                self._grace = asyncio.ensure_future(self._grace_close())
        elif state == "connected" and self._grace is not None:
            self._grace.cancel()
            self._grace = None

    async def _grace_close(self) -> None:
        await asyncio.sleep(self.disconnect_grace_s)
        if self.pc.connectionState != "connected":
            self.close_soon(f"disconnected for {self.disconnect_grace_s:g} s")

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if self.pc.connectionState != "connected" and not self.closed:
            self.close_soon(f"not connected after {self.connect_timeout_s:g} s")

    async def _media_watchdog(self) -> None:
        """A peer that vanished without saying so (browser killed, network gone) is seen only by ICE consent
        checks, after ~30 s; its recording would stay unfinished all that time. No media for ``media_timeout_s``
        after the first frame closes the peer, which finalises its recordings.

        "No media" means neither decoded frames nor RTP packets arrived: a decoder waiting for a key frame after
        losses still receives packets. Time while the event loop itself was stalled (a tick late by more than a
        period: an overloaded server) counts as activity, so a busy server does not drop live peers."""
        period = max(0.05, min(0.25, self.media_timeout_s / 4))
        loop = asyncio.get_running_loop()
        last_tick = last_activity = loop.time()
        last_packets: Optional[int] = None
        while not self.closed:
            await asyncio.sleep(period)
            now = loop.time()
            stalled = now - last_tick > 2 * period
            last_tick = now
            idle = self.track.media_idle_s() if self.track is not None else None
            if idle is None:  # no frame yet: the connect watchdog is in charge
                last_activity = now
                continue
            packets = await self._packets_received()
            if stalled or idle < period or (packets is not None and packets != last_packets):
                last_activity, last_packets = now, packets
                continue
            if now - last_activity > self.media_timeout_s:
                self.close_soon(f"no video for {now - last_activity:.1f} s")
                return

    async def _packets_received(self) -> Optional[int]:
        """RTP packets received on the incoming video so far (None when aiortc does not say)."""
        source = getattr(self.track, "_source", None)
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if receiver is not None and receiver.track is source:
                try:
                    report = await receiver.getStats()
                except Exception:  # noqa: BLE001 - stats are a hint, never a reason to fail
                    return None
                return sum(int(getattr(st, "packetsReceived", 0) or 0) for st in report.values()
                           if getattr(st, "type", "") == "inbound-rtp")
        return None

    # ---- control channel -------------------------------------------------------------------------
    def send(self, obj: dict) -> bool:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return False
        try:
            ch.send(json.dumps(obj, default=_json_default))
            return True
        except Exception:  # noqa: BLE001 - a closing channel must not take the peer down
            log.debug("peer %s: send failed", self.peer_id, exc_info=True)
            return False

    def _apply_controls(self, controls: dict) -> None:
        self.processor.set_controls(dict(controls))

    def _on_message(self, message: Any) -> None:
        try:
            if not isinstance(message, str) or len(message) > 10_000:
                raise ValueError("control messages are JSON text up to 10 kB")
            msg = json.loads(message)
            if not isinstance(msg, dict):
                raise ValueError("control message must be a JSON object")
            kind = msg.get("type")
            if kind == "ping":
                self.send({"type": "pong", "t": msg.get("t"), "server_ms": time.time() * 1000.0})
            elif kind == "controls":
                controls = validate_controls(msg)
                merged = {**self.controls, **controls}
                self._apply_controls(merged)
                self.controls = merged
                self.send({"type": "controls", "controls": self.controls})
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except ValueError as exc:  # includes JSONDecodeError
            self.send({"type": "error", "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the processor refused; tell the page, keep going
            log.exception("peer %s: control message failed", self.peer_id)
            self.send({"type": "error", "message": f"{type(exc).__name__}: {exc}"})

    # ---- stats -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        try:
            proc = self.processor.stats()
        except Exception as exc:  # noqa: BLE001
            proc = {"error": f"{type(exc).__name__}: {exc}"}
        track = self.track.stats() if self.track is not None else {}
        return {
            "type": "stats",
            "peer_id": self.peer_id,
            "server_ms": time.time() * 1000.0,
            "uptime_s": round(time.monotonic() - self.created, 1),
            "state": self.pc.connectionState,
            "controls": self.controls,
            "probe": self.probe,
            **track,
            "faces": proc.get("faces") if isinstance(proc, dict) else None,
            "face_data": self.faces.stats() if self.faces is not None else None,
            "processor": proc,
        }

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            self.send(self.stats())

    # ---- teardown --------------------------------------------------------------------------------
    def close_soon(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close(reason))

    async def _bounded(self, aw, timeout: float, what: str) -> None:
        """Await ``aw`` for at most ``timeout`` s; a failure or a hang is logged, never raised (teardown goes on)."""
        task = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.error("peer %s: %s did not finish within %g s; left behind", self.peer_id, what, timeout)
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            log.error("peer %s: %s failed: %s", self.peer_id, what, task.exception())

    async def close(self, reason: str = "closed") -> None:
        """Idempotent: cancel tasks, stop the track, close the processor, then the connection."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("peer %s: closing (%s)", self.peer_id, reason)
        current = asyncio.current_task()
        if hasattr(self.processor, "face_listener"):
            self.processor.face_listener = None
        tasks = [t for t in self._tasks + self._drains + ([self._grace] if self._grace else []) if t is not current]
        for t in tasks:
            t.cancel()
        # Each teardown step is bounded (asyncio.wait, which does not wait for a cancelled step to unwind the way
        # wait_for does): a step that hangs is logged and left behind, and the slot is freed all the same.
        if self.track is not None:
            await self._bounded(self.track.wait_stopped(), 5.0, "stopping the track")
        if tasks:
            await self._bounded(asyncio.gather(*tasks, return_exceptions=True), 5.0, "ending the peer tasks")
        await self._bounded(self.processor.close(), 30.0, "closing the processor")
        try:
            await self.pc.close()
        except Exception:  # noqa: BLE001
            log.exception("peer %s: pc.close() failed", self.peer_id)
        if self._on_closed is not None:
            self._on_closed(self)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
