"""Face data messages (stream.webrtc.facedata): schema, size limit, backpressure (drop, never queue), the mesh for
clients; and the pipeline peer producing one message per processed frame."""
from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import numpy as np

from stream.frames import FaceRecord
from stream.webrtc.facedata import FaceChannel, encode, face_message, face_model_bytes


def _face(tid: int, rng: np.random.Generator) -> FaceRecord:
    lm = rng.uniform(100, 300, (68, 3)).astype(np.float32)
    return FaceRecord(0, 0.0, tid, np.array([90, 80, 310, 320], np.float32), np.zeros(4, np.float32),
                      np.array([10.123, -5.5, 2.25, 1e-3, 60, 60], np.float32), lm,
                      rng.normal(0, 1, 62).astype(np.float32) * 1e4)


class FakeChannel:
    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        self.sent.append(text)


def test_message_schema_and_rounding() -> None:
    rng = np.random.default_rng(0)
    face = _face(4, rng)
    msg = json.loads(encode(face_message(7, 7, 0.23333333, (640, 480), [face], probe=12345)))
    assert msg["type"] == "faces" and msg["seq"] == 7 and msg["time"] == 0.233333 and msg["probe"] == 12345
    assert (msg["width"], msg["height"]) == (640, 480) and msg["truncated"] == 0
    f = msg["faces"][0]
    assert f["id"] == 4 and f["yaw"] == 10.12 and f["pitch"] == -5.5 and f["roll"] == 2.25
    np.testing.assert_allclose(f["landmarks"], face.landmarks, atol=0.006)
    np.testing.assert_allclose(f["params"], face.params, rtol=1e-5)
    assert len(f["box"]) == 4 and len(f["params"]) == 62


def test_size_limit_keeps_the_faces_that_fit() -> None:
    rng = np.random.default_rng(1)
    msg = face_message(0, 0, 0.0, (640, 480), [_face(i, rng) for i in range(10)])
    one = len(encode(face_message(0, 0, 0.0, (640, 480), [_face(0, rng)])))
    text = encode(msg, max_bytes=3 * one + 200)
    out = json.loads(text)
    assert len(text) <= 3 * one + 200 and len(out["faces"]) == 3 and out["truncated"] == 7
    assert [f["id"] for f in out["faces"]] == [0, 1, 2]


def test_backpressure_drops_instead_of_queueing() -> None:
    ch = FakeChannel()
    fc = FaceChannel(ch, max_buffered=1000)
    msg = face_message(0, 0, 0.0, (64, 64), [])
    assert fc.send(msg)
    ch.bufferedAmount = 5000  # the network is not keeping up
    assert not fc.send(msg) and not fc.send(msg)
    ch.bufferedAmount = 0
    assert fc.send(msg)
    assert json.loads(ch.sent[-1])["dropped"] == 2 and fc.stats()["sent"] == 2 and fc.stats()["dropped"] == 2
    ch.readyState = "closed"
    assert not fc.send(msg)


def test_face_model_bytes_decode_to_the_dense_mesh() -> None:
    from model.morphable import MorphableModel

    morph = MorphableModel.load()
    data = face_model_bytes(morph)
    n = struct.unpack("<I", data[:4])[0]
    head = json.loads(data[4:4 + n])
    base = 4 + n
    assert base % 4 == 0
    arr = {k: np.frombuffer(data, "<f4" if k != "triangles" else "<u4", v["bytes"] // 4, base + v["offset"])
           for k, v in head["arrays"].items()}
    params = np.zeros((1, 62), np.float32)
    params[0, 12:] = np.random.default_rng(2).normal(0, 1e4, 50)
    shape = arr["mean"] + arr["basis"].reshape(-1, head["coefficients"]) @ params[0, 12:]
    np.testing.assert_allclose(shape.reshape(-1, 3), morph.dense_basis.shape_model(params)[0], rtol=1e-4,
                               atol=1e-2)
    np.testing.assert_array_equal(arr["triangles"].reshape(-1, 3), morph.tri)
    assert head["vertices"] == morph.n_dense


def test_pipeline_peer_sends_one_message_per_frame() -> None:
    from stream.frames import Frame
    from stream.webrtc.app_bridge import PipelinePeer

    peer = PipelinePeer.__new__(PipelinePeer)  # only the face-data path: no engine, no pipeline
    peer._last_boxes, peer._waiters, peer._face_seq = [], {}, 0
    got: list[dict] = []
    peer.face_listener, peer.face_probe = got.append, False
    rng = np.random.default_rng(3)
    for i in range(3):
        job = SimpleNamespace(frame=Frame(i, i / 30, np.zeros((48, 64, 3), np.uint8)),
                              faces=[_face(1, rng)] if i != 1 else [], output=None)
        peer._done(job)
    assert [m["seq"] for m in got] == [0, 1, 2] and [len(m["faces"]) for m in got] == [1, 0, 1]
    assert got[2]["time"] == round(2 / 30, 6) and (got[0]["width"], got[0]["height"]) == (64, 48)
    peer.face_listener = None
    peer._done(job)
    assert len(got) == 3
