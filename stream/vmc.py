"""A live VMC protocol stream (OSC over UDP) to avatar apps: VSeeFace, VMagicMirror, Warudo, VNyan, Unity's EVMC4U...

``--vmc HOST[:PORT]`` (default port ``DEFAULT_PORT`` 39539, the performer-to-marionette port of the VMC protocol)
with ``run``, ``serve`` and the API's ``stream``/``track_video``. One face drives the avatar: the track that had it
keeps it while it lives, else the largest face. Per processed frame, one OSC bundle (``python-osc``'s message
encoding) holding, in order::

    /VMC/Ext/OK   1 3 0 T          loaded, calibrated, normal calibration, T = 1 tracking / 0 no face
    /VMC/Ext/T    time              the frame's source time, seconds
    /VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw      (only with a face)
    /VMC/Ext/Blend/Val NAME value   the 52 ARKit blendshapes under their ARKit names (VSeeFace's "perfect sync"
                                    clips), [+ VRM presets with ``vrm``: Blink_L, Blink_R, A, I, U, E, O, Joy,
                                    Angry, Sorrow]
    /VMC/Ext/Blend/Apply

Frames without a face send only OK (tracking 0) and T. The head's rotation (``head_quaternion``) is our pose in
Unity's axes (left-handed, y up, the avatar facing +z; x its right): our yaw turns it about +y (> 0: to its right,
as the subject turned to theirs), pitch about +x (> 0 looks down), roll about -z (> 0 tilts to its right), so the
avatar moves like the subject, not like their mirror image. The position is the head's displacement in metres from
where the track started (x to the avatar's right, y up, z toward the camera; from the nose bridge's frame position
and the face's size), for receivers that use it.

Fire and forget: the pipeline's sink only leaves the latest frame in a one-slot mailbox; the sender, an asyncio
task of its own, takes it when it is free and hands it to a non-blocking UDP socket. When the socket cannot take
it at once the frame is dropped and counted: nothing waits for a receiver, and nothing is queued when no one
listens (UDP to a port nobody reads is discarded by the system).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from model.blendshapes import ARKIT_NAMES, INDEX, N_BLEND
from model.errors import UserError
from tracking.face import Face

log = logging.getLogger(__name__)

DEFAULT_PORT = 39539
# VRM 0.x preset clips for models without perfect sync: preset -> ({ARKit name: weight}, offset); value =
# clip(offset + sum(weight * coefficient), 0, 1). Vowels from the mouth's shape: A open, I wide and closed,
# U puckered, E half open and wide, O rounded and open.
VRM_PRESETS: tuple[tuple[str, dict[str, float], float], ...] = (
    ("Blink_L", {"eyeBlinkLeft": 1.0}, 0.0),
    ("Blink_R", {"eyeBlinkRight": 1.0}, 0.0),
    ("A", {"jawOpen": 1.0, "mouthFunnel": -1.0, "mouthPucker": -0.5}, 0.0),
    ("I", {"mouthStretchLeft": 0.5, "mouthStretchRight": 0.5, "mouthSmileLeft": 0.25, "mouthSmileRight": 0.25,
           "jawOpen": -1.0}, 0.0),
    ("U", {"mouthPucker": 1.0, "jawOpen": -0.5}, 0.0),
    ("E", {"jawOpen": 0.6, "mouthStretchLeft": 0.4, "mouthStretchRight": 0.4, "mouthFunnel": -1.0}, -0.2),
    ("O", {"mouthFunnel": 1.0}, 0.0),
    ("Joy", {"mouthSmileLeft": 0.5, "mouthSmileRight": 0.5}, 0.0),
    ("Angry", {"browDownLeft": 0.5, "browDownRight": 0.5}, 0.0),
    ("Sorrow", {"mouthFrownLeft": 0.35, "mouthFrownRight": 0.35, "browInnerUp": 0.3}, 0.0),
)
VRM_NAMES = tuple(p[0] for p in VRM_PRESETS)
_VRM_W = np.zeros((N_BLEND, len(VRM_PRESETS)))
for _j, (_name, _combo, _off) in enumerate(VRM_PRESETS):
    for _k, _w in _combo.items():
        _VRM_W[INDEX[_k], _j] = _w
_VRM_OFF = np.array([p[2] for p in VRM_PRESETS])
_D = np.diag([-1.0, 1.0, 1.0])
FACE_WIDTH_M = 0.09  # the outer eye corners' distance of an average adult face (the 3DMM's mean: 8.6 cm)


class VMCError(UserError, ValueError):
    """A bad ``--vmc`` value (one line)."""


def parse_target(spec: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``:PORT``, ``PORT`` or ``[IPv6]:PORT`` -> (host, port); the host defaults to
    127.0.0.1, the port to 39539."""
    text = str(spec).strip()
    host, port = text, DEFAULT_PORT
    if text.isdigit():
        host, port = "", text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise VMCError(f"--vmc {spec}: expected HOST[:PORT]")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise VMCError(f"--vmc {spec}: expected HOST[:PORT]")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    host = host or "127.0.0.1"
    try:
        port = int(port)
    except ValueError:
        raise VMCError(f"--vmc {spec}: the port must be a number (default {DEFAULT_PORT})") from None
    if not 0 < port < 65536:
        raise VMCError(f"--vmc {spec}: the port must be in 1-65535")
    return host, port


def vrm_presets(blend: np.ndarray) -> np.ndarray:
    """The 52 ARKit coefficients -> the VRM preset values (``VRM_NAMES`` order) in [0, 1]."""
    return np.clip(np.asarray(blend, np.float64).reshape(N_BLEND) @ _VRM_W + _VRM_OFF, 0.0, 1.0)


def quaternion_from_matrix(m: np.ndarray) -> np.ndarray:
    """A rotation matrix (3, 3) -> quaternion (x, y, z, w), w >= 0."""
    m = np.asarray(m, np.float64)
    t = np.trace(m)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def head_quaternion(pose: Sequence[float]) -> np.ndarray:
    """Our pose (yaw, pitch, roll degrees, ...) -> the head's rotation in Unity's axes, quaternion (x, y, z, w):
    ``D R D`` with R our model-to-camera rotation (``model.morphable.angles_to_matrix``) and D = diag(-1, 1, 1)
    (our model's x is the subject's left, Unity's x the avatar's right; the camera looks at the subject, the avatar
    is seen from behind its own eyes)."""
    from model.morphable import angles_to_matrix

    yaw, pitch, roll = np.radians(np.asarray(pose, np.float64)[:3])
    r = angles_to_matrix(yaw, pitch, roll)[0]
    return quaternion_from_matrix(_D @ r @ _D)


class BundleEncoder:
    """OSC bundles of the VMC messages, built with ``python-osc``: each message's bytes are made once by its
    ``OscMessageBuilder`` and only the float arguments are rewritten per frame (big-endian float32, as OSC)."""

    def __init__(self, vrm: bool = False) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder
        from pythonosc.parsing import osc_types

        def template(address: str, *args: Any) -> bytes:
            b = OscMessageBuilder(address=address)
            for a in args:
                b.add_arg(a, "f" if isinstance(a, float) else None)
            return b.build().dgram

        self._date = osc_types.write_date(osc_types.IMMEDIATELY)
        self.names = tuple(ARKIT_NAMES) + (VRM_NAMES if vrm else ())
        self.vrm = vrm
        self._val = [template("/VMC/Ext/Blend/Val", n, 0.0)[:-4] for n in self.names]
        self._apply = template("/VMC/Ext/Blend/Apply")
        self._bone = template("/VMC/Ext/Bone/Pos", "Head", *([0.0] * 7))[:-28]
        self._t = template("/VMC/Ext/T", 0.0)[:-4]
        self._ok = {s: template("/VMC/Ext/OK", 1, 3, 0, s) for s in (0, 1)}

    def encode(self, time: float, blend: np.ndarray | None, position: np.ndarray | None = None,
               rotation: np.ndarray | None = None) -> bytes:
        """One frame's bundle: OK, T, and with a face (``blend`` (52,), position (3,) m, rotation (x, y, z, w))
        the head bone, every Blend/Val and one Apply."""
        parts = [self._ok[int(blend is not None)], self._t + struct.pack(">f", float(time))]
        if blend is not None:
            values = np.asarray(blend, np.float64).reshape(N_BLEND)
            if self.vrm:
                values = np.concatenate([values, vrm_presets(values)])
            pos = np.zeros(3) if position is None else np.asarray(position, np.float64)
            rot = np.array([0, 0, 0, 1.0]) if rotation is None else np.asarray(rotation, np.float64)
            parts.append(self._bone + struct.pack(">7f", *pos, *rot))
            packed = struct.pack(f">{len(values)}f", *np.clip(values, 0.0, 1.0))
            parts += [self._val[i] + packed[4 * i:4 * i + 4] for i in range(len(values))]
            parts.append(self._apply)
        return b"#bundle\x00" + self._date + b"".join(struct.pack(">i", len(p)) + p for p in parts)


@dataclass
class VMCFrame:
    """What the sink hands the sender: the frame's time and its driving face (None: no face)."""

    time: float
    blend: np.ndarray | None = None
    position: np.ndarray | None = None
    rotation: np.ndarray | None = None


class VMCSender:
    """Sends the latest frame to ``(host, port)`` from its own asyncio task; ``offer`` may be called from any thread.

    ``sent``: bundles handed to the socket; ``skipped``: frames replaced in the mailbox before the task took them;
    ``dropped``: bundles the socket could not take at once (or refused).
    """

    def __init__(self, host: str, port: int, vrm: bool = False) -> None:
        self.address = (host, int(port))
        self.encoder = BundleEncoder(vrm)
        self.sent = self.skipped = self.dropped = 0
        self._lock = threading.Lock()
        self._latest: VMCFrame | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None
        self.owner: Any = None  # who drives the avatar (serve: the first peer with a face)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the socket and start the task on ``loop`` (default: the running one); idempotent."""
        if self._task is not None:
            return
        try:
            infos = socket.getaddrinfo(self.address[0], self.address[1], type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise VMCError(f"--vmc {self.address[0]}:{self.address[1]}: unknown host ({exc.strerror})") from None
        family, _, _, _, addr = infos[0]
        self._target = addr
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._loop = loop or asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="vmc-sender")

    def offer(self, frame: VMCFrame, owner: Any = None) -> bool:
        """Leave ``frame`` for the sender (replacing one it has not taken); never waits. ``owner``: the first owner
        with a face keeps the stream until ``release``; others are ignored meanwhile. Returns whether it was
        taken."""
        with self._lock:
            if self.owner is not None and owner is not None and owner != self.owner:
                return False
            if owner is not None and self.owner is None and frame.blend is not None:
                self.owner = owner
            if self._latest is not None:
                self.skipped += 1
            self._latest = frame
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closing
                return False
        return True

    def release(self, owner: Any) -> None:
        with self._lock:
            if self.owner == owner:
                self.owner = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                frame, self._latest = self._latest, None
            if frame is None:
                continue
            self.send_now(frame)

    def send_now(self, frame: VMCFrame) -> bool:
        """Encode and hand one frame to the socket at once; a full buffer or an error drops it (counted)."""
        data = self.encoder.encode(frame.time, frame.blend, frame.position, frame.rotation)
        try:
            self._sock.sendto(data, self._target)
        except (BlockingIOError, InterruptedError, OSError):  # full buffer, no route, refused: drop, never wait
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        """Stop the task and close the socket (from any thread); idempotent."""
        task, loop = self._task, self._loop
        self._task = None
        if task is not None and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass
        if self._sock is not None:
            sock, self._sock = self._sock, None
            if loop is not None and not loop.is_closed() and task is not None:
                try:
                    loop.call_soon_threadsafe(sock.close)
                    return
                except RuntimeError:
                    pass
            sock.close()


class VMCOut:
    """The pipeline sink of ``--vmc``: picks the frame's driving face and offers it to a ``VMCSender`` (started on
    the running loop when built there, or given). ``owner``: a name for shared senders (serve's peers)."""

    def __init__(self, target: str | VMCSender, vrm: bool = False, owner: Any = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.shared = isinstance(target, VMCSender)
        self.sender = target if self.shared else VMCSender(*parse_target(target), vrm=vrm)
        self.sender.start(loop)
        self.owner = owner
        self.track: int | None = None
        self._origin: dict[int, tuple[np.ndarray, float]] = {}

    def _driver(self, faces: Sequence[Face]) -> Face | None:
        if not faces:
            self.track = None
            return None
        for f in faces:
            if int(f.track_id) == self.track:
                return f
        area = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
        face = faces[int(np.argmax(area))]
        self.track = int(face.track_id)
        return face

    def _position(self, face: Face) -> np.ndarray:
        lm = np.asarray(face.landmarks, np.float64)
        size = float(np.linalg.norm(lm[36] - lm[45])) or 1.0
        here = lm[27]
        tid = int(face.track_id)
        if tid not in self._origin:
            self._origin = {tid: (here, size)}
        origin, size0 = self._origin[tid]
        m = FACE_WIDTH_M / size0  # metres per pixel at the start
        dx, dy = (here[:2] - origin[:2]) * m
        dz = FACE_WIDTH_M * (size / size0 - 1.0) * 5.0  # ~0.5 m from the camera: 1% bigger ~ 5 mm closer
        return np.array([-dx, -dy, dz])  # Unity: x the avatar's right (the image's left), y up, z toward camera

    def frame_of(self, time: float, faces: Sequence[Face]) -> VMCFrame:
        face = self._driver(faces)
        if face is None or face.blendshape_values is None:
            return VMCFrame(float(time))
        return VMCFrame(float(time), np.asarray(face.blendshape_values, np.float32), self._position(face),
                        head_quaternion(face.pose))

    def write_job(self, job: Any) -> None:
        self.sender.offer(self.frame_of(job.frame.time, job.faces), self.owner)

    def close(self) -> None:
        if self.shared:
            self.sender.release(self.owner)
        else:
            self.sender.close()

    def abort(self) -> None:
        self.close()
