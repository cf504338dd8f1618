"""ProcessedTrack without a network: latest-frame-wins, pts preserved, no growing delay, failure handling;
the latency probe's encoding; upload header checks."""
from __future__ import annotations

import asyncio
import fractions
import time

import cv2
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from stream.webrtc import probe
from stream.webrtc.peer import validate_controls
from stream.webrtc.track import ProcessedTrack, fit_pixels
from stream.webrtc.upload import UploadError, decode_image, image_size

pytestmark = pytest.mark.timeout(60)
TB = fractions.Fraction(1, 90000)


class FastSource(MediaStreamTrack):
    """`n` frames at `fps`, then the end of the stream."""

    kind = "video"

    def __init__(self, n: int, fps: float, size=(64, 48)):
        super().__init__()
        self.n, self.fps, self.size, self.i = n, fps, size, 0

    async def recv(self):
        if self.i >= self.n:
            raise MediaStreamError
        await asyncio.sleep(1.0 / self.fps)
        w, h = self.size
        img = np.full((h, w, 3), self.i % 256, np.uint8)
        f = VideoFrame.from_ndarray(img, format="bgr24")
        f.pts, f.time_base = self.i * 3000, TB
        self.i += 1
        return f


class SlowProcessor:
    def __init__(self, delay: float, fail_every: int = 0, bad_shape: bool = False):
        self.delay, self.fail_every, self.bad_shape = delay, fail_every, bad_shape
        self.calls, self.times = 0, []

    async def process(self, image, t):
        self.calls += 1
        self.times.append(t)
        await asyncio.sleep(self.delay)
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("boom")
        if self.bad_shape:
            return image[:10]
        return 255 - image


async def drain(track: ProcessedTrack) -> list[tuple[VideoFrame, float]]:
    got = []
    try:
        while True:
            f = await track.recv()
            got.append((f, time.monotonic()))
    except MediaStreamError:
        return got


async def test_slow_processor_drops_old_frames_and_delay_stays_flat():
    src = FastSource(n=120, fps=100)  # 1.2 s of frames at 100 fps
    proc = SlowProcessor(delay=0.05)   # 20 fps at best
    ended = []
    track = ProcessedTrack(src, proc, on_ended=lambda: ended.append(True))
    track.start()
    got = await asyncio.wait_for(drain(track), 20)
    assert ended == [True]
    assert 10 <= len(got) <= 40, len(got)
    assert track.drops_in >= 60, track.drops_in  # most frames were replaced by newer ones, not queued
    pts = [f.pts for f, _ in got]
    assert pts == sorted(set(pts)), "pts must be the source's, increasing, no repeats"
    assert all(p % 3000 == 0 for p in pts) and all(f.time_base == TB for f, _ in got)
    # the processed image is the processor's output for that very frame
    f0 = got[0][0]
    assert int(f0.to_ndarray(format="bgr24")[0, 0, 0]) == 255 - (f0.pts // 3000) % 256
    # delay does not grow: server latency of the last frames is like that of the first ones
    lat = [s for s in track._lat_server.items]
    assert lat, "latency recorded"
    st = track.stats()
    assert st["latency_ms"]["server"]["p95"] < 250, st["latency_ms"]
    assert st["frames_in"] == 120 and st["frames_out"] == len(got)
    await track.wait_stopped()


async def test_processor_errors_and_bad_output_pass_frames_through():
    for proc in (SlowProcessor(0.0, fail_every=2), SlowProcessor(0.0, bad_shape=True)):
        track = ProcessedTrack(FastSource(n=20, fps=50), proc)
        track.start()
        got = await asyncio.wait_for(drain(track), 20)
        assert got and track.errors > 0 and track.last_error
        for f, _ in got:
            assert (f.width, f.height) == (64, 48)
        await track.wait_stopped()


async def test_downscale_and_stop_cancels_tasks():
    track = ProcessedTrack(FastSource(n=1000, fps=100, size=(640, 480)), SlowProcessor(0.0),
                           max_frame_pixels=320 * 240)
    track.start()
    f = await asyncio.wait_for(track.recv(), 10)
    assert (f.width, f.height) == (320, 240)
    assert track.stats()["downscaled"]
    await track.wait_stopped()
    assert all(t.done() for t in track._tasks)
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_fit_pixels():
    assert fit_pixels(640, 480, 1920 * 1080) == (640, 480)
    w, h = fit_pixels(3840, 2160, 1920 * 1080)
    assert (w, h) == (1920, 1080)
    w, h = fit_pixels(4001, 3001, 1920 * 1080)
    assert w * h <= 1920 * 1080 and w % 2 == 0 and h % 2 == 0 and abs(w / h - 4001 / 3001) < 0.01


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (384, 384), (1280, 720)])
def test_probe_survives_vp8_like_compression(size):
    w, h = size
    rng = np.random.default_rng(1)
    for value in (0, 1, 123456, probe.VALUE_MASK, int(rng.integers(0, probe.VALUE_MASK))):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        probe.encode_probe(img, value)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 30])
        back = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        assert probe.decode_probe(back) == value
        # and after a downscale (the browser may send a smaller resolution)
        assert probe.decode_probe(cv2.resize(back, (w // 2, h // 2), interpolation=cv2.INTER_AREA)) == value
    assert probe.decode_probe(np.full((h, w, 3), 128, np.uint8)) is None


def test_controls_validation():
    assert validate_controls({"type": "controls", "mode": "mesh", "smooth": False, "alpha": 0.5}) == \
        {"mode": "mesh", "smooth": False, "alpha": 0.5}
    for bad in ({"mode": "cartoon"}, {"smooth": "yes"}, {"Bad-Key": 1}, {"x": [1, 2]}, {"x": "y" * 500}):
        with pytest.raises(ValueError):
            validate_controls(bad)


def test_upload_checks():
    img = np.zeros((64, 80, 3), np.uint8)
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, img)
        fmt, w, h = image_size(buf.tobytes())
        assert (w, h) == (80, 64)
        assert decode_image(buf.tobytes(), 10**6).shape == (64, 80, 3)
    with pytest.raises(UploadError) as e:
        decode_image(b"BM" + b"\0" * 100, 10**6)
    assert e.value.status == 415
    with pytest.raises(UploadError) as e:
        decode_image(b"\xff\xd8\xff\xe0\x00\x10JFIF", 10**6)
    assert e.value.status == 400


class FakePC:
    """Just enough of RTCPeerConnection for PeerSession's life cycle."""

    def __init__(self):
        from pyee.asyncio import AsyncIOEventEmitter
        self.events = AsyncIOEventEmitter()
        self.connectionState = "new"
        self.closed = 0

    def on(self, name, fn):
        self.events.on(name, fn)

    def addTrack(self, track):
        pass

    async def close(self):
        self.closed += 1
        self.connectionState = "closed"


def _session(pc, **kw):
    from stream.webrtc.peer import PassthroughProcessor, PeerSession

    class Proc(PassthroughProcessor):
        closed = 0

        async def close(self):
            Proc.closed += 1

    gone = []
    s = PeerSession("p", pc, Proc(), max_frame_pixels=10**6, on_closed=gone.append, **kw)
    return s, Proc, gone


async def test_disconnected_peer_closed_after_grace_unless_it_reconnects():
    pc = FakePC()
    s, proc, gone = _session(pc, disconnect_grace_s=0.3, connect_timeout_s=60)
    s.start()
    pc.connectionState = "connected"
    s._on_state()
    pc.connectionState = "disconnected"
    s._on_state()
    await asyncio.sleep(0.1)
    pc.connectionState = "connected"  # came back within the grace period
    s._on_state()
    await asyncio.sleep(0.4)
    assert not s.closed
    pc.connectionState = "disconnected"
    s._on_state()
    await asyncio.sleep(0.6)
    assert s.closed and gone == [s] and proc.closed == 1 and pc.closed == 1
    assert "disconnected" in s.close_reason
    await s.close("again")  # idempotent
    assert proc.closed == 1 and pc.closed == 1


async def test_failed_or_never_connected_peer_is_closed():
    pc = FakePC()
    s, proc, gone = _session(pc)
    s.start()
    pc.connectionState = "failed"
    s._on_state()
    await asyncio.sleep(0.1)
    assert s.closed and proc.closed == 1 and gone == [s]

    pc2 = FakePC()
    s2, proc2, gone2 = _session(pc2, connect_timeout_s=0.2)
    s2.start()
    await asyncio.sleep(0.5)
    assert s2.closed and "not connected" in s2.close_reason and proc2.closed == 1
