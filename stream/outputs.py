"""The render stage and the sinks of a run, as the pipeline sees them (``render(image, faces)``, ``write_job(job)``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from model.draw import draw_box
from stream.config import RENDER_MODES
from stream.frames import VideoInfo
from stream.pipeline import Job
from stream.sinks import MeshSink, SinkError, VideoSink, open_tracks_sink, tracks_format, write_error
from tracking.face import Face

#: The render modes that draw the dense mesh (every one but landmarks and none).
MESH_MODES = tuple(m for m in RENDER_MODES if m not in ("landmarks", "none"))


class FrameRenderer:
    """Draws the chosen overlay (``mode``) for all faces of a frame; ``none`` returns the frame unchanged.

    ``swap`` needs a ``FaceTexture`` (``set_swap_texture``); until one is set, swap mode draws the mesh. The swap
    shows the source's whole face on the target's motion; ``keep_target_eyes`` (config ``swap_keep_target_eyes``)
    keeps the target's own eyes and brows instead.
    ``bars``: a small bar chart of each face's ARKit blendshapes beside it (any mode; ``--blendshape-bars``, key b).
    """

    def __init__(self, mode: str, morph, draw_ids: bool = True, bars: bool = False) -> None:
        self.mode = mode
        self.morph = morph
        self.draw_ids = draw_ids
        self.bars = bars
        self.texture = None
        self.keep_target_eyes = False
        self._color_states: dict[int, dict] = {}  # per track: colour-match statistics over time (swap)
        self._buffers = None
        self._reference = morph.dense_basis.u.astype(np.float32)

    @property
    def needs_dense(self) -> bool:
        return self.mode in MESH_MODES

    def set_mode(self, mode: str) -> None:
        self.mode = mode

    def set_swap_texture(self, texture, keep_target_eyes: bool | None = None) -> None:
        self.texture = texture
        if keep_target_eyes is not None:
            self.keep_target_eyes = bool(keep_target_eyes)
        self._color_states.clear()

    def render(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(H, W, 3) uint8 BGR + the frame's faces -> a new annotated image."""
        from stream.render.overlays import render_overlay
        from model.raster.zbuffer import RasterBuffers

        mode = self.mode
        h, w = image.shape[:2]
        if self._buffers is None or self._buffers.shape != (h, w):  # reused frame to frame: no z-buffer allocation
            self._buffers = RasterBuffers.create(h, w, 0)
        if mode == "none" or not faces:
            out = image.copy()
        elif mode == "swap" and self.texture is not None and all(f.vertices is not None for f in faces):
            from stream.render.swap import swap_faces
            from stream.render.swap_shape import shape_swap

            shaped = None if self.keep_target_eyes else shape_swap(self.morph, self.texture)
            targets = [f.vertices if shaped is None or f.params is None else shaped.apply(f.vertices, f.params, f.roi)
                       for f in faces]
            out = swap_faces(image, targets, self.morph.tri, self.texture,
                             landmarks=[f.landmarks for f in faces], buffers=self._buffers,
                             color_states=[self._color_states.setdefault(f.track_id, {}) for f in faces],
                             keep_target_eyes=self.keep_target_eyes)
            for gone in set(self._color_states) - {f.track_id for f in faces}:
                del self._color_states[gone]
        else:
            if mode == "swap" or (mode in MESH_MODES and any(f.vertices is None for f in faces)):
                mode = "mesh" if all(f.vertices is not None for f in faces) else "landmarks"
            out = render_overlay(image, faces, mode, self.morph.tri, grid_shape=self.morph.grid_shape,
                                 reference=self._reference, buffers=self._buffers)
        if self.draw_ids and self.mode not in ("none", "swap"):
            for f in faces:
                conf = "" if f.confidence is None else f" {f.confidence:.2f}"
                draw_box(out, f.box, label=f"#{f.track_id}{conf}")
        if self.bars and faces:
            from stream.render.overlays import draw_blendshape_bars

            draw_blendshape_bars(out, faces)
        return out

    def swap_reference(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """The frame as the last swap's holes show it, for seam measures (``stream.render.swap.holes_reference``
        with the eyes each face's swap showed)."""
        from stream.render.swap import holes_reference

        return holes_reference(image, [f.landmarks for f in faces],
                               [self._color_states.get(f.track_id, {}).get("shown_eyes") for f in faces])


class VideoOut:
    """Annotated (or, without a renderer, original) frames to a video file, with the source's sound when ``audio``
    and the source has some (``VideoInfo.audio``)."""

    def __init__(self, path: str, info: VideoInfo, audio: bool = True) -> None:
        self.sink = VideoSink(path, info, audio=info.audio if audio else None)

    def write_job(self, job: Job) -> None:
        img = job.output if job.output is not None else job.frame.image
        self.sink.write(job.frame.index, job.frame.time, img)

    def close(self) -> None:
        self.sink.close()

    def abort(self) -> None:
        """Discard what was written (a failed run); the final path is left as it was."""
        self.sink.abort()


class TracksOut:
    """Per-frame face records to a .csv / .jsonl / .npz track file or a Live Link Face CSV (``fmt``: auto = by the
    name, ``.llf.csv``; ``fps``: its timecode rate); ``params``: the CSV also gets the crop ROI and the 62 3DMM
    parameters (JSONL and NPZ always have them)."""

    def __init__(self, path: str, params: bool = False, fmt: str = "auto", fps: float | None = None) -> None:
        csv = tracks_format(path, fmt) == "csv"
        self.sink = open_tracks_sink(path, fmt, fps,
                                     **({"include_params": True, "include_roi": True} if params and csv else {}))

    def write_job(self, job: Job) -> None:
        self.sink.write(job.frame.index, job.frame.time, job.faces)

    def close(self) -> None:
        self.sink.close()

    def abort(self) -> None:
        """Discard what was written (a failed run); the final path is left as it was."""
        self.sink.abort()


class MeshesOut:
    """Dense meshes per track into a folder: ``fmt`` is ``npz``, ``npz+obj`` / ``npz+ply`` (also a mesh file per
    frame, OBJ with UVs), ``glb`` (one animated glTF per track, :mod:`stream.gltf`) or ``npz+glb`` (both)."""

    def __init__(self, directory: str, tri: np.ndarray, fmt: str, morph=None, info: VideoInfo | None = None) -> None:
        from stream.gltf import GLBSink, mesh_uv

        parts = fmt.split("+")
        self.sinks: list = []
        if "npz" in parts:
            per_frame = next((p for p in parts if p in ("obj", "ply")), None)
            uv = mesh_uv(morph) if morph is not None and per_frame == "obj" else None
            self.sinks.append(MeshSink(Path(directory), tri, per_frame=per_frame, uv=uv))
        if "glb" in parts:
            if morph is None:
                raise ValueError("glb meshes need the morphable model")
            size = (info.width, info.height) if info is not None and info.width else None
            self.sinks.append(GLBSink(Path(directory), morph, tri, frame_size=size))

    @property
    def sink(self):
        """The first sink (the NPZ one when written)."""
        return self.sinks[0]

    def write_job(self, job: Job) -> None:
        for sink in self.sinks:
            sink.write_job(job)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def abort(self) -> None:
        """Discard what was written (a failed run); the final path is left as it was."""
        for sink in self.sinks:
            sink.abort()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_not_inputs(outputs: dict[str, str | os.PathLike[str] | None],
                     inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse any output that is one of the inputs: the same path, a symlink to it, a hard link of it (same device
    and inode). ``outputs``: {what (e.g. ``--out``): path or None}.

    Raises SinkError (one line) naming both paths; checked before anything is opened, so the input stays untouched.
    """
    ins: list[tuple[str, str, os.stat_result | None]] = []
    for p in inputs:
        if not p:
            continue
        try:
            st: os.stat_result | None = os.stat(p)
        except OSError:
            st = None
        ins.append((os.fspath(p), os.path.realpath(p), st))
    for what, out in outputs.items():
        if not out:
            continue
        real = os.path.realpath(out)
        try:
            out_st: os.stat_result | None = os.stat(out)
        except OSError:
            out_st = None
        for name, in_real, in_st in ins:
            same = real == in_real or (out_st is not None and in_st is not None and _same_file(out_st, in_st))
            if same:
                raise SinkError(f"refusing to write {what} {out}: it is the input {name} (it would be replaced); "
                                "choose another output path")


def check_writable(outputs: dict[str, str | os.PathLike[str] | None]) -> None:
    """SinkError (one line) when an output's folder cannot take a new file (read-only, permission, full inode
    table): tried with a temporary file that is removed at once, so the user hears before the model loads."""
    import tempfile

    for what, out in outputs.items():
        if not out:
            continue
        folder = Path(out) if what == "--meshes" else Path(out).parent
        probe = folder
        while not probe.exists() and probe != probe.parent:  # created later: the first existing parent decides
            probe = probe.parent
        try:
            with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise write_error(out, exc) from exc


def open_outputs(out: str | None, tracks: str | None, meshes: str | None, info: VideoInfo, tri: np.ndarray,
                 mesh_format: str, morph=None, inputs: Sequence[str | os.PathLike[str] | None] = (),
                 tracks_params: bool = False, audio: bool = True, tracks_format: str = "auto") -> list:
    """The pipeline sinks for the given paths (None: not written), parent folders created; ``morph`` (the
    MorphableModel) is needed for glb meshes and OBJ UVs; ``tracks_params``: a CSV of tracks also has the ROI and
    the 3DMM parameters (``TracksOut``); ``tracks_format``: auto (by name), csv, jsonl, npz or livelinkface;
    ``audio``: the video keeps the source's sound. An output that is one of
    ``inputs`` (the source's files, the swap image...) is refused first (:func:`check_not_inputs`). On an error the
    ones already opened are aborted (their temporary files removed) before it propagates; errors are SinkError (one
    line naming the path and the cause)."""
    check_not_inputs({"--out": out, "--tracks": tracks, "--meshes": meshes}, inputs)
    sinks: list = []
    try:
        for path in (out, tracks):
            if path:
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise write_error(path, exc) from exc
        if out:
            sinks.append(VideoOut(out, info, audio))
        if tracks:
            sinks.append(TracksOut(tracks, params=tracks_params, fmt=tracks_format, fps=info.fps))
        if meshes:
            sinks.append(MeshesOut(meshes, tri, mesh_format, morph, info))
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks
