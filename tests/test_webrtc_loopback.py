"""WebRTC server, in process: an aiortc client peer on loopback sends a real face and gets processed video back.

ICE is pinned to 127.0.0.1 (aioice.ice.get_host_addresses patched) so nothing leaves the machine.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import aiohttp
import aioice.ice
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream.webrtc import probe
from stream.webrtc.server_config import ConfigError, ServeConfig
from tests.run_defaults import serve_defaults
from stream.webrtc.server import build_app
from tests.webrtc_helpers import REPO, HaarFaceProcessor, face_test_image
from tests.webrtc_load import FileTrack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def face_image(assets_dir):
    return face_test_image(assets_dir, (320, 240))


class Recorder:
    """Processor factory that keeps every processor it made."""

    def __init__(self):
        self.made: list[HaarFaceProcessor] = []

    def __call__(self, peer_id: str) -> HaarFaceProcessor:
        p = HaarFaceProcessor(peer_id)
        self.made.append(p)
        return p


@asynccontextmanager
async def running_server(config: ServeConfig, factory):
    app = build_app(config, factory)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Client:
    def __init__(self, image: np.ndarray):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = FileTrack([image])  # the one image, sent again and again with a time probe
        self.frames: list[np.ndarray] = []
        self.received = 0
        self.latencies: list[float] = []
        self.messages: list[dict] = []
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))
        self._reader = None
        self.pc.addTrack(self.track)
        self.pc.on("track", self._on_track)

    def _on_track(self, track):
        async def read():
            try:
                while True:
                    frame = await track.recv()
                    img = frame.to_ndarray(format="bgr24")
                    self.received += 1
                    value = probe.decode_probe(img)
                    if value is not None:
                        self.latencies.append(((int(time.monotonic() * 1000) & probe.VALUE_MASK) - value)
                                              % (probe.VALUE_MASK + 1))
                    self.frames = (self.frames + [img])[-5:]
            except MediaStreamError:
                pass
        self._reader = asyncio.ensure_future(read())

    async def offer(self, url: str, session: aiohttp.ClientSession, **extra) -> tuple[int, dict]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", **extra}
        async with session.post(url + "/offer", json=body) as r:
            data = await r.json()
            if r.status == 200:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
            return r.status, data

    def stats(self) -> list[dict]:
        return [m for m in self.messages if m.get("type") == "stats"]

    async def close(self):
        if self._reader:
            self._reader.cancel()
        await self.pc.close()


async def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def face_box(image: np.ndarray) -> tuple[int, int, int, int]:
    box = HaarFaceProcessor()._detect(image)
    assert box is not None, "no face in the test image"
    return tuple(int(v) for v in box)


def region_diffs(a: np.ndarray, b: np.ndarray, box) -> tuple[float, float]:
    """Mean abs difference inside the box and outside it (probe strip excluded)."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2)
    d = d[: a.shape[0] - probe.strip_rows(a.shape[0])]
    x1, y1, x2, y2 = box
    mask = np.zeros(d.shape, bool)
    mask[y1:y2, x1:x2] = True
    return float(d[mask].mean()), float(d[~mask].mean())


async def test_processed_frames_and_stats_come_back(face_image):
    factory = Recorder()
    config = serve_defaults(stats_interval_s=0.5)
    async with running_server(config, factory) as (app, url), aiohttp.ClientSession() as http:
        client = Client(face_image)
        try:
            status, data = await client.offer(url, http, probe=True)
            assert status == 200, data
            assert data["type"] == "answer" and data["peer_id"]
            await wait_for(lambda: client.received >= 15, 40, "15 processed frames")
            await wait_for(lambda: any(s.get("frames_out", 0) > 0 and s.get("faces") == 1 for s in client.stats()),
                           20, "a stats message with a face")

            # processed frames: same size, changed where the face is, barely elsewhere
            out = client.frames[-1]
            assert out.shape == face_image.shape
            sent = face_image.copy()
            inside, outside = region_diffs(out, sent, face_box(sent))
            assert inside > 35, (inside, outside)
            assert outside < 15, (inside, outside)

            # the server copied the probe strip back: loop latency is measurable and sane
            assert len(client.latencies) >= 5
            assert 0 < float(np.median(client.latencies)) < 2000

            # stats over the data channel
            hello = [m for m in client.messages if m.get("type") == "hello"]
            assert hello and hello[0]["peer_id"] == data["peer_id"]
            s = client.stats()[-1]
            for key in ("fps_in", "fps_out", "drops_in", "drops_out", "latency_ms", "faces", "processor", "frame_size"):
                assert key in s, key
            assert s["fps_in"] > 0 and s["frame_size"] == [320, 240]
            assert s["latency_ms"]["server"]["p50"] is not None
            assert s["processor"]["latency_ms"]["detect"]["p50"] > 0

            # controls over the data channel change the processing
            landmarks_out = out.copy()
            client.channel.send(json.dumps({"type": "controls", "mode": "swap", "smooth": False}))
            await wait_for(lambda: any(m.get("type") == "controls" and m["controls"]["mode"] == "swap"
                                       for m in client.messages), 10, "controls ack")
            assert factory.made[0].mode == "swap" and factory.made[0].smooth is False
            n = client.received
            await wait_for(lambda: client.received >= n + 10, 20, "frames after the switch")
            swapped_in, _ = region_diffs(client.frames[-1], landmarks_out, face_box(sent))
            assert swapped_in > 35, swapped_in

            # bad control -> error message, the peer stays
            client.channel.send(json.dumps({"type": "controls", "mode": "cartoon"}))
            await wait_for(lambda: any(m.get("type") == "error" for m in client.messages), 10, "error message")
            assert factory.made[0].mode == "swap"

            # ping/pong
            client.channel.send(json.dumps({"type": "ping", "t": 12.5}))
            await wait_for(lambda: any(m.get("type") == "pong" and m["t"] == 12.5 for m in client.messages), 10, "pong")
        finally:
            await client.close()
        # the peer leaving frees everything
        await wait_for(lambda: not app_peers(app), 15, "the server to drop the peer")
        assert factory.made[0].closed


def app_peers(app) -> dict:
    from stream.webrtc.server import PEERS
    return app[PEERS]


async def test_large_frames_are_downscaled(face_image):
    factory = Recorder()
    config = serve_defaults(max_frame_pixels=160 * 120, stats_interval_s=0.5)
    async with running_server(config, factory) as (app, url), aiohttp.ClientSession() as http:
        client = Client(face_image)
        try:
            status, data = await client.offer(url, http)
            assert status == 200, data
            await wait_for(lambda: any(s.get("frame_size") for s in client.stats()), 40, "stats with a frame size")
            s = [s for s in client.stats() if s.get("frame_size")][-1]
            assert s["source_size"] == [320, 240] and s["frame_size"] == [160, 120] and s["downscaled"]
            await wait_for(lambda: client.frames and client.frames[-1].shape[:2] == (120, 160), 20, "small frames")
        finally:
            await client.close()


async def _offer_sdp() -> str:
    """A valid browser-like offer (video + data channel) from a throwaway aiortc peer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(VideoStreamTrack())
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_malformed_offers_get_400(face_image):
    factory = Recorder()
    async with running_server(serve_defaults(), factory) as (app, url), aiohttp.ClientSession() as http:
        valid = await _offer_sdp()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        no_video = pc.localDescription.sdp
        await pc.close()
        cases = [
            ("not json", b"{this is not json", "application/json"),
            ("a list", json.dumps([1, 2]).encode(), "application/json"),
            ("no sdp", json.dumps({"type": "offer"}).encode(), "application/json"),
            ("empty sdp", json.dumps({"sdp": " ", "type": "offer"}).encode(), "application/json"),
            ("sdp not a string", json.dumps({"sdp": 5, "type": "offer"}).encode(), "application/json"),
            ("wrong type", json.dumps({"sdp": valid, "type": "answer"}).encode(), "application/json"),
            ("garbage sdp", json.dumps({"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"}).encode(), "application/json"),
            ("truncated sdp", json.dumps({"sdp": valid[: len(valid) // 3], "type": "offer"}).encode(), "application/json"),
            ("no video track", json.dumps({"sdp": no_video, "type": "offer"}).encode(), "application/json"),
            ("binary junk", bytes(range(256)), "application/octet-stream"),
        ]
        for name, body, ctype in cases:
            async with http.post(url + "/offer", data=body, headers={"Content-Type": ctype}) as r:
                text = await r.text()
                assert r.status == 400, (name, r.status, text)
                assert json.loads(text)["error"], name
        # every slot was released and each processor closed
        assert app_peers(app) == {}
        assert all(p.closed for p in factory.made)
        # the server still works
        async with http.get(url + "/status") as r:
            assert (await r.json())["peers"] == 0


async def test_too_many_peers_get_503():
    factory = Recorder()
    async with running_server(serve_defaults(max_peers=2), factory) as (app, url), aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.post(url + "/offer", json={"sdp": await _offer_sdp(), "type": "offer"}) as r:
                statuses.append((r.status, await r.json()))
        assert [s for s, _ in statuses] == [200, 200, 503]
        assert "server full" in statuses[2][1]["error"] and "2 of 2" in statuses[2][1]["error"]
        assert len(factory.made) == 2  # the refused peer never got a processor


async def test_token_required_when_configured():
    async with running_server(serve_defaults(token="s3cret-token"), Recorder()) as (app, url), \
            aiohttp.ClientSession() as http:
        sdp = await _offer_sdp()
        async with http.post(url + "/offer", json={"sdp": sdp, "type": "offer"}) as r:
            assert r.status == 403 and "token" in (await r.json())["error"]
        async with http.post(url + "/offer", json={"sdp": sdp, "type": "offer", "token": "wrong"}) as r:
            assert r.status == 403
        async with http.post(url + "/offer", json={"sdp": sdp, "type": "offer", "token": "s3cret-token"}) as r:
            assert r.status == 200
            peer = (await r.json())["peer_id"]
        async with http.post(url + f"/swap-source?peer={peer}", data=b"x") as r:
            assert r.status == 403


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


async def test_swap_source_upload(face_image):
    factory = Recorder()
    config = serve_defaults(max_upload_bytes=200_000)
    async with running_server(config, factory) as (app, url), aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", json={"sdp": await _offer_sdp(), "type": "offer"}) as r:
            peer = (await r.json())["peer_id"]
        proc = factory.made[0]
        png = _png(face_image)
        # raw body
        async with http.post(url + f"/swap-source?peer={peer}", data=png, headers={"Content-Type": "image/png"}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["width"] == 320
        assert proc.swap is not None
        proc.swap = None
        # multipart, as the page sends it
        form = aiohttp.FormData()
        form.add_field("image", png, filename="face.png", content_type="image/png")
        async with http.post(url + f"/swap-source?peer={peer}", data=form) as r:
            assert r.status == 200, await r.text()
        assert proc.swap is not None
        # refusals, each with a message
        big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
        bomb = bytearray(png)
        bomb[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")  # IHDR claims 100000x100000
        cases = [
            (f"/swap-source?peer={peer}", b"", 400),
            (f"/swap-source?peer={peer}", b"GIF89a not supported", 415),
            (f"/swap-source?peer={peer}", png[: len(png) // 2], 400),
            (f"/swap-source?peer={peer}", _png(big), 413),
            (f"/swap-source?peer={peer}", bytes(bomb), 413),
            (f"/swap-source?peer={peer}", _png(np.zeros((8, 8, 3), np.uint8)), 400),
            ("/swap-source?peer=nobody", png, 404),
            ("/swap-source", png, 400),
        ]
        for path, body, want in cases:
            async with http.post(url + path, data=body, headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == want, (path, len(body), r.status, await r.text())
                assert (await r.json())["error"]


def test_non_loopback_bind_needs_token():
    for host in ("0.0.0.0", "10.1.2.3", "", "example.org", "::"):
        with pytest.raises(ConfigError, match="token"):
            serve_defaults(host=host).validate()
        with pytest.raises(ConfigError, match="token"):
            build_app(serve_defaults(host=host, token="short"), HaarFaceProcessor)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        serve_defaults(host=host).validate()
    serve_defaults(host="0.0.0.0", token="long-enough-token").validate()


def test_cli_refuses_non_loopback_without_token():
    r = subprocess.run([sys.executable, "-m", "stream.webrtc.server", "--host", "0.0.0.0", "--port", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--token" in lines[0], r.stderr


async def test_swap_source_from_config(face_image, tmp_path):
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), face_image)
    factory = Recorder()
    config = serve_defaults(swap_source=str(path), default_controls={"mode": "swap"})
    async with running_server(config, factory) as (app, url), aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", json={"sdp": await _offer_sdp(), "type": "offer"}) as r:
            assert r.status == 200
        p = factory.made[0]
        assert p.swap is not None and p.mode == "swap"
    with pytest.raises(ConfigError, match="swap-source"):
        build_app(serve_defaults(swap_source=str(tmp_path / "missing.png")), factory)
    with pytest.raises(ConfigError, match="mode"):
        build_app(serve_defaults(default_controls={"mode": "cartoon"}), factory)
