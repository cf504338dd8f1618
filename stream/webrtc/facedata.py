"""Live face data for WebRTC clients: one JSON message per processed frame on the data channel labelled "faces".

A client subscribes by opening a data channel labelled ``faces`` (best unordered with ``maxRetransmits: 0``: a late
frame's data is worth nothing); the server then sends, for every frame it processed (schema in docs/INTERFACES.md)::

    {"type": "faces", "seq": 17, "frame": 17, "time": 0.5667, "width": 640, "height": 480, "probe": 123456 | null,
     "faces": [{"id": 1, "box": [x1, y1, x2, y2], "yaw": -3.1, "pitch": 4.2, "roll": 0.5,
                "landmarks": [[x, y, z] x 68], "params": [62 real 3DMM parameters],
                "ext": {"eye_close_r": 0.02, ..., "lips_part": -0.6} | null,
                "blendshapes": {"eyeBlinkLeft": 0.0, ..., "jawOpen": 0.31, ..., "tongueOut": 0} | null}],
     "ext_version": "ext-v2", "blendshapes_version": "arkit-v6", "truncated": 0, "dropped": 0}

Backpressure never delays the video: a message is dropped (and counted in ``dropped``) when the channel still holds
more than ``max_buffered`` bytes; a message over ``max_bytes`` keeps the faces that fit and says how many it left
out in ``truncated``. ``GET /face-model`` gives the dense mesh (``face_model_bytes``) so that clients can rebuild it
from ``params`` and ``ext`` (the extended expression, ``model.expression_ext``; null without the expression stage).
"""
from __future__ import annotations

import json
import logging
import struct
from typing import Any, Sequence

import numpy as np

from model.blendshapes import ARKIT_NAMES, BLENDSHAPES_VERSION, ESTIMATED
from model.expression_ext import EXT_NAMES, EXT_VERSION
from tracking.face import Face

log = logging.getLogger(__name__)

FACES_LABEL = "faces"
MAX_BYTES = 32 * 1024       # one message; ~3.6 kB per face (ext and blendshapes included), so about 8 faces fit
MAX_BUFFERED = 64 * 1024    # bytes waiting in the channel above which a message is dropped


def _round(values: Any, digits: int) -> list:
    return np.round(np.asarray(values, np.float64), digits).tolist()


def _sig(values: Any) -> list:
    return [float(f"{v:.6g}") for v in np.asarray(values, np.float64).ravel()]


def blendshape_entry(values: Any) -> dict | None:
    """The 52 ARKit coefficients as ``{name: value}`` in ``ARKIT_NAMES`` order, to 1e-3 (a zero as ``0``)."""
    if values is None:
        return None
    v = np.round(np.asarray(values, np.float64).reshape(len(ARKIT_NAMES)), 3)
    return {k: (float(x) if x else 0) for k, x in zip(ARKIT_NAMES, v.tolist())}


def face_entry(face: Face) -> dict:
    """One face (a ``tracking.face.Face``) as the message's JSON object: pixels to 0.01, angles to 0.01 degree, the
    extended expression to 1e-4 (``{name: value}`` in ``EXT_NAMES`` order, or None), the ARKit blendshapes to 1e-3
    (``{name: value}`` in ``ARKIT_NAMES`` order, or None)."""
    pose = np.asarray(face.pose, np.float64)
    ext = face.ext
    return {"id": int(face.track_id), "box": _round(np.ravel(face.box)[:4], 2),
            "yaw": round(float(pose[0]), 2), "pitch": round(float(pose[1]), 2), "roll": round(float(pose[2]), 2),
            "landmarks": _round(np.asarray(face.landmarks)[:68, :3], 2), "params": _sig(np.ravel(face.params)[:62]),
            "ext": None if ext is None else dict(zip(EXT_NAMES, _round(np.ravel(ext)[:len(EXT_NAMES)], 4))),
            "blendshapes": blendshape_entry(face.blendshape_values)}


def face_message(seq: int, frame: int, time: float, size: tuple[int, int], faces: Sequence[Face],
                 probe: int | None = None) -> dict:
    """The message of one frame: ``size`` (W, H) px of the frame the coordinates refer to; ``time`` its source time
    (s, the WebRTC media time); ``probe`` the latency-probe value painted into it, when there was one."""
    return {"type": "faces", "seq": int(seq), "frame": int(frame), "time": round(float(time), 6),
            "width": int(size[0]), "height": int(size[1]), "probe": probe,
            "faces": [face_entry(f) for f in faces], "ext_version": EXT_VERSION,
            "blendshapes_version": BLENDSHAPES_VERSION, "truncated": 0, "dropped": 0}


def encode(message: dict, max_bytes: int = MAX_BYTES) -> str:
    """JSON text of ``message`` within ``max_bytes``: faces that do not fit are left out and counted."""
    text = json.dumps(message, separators=(",", ":"))
    if len(text) <= max_bytes:
        return text
    faces = list(message["faces"])
    while faces:
        faces.pop()
        trimmed = {**message, "faces": faces, "truncated": len(message["faces"]) - len(faces)}
        text = json.dumps(trimmed, separators=(",", ":"))
        if len(text) <= max_bytes:
            return text
    return json.dumps({**message, "faces": [], "truncated": len(message["faces"])}, separators=(",", ":"))


class FaceChannel:
    """Sends face messages on one peer's ``faces`` data channel, dropping instead of queueing."""

    def __init__(self, channel: Any, max_bytes: int = MAX_BYTES, max_buffered: int = MAX_BUFFERED) -> None:
        self.channel = channel
        self.max_bytes = max_bytes
        self.max_buffered = max_buffered
        self.sent = 0
        self.dropped = 0
        self.truncated = 0
        self.bytes = 0

    @property
    def open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    def send(self, message: dict) -> bool:
        """Send now or drop (channel backed up or closed); never waits. Returns whether it was sent."""
        if not self.open:
            return False
        if self.channel.bufferedAmount > self.max_buffered:
            self.dropped += 1
            return False
        text = encode({**message, "dropped": self.dropped}, self.max_bytes)
        try:
            self.channel.send(text)
        except Exception:  # noqa: BLE001 - a closing channel must not take the peer down
            log.debug("faces channel send failed", exc_info=True)
            self.dropped += 1
            return False
        self.sent += 1
        self.bytes += len(text)
        if '"truncated":0' not in text:
            self.truncated += 1
        return True

    def stats(self) -> dict:
        return {"sent": self.sent, "dropped": self.dropped, "truncated": self.truncated,
                "mean_bytes": round(self.bytes / self.sent) if self.sent else None}


def face_model_bytes(morph: Any) -> bytes:
    """The dense mesh for clients: ``uint32 n`` + ``n`` bytes of JSON header + little-endian arrays at the offsets the
    header names: ``mean`` float32 (V*3), ``basis`` float32 (V*3, K) row-major (x, y, z rows per vertex; K = 40 shape
    + 10 expression), ``triangles`` uint32 (F*3), and (when the model has the extended expression)
    ``ext_basis`` float32 (V*3, E) row-major, E = ``len(header["ext_names"])``. Model-space vertices =
    mean + basis @ params[12:62] + ext_basis @ [ext[name] for name in ext_names]; the pose is ``params[0:12]``
    (3x4 row-major, crop coordinates before the y flip). ``arkit_rig`` (N_EXT x 52, the header's JSON): the
    extended expression that shows each ARKit name (``blendshape_names`` order) at value 1 on the mean face, so a
    client can drive the mesh from the ``blendshapes`` alone: ``ext = arkit_rig @ blendshapes`` with the expression
    coefficients at 0 (``model.blendshapes.ext_rig``; unrigged names: zero columns)."""
    u, w = morph.dense_basis.flat()
    flat_ext = getattr(morph.dense_basis, "flat_ext", None)
    w_ext = None if flat_ext is None else flat_ext()
    tri = np.ascontiguousarray(morph.tri, "<u4").reshape(-1)
    parts = [np.ascontiguousarray(u, "<f4").tobytes(), np.ascontiguousarray(w, "<f4").tobytes(), tri.tobytes()]
    names: tuple[str, ...] = ("mean", "basis", "triangles")
    header = {"vertices": int(u.shape[0] // 3), "coefficients": int(w.shape[1]), "triangles": int(len(tri) // 3),
              "params_offset": 12, "blendshape_names": list(ARKIT_NAMES), "blendshapes_estimated": list(ESTIMATED),
              "blendshapes_version": BLENDSHAPES_VERSION, "arrays": {}}
    if w_ext is not None:
        from model.blendshapes import ext_rig

        parts.append(np.ascontiguousarray(w_ext, "<f4").tobytes())
        names += ("ext_basis",)
        header.update(ext_names=list(EXT_NAMES), ext_version=EXT_VERSION,
                      arkit_rig=np.round(ext_rig(morph.sparse), 5).tolist())
    # offsets are relative to the end of the header and 4-byte aligned
    offset = 0
    for name, data in zip(names, parts):
        header["arrays"][name] = {"offset": offset, "bytes": len(data)}
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-(len(head) + 4) % 4)
    return struct.pack("<I", len(head)) + head + b"".join(parts)
