"""Dense mesh sink: ``MeshSink`` (one NPZ per track, optionally OBJ/PLY per frame)."""
from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from stream.atomic import AtomicPath, atomic_write_bytes, temp_path_for
from tracking.face import Face


log = logging.getLogger("stream.sinks")  # one logger for every sink, as before the split

from stream.sinks.base import _RecordSink, SinkError, os_reason

# --------------------------------------------------------------------------------------------------------------
# Meshes


def _write_npz_streamed(path: Path, small: dict[str, np.ndarray], big_name: str, raw_path: Path,
                        shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Write an uncompressed NPZ whose array ``big_name`` is copied from raw C-order bytes on disk (no RAM copy)."""
    with open(path, "wb") as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in small.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        with zf.open(f"{big_name}.npy", "w", force_zip64=True) as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            with open(raw_path, "rb") as raw:
                shutil.copyfileobj(raw, f, 1 << 20)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # pragma: no cover - e.g. the folder turned read-only
        log.warning("could not remove %s: %s", path, os_reason(exc))


class _MeshTrack:
    def __init__(self, raw_path: Path) -> None:
        self.raw_path = raw_path
        self.raw = open(raw_path, "wb")
        self.frames: list[int] = []
        self.times: list[float] = []
        self.n_vertices: int | None = None


class MeshSink(_RecordSink):
    """Dense meshes per track: ``{directory}/track{ID}.npz`` with ``vertices (T,V,3) float32`` (frame pixels, y
    down, like the landmarks), ``frames (T,) int64``, ``times (T,) float64``, ``triangles (F,3) int32``.

    Vertices are appended to a hidden raw file in ``directory`` as they come (RAM stays flat on long videos) and
    packed into the NPZ at close (temp + rename). ``per_frame="obj"|"ply"`` also writes
    ``track{ID}_frame{N:06d}.obj|ply`` per frame (OBJ text with 1-based faces; PLY binary little-endian). With ``uv``
    (V, 2) in [0, 1] (origin top-left, as :func:`stream.gltf.mesh_uv` gives) the OBJ files carry ``vt`` lines
    (OBJ's v points up: ``1 - v``) and ``f v/vt`` faces.
    """

    def __init__(self, directory: str | os.PathLike[str], tri: np.ndarray, per_frame: str | None = None,
                 uv: np.ndarray | None = None) -> None:
        super().__init__(directory)
        if per_frame not in (None, "obj", "ply"):
            raise SinkError(f"per-frame mesh format must be obj or ply, got {per_frame!r}")
        self.directory = self.path
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot create mesh folder {self.directory}: {e.strerror or e}") from e
        self.tri = np.ascontiguousarray(np.asarray(tri, dtype=np.int32).reshape(-1, 3))
        self.per_frame = per_frame
        self.uv = None if uv is None else np.asarray(uv, np.float64).reshape(-1, 2)
        self._tracks: dict[int, _MeshTrack] = {}
        self._obj_faces: bytes | None = None
        self._ply_faces: bytes | None = None
        self.meshes_written = 0
        self.skipped_records = 0
        self.files: list[Path] = []

    def write(self, frame_index: int, time: float, records: list[Face]) -> None:
        """Append the dense vertices of each record; records without vertices are skipped (and counted)."""
        with self._lock:
            self._check_open()
            try:
                self._append(frame_index, time, records)
            except OSError as exc:
                raise self._failed(exc) from exc

    def _append(self, frame_index: int, time: float, records: list[Face]) -> None:
        for r in records:
            if r.vertices is None:
                self.skipped_records += 1
                continue
            v = np.ascontiguousarray(np.asarray(r.vertices, dtype=np.float32)[:, :3])
            tid = int(r.track_id)
            track = self._tracks.get(tid)
            if track is None:
                raw = temp_path_for(self.directory / f"track{tid}.vertices")
                track = self._tracks[tid] = _MeshTrack(raw)
                track.n_vertices = v.shape[0]
            if v.shape[0] != track.n_vertices:
                raise ValueError(f"track {tid}: {v.shape[0]} vertices, expected {track.n_vertices}")
            track.raw.write(v.tobytes())
            track.frames.append(int(frame_index))
            track.times.append(float(time))
            self.meshes_written += 1
            if self.per_frame:
                name = self.directory / f"track{tid}_frame{int(frame_index):06d}.{self.per_frame}"
                encode = self._obj_bytes if self.per_frame == "obj" else self._ply_bytes
                data = encode(v, frame_index, time, tid)
                self.files.append(atomic_write_bytes(name, data))

    def _obj_bytes(self, v: np.ndarray, frame_index: int, time: float, tid: int) -> bytes:
        if self._obj_faces is None:
            faces = self.tri.astype(np.int64) + 1
            if self.uv is not None and len(self.uv) == len(v):
                vt = np.stack([self.uv[:, 0], 1 - self.uv[:, 1]], 1)
                self._obj_faces = (("vt %.6f %.6f\n" * len(vt)) % tuple(vt.ravel().tolist())).encode()
                self._obj_faces += (("f %d/%d %d/%d %d/%d\n" * len(faces))
                                    % tuple(np.repeat(faces.ravel(), 2).tolist())).encode()
            else:
                self._obj_faces = (("f %d %d %d\n" * len(faces)) % tuple(faces.ravel().tolist())).encode()
        head = f"# track {tid} frame {frame_index} time {time:.6f}; frame pixels, y down\n".encode()
        verts = (("v %.3f %.3f %.3f\n" * len(v)) % tuple(v.ravel().tolist())).encode()
        return head + verts + self._obj_faces

    def _ply_bytes(self, v: np.ndarray, frame_index: int, time: float, tid: int) -> bytes:
        if self._ply_faces is None:
            faces = np.empty(len(self.tri), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
            faces["n"] = 3
            faces["idx"] = self.tri
            self._ply_faces = faces.tobytes()
        head = (
            "ply\nformat binary_little_endian 1.0\n"
            f"comment track {tid} frame {frame_index} time {time:.6f}; frame pixels, y down\n"
            f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
            f"element face {len(self.tri)}\nproperty list uchar int vertex_indices\nend_header\n"
        ).encode("ascii")
        return head + v.astype("<f4").tobytes() + self._ply_faces

    def _finish(self) -> Path | None:
        for tid in sorted(self._tracks):
            track = self._tracks[tid]
            track.raw.close()
            target = AtomicPath(self.directory / f"track{tid}.npz")
            small = {
                "frames": np.asarray(track.frames, np.int64),
                "times": np.asarray(track.times, np.float64),
                "triangles": self.tri,
            }
            try:
                _write_npz_streamed(target.tmp, small, "vertices", track.raw_path,
                                    (len(track.frames), int(track.n_vertices or 0), 3), np.dtype("<f4"))
                self.files.append(target.commit())
            except BaseException:
                target.abort()
                raise
            finally:
                track.raw_path.unlink(missing_ok=True)
        self._tracks.clear()
        return self.directory

    def _discard(self) -> None:
        """Remove the raw vertex files and every file this sink already committed (per-frame meshes, the NPZ of
        earlier tracks when a later one failed): a failed run leaves no part of its meshes behind."""
        for track in self._tracks.values():
            try:
                track.raw.close()
            except Exception:
                pass
            _unlink_quietly(track.raw_path)
        self._tracks.clear()
        for path in self.files:
            _unlink_quietly(path)
        self.files.clear()

