"""The numba rasterizer against a slow plain-numpy reference, plus hand-made cases.

Reference rules (same as ``model/raster/zbuffer.py``): pixel (r, c) samples the point (x=c, y=r); a sample on an edge
belongs to the triangle only for top or left edges (top-left rule, after orienting every triangle to positive signed
area); depth test ``z > stored`` with ``-inf`` empty; edge functions and barycentrics in float64 in the same order.
"""
from __future__ import annotations

import numpy as np
import pytest

from model.raster.mesh import front_cull, vertex_normals
from model.raster.zbuffer import RasterBuffers, rasterize, rasterize_batch


def reference_raster(verts, tris, attrs, h, w, cull=0, depth=None, attr_img=None, tri_img=None, tri_offset=0):
    """Slow numpy rasterizer: one triangle at a time, vectorised over its bounding box."""
    verts = np.asarray(verts, np.float32).astype(np.float64)
    attrs = np.asarray(attrs, np.float32)
    c_n = attrs.shape[1]
    if depth is None:
        depth = np.full((h, w), -np.inf, np.float32)
        attr_img = np.zeros((h, w, c_n), np.float32)
        tri_img = np.full((h, w), -1, np.int32)
    for f, (i0, i1, i2) in enumerate(np.asarray(tris)):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = verts[i0], verts[i1], verts[i2]
        if not np.isfinite([x0, y0, z0, x1, y1, z1, x2, y2, z2]).all():
            continue
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0 or (cull > 0 and area > 0) or (cull < 0 and area < 0):
            continue
        if area < 0:
            i1, i2 = i2, i1
            x1, y1, z1, x2, y2, z2 = x2, y2, z2, x1, y1, z1
            area = -area
        xmin = int(np.ceil(max(min(x0, x1, x2), 0.0)))
        xmax = int(np.floor(min(max(x0, x1, x2), w - 1.0)))
        ymin = int(np.ceil(max(min(y0, y1, y2), 0.0)))
        ymax = int(np.floor(min(max(y0, y1, y2), h - 1.0)))
        if xmin > xmax or ymin > ymax:
            continue
        py, px = np.mgrid[ymin:ymax + 1, xmin:xmax + 1].astype(np.float64)
        inside = np.ones(py.shape, bool)
        ws = []
        for (ax, ay), (bx, by) in (((x1, y1), (x2, y2)), ((x2, y2), (x0, y0)), ((x0, y0), (x1, y1))):
            dx, dy = bx - ax, by - ay
            wgt = dx * (py - ay) - dy * (px - ax)
            top_left = dy < 0 or (dy == 0 and dx > 0)
            inside &= (wgt > 0) | ((wgt == 0) & top_left)
            ws.append(wgt)
        inv = 1.0 / area
        b0, b1, b2 = ws[0] * inv, ws[1] * inv, ws[2] * inv
        z = b0 * z0 + b1 * z1 + b2 * z2
        cur = depth[ymin:ymax + 1, xmin:xmax + 1].astype(np.float64)
        win = inside & (z > cur)
        ys, xs = np.nonzero(win)
        ys = ys + ymin
        xs = xs + xmin
        depth[ys, xs] = z[win]
        tri_img[ys, xs] = f + tri_offset
        a = (b0[win, None] * attrs[i0] + b1[win, None] * attrs[i1] + b2[win, None] * attrs[i2])
        attr_img[ys, xs] = a
    return depth, attr_img, tri_img


def random_mesh(seed, n_tri=150, h=48, w=64, integer=False):
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-10, -10], [w + 10, h + 10], size=(n_tri, 1, 2))
    offsets = rng.normal(scale=rng.uniform(2, 12, size=(n_tri, 1, 1)), size=(n_tri, 3, 2))
    xy = centres + offsets
    if integer:
        xy = np.round(xy)
    z = rng.uniform(-50, 50, size=(n_tri, 1, 1)) + rng.normal(scale=5, size=(n_tri, 3, 1))
    verts = np.concatenate([xy, z], axis=2).reshape(-1, 3).astype(np.float32)
    tris = np.arange(n_tri * 3, dtype=np.int32).reshape(-1, 3)
    attrs = rng.uniform(-1, 1, size=(verts.shape[0], 4)).astype(np.float32)
    return verts, tris, attrs


def grid_mesh(rows, cols, x0, y0, step, z=None, jitter=0.0, seed=0):
    """A planar (or given z) row-major grid mesh, two triangles per cell, screen-CCW like MorphableModel.tri."""
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    xy = np.stack([x0 + c * step, y0 + r * step], -1).reshape(-1, 2).astype(np.float64)
    xy += rng.uniform(-jitter, jitter, size=xy.shape)
    zz = np.zeros(rows * cols) if z is None else np.asarray(z, np.float64).ravel()
    verts = np.concatenate([xy, zz[:, None]], 1).astype(np.float32)
    k = (r[:-1, :-1] * cols + c[:-1, :-1]).ravel()
    tris = np.concatenate([np.stack([k, k + cols, k + 1], 1), np.stack([k + 1, k + cols, k + cols + 1], 1)])
    return verts, tris.astype(np.int32)


def assert_same(buf, ref):
    depth, attr, tri = ref
    np.testing.assert_array_equal(buf.tri_id, tri)
    np.testing.assert_array_equal(buf.depth, depth)
    np.testing.assert_allclose(buf.attr, attr, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("parallel", [False, True])
def test_random_meshes_equal_reference(seed, parallel):
    verts, tris, attrs = random_mesh(seed, integer=(seed % 2 == 1))
    buf = rasterize(verts, tris, attrs, 48, 64, parallel=parallel)
    assert_same(buf, reference_raster(verts, tris, attrs, 48, 64))
    assert (buf.tri_id >= 0).any() and (buf.tri_id < 0).any()


@pytest.mark.parametrize("cull", [1, -1])
def test_culling_equals_reference(cull):
    verts, tris, attrs = random_mesh(11)
    buf = rasterize(verts, tris, attrs, 48, 64, cull=cull)
    assert_same(buf, reference_raster(verts, tris, attrs, 48, 64, cull=cull))


def test_several_meshes_share_the_zbuffer_and_reuse_buffers():
    h, w = 48, 64
    meshes = [random_mesh(s, n_tri=60) for s in (3, 4, 5)]
    ref = None
    offset = 0
    buf = RasterBuffers.create(h, w, 4)
    rasterize(*random_mesh(9), buffers=buf)  # dirty the buffers: clear=True must reset them
    for i, (v, t, a) in enumerate(meshes):
        ref = reference_raster(v, t, a, h, w, tri_offset=offset, **({} if ref is None else
                               dict(depth=ref[0], attr_img=ref[1], tri_img=ref[2])))
        out = rasterize(v, t, a, buffers=buf, clear=(i == 0), tri_offset=offset)
        assert out is buf
        offset += len(t)
    assert_same(buf, ref)
    ys, xs = np.nonzero(buf.tri_id >= 0)
    assert tuple(buf.bbox) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    buf.clear()
    assert (buf.tri_id == -1).all() and np.isneginf(buf.depth).all() and (buf.attr == 0).all()


def test_batch_ids_are_mesh_major():
    v, t = grid_mesh(5, 5, 2, 2, 4)
    v2 = v.copy()
    v2[:, 0] += 30
    v2[:, 2] = 1.0
    buf = rasterize_batch(np.stack([v, v2]), t, None, 30, 60)
    ids = buf.tri_id[buf.tri_id >= 0]
    assert set(np.unique(ids // len(t))) == {0, 1}
    assert (buf.tri_id[:, 40][buf.tri_id[:, 40] >= 0] >= len(t)).all()


def test_hand_made_triangle_interpolates_known_values():
    # right triangle (0,0) (8,0) (0,8): attribute = x, y, z, const; z = 10 + x + 2y
    v = np.array([[0, 0, 10], [8, 0, 18], [0, 8, 26]], np.float32)
    a = np.concatenate([v, np.full((3, 1), 7, np.float32)], 1)
    buf = rasterize(v, np.array([[0, 1, 2]], np.int32), a, 12, 12)
    ys, xs = np.nonzero(buf.tri_id == 0)
    # samples on the top edge (y=0) and left edge (x=0) are in, the hypotenuse x+y=8 is not (bottom-right edge)
    expected = {(y, x) for y in range(9) for x in range(9) if x + y < 8}
    assert set(zip(ys.tolist(), xs.tolist())) == expected
    np.testing.assert_allclose(buf.attr[ys, xs, 0], xs, atol=1e-5)
    np.testing.assert_allclose(buf.attr[ys, xs, 1], ys, atol=1e-5)
    np.testing.assert_allclose(buf.depth[ys, xs], 10 + xs + 2 * ys, atol=1e-5)
    np.testing.assert_allclose(buf.attr[ys, xs, 3], 7, atol=1e-6)


def test_tiling_has_no_holes_and_counts_each_sample_once():
    # a jittered grid on integer corners covers the square [2, 34)^2 exactly: 32*32 samples, none twice
    v, t = grid_mesh(9, 9, 2, 2, 4)
    v[:, 2] = 0
    buf = rasterize(v, t, None, 40, 40)
    assert (buf.tri_id >= 0).sum() == 32 * 32
    assert (buf.tri_id[2:34, 2:34] >= 0).all()
    # count coverage: render every triangle alone and sum
    counts = np.zeros((40, 40), int)
    for f in range(len(t)):
        counts += rasterize(v, t[f:f + 1], None, 40, 40).tri_id >= 0
    assert counts.max() == 1 and counts.sum() == 32 * 32


def test_back_face_culling():
    v, t = grid_mesh(4, 4, 5, 5, 5)  # screen-CCW (signed area < 0), like the face mesh seen from the front
    assert front_cull(v, t) == 1
    assert (rasterize(v, t, None, 30, 30, cull=1).tri_id >= 0).sum() == 15 * 15
    assert (rasterize(v, t, None, 30, 30, cull=-1).tri_id >= 0).sum() == 0
    flipped = t[:, [0, 2, 1]]
    assert front_cull(v, flipped) == -1
    assert (rasterize(v, flipped, None, 30, 30, cull=1).tri_id >= 0).sum() == 0


def test_nearer_wins_and_offscreen_and_nonfinite_are_safe():
    v = np.array([[-100, -100, 0], [200, -100, 0], [-100, 200, 0],       # far, covers everything
                  [2, 2, 5], [9, 2, 5], [2, 9, 5],                          # near, small
                  [np.nan, 0, 0], [3, 3, 1e9], [4, 4, 1e9]], np.float32)  # non-finite: skipped
    t = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], np.int32)
    buf = rasterize(v, t, None, 10, 10)
    assert (buf.tri_id >= 0).all()
    assert buf.tri_id[3, 3] == 1 and buf.tri_id[0, 0] == 0
    assert buf.depth[3, 3] == 5 and buf.depth[9, 9] == 0


def test_vertex_normals_face_the_camera():
    # a bump z = 20 - r^2/10 on a screen-CCW grid: normals point to +z, tilt away from the centre
    rows = cols = 9
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    z = 20 - ((r - 4) ** 2 + (c - 4) ** 2) / 10.0
    v, t = grid_mesh(rows, cols, 0, 0, 3, z=z)
    n = vertex_normals(v, t)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert (n[:, 2] > 0).all()
    k_right = 4 * cols + 8   # right edge of the bump: normal leans right (+x)
    k_bottom = 8 * cols + 4  # bottom (y down): normal leans down (+y)
    assert n[k_right, 0] > 0.1 and n[k_bottom, 1] > 0.1
    np.testing.assert_allclose(n[4 * cols + 4], [0, 0, 1], atol=1e-5)
    np.testing.assert_allclose(vertex_normals(v, t[:, [0, 2, 1]]), n, atol=1e-6)  # auto winding
