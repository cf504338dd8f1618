"""The VMC protocol stream (``--vmc``, ``stream.vmc``): a real python-osc server on loopback receives the frames'
bundles (Blend/Val for every ARKit name then one Apply, the head bone with our pose's quaternion); the sender never
slows a live pipeline, with nobody listening or a receiver that goes away."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pythonosc")

from pythonosc.dispatcher import Dispatcher  # noqa: E402
from pythonosc.osc_bundle import OscBundle  # noqa: E402
from pythonosc.osc_server import BlockingOSCUDPServer  # noqa: E402

from model.blendshapes import ARKIT_NAMES, ESTIMATED_MASK  # noqa: E402
from model.morphable import angles_to_matrix  # noqa: E402
from stream.frames import Frame, VideoInfo  # noqa: E402
from tracking.face import Face  # noqa: E402
from stream.vmc import (DEFAULT_PORT, VRM_NAMES, BundleEncoder, VMCError, VMCFrame, VMCOut, VMCSender,  # noqa: E402
                        head_quaternion, parse_target, quaternion_from_matrix, vrm_presets)

D = np.diag([-1.0, 1.0, 1.0])


class Receiver:
    """A python-osc UDP server on a free loopback port recording (address, args) in arrival order (one thread: a
    threading server handles two bundles at once under load and interleaves their messages)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()
        disp = Dispatcher()
        disp.set_default_handler(self._on)
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), disp)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _on(self, address: str, *args) -> None:
        with self._lock:
            self.messages.append((address, args))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def frames(self) -> list[list[tuple[str, tuple]]]:
        """Messages split into frames at each /VMC/Ext/OK (the first message of every bundle)."""
        out: list[list] = []
        with self._lock:
            for m in self.messages:
                if m[0] == "/VMC/Ext/OK":
                    out.append([])
                if out:
                    out[-1].append(m)
        return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _face(i: int, rng: np.random.Generator, track: int = 1, box: float = 100.0) -> Face:
    lm = rng.uniform(100, 200, (68, 3)).astype(np.float32)
    return Face(frame=i, time=i / 30, track_id=track, box=np.array([0, 0, box, box], np.float32),
                      roi=np.zeros(4, np.float32),
                      pose=np.array([rng.uniform(-60, 60), rng.uniform(-40, 40), rng.uniform(-30, 30), 6e-4, 60, 60],
                                    np.float32),
                      landmarks=lm, params=np.zeros(62, np.float32),
                      blendshape_values=(rng.uniform(0, 1, 52) * ESTIMATED_MASK).astype(np.float32))


def test_parse_target() -> None:
    assert parse_target("127.0.0.1") == ("127.0.0.1", DEFAULT_PORT) == ("127.0.0.1", 39539)
    assert parse_target("192.168.1.5:39540") == ("192.168.1.5", 39540)
    assert parse_target(":40000") == ("127.0.0.1", 40000) == parse_target("40000") == parse_target(40000)
    assert parse_target("[::1]:39539") == ("::1", 39539) and parse_target("[::1]") == ("::1", 39539)
    for bad in ("host:port", "h:0", "h:70000", "[::1"):
        with pytest.raises(VMCError):
            parse_target(bad)


def test_head_quaternion_axes() -> None:
    """Unity's axes: the avatar turns to its right (about +y) when the subject turns to theirs (our yaw > 0), looks
    down (about +x) with our pitch > 0, tilts to its right (about -z) with our roll > 0."""
    def axis_angle(q):
        q = np.asarray(q)
        return q[:3] / np.linalg.norm(q[:3]), 2 * np.degrees(np.arccos(np.clip(q[3], -1, 1)))

    ax, ang = axis_angle(head_quaternion([30, 0, 0]))
    np.testing.assert_allclose(ax, [0, 1, 0], atol=1e-9) and np.testing.assert_allclose(ang, 30)
    ax, ang = axis_angle(head_quaternion([0, 20, 0]))
    np.testing.assert_allclose(ax, [1, 0, 0], atol=1e-9) and np.testing.assert_allclose(ang, 20)
    ax, ang = axis_angle(head_quaternion([0, 0, 10]))
    np.testing.assert_allclose(ax, [0, 0, -1], atol=1e-9) and np.testing.assert_allclose(ang, 10)
    rng = np.random.default_rng(0)
    for _ in range(200):
        yaw, pitch, roll = rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(-60, 60)
        q = head_quaternion([yaw, pitch, roll])
        x, y, z, w = q
        m = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(m, D @ angles_to_matrix(*np.radians([yaw, pitch, roll]))[0] @ D, atol=1e-9)
    np.testing.assert_allclose(quaternion_from_matrix(np.eye(3)), [0, 0, 0, 1])


def test_bundle_is_valid_osc_in_order() -> None:
    rng = np.random.default_rng(1)
    blend = (rng.uniform(0, 1, 52) * ESTIMATED_MASK).astype(np.float32)
    for vrm in (False, True):
        enc = BundleEncoder(vrm)
        b = OscBundle(enc.encode(1.25, blend, np.array([0.01, -0.02, 0.03]), head_quaternion([10, 5, -3])))
        msgs = [(m.address, m.params) for m in b]
        assert [a for a, _ in msgs[:3]] == ["/VMC/Ext/OK", "/VMC/Ext/T", "/VMC/Ext/Bone/Pos"]
        assert msgs[0][1] == [1, 3, 0, 1] and msgs[1][1][0] == pytest.approx(1.25)
        assert msgs[2][1][0] == "Head" and len(msgs[2][1]) == 8
        names = [p[0] for a, p in msgs if a == "/VMC/Ext/Blend/Val"]
        assert names == list(ARKIT_NAMES) + (list(VRM_NAMES) if vrm else [])
        assert msgs[-1] == ("/VMC/Ext/Blend/Apply", [])
        vals = [p[1] for a, p in msgs if a == "/VMC/Ext/Blend/Val"]
        np.testing.assert_allclose(vals[:52], blend, atol=1e-7)
        if vrm:
            np.testing.assert_allclose(vals[52:], vrm_presets(blend), atol=1e-6)
    none = [(m.address, m.params) for m in OscBundle(BundleEncoder().encode(2.0, None))]
    assert none == [("/VMC/Ext/OK", [1, 3, 0, 0]), ("/VMC/Ext/T", [2.0])]


def test_vrm_presets() -> None:
    b = np.zeros(52)
    assert np.all(vrm_presets(b) == 0)
    idx = {n: ARKIT_NAMES.index(n) for n in ARKIT_NAMES}
    b[idx["eyeBlinkLeft"]] = 0.9
    b[idx["jawOpen"]] = 0.8
    v = dict(zip(VRM_NAMES, vrm_presets(b)))
    assert v["Blink_L"] == pytest.approx(0.9) and v["Blink_R"] == 0 and v["A"] == pytest.approx(0.8) and v["I"] == 0


async def test_frames_reach_a_real_osc_server() -> None:
    rx = Receiver()
    try:
        out = VMCOut(f"127.0.0.1:{rx.port}")
        rng = np.random.default_rng(2)
        sent = []
        for i in range(40):
            faces = [_face(i, rng), _face(i, rng, track=2, box=50.0)] if i % 10 != 9 else []
            out.sender.offer(out.frame_of(i / 30, faces))
            sent.append(faces[0] if faces else None)
            await asyncio.sleep(0.005)  # the sender's task runs between frames
        await asyncio.sleep(0.2)
        frames = rx.frames()
        assert len(frames) == 40 and out.sender.sent == 40 and out.sender.dropped == 0
        for face, msgs in zip(sent, frames):
            addrs = [a for a, _ in msgs]
            if face is None:
                assert addrs == ["/VMC/Ext/OK", "/VMC/Ext/T"] and msgs[0][1][3] == 0
                continue
            vals = [args for a, args in msgs if a == "/VMC/Ext/Blend/Val"]
            assert addrs.count("/VMC/Ext/Blend/Apply") == 1 and addrs[-1] == "/VMC/Ext/Blend/Apply"
            assert addrs.index("/VMC/Ext/Blend/Apply") > max(i for i, a in enumerate(addrs) if a.endswith("Val"))
            assert [v[0] for v in vals] == list(ARKIT_NAMES) and all(0 <= v[1] <= 1 for v in vals)
            np.testing.assert_allclose([v[1] for v in vals], face.blendshape_values, atol=1e-7)
            bone = next(args for a, args in msgs if a == "/VMC/Ext/Bone/Pos")
            q = np.array(bone[4:8])
            expected = head_quaternion(face.pose)
            assert min(np.abs(q - expected).max(), np.abs(q + expected).max()) < 1e-3
            assert bone[0] == "Head"
        out.close()
    finally:
        rx.stop()


class _PacedSource:
    """A live source: ``n`` frames at ``fps``, real time."""

    def __init__(self, n: int, fps: float) -> None:
        self.n, self.fps, self.i = n, fps, 0
        self.info = VideoInfo(64, 48, fps, is_live=True)
        self.t0 = time.perf_counter()

    def read(self):
        if self.i >= self.n:
            return None
        wait = self.t0 + self.i / self.fps - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        f = Frame(self.i, self.i / self.fps, np.zeros((48, 64, 3), np.uint8))
        self.i += 1
        return f

    def close(self) -> None:
        pass


class _Analyzer:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)

    async def analyze(self, frame, stats):
        return [_face(frame.index, self.rng)]


async def _run_live(sinks, n=90, fps=60.0):
    from stream.pipeline import Pipeline

    p = Pipeline(_PacedSource(n, fps), _Analyzer(), None, sinks, live=True)
    t0 = time.perf_counter()
    stats = await p.run()
    return stats, time.perf_counter() - t0


async def test_live_rate_kept_without_a_receiver_and_when_it_stops() -> None:
    base, t_base = await _run_live([])
    nobody = VMCOut(f"127.0.0.1:{_free_port()}")  # nobody listens there
    s1, t1 = await _run_live([nobody])
    assert s1.frames_out == base.frames_out == 90 and s1.total_dropped == 0
    assert t1 < t_base * 1.15 + 0.1
    assert nobody.sender.sent + nobody.sender.dropped + nobody.sender.skipped >= 85
    rx = Receiver()
    leaving = VMCOut(f"127.0.0.1:{rx.port}")
    stopper = asyncio.get_running_loop().call_later(0.6, rx.stop)  # the app quits mid-stream
    s2, t2 = await _run_live([leaving], n=120)
    stopper.cancel()
    assert s2.frames_out == 120 and s2.total_dropped == 0 and t2 < 2.0 * 1.15 + 0.1
    assert 0 < len(rx.frames()) < 120  # it heard the start, not the end
    assert s2.summary()["stages"]["sink"]["p95"] < 5.0  # handing a frame to the sender costs next to nothing


def test_shared_sender_has_one_owner() -> None:
    snd = VMCSender("127.0.0.1", _free_port())
    f = VMCFrame(0.0, np.zeros(52, np.float32))
    assert snd.offer(f, owner="a") and snd.owner == "a"
    assert not snd.offer(f, owner="b")
    snd.release("a")
    assert snd.offer(f, owner="b") and snd.owner == "b"


def test_bad_target_is_one_line_before_the_model_loads(capsys) -> None:
    from stream.app import run
    from stream.cli import parse

    assert run(parse(["--source", "synthetic:1", "--vmc", "host:port"])[1]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --vmc host:port: the port must be a number (default 39539)"
    with pytest.raises(SystemExit):
        parse(["batch", "v.mp4", "--outdir", "o", "--vmc", "127.0.0.1"])
