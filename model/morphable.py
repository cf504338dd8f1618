"""The 3D Morphable Model in the 3DDFA / DAMDNet parameterisation: decode 62 parameters to landmarks and dense meshes.

Parameters (REAL, i.e. un-whitened), shape (N, 62): ``P`` (3x4 camera matrix, row-major, 12) | shape (40) | expression
(10). Model-space vertices ``S = u + W_shp a_shp + W_exp a_exp`` (y up), projected ``P[:, :3] @ S + P[:, 3]`` into
crop coordinates of a 120x120 crop; then the y axis is flipped and the crop is mapped to the frame through its ROI box.

Two conventions of that last step exist (both supported, chosen by the checkpoint):
- ``"v1"`` (3DDFA v1, DAMDNet): ``y = 120 + 1 - y``; x, y scaled by the ROI size / 120 plus its corner, z by the mean scale.
- ``"v2"`` (3DDFA_V2): ``x -= 1; z -= 1; y = 120 - y``, the same scaling, then z shifted so its minimum is 0 per face.

Every decode function takes numpy arrays or torch tensors (batched) and returns the same kind.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from model.assets import AssetStore
from model.basis import Basis, _is_torch
from model.dense_fit import landmark_following_basis
from model.expression_ext import ext_landmark_basis

CROP_SIZE = 120
N_PARAMS = 62
N_SHAPE = 40
N_EXP = 10
GRID = 64


@dataclass
class Whitening:
    """Parameter whitening of a checkpoint: ``real = whitened * std + mean``, each (62,) float32."""

    mean: np.ndarray
    std: np.ndarray
    name: str = ""

    def unwhiten(self, p: Any) -> Any:
        """Whitened (N, 62) -> real (N, 62); numpy or torch."""
        m, s = self._like(p)
        return p * s + m

    def whiten(self, p: Any) -> Any:
        """Real (N, 62) -> whitened (N, 62); numpy or torch."""
        m, s = self._like(p)
        return (p - m) / s

    def _like(self, p: Any) -> tuple[Any, Any]:
        if _is_torch(p):
            import torch

            return (torch.as_tensor(self.mean, dtype=p.dtype, device=p.device),
                    torch.as_tensor(self.std, dtype=p.dtype, device=p.device))
        return self.mean.astype(p.dtype, copy=False), self.std.astype(p.dtype, copy=False)

    @classmethod
    def load(cls, which: str, store: AssetStore | None = None) -> "Whitening":
        """``which`` is ``"v1"`` (DAMDNet, 3DDFA v1) or ``"v2"`` (3DDFA_V2)."""
        store = store or AssetStore()
        if which not in ("v1", "v2"):
            raise ValueError(f"unknown whitening '{which}' (expected v1 or v2)")
        mean = np.loadtxt(store.path(f"whitening-{which}-mean"), dtype=np.float64).astype(np.float32)
        std = np.loadtxt(store.path(f"whitening-{which}-std"), dtype=np.float64).astype(np.float32)
        return cls(mean.reshape(-1), std.reshape(-1), which)


def grid_triangles(rows: int = GRID, cols: int = GRID) -> np.ndarray:
    """Triangles (F, 3) int32 of a row-major grid (vertex ``k = r * cols + c``, rows top->bottom, cols left->right).

    Two triangles per cell, counter-clockwise as seen on screen with y down... i.e. for image coordinates (x right,
    y down) each triangle has a negative signed area ``(b-a) x (c-a)``; that is, counter-clockwise for a viewer with y up.
    """
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    k = (r * cols + c).ravel()
    tl, tr, bl, br = k, k + 1, k + cols, k + cols + 1
    t1 = np.stack([tl, bl, tr], 1)
    t2 = np.stack([tr, bl, br], 1)
    return np.concatenate([t1, t2]).astype(np.int32)


def split_params(params: Any) -> tuple[Any, Any, Any, Any]:
    """(N, 62) -> rotation-scale R (N, 3, 3), offset t (N, 3), shape (N, 40), expression (N, 10)."""
    p = params[:, :12].reshape(-1, 3, 4)
    return p[:, :, :3], p[:, :, 3], params[:, 12:12 + N_SHAPE], params[:, 12 + N_SHAPE:]


def project_crop(params: Any, model_vertices: Any) -> Any:
    """Model-space vertices (N, V, 3) -> crop coordinates before the y flip (N, V, 3): ``R s + t``."""
    r, t, _, _ = split_params(params)
    return model_vertices @ r.swapaxes(-1, -2) + t[:, None, :]


def crop_to_frame(v: Any, roi: Any, convention: str = "v1", size: int = CROP_SIZE) -> Any:
    """Projected crop coordinates (N, V, 3) -> frame pixels (N, V, 3) through ROI boxes (N, 4) (x1, y1, x2, y2)."""
    torch_in = _is_torch(v)
    if torch_in:
        import torch

        roi = torch.as_tensor(roi, dtype=v.dtype, device=v.device)
        out = v.clone()
    else:
        roi = np.asarray(roi, dtype=v.dtype)
        out = v.copy()
    x, y, z = out[..., 0], out[..., 1], out[..., 2]
    if convention == "v1":
        y = size + 1 - y
    elif convention == "v2":
        x = x - 1
        z = z - 1
        y = size - y
    else:
        raise ValueError(f"unknown convention '{convention}' (expected v1 or v2)")
    sx = (roi[:, 2] - roi[:, 0]) / size
    sy = (roi[:, 3] - roi[:, 1]) / size
    x = x * sx[:, None] + roi[:, 0:1]
    y = y * sy[:, None] + roi[:, 1:2]
    z = z * ((sx + sy) / 2)[:, None]
    if convention == "v2":
        z = z - (z.min(dim=1, keepdim=True).values if torch_in else z.min(axis=1, keepdims=True))
    if torch_in:
        return torch.stack([x, y, z], dim=-1)
    return np.stack([x, y, z], axis=-1)


def crop_flip(convention: str, size: int = CROP_SIZE) -> tuple[float, float]:
    """(dx, top) of a convention: frame -> crop coordinates before the y flip are ``(x + dx, top - y)`` of the ROI's
    scaled pixels (v1: (0, size + 1), v2: (1, size)). An unknown convention is a ``ValueError``."""
    if convention == "v1":
        return 0.0, float(size + 1)
    if convention == "v2":
        return 1.0, float(size)
    raise ValueError(f"unknown convention '{convention}' (expected v1 or v2)")


def frame_to_crop_xy(pts: np.ndarray, roi: np.ndarray, convention: str = "v1", size: int = CROP_SIZE) -> np.ndarray:
    """Frame pixels (N, P, 2) -> crop coordinates before the y flip (N, P, 2) through ROIs (N, 4): the inverse of
    ``crop_to_frame`` in x and y. numpy only."""
    dx, top = crop_flip(convention, size)
    p = np.asarray(pts, np.float64)
    roi = np.asarray(roi, np.float64).reshape(-1, 4)
    sx = ((roi[:, 2] - roi[:, 0]) / size)[:, None]
    sy = ((roi[:, 3] - roi[:, 1]) / size)[:, None]
    x = (p[..., 0] - roi[:, 0:1]) / sx
    y = (p[..., 1] - roi[:, 1:2]) / sy
    return np.stack([x + dx, top - y], -1)


class MorphableModel:
    """The 68-landmark and dense bases in one 40 + 10 space; batched decode to crop and frame coordinates.

    ``sparse``: the 68 landmarks. ``dense_basis``: the 64x64 PAF grid surface (4096 vertices), vertices reordered
    row-major with rows top->bottom and columns left->right (the mirror of column c is 63 - c); ``tri`` its triangles.
    ``load()`` gives the face-shaped topology (``with_face_topology``): ``tri`` covers the face only (forehead to
    chin, between the ears, open between the inner lips), ``uv`` (V, 2) its texture coordinates; ``dense_full`` and
    ``tri_full`` the whole grid (hair, ears, neck).
    """

    def __init__(self, sparse: Basis, dense: Basis, tri: np.ndarray, grid_shape: tuple[int, int] | None = (GRID, GRID),
                 name: str = "bfm68+paf", landmark_vertices: np.ndarray | None = None) -> None:
        self.sparse = sparse
        self.dense_basis = dense
        self.tri = tri
        self.grid_shape = grid_shape
        self.name = name
        self.landmark_vertices = landmark_vertices  # (68,) dense vertex of each landmark when the grid follows them
        # the whole grid, before the face was cut out (``with_face_topology``): face profiling renders hair and ears
        self.dense_full = dense
        self.tri_full = tri
        self.uv: np.ndarray | None = None  # (V, 2) float32 in [0, 1], texture coordinates of the face (v down)
        self.face_vertices: np.ndarray | None = None  # (V,) bool: vertices that ``tri`` uses
        self.topology = None  # model.face_mesh.FaceTopology of the cut, when cut

    def with_face_topology(self) -> "MorphableModel":
        """This model restricted to the face (``model.face_mesh``): ``tri`` the face triangles, ``dense_basis`` with
        the boundary ring moved onto the outline, ``uv`` its texture coordinates; ``dense_full`` / ``tri_full`` keep
        the whole grid. Vertex count and order do not change (``grid_shape``, mirror and landmark vertices hold)."""
        from model.face_mesh import face_topology, grid_face_uv

        d, s = self.dense_basis, self.sparse
        pairs = ((61, 67), (62, 66), (63, 65))
        g = sum(s.w_exp[a, 1] - s.w_exp[b, 1] for a, b in pairs).astype(np.float64)  # d(inner-lip gap)/d(exp)
        width = float(np.linalg.norm(s.u[64, :2] - s.u[60, :2]))
        gap0 = float(sum(s.u[a, 1] - s.u[b, 1] for a, b in pairs))
        exp = g / (g @ g) * (3 * 0.3 * width - gap0)  # mean gap of 0.3 x the mouth width
        lips = (s.u + s.w_exp @ exp)[60:68]
        opened = np.concatenate([d.u + d.w_exp @ exp, lips])
        lm = s.u.copy()
        topo = face_topology(d.u, self.tri, lm, opened)
        out = MorphableModel(s, Basis(topo.blend(d.u), topo.blend(d.w_shp), topo.blend(d.w_exp),
                                      None if d.w_ext is None else topo.blend(d.w_ext)), topo.tri,
                             self.grid_shape, name=f"{self.name}+face", landmark_vertices=self.landmark_vertices)
        out.dense_full, out.tri_full, out.topology = d, self.tri, topo
        used = np.zeros(d.n, bool)
        used[topo.tri.ravel()] = True
        out.face_vertices = used
        if self.grid_shape is not None:
            out.uv = grid_face_uv(topo, self.grid_shape)
        return out

    @property
    def n_dense(self) -> int:
        return self.dense_basis.n

    @classmethod
    def load(cls, store: AssetStore | None = None, follow_landmarks: bool = True) -> "MorphableModel":
        """Load (cached per assets root) the 68-landmark BFM sub-basis and the 64x64 PAF grid surface.

        ``follow_landmarks``: fit the grid's bases to the 68-point model (``model.dense_fit``) so that the dense mesh
        shows expressions and passes through the landmarks; False gives the raw PAF bases.
        """
        store = store or AssetStore()
        key = tuple(str(store.local_path(n)) for n in _MODEL_FILES)
        raw = _RAW.get(key)
        if raw is None:
            raw = _RAW[key] = _load_raw(store)
        return _fitted(raw) if follow_landmarks else raw

    # -- decode -------------------------------------------------------------------------------------------------
    def landmarks_crop(self, params: Any, ext: Any = None) -> Any:
        """(N, 62) real params [+ ext (N, N_EXT)] -> (N, 68, 3) projected crop coordinates (before the y flip)."""
        return project_crop(params, self.sparse.shape_model(params, ext))

    def dense_crop(self, params: Any, ext: Any = None) -> Any:
        """(N, 62) real params [+ ext (N, N_EXT)] -> (N, V, 3) projected crop coordinates (before the y flip)."""
        return project_crop(params, self.dense_basis.shape_model(params, ext))

    def landmarks(self, params: Any, roi: Any, convention: str = "v1", ext: Any = None) -> Any:
        """(N, 62) real params, ROI boxes (N, 4) [, extended expression ext (N, N_EXT), None = 0] -> (N, 68, 3)
        frame pixels (float32 for float32 input)."""
        return crop_to_frame(self.landmarks_crop(params, ext), roi, convention)

    def dense(self, params: Any, roi: Any, convention: str = "v1", ext: Any = None) -> Any:
        """(N, 62) real params, ROI boxes (N, 4) [, ext (N, N_EXT)] -> (N, V, 3) dense vertices in frame pixels."""
        return crop_to_frame(self.dense_crop(params, ext), roi, convention)


def _read_txt(path: Any) -> np.ndarray:
    return np.loadtxt(path, dtype=np.float64).astype(np.float32)


_MODEL_FILES = ("bfm68-u", "bfm68-w-shp", "bfm68-w-exp", "paf-grid")
_RAW: dict[tuple[str, ...], "MorphableModel"] = {}  # the files' local paths -> the model read from them


def _load_raw(store: AssetStore) -> MorphableModel:
    u = _read_txt(store.path("bfm68-u")).reshape(68, 3)
    w_shp = _read_txt(store.path("bfm68-w-shp")).reshape(68, 3, N_SHAPE)
    w_exp = _read_txt(store.path("bfm68-w-exp")).reshape(68, 3, N_EXP)
    sparse = Basis(u, w_shp, w_exp, ext_landmark_basis(u))
    with open(store.path("paf-grid"), "rb") as f:
        paf = pickle.load(f)
    # PAF rows are x, y, z interleaved per vertex on a grid indexed [x-index, y-index]; reorder to image-like
    # row-major [row (top->bottom), col (left->right)].
    def grid(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32).reshape(GRID, GRID, 3, -1)
        return np.ascontiguousarray(a.transpose(1, 0, 2, 3).reshape(GRID * GRID, 3, -1))

    dense = Basis(grid(paf["mu_filter"])[..., 0], grid(paf["w_filter"]), grid(paf["w_exp_filter"]))
    return MorphableModel(sparse, dense, grid_triangles())


@lru_cache(maxsize=4)
def _fitted(raw: MorphableModel) -> MorphableModel:
    model, k = consistent_dense_model(raw)
    return model.with_face_topology()


def consistent_dense_model(morph: MorphableModel) -> tuple[MorphableModel, np.ndarray]:
    """A MorphableModel whose dense grid passes exactly through the 68 landmarks for every shape and expression
    (``model.dense_fit.landmark_following_basis``), and the (68,) grid vertex of each landmark."""
    dense, k = landmark_following_basis(morph.sparse, morph.dense_basis, morph.grid_shape)
    return MorphableModel(morph.sparse, dense, morph.tri, morph.grid_shape, name=f"{morph.name}+tps68",
                          landmark_vertices=k), k


# -- pose -------------------------------------------------------------------------------------------------------
def scale_rotation(params: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decompose P (3DDFA's P2sRt): scale (N,), rotation (N, 3, 3) orthonormal, translation (N, 3). numpy float64."""
    p = np.asarray(params, dtype=np.float64)[:, :12].reshape(-1, 3, 4)
    r1, r2 = p[:, 0, :3], p[:, 1, :3]
    n1 = np.linalg.norm(r1, axis=1)
    n2 = np.linalg.norm(r2, axis=1)
    s = (n1 + n2) / 2
    r1 = r1 / n1[:, None]
    r2 = r2 / n2[:, None]
    r3 = np.cross(r1, r2)
    return s, np.stack([r1, r2, r3], axis=1), p[:, :, 3]


def rotation_from_params(params: Any) -> np.ndarray:
    """Rotation matrices (N, 3, 3) of the model->camera transform (model y up)."""
    return scale_rotation(params)[1]


def matrix_to_angles(r: np.ndarray) -> np.ndarray:
    """Rotation (N, 3, 3) -> (N, 3) yaw, pitch, roll in radians (3DDFA's matrix2angle, gimbal-lock safe)."""
    r = np.asarray(r, dtype=np.float64)
    out = np.empty((r.shape[0], 3))
    for i, m in enumerate(r):
        if m[2, 0] > 0.998:
            yaw, pitch, roll = np.pi / 2, np.arctan2(-m[0, 1], -m[0, 2]), 0.0
        elif m[2, 0] < -0.998:
            yaw, pitch, roll = -np.pi / 2, np.arctan2(m[0, 1], m[0, 2]), 0.0
        else:
            yaw = np.arcsin(m[2, 0])
            c = np.cos(yaw)
            pitch = np.arctan2(m[2, 1] / c, m[2, 2] / c)
            roll = np.arctan2(m[1, 0] / c, m[0, 0] / c)
        out[i] = yaw, pitch, roll
    return out


def angles_to_matrix(yaw: Any, pitch: Any, roll: Any) -> np.ndarray:
    """Inverse of ``matrix_to_angles``: angles (N,) in radians -> rotation (N, 3, 3) with ``R[2,0] = sin(yaw)``."""
    yaw, pitch, roll = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    n = yaw.shape[0]
    rx = np.zeros((n, 3, 3)); ry = np.zeros((n, 3, 3)); rz = np.zeros((n, 3, 3))
    rx[:, 0, 0] = 1; rx[:, 1, 1] = cp; rx[:, 1, 2] = -sp; rx[:, 2, 1] = sp; rx[:, 2, 2] = cp
    ry[:, 1, 1] = 1; ry[:, 0, 0] = cy; ry[:, 0, 2] = -sy; ry[:, 2, 0] = sy; ry[:, 2, 2] = cy
    rz[:, 2, 2] = 1; rz[:, 0, 0] = cr; rz[:, 0, 1] = -sr; rz[:, 1, 0] = sr; rz[:, 1, 1] = cr
    return rz @ ry @ rx


def pose_from_params(params: Any) -> np.ndarray:
    """(N, 62) real params -> (N, 6) float32: yaw, pitch, roll (degrees), scale (crop px per micrometre of the
    3DMM), tx, ty (crop px, y up: where the model's origin lands in the 120 px crop)."""
    if _is_torch(params):
        params = params.detach().cpu().numpy()
    s, r, t = scale_rotation(params)
    ang = np.degrees(matrix_to_angles(r))
    return np.concatenate([ang, s[:, None], t[:, :2]], axis=1).astype(np.float32)


def params_from_pose(scale: Any, rotation: np.ndarray, t3: np.ndarray, shape: np.ndarray,
                     exp: np.ndarray) -> np.ndarray:
    """Build real params (N, 62) from scale (N,), rotation (N, 3, 3), offset (N, 3), shape (N, 40), exp (N, 10)."""
    s = np.asarray(scale, dtype=np.float64).reshape(-1, 1, 1)
    p = np.concatenate([s * rotation, np.asarray(t3, dtype=np.float64)[:, :, None]], axis=2).reshape(-1, 12)
    return np.concatenate([p, shape, exp], axis=1).astype(np.float32)
