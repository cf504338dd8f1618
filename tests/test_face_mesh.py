"""The face-shaped topology of the dense mesh (``model.face_mesh``): a smooth outline inside the jaw, no ears or
flaps, UVs in [0, 1] symmetric under the grid mirror, the lips' slit open, the whole grid kept for profiling."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.face_mesh import boundary_edges, face_outline, face_topology, inside_polygon
from model.morphable import MorphableModel, Whitening, angles_to_matrix, params_from_pose, scale_rotation
from model.raster.mesh import face_grid_lines, grid_mirror
from model.raster.zbuffer import rasterize


@pytest.fixture(scope="module")
def morph(assets_dir):
    return MorphableModel.load()


def _dist_to_polyline(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    t = np.clip((((pts[:, None] - a[None]) * ab[None]).sum(-1)) / (ab ** 2).sum(-1)[None], 0, 1)
    proj = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(pts[:, None] - proj, axis=-1).min(1)


def test_face_lies_inside_a_smooth_outline(morph):
    u = morph.dense_basis.u.astype(np.float64)
    lm = morph.sparse.u.astype(np.float64)
    height = lm[17:27, 1].mean() - lm[8, 1]
    outline = morph.topology.outline
    used = morph.face_vertices
    # every face vertex inside the outline (or on it, for the moved ring)
    on = _dist_to_polyline(u[used, :2], outline) < 1e-3 * height
    assert (inside_polygon(u[used, :2], outline) | on).all()
    # the outer boundary runs on the outline: a smooth curve, no staircase of grid cells
    b = np.unique(boundary_edges(morph.tri))
    outer = b[_dist_to_polyline(u[b, :2], outline) < 0.05 * height]
    assert len(outer) > 100
    assert _dist_to_polyline(u[outer, :2], outline).max() < 1e-3 * height
    # no ears or flaps: nothing wider than the jaw, nothing above the grid's forehead
    assert np.abs(u[used, 0]).max() <= np.abs(lm[0:17, 0]).max()
    assert u[used, 1].max() <= u[:, 1].max()
    # the outline itself turns smoothly (no corner sharper than 40 degrees between neighbouring samples)
    d = np.diff(np.concatenate([outline, outline[:2]]), axis=0)
    ang = np.degrees(np.abs(np.arctan2(np.cross(d[:-1], d[1:]), (d[:-1] * d[1:]).sum(1))))
    assert ang.max() < 40


def test_uv_in_unit_square_and_mirror_symmetric(morph):
    uv = morph.uv
    assert uv.shape == (4096, 2) and uv.dtype == np.float32
    assert uv.min() >= 0 and uv.max() <= 1
    used = morph.face_vertices
    assert uv[used, 0].min() < 0.05 and uv[used, 0].max() > 0.95 and uv[used, 1].min() == 0 and uv[used, 1].max() == 1
    m = grid_mirror(morph.grid_shape)
    fixed = ~np.isin(np.arange(4096), morph.topology.moved)
    both = used & used[m] & fixed & fixed[m]
    np.testing.assert_allclose(uv[m[both], 0], 1 - uv[both, 0], atol=1e-5)
    np.testing.assert_allclose(uv[m[both], 1], uv[both, 1], atol=1e-5)
    # UV triangles keep one orientation (the UV map does not fold)
    t = morph.tri
    a, b, c = uv[t[:, 0]], uv[t[:, 1]], uv[t[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (area <= 1e-9).all()


def _face(morph, exp_gap: float = 0.0, yaw: float = 0.0):
    mean = Whitening.load("v1").mean[None].astype(np.float32)
    s, _, t = scale_rotation(mean)
    p = params_from_pose(s, angles_to_matrix(np.radians([yaw]), [0.0], [0.0]), t, mean[:, 12:52], mean[:, 52:])
    if exp_gap:
        sp = morph.sparse
        g = sum(sp.w_exp[a, 1] - sp.w_exp[b, 1] for a, b in ((61, 67), (62, 66), (63, 65)))
        p[0, 52:] += (g / (g @ g) * exp_gap).astype(np.float32)
    roi = np.array([[0, 0, 300, 300]], np.float32)
    return morph.dense(p, roi)[0], morph.landmarks(p, roi)[0]


def test_open_mouth_is_a_hole(morph):
    width = float(np.linalg.norm(morph.sparse.u[64, :2] - morph.sparse.u[60, :2]))
    v, lm = _face(morph, exp_gap=3 * 0.25 * width)
    assert (lm[66, 1] - lm[62, 1]) > 5  # the mouth is open by more than 5 px
    lips = np.zeros((300, 300), np.uint8)
    cv2.fillPoly(lips, [np.round(lm[60:68, :2]).astype(np.int32)], 1)
    lips = cv2.erode(lips, np.ones((3, 3), np.uint8)) > 0
    covered = rasterize(v, morph.tri, None, 300, 300).tri_id >= 0
    full = rasterize(v, morph.tri_full, None, 300, 300).tri_id >= 0
    assert covered[lips].mean() < 0.05  # the cut shows the mouth open ...
    assert full[lips].mean() > 0.95  # ... where the whole grid stretched closed lips across it


def test_wireframe_stays_on_the_face(morph):
    edges = face_grid_lines(morph.grid_shape, morph.tri, 2)
    assert morph.face_vertices[edges].all()
    full = set(map(tuple, np.sort(edges, 1).tolist()))
    assert set(map(tuple, boundary_edges(morph.tri).tolist())) <= full


def test_profiling_keeps_the_whole_grid(morph):
    from model.data.profile import Profiler

    prof = Profiler.from_morphable(morph)
    assert prof.tri.shape == (7938, 3) and prof.dense_basis is morph.dense_full


def test_outline_from_landmarks_is_closed_and_ordered(morph):
    outline = face_outline(morph.sparse.u)
    assert outline.shape == (160, 2)
    x, y = outline[:, 0], outline[:, 1]
    area = 0.5 * (x * np.roll(y, -1) - np.roll(x, -1) * y).sum()
    assert abs(area) > 0


def test_full_bfm_mean_mesh_gets_the_same_cut(assets_dir):
    """The cut works on any dense set: the full BFM mean mesh (53,215 vertices; its bases are upstream-only) is cut
    along the same smooth outline, as one connected face."""
    import scipy.io as sio

    from model.assets import AssetStore

    store = AssetStore()
    u = (np.load(store.path("bfm-u-shp")) + np.load(store.path("bfm-u-exp"))).reshape(-1, 3).astype(np.float64)
    lm = u[np.load(store.path("keypoints"))[::3] // 3]
    tri = sio.loadmat(store.path("bfm-tri"))["tri"]
    tri = (tri.T if tri.shape[0] == 3 else tri).astype(np.int64) - 1
    topo = face_topology(u, tri, lm)
    assert 0.3 * len(tri) < len(topo.tri) < 0.8 * len(tri)
    moved = topo.blend(u)
    used = np.unique(topo.tri)
    height = lm[17:27, 1].mean() - lm[8, 1]
    b = np.unique(boundary_edges(topo.tri))
    d = _dist_to_polyline(moved[b, :2], topo.outline)
    outer = d < 0.05 * height  # the rest are the mesh's own holes (eyes, mouth)
    assert outer.sum() > 300 and d[outer].max() < 1e-3 * height
    assert np.abs(moved[used, 0]).max() <= np.abs(lm[0:17, 0]).max()
