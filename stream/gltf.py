"""glTF 2.0 (binary .glb) animation of a tracked face, one file per track, through ``pygltflib``.

What a file holds (see docs/INTERFACES.md, "glTF animation"):

- one mesh: the 3DMM mean shape (model units) with UVs (``mesh_uv``), smooth normals, and a texture baked from the
  most frontal frame of the track;
- 58 morph targets, the 40 shape and 10 expression basis vectors and the 8 of the extended expression
  (``model.expression_ext``: closed eyes, mouth corners, jaw, inner lips; when the model has them), each scaled by
  |coefficient| of the track so that every weight stays in [-1, 1] (Blender's shape-key range); names in
  ``mesh.extras.targetNames`` (``shape00``.., ``exp00``.., ``ext_eye_close_r``..), ``asset.extras.ext_version``;
- then 52 targets named by their ARKit names (``eyeBlinkLeft`` .. ``tongueOut``, ``model.blendshapes``) whose
  weights are the track's blendshape coefficients in [0, 1], frame by frame. They carry the weights to other rigs by
  name (a Blender action of shape keys, three.js's ``morphTargetDictionary``) and do not move this mesh: their
  displacement is zero (one shared sparse accessor), its shape comes from the 3DMM targets above;
- node animation in seconds (the source's frame times, unchanged): node ``track{ID}`` carries the head pose
  (translation, rotation); its child ``track{ID}_scale`` the scale (rotation Q, scale L: the symmetric part of the
  projection, nearly uniform); the grandchild ``track{ID}_face`` rotation Q^T and the mesh. The product of the three
  is exactly the per-frame affine map from model to frame coordinates that the pipeline used;
- an orthographic camera that sees the video frame as the source camera did.

World coordinates: ``x = (x_px - W/2) / H``, ``y = -(y_px - H/2) / H``, ``z = z_px / H`` (frame pixels of the NPZ
mapped to a right-handed, y-up space where the frame is 1 unit high and centred on the origin); the asset's
``extras`` record W, H and this mapping. ``load_glb_frames`` inverts it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.expression_ext import N_EXT
from stream.atomic import atomic_write_bytes

ANIMATIONS = ("morph", "frames")  # morph: 58 3DMM targets + weights; frames: one target per frame (the comparison)
EXT_TARGET_PREFIX = "ext_"  # morph target names of the extended expression: ext_eye_close_r, ..., ext_lips_part
N_3DMM_TARGETS = 50 + N_EXT  # shape (40), expression (10), extended expression (8): the targets that move the mesh
_FLOAT, _U16, _U32 = 5126, 5123, 5125
_ARRAY, _ELEMENTS = 34962, 34963


def mesh_uv(morph: Any) -> np.ndarray:
    """(V, 2) float32 texture coordinates in [0, 1], glTF convention (origin top-left, v down).

    A ``uv`` attribute of the model wins; else a row-major grid (``grid_shape``, vertex ``k = row*cols + col``) gives
    ``(col/(cols-1), row/(rows-1))``; else the mean shape is projected on its front plane.
    """
    uv = getattr(morph, "uv", None)
    if uv is not None:
        return np.ascontiguousarray(uv, np.float32)
    n = int(morph.n_dense)
    grid = getattr(morph, "grid_shape", None)
    if grid is not None and grid[0] * grid[1] == n:
        rows, cols = grid
        r, c = np.divmod(np.arange(n), cols)
        return np.stack([c / max(cols - 1, 1), r / max(rows - 1, 1)], 1).astype(np.float32)
    u = np.asarray(morph.dense_basis.u, np.float64)[:, :2]
    lo, hi = u.min(0), u.max(0)
    uv = (u - lo) / np.maximum(hi - lo, 1e-9)
    uv[:, 1] = 1 - uv[:, 1]  # model y is up, texture v is down
    return uv.astype(np.float32)


def bake_texture(image: np.ndarray, vertices: np.ndarray, tri: np.ndarray, uv: np.ndarray,
                 size: int = 512) -> np.ndarray:
    """The face of ``image`` (H, W, 3) uint8 BGR in UV space: (size, size, 3) uint8 BGR.

    vertices (V, 3) float32 frame px of the face in that image; tri (F, 3); uv (V, 2) in [0, 1]. Texels whose surface
    point is hidden (z-buffer) or outside the mesh are inpainted from their neighbours.
    """
    import cv2

    from model.raster.zbuffer import rasterize

    h, w = image.shape[:2]
    verts = np.ascontiguousarray(vertices, np.float32)
    tris = np.ascontiguousarray(tri, np.int32)
    uv_pts = np.zeros((len(uv), 3), np.float32)
    uv_pts[:, :2] = np.asarray(uv, np.float32) * size - 0.5  # texel centres at integers
    uv_buf = rasterize(uv_pts, tris, verts, size, size)
    inside = uv_buf.tri_id >= 0
    pts = uv_buf.attr.reshape(size, size, 3)
    frame_depth = cv2.dilate(rasterize(verts, tris, None, h, w).depth, np.ones((3, 3), np.uint8))
    px = np.clip(np.round(pts[..., 0]), 0, w - 1).astype(np.intp)
    py = np.clip(np.round(pts[..., 1]), 0, h - 1).astype(np.intp)
    extent = float(np.ptp(verts[:, 0]) + np.ptp(verts[:, 1])) / 2
    visible = inside & (pts[..., 2] >= frame_depth[py, px] - 0.02 * extent)
    visible &= (pts[..., 0] >= 0) & (pts[..., 0] <= w - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= h - 1)
    tex = cv2.remap(image, np.ascontiguousarray(pts[..., 0]), np.ascontiguousarray(pts[..., 1]), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    if not visible.any():
        return np.full((size, size, 3), 128, np.uint8)
    if not visible.all():
        tex = cv2.inpaint(tex, (~visible).astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    return tex


def _quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) -> unit quaternions (T, 4) x, y, z, w, signs kept continuous over T."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(m).as_quat()
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def decompose_affine(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3x3 maps (T, 3, 3) -> (R, Q, L): rotations R, Q (T, 3, 3) and scales L (T, 3) with ``a = R Q diag(L) Q^T``.

    Polar decomposition ``a = R S`` (R the nearest rotation: the head pose), then ``S = Q diag(L) Q^T``. A map with a
    negative determinant gets negative scales, so R and Q stay proper rotations.
    """
    u, _, vt = np.linalg.svd(a)
    r = u @ vt
    flip = np.linalg.det(r) < 0
    r[flip] *= -1
    s = np.swapaxes(r, 1, 2) @ a
    s = (s + np.swapaxes(s, 1, 2)) / 2
    lam, q = np.linalg.eigh(s)
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return r, q, lam


def _ext_basis(morph: Any) -> np.ndarray | None:
    """The dense extension basis (3V, N_EXT) of ``morph`` or None (a model without the extended expression)."""
    basis = morph.dense_basis
    flat_ext = getattr(basis, "flat_ext", None)
    return None if flat_ext is None else flat_ext()


def model_shapes(morph: Any, params: np.ndarray, ext: np.ndarray | None = None) -> np.ndarray:
    """(T, 62) real params [+ the extended expression ext (T, N_EXT), None or nan rows = 0] -> (T, V, 3) float64
    model-space shapes ``u + coeffs @ w.T + ext @ w_ext.T`` (pose not applied)."""
    u, w = morph.dense_basis.flat()
    coeffs = np.asarray(params, np.float64).reshape(-1, 62)[:, 12:12 + w.shape[1]]
    s = u[None].astype(np.float64) + coeffs @ w.T.astype(np.float64)
    we = _ext_basis(morph)
    if ext is not None and we is not None:
        x = np.nan_to_num(np.asarray(ext, np.float64).reshape(len(coeffs), -1))
        s = s + x @ we.T.astype(np.float64)
    return s.reshape(len(coeffs), -1, 3)


def fit_affine(model: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """The affine map (3, 4) ``[A | c]`` with ``vertices ~ model @ A.T + c`` (least squares, float64) and its largest
    residual (px). model, vertices (V, 3). The pipeline's model -> frame mapping is affine per frame, so the residual
    is float32 rounding only."""
    centre = model.mean(0)
    xh = np.concatenate([model - centre, np.ones((len(model), 1))], axis=1)
    v = np.asarray(vertices, np.float64)
    b = np.linalg.lstsq(xh, v, rcond=None)[0]
    a = b[:3].T
    c = b[3] - a @ centre
    return np.concatenate([a, c[:, None]], 1), float(np.abs(model @ a.T + c - v).max())


@dataclass
class TrackAnimation:
    """What one track's file animates: times (T,) s, frames (T,) indices, params (T, 62) real, affines (T, 3, 4)
    (model -> frame px, from :func:`fit_affine`), fit_error: the largest residual of those fits (px); ext (T, N_EXT)
    the extended expression or None (no expression stage: its targets get weight 0); blendshapes (T, 52) the ARKit
    coefficients or None (their targets get weight 0)."""

    track_id: int
    times: np.ndarray
    frames: np.ndarray
    params: np.ndarray
    affines: np.ndarray
    fit_error: float = 0.0
    ext: np.ndarray | None = None
    blendshapes: np.ndarray | None = None


class _Packer:
    """Accumulates the binary chunk (4-byte aligned views) and the accessors that describe it."""

    def __init__(self) -> None:
        import pygltflib as g

        self.g = g
        self.blob = bytearray()
        self.views: list = []
        self.accessors: list = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob += b"\0" * (-len(self.blob) % 4)
        self.views.append(self.g.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data), target=target))
        self.blob += data
        return len(self.views) - 1

    def accessor(self, arr: np.ndarray, kind: str, target: int | None = None, bounds: bool = False) -> int:
        arr = np.ascontiguousarray(arr)
        ctype = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint16): _U16, np.dtype(np.uint32): _U32}[arr.dtype]
        count = arr.shape[0] if kind != "SCALAR" or arr.ndim else 1
        acc = self.g.Accessor(bufferView=self.view(arr.tobytes(), target), componentType=ctype, count=int(count),
                              type=kind)
        if bounds:
            flat = arr.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(0)]
            acc.max = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def zeros_vec3(self, count: int) -> int:
        """A VEC3 float accessor of ``count`` zeros in a few bytes: no buffer view (zeros by the spec) and one sparse
        entry (vertex 0 = 0, 0, 0)."""
        g = self.g
        sparse = g.Sparse(count=1,
                          indices=g.AccessorSparseIndices(bufferView=self.view(np.zeros(1, "<u4").tobytes()),
                                                          componentType=_U32),
                          values=g.AccessorSparseValues(bufferView=self.view(np.zeros(3, "<f4").tobytes())))
        self.accessors.append(g.Accessor(byteOffset=None, componentType=_FLOAT, count=int(count), type="VEC3",
                                         sparse=sparse, min=[0.0, 0.0, 0.0], max=[0.0, 0.0, 0.0]))
        return len(self.accessors) - 1


def _vertex_normals(v: np.ndarray, tri: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v, dtype=np.float64)
    f = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    for k in range(3):
        np.add.at(n, tri[:, k], f)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norm > 0, n / np.maximum(norm, 1e-30), [0.0, 0.0, 1.0])
    return n.astype(np.float32)


def world_from_pixels(frame_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(M (3, 3), c (3,)) with ``world = M @ px + c`` for a (W, H) frame (see the module docstring)."""
    w, h = frame_size
    m = np.diag([1.0, -1.0, 1.0]) / h
    return m, -m @ np.array([w / 2, h / 2, 0.0])


def build_glb(anim: TrackAnimation, morph: Any, tri: np.ndarray, frame_size: tuple[int, int],
              texture_bgr: np.ndarray | None = None, animation: str = "morph") -> bytes:
    """One track's animation as .glb bytes (see the module docstring).

    ``anim.affines`` are the per-frame maps from model to frame pixels fitted to the vertices the pipeline produced
    (:func:`fit_affine`), so the file reproduces those vertices whatever the crop convention; ``animation="frames"``
    stores each frame's model shape as its own target instead (for comparison).
    """
    import cv2
    import pygltflib as g

    if animation not in ANIMATIONS:
        raise ValueError(f"animation must be one of {ANIMATIONS}, got {animation!r}")
    times = np.asarray(anim.times, np.float64)
    n_frames = len(times)
    if n_frames == 0:
        raise ValueError("a track without frames has no animation")
    u, w = morph.dense_basis.flat()
    n_v = u.shape[0] // 3
    coeffs = np.asarray(anim.params, np.float64)[:, 12:12 + w.shape[1]]
    names = [f"shape{i:02d}" for i in range(40)] + [f"exp{i:02d}" for i in range(w.shape[1] - 40)]
    w_ext = _ext_basis(morph)
    if w_ext is not None:  # the extended expression's targets follow the 50 (zero weights without an ext)
        from model.expression_ext import EXT_NAMES

        ext = np.zeros((n_frames, w_ext.shape[1])) if anim.ext is None else \
            np.nan_to_num(np.asarray(anim.ext, np.float64).reshape(n_frames, -1))
        coeffs = np.concatenate([coeffs, ext], axis=1)
        w = np.concatenate([w, w_ext], axis=1)
        names += [EXT_TARGET_PREFIX + k for k in EXT_NAMES]
    m_w, c_w = world_from_pixels(frame_size)
    aff = np.asarray(anim.affines, np.float64)
    a_w = m_w @ aff[:, :, :3]
    c_w = aff[:, :, 3] @ m_w.T + c_w
    rot, q, lam = decompose_affine(a_w)

    pk = _Packer()
    uv = mesh_uv(morph)
    base = u.reshape(n_v, 3).astype(np.float32)
    tri = np.ascontiguousarray(tri, np.uint32).reshape(-1, 3)
    attrs = g.Attributes(POSITION=pk.accessor(base, "VEC3", _ARRAY, bounds=True),
                         NORMAL=pk.accessor(_vertex_normals(base, tri), "VEC3", _ARRAY),
                         TEXCOORD_0=pk.accessor(uv, "VEC2", _ARRAY))
    index_type = np.uint16 if n_v < 65535 else np.uint32
    indices = pk.accessor(tri.astype(index_type).reshape(-1), "SCALAR", _ELEMENTS, bounds=True)
    if animation == "morph":
        scale = np.abs(coeffs).max(0)
        scale[scale == 0] = 1.0
        deltas = (w.T.astype(np.float64) * scale[:, None]).reshape(-1, n_v, 3)
        weights = coeffs / scale
    else:
        deltas = model_shapes(morph, anim.params, anim.ext) - base[None]
        weights = np.eye(n_frames)
        names = [f"frame{int(f):06d}" for f in anim.frames]
    targets = [g.Attributes(POSITION=pk.accessor(d.astype(np.float32), "VEC3", _ARRAY, bounds=True)) for d in deltas]
    if animation == "morph":  # the ARKit-named weight carriers (zero displacement, one shared accessor)
        from model.blendshapes import ARKIT_NAMES, N_BLEND

        zero = pk.zeros_vec3(n_v)
        targets += [g.Attributes(POSITION=zero) for _ in ARKIT_NAMES]
        names += list(ARKIT_NAMES)
        blend = np.zeros((n_frames, N_BLEND)) if anim.blendshapes is None else \
            np.clip(np.nan_to_num(np.asarray(anim.blendshapes, np.float64).reshape(n_frames, N_BLEND)), 0, 1)
        weights = np.concatenate([weights, blend], axis=1)
    mesh = g.Mesh(name=f"face{anim.track_id}", primitives=[g.Primitive(
        attributes=attrs, indices=indices, material=0, targets=targets)],
        weights=[float(x) for x in weights[0]], extras={"targetNames": names})

    tex_img = texture_bgr if texture_bgr is not None else np.full((8, 8, 3), 180, np.uint8)
    ok, jpg = cv2.imencode(".jpg", tex_img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("could not encode the texture")
    image = g.Image(bufferView=pk.view(jpg.tobytes()), mimeType="image/jpeg", name="face")
    material = g.Material(name="face", doubleSided=True, pbrMetallicRoughness=g.PbrMetallicRoughness(
        baseColorTexture=g.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=0.9))

    tid = anim.track_id
    q_t = np.swapaxes(q, 1, 2)
    nodes = [g.Node(name=f"track{tid}", children=[1], translation=c_w[0].tolist(), rotation=_quat(rot)[0].tolist()),
             g.Node(name=f"track{tid}_scale", children=[2], rotation=_quat(q)[0].tolist(), scale=lam[0].tolist()),
             g.Node(name=f"track{tid}_face", mesh=0, rotation=_quat(q_t)[0].tolist()),
             g.Node(name="camera", camera=0, translation=[0.0, 0.0, 10.0])]
    w_px, h_px = frame_size
    camera = g.Camera(type="orthographic", name="source camera",
                      orthographic=g.Orthographic(xmag=w_px / h_px / 2, ymag=0.5, znear=0.01, zfar=100.0))
    t_acc = pk.accessor(times.astype(np.float32), "SCALAR", bounds=True)
    samplers, channels = [], []
    for node, path, values, kind in ((0, "translation", c_w, "VEC3"), (0, "rotation", _quat(rot), "VEC4"),
                                     (1, "rotation", _quat(q), "VEC4"), (1, "scale", lam, "VEC3"),
                                     (2, "rotation", _quat(q_t), "VEC4"), (2, "weights", weights, "SCALAR")):
        out = pk.accessor(np.asarray(values, np.float32).reshape(-1) if kind == "SCALAR"
                          else np.asarray(values, np.float32), kind)
        samplers.append(g.AnimationSampler(input=t_acc, output=out, interpolation="LINEAR"))
        channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                           target=g.AnimationChannelTarget(node=node, path=path)))
    gltf = g.GLTF2(
        asset=g.Asset(generator="damdnet stream (pygltflib)", version="2.0", extras={
            "frame_width": int(w_px), "frame_height": int(h_px), "track_id": int(tid), "frames": int(n_frames),
            "frame_indices_first_last": [int(anim.frames[0]), int(anim.frames[-1])],
            "world_from_pixels": "x=(x_px-W/2)/H, y=-(y_px-H/2)/H, z=z_px/H",
            "animation": animation, "fit_error_px": float(anim.fit_error), **_ext_extras(w_ext, anim),
            **(_blend_extras(anim, len(names)) if animation == "morph" else {})}),
        scene=0, scenes=[g.Scene(nodes=[0, 3])], nodes=nodes, meshes=[mesh], materials=[material],
        textures=[g.Texture(source=0, sampler=0)], images=[image],
        samplers=[g.Sampler(magFilter=9729, minFilter=9987, wrapS=33071, wrapT=33071)], cameras=[camera],
        animations=[g.Animation(name=f"track{tid}", samplers=samplers, channels=channels)],
        accessors=pk.accessors, bufferViews=pk.views, buffers=[g.Buffer(byteLength=len(pk.blob))])
    gltf.set_binary_blob(bytes(pk.blob))
    return b"".join(gltf.save_to_bytes())


def _ext_extras(w_ext: np.ndarray | None, anim: TrackAnimation) -> dict:
    """``asset.extras`` of the extended expression: its version, and whether the track measured it."""
    if w_ext is None:
        return {}
    from model.expression_ext import EXT_VERSION

    return {"ext_version": EXT_VERSION, "ext_measured": anim.ext is not None}


def _blend_extras(anim: TrackAnimation, n_targets: int) -> dict:
    """``asset.extras`` of the ARKit targets: version, where they start, which are estimated, whether measured."""
    from model.blendshapes import BLENDSHAPES_VERSION, ESTIMATED, N_BLEND

    return {"blendshapes_version": BLENDSHAPES_VERSION, "blendshape_targets": [n_targets - N_BLEND, N_BLEND],
            "blendshapes_estimated": list(ESTIMATED), "blendshapes_measured": anim.blendshapes is not None}


# --------------------------------------------------------------------------------------------------------------
# Reading back and checking (tests, bench, users who want the frames without a 3D package)


_DTYPES = {_FLOAT: "<f4", _U16: "<u2", _U32: "<u4", 5121: "u1", 5120: "i1", 5122: "<i2"}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _read_accessor(gltf: Any, blob: bytes, index: int) -> np.ndarray:
    """An accessor's data (count, width) (or (count,)), sparse entries applied (no buffer view: zeros)."""
    acc = gltf.accessors[index]
    dtype = _DTYPES[acc.componentType]
    width = _WIDTHS[acc.type]
    if acc.bufferView is None:
        arr = np.zeros(acc.count * width, dtype)
    else:
        view = gltf.bufferViews[acc.bufferView]
        start = (view.byteOffset or 0) + (acc.byteOffset or 0)
        arr = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    sp = acc.sparse
    if sp is not None and sp.count:
        arr = arr.copy().reshape(acc.count, width)
        iv, vv = gltf.bufferViews[sp.indices.bufferView], gltf.bufferViews[sp.values.bufferView]
        idx = np.frombuffer(blob, _DTYPES[sp.indices.componentType], sp.count,
                            (iv.byteOffset or 0) + (sp.indices.byteOffset or 0))
        arr[idx] = np.frombuffer(blob, dtype, sp.count * width,
                                 (vv.byteOffset or 0) + (sp.values.byteOffset or 0)).reshape(sp.count, width)
        arr = arr.reshape(-1)
    return arr.reshape(acc.count, width) if width > 1 else arr


def _target_position(target: Any) -> int:
    """A morph target's POSITION accessor (pygltflib loads targets as dicts, builds them as Attributes)."""
    return target["POSITION"] if isinstance(target, dict) else target.POSITION


def check_glb(path: str | os.PathLike[str]) -> list[str]:
    """Structural checks of a .glb against the glTF 2.0 rules we rely on; returns the problems found ([] = fine).

    Buffer views inside the buffer and 4-byte aligned; accessors inside their views; POSITION min/max equal to the
    data; indices in range; morph targets with the base's count; animation inputs strictly increasing with outputs of
    the matching length; every referenced index exists.
    """
    import pygltflib as g

    gltf = g.GLTF2.load_binary(str(path))
    blob = gltf.binary_blob() or b""
    errors: list[str] = []
    if gltf.asset.version != "2.0":
        errors.append(f"asset.version {gltf.asset.version}")
    if len(gltf.buffers) != 1 or gltf.buffers[0].byteLength > len(blob):
        errors.append("buffer 0 longer than the BIN chunk")
    for i, v in enumerate(gltf.bufferViews):
        if v.byteOffset % 4 or v.byteOffset + v.byteLength > len(blob):
            errors.append(f"bufferView {i} outside the buffer or unaligned")
    sizes = {_FLOAT: 4, _U32: 4, _U16: 2, 5121: 1}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    for i, a in enumerate(gltf.accessors):
        if a.bufferView is None and a.sparse is not None:  # zeros plus sparse entries: check those
            sp = a.sparse
            views = (sp.indices.bufferView, sp.values.bufferView)
            if not sp.count or any(v is None or v >= len(gltf.bufferViews) for v in views):
                errors.append(f"accessor {i}: bad sparse entries")
                continue
            if sp.count * sizes[a.componentType] * widths[a.type] > gltf.bufferViews[views[1]].byteLength or \
                    _read_accessor(gltf, blob, i).shape[0] != a.count:
                errors.append(f"accessor {i}: sparse values run past their bufferView")
            elif a.min:
                data = _read_accessor(gltf, blob, i).reshape(a.count, -1)
                if not (np.allclose(data.min(0), a.min) and np.allclose(data.max(0), a.max)):
                    errors.append(f"accessor {i}: min/max differ from the data")
            continue
        if a.bufferView is None or a.bufferView >= len(gltf.bufferViews):
            errors.append(f"accessor {i}: bad bufferView")
            continue
        need = (a.byteOffset or 0) + a.count * sizes[a.componentType] * widths[a.type]
        if need > gltf.bufferViews[a.bufferView].byteLength:
            errors.append(f"accessor {i} runs past its bufferView")
        elif a.min:
            data = _read_accessor(gltf, blob, i).reshape(a.count, -1)
            if not (np.allclose(data.min(0), a.min) and np.allclose(data.max(0), a.max)):
                errors.append(f"accessor {i}: min/max differ from the data")
    for mesh in gltf.meshes:
        for prim in mesh.primitives:
            n = gltf.accessors[prim.attributes.POSITION]
            if not n.min:
                errors.append(f"mesh {mesh.name}: POSITION without min/max")
            for name in ("NORMAL", "TEXCOORD_0"):
                k = getattr(prim.attributes, name)
                if k is not None and gltf.accessors[k].count != n.count:
                    errors.append(f"mesh {mesh.name}: {name} count differs from POSITION")
            if prim.indices is not None and _read_accessor(gltf, blob, prim.indices).max() >= n.count:
                errors.append(f"mesh {mesh.name}: index out of range")
            for t in prim.targets:
                t = _target_position(t)
                if gltf.accessors[t].count != n.count or not gltf.accessors[t].min:
                    errors.append(f"mesh {mesh.name}: morph target count or min/max")
            if mesh.weights and len(mesh.weights) != len(prim.targets):
                errors.append(f"mesh {mesh.name}: {len(mesh.weights)} weights for {len(prim.targets)} targets")
    for anim in gltf.animations:
        for ch in anim.channels:
            s = anim.samplers[ch.sampler]
            t = _read_accessor(gltf, blob, s.input)
            if len(t) > 1 and not np.all(np.diff(t) > 0):
                errors.append(f"animation {anim.name}: times not strictly increasing")
            out = gltf.accessors[s.output]
            per = 1
            if ch.target.path == "weights":
                per = len(gltf.meshes[gltf.nodes[ch.target.node].mesh].primitives[0].targets)
            if out.count != len(t) * per:
                errors.append(f"animation {anim.name}: {ch.target.path} output count {out.count} != {len(t) * per}")
    for tex in gltf.textures:
        if tex.source is None or tex.source >= len(gltf.images):
            errors.append("texture without image")
    return errors


def load_glb_frames(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Evaluate a .glb written by :func:`build_glb` at its keyframes: ``{"times" (T,), "vertices" (T, V, 3) float64
    frame px, "triangles" (F, 3), "uv" (V, 2), "weights" (T, K) the morph weights, "target_names" (K,) (every
    target, the extended expression's and the ARKit ones included), "blendshapes" (T, 52) the ARKit targets' weights
    or None (a file without them), "extras" the asset's extras}`` (morph targets, weights and the three nodes' TRS, as
    a viewer does)."""
    import pygltflib as g
    from scipy.spatial.transform import Rotation

    gltf = g.GLTF2.load_binary(str(path))
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]
    base = _read_accessor(gltf, blob, prim.attributes.POSITION).astype(np.float64)
    cache: dict[int, np.ndarray] = {}
    deltas = np.stack([cache.setdefault(_target_position(t), _read_accessor(gltf, blob, _target_position(t)))
                       for t in prim.targets]).astype(np.float64)
    anim = gltf.animations[0]
    tracks: dict[tuple[int, str], np.ndarray] = {}
    times = None
    for ch in anim.channels:
        s = anim.samplers[ch.sampler]
        times = _read_accessor(gltf, blob, s.input).astype(np.float64)
        tracks[(ch.target.node, ch.target.path)] = _read_accessor(gltf, blob, s.output).astype(np.float64)
    assert times is not None
    n = len(times)
    weights = tracks[(2, "weights")].reshape(n, -1)
    shapes = base[None] + np.einsum("tk,kvj->tvj", weights, deltas)

    def trs(node: int, t: int) -> np.ndarray:
        m = np.eye(4)
        nd = gltf.nodes[node]
        tr = tracks.get((node, "translation"), [nd.translation or [0, 0, 0]] * n)[t]
        ro = tracks.get((node, "rotation"), [nd.rotation or [0, 0, 0, 1]] * n)[t]
        sc = tracks.get((node, "scale"), [nd.scale or [1, 1, 1]] * n)[t]
        m[:3, :3] = Rotation.from_quat(np.asarray(ro) / np.linalg.norm(ro)).as_matrix() * np.asarray(sc)[None]
        m[:3, 3] = tr
        return m

    w_px, h_px = gltf.asset.extras["frame_width"], gltf.asset.extras["frame_height"]
    m_w, c_w = world_from_pixels((w_px, h_px))
    inv = np.linalg.inv(m_w)
    out = np.empty_like(shapes)
    for t in range(n):
        m = trs(0, t) @ trs(1, t) @ trs(2, t)
        world = shapes[t] @ m[:3, :3].T + m[:3, 3]
        out[t] = (world - c_w) @ inv.T
    tri = _read_accessor(gltf, blob, prim.indices).reshape(-1, 3)
    return {"times": times, "vertices": out, "triangles": tri,
            "uv": _read_accessor(gltf, blob, prim.attributes.TEXCOORD_0), "weights": weights,
            "target_names": list((gltf.meshes[0].extras or {}).get("targetNames", [])),
            "blendshapes": _blend_weights(gltf, weights), "extras": dict(gltf.asset.extras or {})}


def _blend_weights(gltf: Any, weights: np.ndarray) -> np.ndarray | None:
    first = (gltf.asset.extras or {}).get("blendshape_targets")
    return None if not first else weights[:, first[0]:first[0] + first[1]]


class _GLBTrack:
    def __init__(self) -> None:
        self.frames: list[int] = []
        self.times: list[float] = []
        self.params: list[np.ndarray] = []
        self.ext: list[np.ndarray | None] = []
        self.blend: list[np.ndarray | None] = []
        self.affines: list[np.ndarray] = []
        self.fit_error = 0.0
        self.best_score = np.inf  # |yaw| + |pitch| (degrees) of the texture frame
        self.texture_src: tuple[np.ndarray, np.ndarray] | None = None  # (face crop, vertices in the crop)


def _stack_ext(rows: list[np.ndarray | None]) -> np.ndarray | None:
    """Per-frame ext (N_EXT,) or None -> (T, N_EXT) with zero rows for None; None when no frame had one."""
    known = [r for r in rows if r is not None]
    if not known:
        return None
    zero = np.zeros_like(known[0])
    return np.stack([zero if r is None else r for r in rows])


class GLBSink:
    """One ``{directory}/track{ID}.glb`` per track (see the module docstring), written at close (temp + rename).

    ``write(frame_index, time, records, image)``: records without vertices are skipped (as MeshSink does), and so is a
    frame whose time does not advance (glTF keyframes must increase). Memory per frame is the parameters and one
    affine map; the texture source is a crop of the most frontal frame.
    """

    def __init__(self, directory: str | os.PathLike[str], morph: Any, tri: np.ndarray,
                 frame_size: tuple[int, int] | None = None, texture_size: int = 512) -> None:
        import threading

        from stream.sinks import SinkError

        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot create mesh folder {self.directory}: {e.strerror or e}") from e
        self.morph = morph
        self.tri = np.ascontiguousarray(tri, np.int32).reshape(-1, 3)
        self.uv = mesh_uv(morph)
        self.frame_size = frame_size
        self.texture_size = texture_size
        self._tracks: dict[int, _GLBTrack] = {}
        self._lock = threading.RLock()
        self._closed = False
        self.files: list[Path] = []
        self.skipped_records = 0

    def write(self, frame_index: int, time: float, records: list, image: np.ndarray | None = None) -> None:
        """Add the faces of one frame; ``image`` (H, W, 3) uint8 BGR is the frame (texture source, frame size)."""
        with self._lock:
            if self._closed:
                raise ValueError(f"write to a closed sink ({self.directory})")
            if image is not None and self.frame_size is None:
                self.frame_size = (int(image.shape[1]), int(image.shape[0]))
            for r in records:
                if r.vertices is None:
                    self.skipped_records += 1
                    continue
                t = self._tracks.setdefault(int(r.track_id), _GLBTrack())
                if t.times and float(time) <= t.times[-1]:
                    self.skipped_records += 1
                    continue
                v = np.asarray(r.vertices, np.float32)[:, :3]
                params = np.asarray(r.params, np.float32).reshape(-1)
                ext = r.ext
                ext = None if ext is None else np.asarray(ext, np.float32).reshape(-1)
                aff, err = fit_affine(model_shapes(self.morph, params[None], None if ext is None else ext[None])[0], v)
                t.frames.append(int(frame_index))
                t.times.append(float(time))
                t.params.append(params)
                t.ext.append(ext)
                b = r.blendshape_values
                t.blend.append(None if b is None else np.asarray(b, np.float32).reshape(-1))
                t.affines.append(aff)
                t.fit_error = max(t.fit_error, err)
                score = float(abs(r.pose[0]) + abs(r.pose[1]))
                if image is not None and score < t.best_score:
                    t.best_score = score
                    t.texture_src = self._crop(image, v)

    @staticmethod
    def _crop(image: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        x0, y0 = (int(max(0, np.floor(np.nanmin(v[:, k])) - 2)) for k in (0, 1))
        x1 = int(min(w, np.ceil(np.nanmax(v[:, 0])) + 3))
        y1 = int(min(h, np.ceil(np.nanmax(v[:, 1])) + 3))
        if x1 <= x0 or y1 <= y0:
            return image[:1, :1].copy(), v - np.array([0, 0, 0], np.float32)
        return image[y0:y1, x0:x1].copy(), v - np.array([x0, y0, 0], np.float32)

    def write_job(self, job: Any) -> None:
        """Pipeline adapter (frame index, time, faces and the frame's image)."""
        self.write(job.frame.index, job.frame.time, list(job.faces), image=job.frame.image)

    def close(self) -> Path | None:
        """Write every track's file; idempotent."""
        with self._lock:
            if self._closed:
                return self.directory
            self._closed = True
            for tid in sorted(self._tracks):
                t = self._tracks[tid]
                tex = None
                if t.texture_src is not None:
                    tex = bake_texture(*t.texture_src, self.tri, self.uv, self.texture_size)
                anim = TrackAnimation(tid, np.asarray(t.times), np.asarray(t.frames), np.stack(t.params),
                                      np.stack(t.affines), t.fit_error, _stack_ext(t.ext), _stack_ext(t.blend))
                data = build_glb(anim, self.morph, self.tri, self.frame_size or (640, 480), tex)
                self.files.append(atomic_write_bytes(self.directory / f"track{tid}.glb", data))
            self._tracks.clear()
            return self.directory

    def abort(self) -> None:
        """Drop what was buffered; nothing is written."""
        with self._lock:
            self._closed = True
            self._tracks.clear()
