"""Face data messages (stream.webrtc.facedata): schema (the extended expression included), size limit, backpressure
(drop, never queue), the mesh for clients and the page's decoding of it (face3d.js under node); and the pipeline peer
producing one message per processed frame."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model.blendshapes import ARKIT_NAMES, ESTIMATED, ESTIMATED_MASK
from model.expression_ext import EXT_NAMES, EXT_VERSION, N_EXT
from tracking.face import Face
from stream.webrtc.facedata import FaceChannel, encode, face_message, face_model_bytes
from model.blendshapes import BLENDSHAPES_VERSION

STATIC = Path(__file__).resolve().parents[1] / "stream" / "webrtc" / "static"


def _face(tid: int, rng: np.random.Generator, ext: bool = True) -> Face:
    lm = rng.uniform(100, 300, (68, 3)).astype(np.float32)
    return Face(frame=0, time=0.0, track_id=tid, box=np.array([90, 80, 310, 320], np.float32),
                roi=np.zeros(4, np.float32), pose=np.array([10.123, -5.5, 2.25, 1e-3, 60, 60], np.float32),
                landmarks=lm, params=rng.normal(0, 1, 62).astype(np.float32) * 1e4,
                ext=rng.uniform(-0.3, 1, N_EXT).astype(np.float32) if ext else None,
                blendshape_values=(rng.uniform(0, 1, 52) * ESTIMATED_MASK).astype(np.float32))


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
    assert msg["ext_version"] == EXT_VERSION and list(f["ext"]) == list(EXT_NAMES)
    np.testing.assert_allclose([f["ext"][k] for k in EXT_NAMES], face.ext, atol=6e-5)
    assert msg["blendshapes_version"] == BLENDSHAPES_VERSION and list(f["blendshapes"]) == list(ARKIT_NAMES)
    np.testing.assert_allclose([f["blendshapes"][k] for k in ARKIT_NAMES], face.blendshape_values, atol=6e-4)
    assert all(f["blendshapes"][k] == 0 for k in ARKIT_NAMES if k not in ESTIMATED)
    assert len(encode(msg)) < 4000  # one face, blendshapes included (~3.6 kB)
    bare = json.loads(encode(face_message(8, 8, 0.3, (640, 480), [_face(5, rng, ext=False)])))
    assert bare["faces"][0]["ext"] is None and bare["ext_version"] == EXT_VERSION  # no expression stage: null


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
    ext = np.array([[1.0, 0.0, 0.7, -0.4, 0.3, 0.0, 0.5, -0.8]], np.float32)  # a right wink, a smirk, the jaw open, full lips
    assert head["ext_names"] == list(EXT_NAMES) and head["ext_version"] == EXT_VERSION
    assert head["blendshape_names"] == list(ARKIT_NAMES) and head["blendshapes_estimated"] == list(ESTIMATED)
    shape = arr["mean"] + arr["basis"].reshape(-1, head["coefficients"]) @ params[0, 12:] \
        + arr["ext_basis"].reshape(-1, len(head["ext_names"])) @ ext[0]
    np.testing.assert_allclose(shape.reshape(-1, 3), morph.dense_basis.shape_model(params, ext)[0], rtol=1e-4,
                               atol=1e-2)
    np.testing.assert_array_equal(arr["triangles"].reshape(-1, 3), morph.tri)
    assert head["vertices"] == morph.n_dense


_FACE3D_HARNESS = r"""
const fs = require("fs");
const [js, model, msgFile, how] = process.argv.slice(2);
const uploads = [];
const gl = new Proxy({ ARRAY_BUFFER: 34962, ELEMENT_ARRAY_BUFFER: 34963 }, { get(t, k) {
  if (k in t) return t[k];
  if (k === "getShaderParameter" || k === "getExtension") return () => true;
  if (k === "bufferData") return (target, data) => { if (target === 34962) uploads.push(Array.from(data)); };
  return () => ({});
} });
global.window = {};
global.fetch = async () => { const b = fs.readFileSync(model);
  return { ok: true, arrayBuffer: async () => b.buffer.slice(b.byteOffset, b.byteOffset + b.length) }; };
eval(fs.readFileSync(js, "utf8"));
(async () => {
  const view = window.Face3D.create({ getContext: () => gl, width: 4, height: 3 });
  await view.load("/face-model");
  const out = [];
  for (const face of JSON.parse(fs.readFileSync(msgFile, "utf8")).faces) {
    uploads.length = 0;
    if (how === "blendshapes") view.updateFromBlendshapes(face.params, face.blendshapes);
    else view.update(face.params, face.ext);
    out.push(uploads[0]);
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node missing")
def test_page_view_decodes_ext_like_the_server(tmp_path: Path) -> None:
    """The page's 3D view (face3d.js, run under node with a stub WebGL) rebuilds the mesh of a faces message with its
    ext: a closed eye moves the vertices exactly as the server's decode does (up to the view's centring and scale)."""
    from model.morphable import MorphableModel, Whitening

    morph = MorphableModel.load()
    (tmp_path / "model.bin").write_bytes(face_model_bytes(morph))
    params = Whitening.load("v1").unwhiten(np.zeros((1, 62), np.float32))[0]
    faces = []
    for ext in (None, np.array([1, 0, 0.8, 0, 0, -0.5, 0.6, 0.7], np.float32)):
        rec = Face(frame=0, time=0.0, track_id=1, box=np.zeros(4, np.float32), roi=np.zeros(4, np.float32),
                   pose=np.zeros(6, np.float32), landmarks=np.zeros((68, 3), np.float32), params=params, ext=ext)
        faces.append(rec)
    (tmp_path / "msg.json").write_text(encode(face_message(0, 0, 0.0, (640, 480), faces)))
    (tmp_path / "run.js").write_text(_FACE3D_HARNESS)
    run = subprocess.run(["node", str(tmp_path / "run.js"), str(STATIC / "face3d.js"), str(tmp_path / "model.bin"),
                          str(tmp_path / "msg.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = [np.asarray(v, np.float64).reshape(-1, 3) for v in json.loads(run.stdout)]
    p = np.asarray(json.loads(encode(face_message(0, 0, 0.0, (640, 480), faces)))["faces"][0]["params"], np.float64)
    for v, rec in zip(got, faces):
        ext = None if rec.ext is None else np.round(rec.ext[None].astype(np.float64), 4)
        x = morph.dense_basis.shape_model(p[None], ext)[0] @ p[:12].reshape(3, 4)[:, :3].T
        x -= x.mean(0)
        x *= 0.9 / np.abs(x[:, :2]).max()
        np.testing.assert_allclose(v, x, atol=2e-4)
    eyes = np.abs(got[1] - got[0]).max()
    assert eyes > 0.01, eyes  # the wink shows in the page's view


@pytest.mark.skipif(shutil.which("node") is None, reason="node missing")
def test_page_view_driven_by_the_blendshapes(tmp_path: Path) -> None:
    """"3D view from blendshapes": the page rebuilds the face from its identity, pose and ARKit blendshapes alone,
    through the face model's rig (``arkit_rig``), as the server computes it: ext = rig @ blendshapes, expression 0;
    a blink and an open jaw show."""
    from model.blendshapes import INDEX, ext_rig
    from model.morphable import MorphableModel, Whitening

    morph = MorphableModel.load()
    (tmp_path / "model.bin").write_bytes(face_model_bytes(morph))
    params = Whitening.load("v1").unwhiten(np.zeros((1, 62), np.float32))[0]
    params[52:62] = 2.0  # an expression the blendshape view must not show
    faces = []
    for values in ({}, {"eyeBlinkLeft": 1.0, "jawOpen": 0.8, "mouthSmileRight": 0.5}):
        b = np.zeros(52, np.float32)
        for k, v in values.items():
            b[INDEX[k]] = v
        faces.append(Face(frame=0, time=0.0, track_id=1, box=np.zeros(4, np.float32), roi=np.zeros(4, np.float32),
                          pose=np.zeros(6, np.float32), landmarks=np.zeros((68, 3), np.float32), params=params,
                          ext=np.zeros(7, np.float32), blendshape_values=b))
    (tmp_path / "msg.json").write_text(encode(face_message(0, 0, 0.0, (640, 480), faces)))
    (tmp_path / "run.js").write_text(_FACE3D_HARNESS)
    run = subprocess.run(["node", str(tmp_path / "run.js"), str(STATIC / "face3d.js"), str(tmp_path / "model.bin"),
                          str(tmp_path / "msg.json"), "blendshapes"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = [np.asarray(v, np.float64).reshape(-1, 3) for v in json.loads(run.stdout)]
    msg = json.loads(encode(face_message(0, 0, 0.0, (640, 480), faces)))
    rig = np.round(ext_rig(morph.sparse).astype(np.float64), 5)
    for v, face in zip(got, msg["faces"]):
        p = np.asarray(face["params"], np.float64)
        p[52:62] = 0
        b = np.array([face["blendshapes"][k] for k in face["blendshapes"]], np.float64)
        x = morph.dense_basis.shape_model(p[None], (rig @ b)[None])[0] @ p[:12].reshape(3, 4)[:, :3].T
        x -= x.mean(0)
        x *= 0.9 / np.abs(x[:, :2]).max()
        np.testing.assert_allclose(v, x, atol=2e-4)
    assert np.abs(got[1] - got[0]).max() > 0.01  # the blink and the jaw show


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
