"""Overlays on video frames: 68 landmarks with pose axes, shaded mesh, wireframe, depth map, PNCC colouring.

Entry point :func:`render_overlay`; the landmarks mode draws with ``model.draw`` (shared with the model CLIs).
A face is any mapping or object with (some of) the fields ``landmarks`` (68, 2|3) frame px, ``vertices`` (V, 3) frame px (x right, y down, z toward the camera),
``rotation`` (3, 3) model->camera rotation with model y up (``model.morphable.rotation_from_params``) or
``pose`` (>= 3,) yaw, pitch, roll in degrees (``model.morphable.pose_from_params``). Frames are (H, W, 3) uint8 BGR.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.draw import CONTOURS, draw_landmarks, draw_pose_axes  # noqa: F401  (re-exported)
from stream.config import RENDER_MODES
from stream.render import composite
from model.raster.mesh import face_grid_lines, front_cull, mesh_edges, vertex_normals
from model.raster.zbuffer import RasterBuffers, rasterize

#: The modes drawn here: every render mode but swap (``stream.render.swap``) and none (the frame as is).
MODES = tuple(m for m in RENDER_MODES if m not in ("swap", "none"))

DEFAULT_LIGHT = np.array([-0.3, -0.4, 0.866], np.float32)  # from upper left, toward the scene; frame axes (y down)
DEFAULT_ALPHA = {"mesh": 0.65, "depth": 1.0, "pncc": 1.0, "wireframe": 0.9}


def field(face: Any, name: str) -> Any:
    """``face[name]`` or ``face.name``; None when absent."""
    if isinstance(face, Mapping):
        return face.get(name)
    return getattr(face, name, None)


def faces_from_arrays(landmarks: np.ndarray | None = None, vertices: np.ndarray | None = None,
                      pose: np.ndarray | None = None, rotation: np.ndarray | None = None) -> list[dict]:
    """Batched arrays (N, 68, 3), (N, V, 3), (N, 6), (N, 3, 3) (any may be None) -> a list of per-face dicts."""
    arrays = {"landmarks": landmarks, "vertices": vertices, "pose": pose, "rotation": rotation}
    n = max((len(a) for a in arrays.values() if a is not None), default=0)
    return [{k: (None if a is None else a[i]) for k, a in arrays.items()} for i in range(n)]


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Yaw, pitch, roll (degrees; 3DDFA's ``matrix2angle`` convention, ``R[2,0] = sin(yaw)``) -> rotation (3, 3)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _face_rotation(face: Any) -> np.ndarray | None:
    rot = field(face, "rotation")
    if rot is not None:
        return np.asarray(rot, np.float64)
    pose = field(face, "pose")
    if pose is not None:
        return rotation_from_angles(*np.asarray(pose, np.float64)[:3])
    return None


def _face_vertices(faces: Sequence[Any]) -> list[np.ndarray]:
    out = []
    for face in faces:
        v = field(face, "vertices")
        if v is None:
            raise ValueError("this overlay mode needs 'vertices' (V, 3) for every face (align with dense=True)")
        out.append(np.ascontiguousarray(v, np.float32))
    return out


def _raster_faces(verts: list[np.ndarray], tri: np.ndarray, attrs: list[np.ndarray | None], h: int, w: int,
                  buffers: RasterBuffers | None, cull: bool) -> RasterBuffers:
    c = 0 if not attrs or attrs[0] is None else attrs[0].shape[1]
    buffers = RasterBuffers.create(h, w, c) if buffers is None else buffers.ensure(h, w, c)
    buffers.clear()
    for i, (v, a) in enumerate(zip(verts, attrs)):
        rasterize(v, tri, a, buffers=buffers, clear=False, cull=front_cull(v, tri) if cull else 0,
                  tri_offset=i * len(tri))
    return buffers


def _normalised(ref: np.ndarray) -> np.ndarray:
    ref = np.asarray(ref, np.float32)
    lo, hi = ref.min(0), ref.max(0)
    return (ref - lo) / np.maximum(hi - lo, 1e-6)


def _pncc_colours(reference: np.ndarray) -> np.ndarray:
    """The PNCC colours (V, 3) float32 0..1, BGR (B = z, G = y, R = x), of a reference shape (V, 3): its coordinates
    normalised to its box. The last reference's are kept (the same model's mean shape every frame: its min and max
    over all vertices cost a quarter of the mode's frame)."""
    hit = _PNCC_CACHE.get("last")
    if hit is not None and hit[0] is reference:
        return hit[1]
    colours = np.ascontiguousarray(_normalised(reference)[:, ::-1], np.float32)
    _PNCC_CACHE["last"] = (reference, colours)
    return colours


_PNCC_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def render_overlay(frame: np.ndarray, faces: Sequence[Any], mode: str, tri: np.ndarray | None = None, *,
                   out: np.ndarray | None = None, buffers: RasterBuffers | None = None,
                   reference: np.ndarray | None = None, grid_shape: tuple[int, int] | None = None,
                   alpha: float | None = None, colour: tuple[int, int, int] = (200, 200, 200),
                   light: np.ndarray = DEFAULT_LIGHT, ambient: float = 0.25, axes: bool = True,
                   wire_step: int = 2) -> np.ndarray:
    """Draw one overlay for all faces of a frame; returns the image (``out``, a copy of ``frame`` by default).

    mode: ``landmarks`` (68 points, connectivity, pose axes when the face has a pose), ``mesh`` (Lambert-shaded
    mesh blended with ``alpha``), ``wireframe`` (grid lines every ``wire_step`` that are edges of ``tri`` plus its
    outline when ``grid_shape`` is given, else all triangle edges; hidden lines removed), ``depth`` (near = bright), ``pncc`` (``reference`` (V, 3), e.g. the
    model's mean shape, normalised per axis to 0..1 as colour: B = z, G = y, R = x).
    tri (F, 3) int32 is needed for all modes but ``landmarks``; ``buffers`` (the frame's size) avoid allocation;
    ``out`` may be ``frame`` for in-place drawing. Pixels away from the faces are left unchanged.
    """
    if mode not in MODES:
        raise ValueError(f"unknown overlay mode '{mode}' (expected one of {', '.join(MODES)})")
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if out is None:
        out = frame.copy()
    elif out is not frame:
        np.copyto(out, frame)
    if len(faces) == 0:
        return out
    h, w = frame.shape[:2]
    a = DEFAULT_ALPHA.get(mode, 1.0) if alpha is None else float(alpha)

    if mode == "landmarks":
        for face in faces:
            lm = field(face, "landmarks")
            if lm is None:
                raise ValueError("mode 'landmarks' needs 'landmarks' (68, 3) for every face")
            lm = np.asarray(lm, np.float64)
            rot = _face_rotation(face) if axes else None
            if rot is not None and np.isfinite(lm).all():
                size = float(np.ptp(lm[:, 0]) + np.ptp(lm[:, 1])) / 2
                draw_pose_axes(out, rot, lm[30, :2] if len(lm) == 68 else lm[:, :2].mean(0), 0.5 * size)
            if np.isfinite(lm).all():
                draw_landmarks(out, lm)
        return out

    if tri is None:
        raise ValueError(f"mode '{mode}' needs the mesh triangles 'tri' (F, 3)")
    tri = np.ascontiguousarray(tri, np.int32)
    verts = _face_vertices(faces)

    if mode == "mesh":
        normals = [vertex_normals(v, tri) for v in verts]
        buf = _raster_faces(verts, tri, normals, h, w, buffers, cull=True)
        if not buf.is_empty():
            y0, y1, x0, x1 = (int(v) for v in buf.bbox)
            light = np.asarray(light, np.float32)
            light = light / np.linalg.norm(light)
            composite.shade_lambert(out, frame, buf.tri_id, buf.attr, y0, y1, x0, x1,
                                    np.asarray(colour, np.float32), light, np.float32(ambient), np.float32(a))
    elif mode == "pncc":
        if reference is None:
            raise ValueError("mode 'pncc' needs 'reference' (V, 3): the model's mean shape")
        ref = _pncc_colours(reference)
        buf = _raster_faces(verts, tri, [ref] * len(verts), h, w, buffers, cull=False)
        if not buf.is_empty():
            y0, y1, x0, x1 = (int(v) for v in buf.bbox)
            composite.blend_colour(out, frame, buf.tri_id, buf.attr, y0, y1, x0, x1, np.float32(255.0),
                                   np.float32(a))
    elif mode == "depth":
        buf = _raster_faces(verts, tri, [None] * len(verts), h, w, buffers, cull=False)
        if not buf.is_empty():
            y0, y1, x0, x1 = (int(v) for v in buf.bbox)
            z = np.concatenate([v[:, 2] for v in verts])
            z = z[np.isfinite(z)]
            composite.blend_depth(out, frame, buf.tri_id, buf.depth, y0, y1, x0, x1, np.float32(z.min()),
                                  np.float32(z.max()), np.float32(a))
    else:  # wireframe
        buf = _raster_faces(verts, tri, [None] * len(verts), h, w, buffers, cull=False)
        edges = face_grid_lines(grid_shape, tri, wire_step) if grid_shape is not None else mesh_edges(tri)
        col = np.asarray(colour, np.float32)
        for v in verts:
            size = float(np.ptp(v[:, 0]) + np.ptp(v[:, 1])) / 2
            composite.draw_edges(out, v, edges, buf.depth, col, np.float32(0.02 * size), np.float32(a))
    return out


def draw_blendshape_bars(image: np.ndarray, faces: Sequence[Any], names: Sequence[str] | None = None) -> np.ndarray:
    """A small bar chart of each face's ARKit blendshapes (``blendshape_values`` (52,) in [0, 1]) beside its box, in place
    on ``image`` (H, W, 3) uint8 BGR, which is returned. ``names``: the ones to show (default the estimated ones,
    ``model.blendshapes.ESTIMATED``, in Apple's order). Faces without blendshapes are skipped."""
    import cv2

    from model.blendshapes import ESTIMATED, INDEX

    names = list(ESTIMATED if names is None else names)
    h, w = image.shape[:2]
    row = int(np.clip(h / 60, 7, 14))
    scale = row / 28.0
    label_w = int(cv2.getTextSize("mouthStretchRight", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]) + 4
    bar_w = 4 * row
    panel_w, panel_h = label_w + bar_w + 6, row * len(names) + 4
    for face in faces:
        values = field(face, "blendshape_values")
        box = field(face, "box")
        if values is None or box is None:
            continue
        values = np.asarray(values, np.float64)
        x1, y1, x2, _ = (float(v) for v in np.ravel(box)[:4])
        x = int(x2 + 6) if x2 + 6 + panel_w <= w else int(max(0, x1 - 6 - panel_w))
        y = int(np.clip(y1, 0, max(0, h - panel_h)))
        x = min(x, max(0, w - panel_w))
        region = image[y:y + panel_h, x:x + panel_w]
        region[:] = (region * 0.35).astype(np.uint8)
        for i, name in enumerate(names):
            v = float(np.clip(values[INDEX[name]], 0, 1))
            top = y + 2 + i * row
            cv2.putText(image, name, (x + 2, top + row - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 1,
                        cv2.LINE_AA)
            bx = x + label_w
            cv2.rectangle(image, (bx, top + 1), (bx + bar_w, top + row - 2), (90, 90, 90), 1)
            if v > 0:
                colour = (80, 200, 255) if v < 0.5 else (60, 120, 255)
                cv2.rectangle(image, (bx, top + 1), (bx + int(round(v * bar_w)), top + row - 2), colour, -1)
    return image
