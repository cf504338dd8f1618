"""The renderer on the real dense mesh of ``model.morphable`` (64x64 PAF grid): winding, equality with the numpy
reference, hole-free coverage, self-occlusion handled by the texture, overlays and swap."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.raster.mesh import front_cull, grid_mirror, vertex_normals
from stream.render.overlays import MODES, render_overlay
from model.raster.zbuffer import rasterize
from stream.render.swap import build_texture, face_region, swap_faces
from tests.test_raster_zbuffer import reference_raster

morphable = pytest.importorskip("model.morphable")


@pytest.fixture(scope="module")
def morph(assets_dir):
    return morphable.MorphableModel.load()


def face(morph, yaw=0.0, pitch=0.0, roi=(200, 100, 440, 340)):
    """Dense vertices (V, 3) and landmarks (68, 3) of the mean face at a pose, in frame px."""
    mean = morphable.Whitening.load("v1").mean[None].astype(np.float32)
    s, _, t = morphable.scale_rotation(mean)
    rot = morphable.angles_to_matrix(np.radians(yaw), np.radians(pitch), 0.0)
    params = morphable.params_from_pose(s, rot, t, mean[:, 12:52], mean[:, 52:])
    roi = np.array([roi], np.float32)
    return morph.dense(params, roi)[0], morph.landmarks(params, roi)[0]


def test_mesh_winding_and_normals(morph):
    v, _ = face(morph)
    assert v.shape == (4096, 3) and morph.tri_full.shape == (7938, 3)
    assert 5000 < len(morph.tri) < 7938  # the face cut: forehead to chin, between the ears
    for tri in (morph.tri, morph.tri_full):
        assert front_cull(v, tri) == 1  # screen-CCW, as docs/INTERFACES.md says
    n = vertex_normals(v, morph.tri)
    # the face cut faces the camera everywhere (the whole grid turns away at its side columns, 5.3%)
    assert (n[morph.face_vertices, 2] > 0).mean() > 0.995
    front = (vertex_normals(v, morph.tri_full)[:, 2] > 0).reshape(64, 64)
    assert front.mean() > 0.94
    assert front[6:58, 6:58].mean() > 0.99
    g = v.reshape(64, 64, 3)
    assert g[32, 0, 0] < g[32, 63, 0] and g[0, 32, 1] < g[63, 32, 1]  # cols left->right, rows top->bottom


@pytest.mark.parametrize("yaw", [0.0, 50.0])
def test_real_mesh_equals_reference_without_holes(morph, yaw):
    v, lm = face(morph, yaw=yaw, roi=(20, 10, 140, 130))
    attrs = np.concatenate([v, vertex_normals(v, morph.tri)], 1)
    buf = rasterize(v, morph.tri, attrs, 120, 160)
    depth, attr, tri = reference_raster(v, morph.tri, attrs, 120, 160)
    np.testing.assert_array_equal(buf.tri_id, tri)
    np.testing.assert_array_equal(buf.depth, depth)
    np.testing.assert_allclose(buf.attr, attr, atol=1e-4)
    covered = (buf.tri_id >= 0).astype(np.uint8)
    outside = covered.copy()
    cv2.floodFill(outside, None, (0, 0), 2)
    # no uncovered pixel enclosed by the face but between the inner lips (the slit an open mouth shows)
    lips = np.zeros_like(covered)
    cv2.fillPoly(lips, [np.round(lm[60:68, :2] * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    lips = cv2.dilate(lips, np.ones((3, 3), np.uint8))
    assert ((outside == 0) & (lips == 0)).sum() == 0


def test_texture_fills_self_occluded_side_from_the_mirror(morph):
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    v, _ = face(morph, yaw=55.0)
    tex = build_texture(img, v, morph.tri, morph.grid_shape, uv=morph.uv)
    u = tex.uv[:, 0] / (tex.image.shape[1] - 1)
    left, right = morph.face_vertices & (u < 0.3), morph.face_vertices & (u > 0.7)
    # the far side is the one with the lower mean z; most of it is not trusted, the near side mostly is
    far, near = (left, right) if v[left, 2].mean() < v[right, 2].mean() else (right, left)
    assert tex.valid[far].mean() < 0.5 < tex.valid[near].mean()
    ok = tex.image_valid
    filled = cv2.erode((~ok & ok[:, ::-1]).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert filled.sum() > 1000
    lap = lambda a: cv2.Laplacian(np.ascontiguousarray(a, np.float32), cv2.CV_32F)  # noqa: E731
    diff = np.abs(lap(tex.image) - lap(tex.image[:, ::-1]))[filled]
    assert diff.mean() < 0.1 * np.abs(lap(tex.image))[filled].mean() + 0.5


@pytest.mark.parametrize("mode", MODES)
def test_overlays_on_real_faces(morph, mode):
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    faces = []
    for yaw, roi in ((20.0, (60, 100, 300, 340)), (-30.0, (330, 80, 600, 350))):
        v, lm = face(morph, yaw=yaw, roi=roi)
        faces.append({"vertices": v, "landmarks": lm, "pose": (yaw, 0, 0)})
    out = render_overlay(frame, faces, mode, morph.tri, reference=morph.dense_basis.u, grid_shape=morph.grid_shape)
    changed = (out != frame).any(2)
    assert changed.sum() > (200 if mode == "landmarks" else 5000)
    assert not changed[:, :40].any() and not changed[420:].any()


def test_swap_on_real_faces_keeps_outside_pixels(morph):
    src = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2)
    sv, slm = face(morph)
    region = face_region(morph.dense_basis.u, morph.sparse.u)
    assert 0.3 < region.mean() < 0.9
    tex = build_texture(src, sv, morph.tri, morph.grid_shape, landmarks=slm, uv=morph.uv)  # as the product does
    frame = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    targets = [face(morph, yaw=y, roi=r) for y, r in ((25.0, (40, 100, 300, 360)), (-20.0, (330, 60, 620, 350)))]
    for blend in ("alpha", "seamless"):
        out = swap_faces(frame, [t[0] for t in targets], morph.tri, tex, landmarks=[t[1] for t in targets],
                         blend=blend)
        covered = np.zeros((480, 640), bool)
        for v, _ in targets:
            covered |= rasterize(v, morph.tri, None, 480, 640).tri_id >= 0
        changed = (out != frame).any(2)
        assert np.array_equal(out[~covered], frame[~covered])
        # most of the face is swapped (not its feathered rim, eyes, brows and mouth)
        assert covered.sum() > 15000 and changed.sum() > 0.5 * covered.sum()
