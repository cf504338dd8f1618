"""Overlays: every mode changes pixels only near the faces; axes follow the rotation; angle convention matches model;
a closed eye or a one-sided smile of the extended expression shows on its side only."""
from __future__ import annotations

import numpy as np
import pytest

from stream.render.overlays import MODES, faces_from_arrays, render_overlay, rotation_from_angles
from model.raster.zbuffer import RasterBuffers
from tests.test_raster_zbuffer import grid_mesh


def synthetic_face(cx, cy, size=60, rows=16, cols=16):
    """A dome-shaped grid mesh centred at (cx, cy), screen-CCW triangles, and 68 points spread over it."""
    step = size / (cols - 1)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    u, v = (c - (cols - 1) / 2) / ((cols - 1) / 2), (r - (rows - 1) / 2) / ((rows - 1) / 2)
    z = size * 0.3 * (1 - 0.5 * (u ** 2 + v ** 2))
    verts, tri = grid_mesh(rows, cols, cx - size / 2, cy - size / 2, step, z=z)
    rng = np.random.default_rng(0)
    lm = np.concatenate([rng.uniform([cx - size * 0.4, cy - size * 0.4], [cx + size * 0.4, cy + size * 0.4], (68, 2)),
                         np.zeros((68, 1))], 1).astype(np.float32)
    return verts, tri, lm


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    v1, tri, l1 = synthetic_face(60, 60)
    v2, _, l2 = synthetic_face(145, 55, size=50)
    faces = faces_from_arrays(np.stack([l1, l2]), [v1, v2], np.array([[10, -5, 3, 1, 0, 0], [0, 0, 0, 1, 0, 0]],
                                                                        np.float32))
    return frame, faces, tri, (v1, v2)


def near_faces(shape, verts, margin):
    m = np.zeros(shape, bool)
    for v in verts:
        x0, y0 = np.floor(v[:, :2].min(0) - margin).astype(int)
        x1, y1 = np.ceil(v[:, :2].max(0) + margin).astype(int)
        m[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
    return m


@pytest.mark.parametrize("mode", MODES)
def test_overlay_changes_only_pixels_near_faces(scene, mode):
    frame, faces, tri, verts = scene
    ref = np.ascontiguousarray(verts[0])  # any (V, 3) reference works for PNCC
    before = frame.copy()
    out = render_overlay(frame, faces, mode, tri, reference=ref, grid_shape=(16, 16))
    assert out is not frame and np.array_equal(frame, before)
    changed = (out != frame).any(2)
    assert changed.sum() > 100
    margin = 40 if mode == "landmarks" else 1.5  # pose axes reach half a face size beyond the points
    assert not (changed & ~near_faces(frame.shape[:2], verts, margin)).any()


def test_pncc_colours_follow_the_reference_they_are_given(scene):
    """PNCC colours the faces by the reference shape's normalised coordinates (B = z, G = y, R = x): kept from frame
    to frame for the same reference, recomputed for another one (a mirrored reference swaps the red ramp's ends)."""
    frame, faces, tri, verts = scene
    ref = np.ascontiguousarray(verts[0])
    first = render_overlay(frame, faces, "pncc", tri, reference=ref, alpha=1.0)
    again = render_overlay(frame, faces, "pncc", tri, reference=ref, alpha=1.0)
    mirrored = ref * np.array([-1, 1, 1], np.float32)
    other = render_overlay(frame, faces, "pncc", tri, reference=mirrored, alpha=1.0)
    assert np.array_equal(first, again)
    x = verts[0][:, 0]
    row = int(round(verts[0][:, 1].mean()))
    left, right = int(np.ceil(x.min())) + 2, int(np.floor(x.max())) - 2
    assert first[row, left, 2] < 60 and first[row, right, 2] > 195  # red: x from 0 at the left to 255 at the right
    assert other[row, left, 2] > 195 and other[row, right, 2] < 60
    assert np.array_equal(first[..., :2], other[..., :2])  # y and z unchanged


def test_overlay_in_place_and_with_buffers(scene):
    frame, faces, tri, verts = scene
    buf = RasterBuffers.create(*frame.shape[:2], 3)
    expected = render_overlay(frame, faces, "mesh", tri)
    img = frame.copy()
    out = render_overlay(img, faces, "mesh", tri, out=img, buffers=buf)
    assert out is img and np.array_equal(img, expected)
    assert np.array_equal(render_overlay(frame, faces, "mesh", tri, buffers=buf), expected)  # buffers reused


def test_no_faces_and_bad_mode(scene):
    frame, _, tri, _ = scene
    assert np.array_equal(render_overlay(frame, [], "mesh", tri), frame)
    with pytest.raises(ValueError):
        render_overlay(frame, [], "bogus", tri)
    with pytest.raises(ValueError):
        render_overlay(frame, [{"landmarks": np.zeros((68, 3))}], "mesh", tri)


def test_mesh_shading_is_brightest_facing_the_light(scene):
    frame, faces, tri, verts = scene
    black = np.zeros_like(frame)
    out = render_overlay(black, faces[:1], "mesh", tri, alpha=1.0, light=np.array([0, 0, 1.0]))
    # dome centre faces the camera (the light): brighter than its rim
    assert out[60, 60, 0] > out[60, 33, 0] + 10


def test_depth_near_is_bright(scene):
    frame, faces, tri, _ = scene
    out = render_overlay(np.zeros_like(frame), faces[:1], "depth", tri)
    assert out[60, 60, 0] > out[35, 35, 0]


def test_pose_axes_follow_rotation():
    frame = np.zeros((200, 200, 3), np.uint8)
    lm = np.zeros((68, 3), np.float32)
    lm[:, 0] = np.linspace(60, 140, 68)
    lm[:, 1] = np.linspace(60, 140, 68)
    lm[30] = (100, 100, 0)
    out = render_overlay(frame, [{"landmarks": lm, "rotation": np.eye(3)}], "landmarks")
    # identity: x axis (red) points right, y axis (green) points up the image
    assert out[100, 130, 2] > 200 and out[100, 130, 0] < 50
    assert out[70, 100, 1] > 200 and out[70, 100, 2] < 50


def test_rotation_from_angles_matches_model_convention():
    morph = pytest.importorskip("model.morphable")
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in rng.uniform(-60, 60, (5, 3)):
        r = rotation_from_angles(yaw, pitch, roll)
        ang = np.degrees(morph.matrix_to_angles(r[None]))[0]
        np.testing.assert_allclose(ang, [yaw, pitch, roll], atol=1e-6)


@pytest.mark.parametrize("mode", ["mesh", "wireframe", "landmarks"])
@pytest.mark.parametrize("component, moved, still", [
    (0, (36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)),  # eye_close_r: the subject's right eye shuts
    (2, (48, 49, 59, 60), (54, 53, 55, 64)),  # mouth_corner_up_r: a one-sided smile
], ids=["eye_close_r", "mouth_corner_up_r"])
def test_ext_shows_in_the_overlay(mode, component, moved, still):
    """A face record whose extended expression shuts the subject's right eye or lifts one mouth corner (value 1,
    decoded into its vertices and landmarks as the analyzer does) draws differently there, and not on the other
    side."""
    from model.expression_ext import N_EXT
    from model.morphable import MorphableModel, Whitening, pose_from_params
    from stream.outputs import FrameRenderer
    from tracking.face import Face

    morph = MorphableModel.load()
    params = Whitening.load("v1").unwhiten(np.zeros((1, 62), np.float32))
    roi = np.array([[170, 90, 470, 390]], np.float32)
    frame = np.full((480, 640, 3), 90, np.uint8)
    renderer = FrameRenderer(mode, morph, draw_ids=False)
    out, lms = [], []
    for value in (0.0, 1.0):
        ext = np.zeros((1, N_EXT), np.float32)
        ext[0, component] = value
        lm = morph.landmarks(params, roi, "v1", ext)[0].astype(np.float32)
        verts = morph.dense(params, roi, "v1", ext)[0].astype(np.float32)
        rec = Face(frame=0, time=0.0, track_id=1, box=roi[0], roi=roi[0], pose=pose_from_params(params)[0],
                   landmarks=lm, params=params[0], vertices=verts, ext=ext[0])
        out.append(renderer.render(frame, [rec]).astype(int))
        lms.append(lm)
    diff = np.abs(out[1] - out[0]).sum(2) > 12  # beyond a shading step (the dense spread leaves faint traces)

    def box(idx, margin=6):
        p = lms[0][list(idx), :2]
        (x0, y0), (x1, y1) = np.floor(p.min(0) - margin).astype(int), np.ceil(p.max(0) + margin).astype(int)
        return diff[y0:y1, x0:x1]

    changed, unchanged = box(moved).sum(), box(still).sum()
    assert changed > 20, changed  # the lids meet / the corner rises: drawn differently
    assert unchanged <= changed / 20, (unchanged, changed)  # the other side stays as it was
