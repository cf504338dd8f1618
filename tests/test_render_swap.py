"""Face swap: texture sampling/visibility/symmetry fill, swap mask guarantees, colour transfer, several targets."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from model.raster.mesh import grid_mirror
from model.raster.zbuffer import rasterize
from stream.render import swap as swap_module
from stream.render.swap import BLENDS, build_texture, face_region, swap_faces
from tests.test_render_overlays import synthetic_face

GRID = (16, 16)


def gradient_image(h=120, w=200, seed=0):
    """A smooth colourful image (so bilinear samples are predictable) plus a little noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, 128 + 60 * np.sin(x / 9) * np.cos(y / 7)], -1)
    img += np.random.default_rng(seed).normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def texture():
    v, tri, _ = synthetic_face(100, 60, size=70)
    return build_texture(gradient_image(), v, tri, GRID, texture_size=64), tri


def test_texture_samples_visible_vertices_bilinearly():
    img = gradient_image()
    v, tri, _ = synthetic_face(100, 60, size=70)
    tex = build_texture(img, v, tri, GRID, texture_size=61)  # 61 - 1 = 4 x 15: every vertex sits on a texel
    assert tex.valid.mean() > 0.85
    k = np.nonzero(tex.valid)[0]
    x, y = v[k, 0], v[k, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = img.astype(np.float64)
    expect = (f[y0, x0] * (1 - fx) * (1 - fy) + f[y0, x0 + 1] * fx * (1 - fy) + f[y0 + 1, x0] * (1 - fx) * fy
              + f[y0 + 1, x0 + 1] * fx * fy)
    np.testing.assert_allclose(tex.colors[k], expect, atol=0.6)  # OpenCV remap: 1/32 px weights
    assert tex.image.shape == (61, 61, 3) and tex.image_valid.mean() > 0.8
    np.testing.assert_allclose(tex.mean_color, tex.image[tex.image_valid].mean(0), atol=1e-3)


def _detail(img: np.ndarray) -> np.ndarray:
    return cv2.Laplacian(np.ascontiguousarray(img, np.float32), cv2.CV_32F)


def _mirror_detail_used(tex) -> tuple[np.ndarray, np.ndarray]:
    """Texels filled from the mirror (away from the fill's border), and |detail - mirror's detail| there."""
    ok = tex.image_valid
    filled = ~ok & ok[:, ::-1]
    core = cv2.erode(filled.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    diff = np.abs(_detail(tex.image) - _detail(tex.image[:, ::-1]))
    return core, diff


def test_out_of_image_texels_are_filled_by_symmetry():
    img = gradient_image()
    v, tri, _ = synthetic_face(20, 60, size=70)  # left third of the face is left of x = 0
    tex = build_texture(img, v, tri, GRID, texture_size=64)
    out = ~tex.valid
    assert out.sum() > 20 and (v[out, 0] < 0).any()
    core, diff = _mirror_detail_used(tex)
    assert core.sum() > 50
    # the mirror's detail (its own noise) over a smooth tone: the detail matches, the image itself need not
    assert diff[core].mean() < 0.1 * np.abs(_detail(tex.image))[core].mean() + 0.5


def test_occluded_vertices_are_invalid_and_mirrored():
    # fold the grid in the middle: the left half lies exactly behind the right half (same x, y, lower z)
    rows, cols = GRID
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    x = 100 + np.abs(c - 7.5) * 4
    z = np.where(c < 8, -20.0, 0.0)
    v = np.stack([x, 30 + r * 4.0, z], -1).reshape(-1, 3).astype(np.float32)
    _, tri, _ = synthetic_face(0, 0, rows=rows, cols=cols)
    tex = build_texture(gradient_image(), v, tri, GRID, min_facing=-2.0, depth_tol=1.0, texture_size=64)
    left = (c < 8).ravel()
    assert not tex.valid[left].any()
    assert tex.valid[~left].mean() > 0.8
    core, diff = _mirror_detail_used(tex)
    assert core[:, :28].mean() > 0.8
    assert diff[core].mean() < 0.1 * np.abs(_detail(tex.image))[core].mean() + 0.5


def _source_landmarks() -> np.ndarray:
    """Eyes and inner mouth of a source on the synthetic face (70 px at (100, 60)): eyes 15 px wide and 6 px open
    (aspect 0.4), right eye corners (75, 50) - (90, 50), left 35 px to the right; the rest zeros."""
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [[75, 50], [80, 47], [85, 47], [90, 50], [85, 53], [80, 53]]
    lm[42:48] = lm[36:42] + [35, 0]
    lm[60:68] = [[90, 80], [100, 76], [110, 80], [110, 80], [110, 80], [100, 86], [90, 80], [90, 80]]
    return lm


@pytest.mark.parametrize("features", [True, False], ids=["full-swap", "skin-only"])
def test_eyes_and_mouth_of_the_source_are_not_trusted(features):
    """The source's inner eyes (full swap: its lids are its own) or whole eyes (skin only) and its inner mouth are
    left out of the texture."""
    img = gradient_image()
    v, tri, _ = synthetic_face(100, 60, size=70)
    lm = _source_landmarks()
    tex = build_texture(img, v, tri, GRID, landmarks=lm, texture_size=64, features=features)
    near_eye = np.hypot(v[:, 0] - 82.5, v[:, 1] - 50) < (3 if features else 5)
    near_mouth = np.hypot(v[:, 0] - 100, v[:, 1] - 81) < 3
    assert near_eye.any() and near_mouth.any()
    assert not tex.valid[near_eye].any()
    lid = np.abs(v[:, 0] - 82.5) < 3
    lid &= (v[:, 1] > 42) & (v[:, 1] < 45)  # just above the upper lid: the source's own in the full swap only
    assert lid.any() and tex.valid[lid].all() == features
    # the inner mouth is one fill colour (the lips' or, without lips, the trusted face's), not the source's pixels
    mouth = tex.colors[near_mouth]
    assert np.ptp(mouth, axis=0).max() < 1.0
    own = img[np.round(v[near_mouth, 1]).astype(int), np.round(v[near_mouth, 0]).astype(int)].astype(np.float32)
    assert np.abs(own - mouth).max() > 5


def test_face_region_from_landmark_outline():
    rng = np.random.default_rng(0)
    dense = rng.uniform(-2, 2, (500, 3))
    t = np.linspace(np.pi, 2 * np.pi, 17)
    lm = np.zeros((68, 3))
    lm[:17, 0], lm[:17, 1] = np.cos(t), np.sin(t)      # jaw: lower half circle (y up)
    lm[17:27, 0], lm[17:27, 1] = np.linspace(-1, 1, 10), 0.3
    lm[8] = (0, -1, 0)
    reg = face_region(dense, lm, forehead=0.5)
    inside = (np.hypot(dense[:, 0], dense[:, 1]) < 0.95) & (dense[:, 1] < 0) | \
             ((np.abs(dense[:, 0]) < 0.95) & (dense[:, 1] > 0.05) & (dense[:, 1] < 0.9))
    outside = (np.abs(dense[:, 0]) > 1.05) | (dense[:, 1] > 1.0) | (dense[:, 1] < -1.05)
    assert (reg[inside] == 1).all() and (reg[outside] == 0).all()


@pytest.mark.parametrize("blend", BLENDS)
def test_swap_leaves_pixels_outside_the_faces_untouched(texture, blend):
    tex, tri = texture
    frame = np.random.default_rng(3).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    v1, _, _ = synthetic_face(60, 60, size=64)
    v2, _, _ = synthetic_face(150, 55, size=56)
    before = frame.copy()
    out = swap_faces(frame, [v1, v2], tri, tex, blend=blend)
    assert np.array_equal(frame, before)
    covered = np.zeros(frame.shape[:2], np.uint8)
    for v in (v1, v2):
        covered |= (rasterize(v, tri, None, *frame.shape[:2]).tri_id >= 0).astype(np.uint8)
    dilated = cv2.dilate(covered, np.ones((3, 3), np.uint8)) > 0
    changed = (out != frame).any(2)
    assert np.array_equal(out[~dilated], frame[~dilated])
    assert not (changed & ~(covered > 0)).any()  # in fact nothing changes outside the rendered faces
    for cx, cy in ((60, 60), (150, 55)):  # both faces swapped
        assert changed[cy - 10:cy + 10, cx - 10:cx + 10].mean() > 0.8


def test_swap_in_place_with_buffers_matches(texture):
    tex, tri = texture
    frame = gradient_image(seed=5)
    v, _, _ = synthetic_face(80, 60, size=70)
    expected = swap_faces(frame, [v], tri, tex)
    img = frame.copy()
    assert swap_faces(img, [v], tri, tex, out=img) is img
    assert np.array_equal(img, expected)
    assert np.array_equal(swap_faces(frame, [], tri, tex), frame)


def synthetic_landmarks(cx, cy, size):
    """68 points: a jaw arc (chin at cy + 0.4 size), brows above the eyes; eyes and mouth left to the caller."""
    lm = np.zeros((68, 3), np.float32)
    t = np.linspace(np.pi, 0, 17)
    lm[:17, 0] = cx + 0.45 * size * np.cos(t)
    lm[:17, 1] = cy - 0.05 * size + 0.45 * size * np.sin(t)
    lm[17:27, 0] = np.linspace(cx - 0.4 * size, cx + 0.4 * size, 10)
    lm[17:27, 1] = cy - 0.28 * size
    return lm


def test_target_eyes_and_mouth_are_kept(texture):
    tex, tri = texture
    frame = np.random.default_rng(4).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    v, _, _ = synthetic_face(100, 60, size=80)
    lm = synthetic_landmarks(100, 60, 80)
    lm[36:42, :2] = [[72, 48], [77, 45], [82, 45], [88, 48], [82, 51], [77, 51]]  # target eye: centre (80, 48)
    lm[42:48, :2] = lm[36:42, :2] + [40, 0]
    lm[60:68, :2] = [[88, 80], [100, 75], [112, 80], [112, 80], [112, 80], [100, 88], [88, 80], [88, 80]]
    out = swap_faces(frame, [v], tri, tex, landmarks=[lm])
    assert np.array_equal(out[47:50, 79:82], frame[47:50, 79:82])      # right eye centre
    assert np.array_equal(out[47:50, 119:122], frame[47:50, 119:122])  # left eye centre
    assert np.array_equal(out[80:83, 99:102], frame[80:83, 99:102])    # inner mouth
    assert (out[65:70, 95:105] != frame[65:70, 95:105]).all(2).mean() > 0.5  # between them: swapped
    # a mesh that is not cut to the face (no face region, no boundary feather) stops at the landmark outline:
    # the mesh corners stay untouched
    uncut = dataclasses.replace(tex, edge=None)
    corner = (slice(25, 29), slice(62, 65))  # inside the eroded mesh, outside the outline
    assert np.array_equal(swap_faces(frame, [v], tri, uncut, landmarks=[lm])[corner], frame[corner])
    tex_region = dataclasses.replace(uncut, region=np.ones(len(tex.colors), np.float32))
    assert (swap_faces(frame, [v], tri, tex_region, landmarks=[lm])[corner] != frame[corner]).any()


def test_colour_matching_moves_toward_the_target_skin_but_keeps_the_source_tone():
    """The colour transfer takes the source's tone part of the way to the target's (its exposure and white
    balance) without bleaching it into the target's; at the face's contour, where the blend starts, it meets the
    target's fully (no tone step at the edge)."""
    tri = synthetic_face(0, 0)[1]
    v, _, _ = synthetic_face(100, 60, size=80)
    red = np.zeros((120, 200, 3), np.uint8)
    red[..., 2] = 220
    red[..., 1] = 40
    tex = build_texture(red, v, tri, GRID, texture_size=64)
    skin = np.full((120, 200, 3), (90, 140, 190), np.uint8)  # BGR, a plain warm skin tone
    matched = swap_faces(skin, [v], tri, tex, relight=False)
    raw = swap_faces(skin, [v], tri, tex, color_match=False, relight=False)
    centre = (slice(50, 70), slice(90, 110))
    err_matched = np.abs(matched[centre].astype(int) - skin[centre]).mean()
    err_raw = np.abs(raw[centre].astype(int) - skin[centre]).mean()
    assert 0.2 * err_raw < err_matched < 0.6 * err_raw
    edge = (slice(55, 65), slice(61, 63))  # the contour's ramp (EDGE_FEATHER): the swap is partly there
    err_edge = np.abs(matched[edge].astype(int) - skin[edge]).mean()
    err_edge_raw = np.abs(raw[edge].astype(int) - skin[edge]).mean()
    assert err_edge_raw > 10 and err_edge / err_edge_raw < 0.6 * err_matched / err_raw


def test_colour_statistics_are_smoothed_over_time_per_target():
    """With a per-target state, a one-frame change of the target's skin moves the swapped colour only partly
    (exponential average, weight 0.8 on the past); without it, fully."""
    tri = synthetic_face(0, 0)[1]
    v, _, _ = synthetic_face(100, 60, size=80)
    tex = build_texture(np.full((120, 200, 3), (80, 120, 200), np.uint8), v, tri, GRID, texture_size=64)
    skin_a = np.full((120, 200, 3), (90, 140, 190), np.uint8)
    skin_b = np.full((120, 200, 3), (60, 160, 120), np.uint8)  # a sudden colour change (light, exposure)
    centre = (slice(50, 70), slice(90, 110))
    state: dict = {}
    for _ in range(5):
        steady = swap_faces(skin_a, [v], tri, tex, relight=False, color_states=[state])
    assert set(state) == {"mt", "st"}
    smoothed = swap_faces(skin_b, [v], tri, tex, relight=False, color_states=[state])
    direct = swap_faces(skin_b, [v], tri, tex, relight=False)
    jump_smoothed = np.abs(smoothed[centre].astype(int) - steady[centre]).mean()
    jump_direct = np.abs(direct[centre].astype(int) - steady[centre]).mean()
    assert jump_direct > 10
    assert jump_smoothed < 0.4 * jump_direct


def _eyed_landmarks(closed: bool = False) -> np.ndarray:
    lm = synthetic_landmarks(100, 60, 80)
    lm[36:42, :2] = [[72, 48], [77, 45], [82, 45], [88, 48], [82, 51], [77, 51]]  # target eye: centre (80, 48)
    lm[42:48, :2] = lm[36:42, :2] + [40, 0]
    if closed:  # the right eye (36-41) blinks
        lm[[37, 38, 40, 41], 1] = 48.5
    lm[60:68, :2] = [[88, 80], [100, 75], [112, 80], [112, 80], [112, 80], [100, 88], [88, 80], [88, 80]]
    return lm


def test_full_swap_shows_the_source_brows_and_keep_target_eyes_keeps_them(texture):
    """Default: only the target's inner eyes and inner mouth show through; its brows and the skin around its eyes
    are the source's. With keep_target_eyes (today's behaviour before the full swap) its brows and eyes stay."""
    tex, tri = texture
    frame = np.random.default_rng(6).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    v, _, _ = synthetic_face(100, 60, size=80)
    lm = _eyed_landmarks()
    brow = (slice(int(lm[19, 1]) - 1, int(lm[19, 1]) + 2), slice(int(lm[19, 0]) - 1, int(lm[19, 0]) + 2))
    below_eye = (slice(57, 59), slice(79, 82))  # under the lower lid: the source's lid in the full swap
    in_ellipse = (slice(53, 55), slice(79, 82))  # under the lower lid, inside the kept eye's ellipse
    full = swap_faces(frame, [v], tri, tex, landmarks=[lm])
    kept = swap_faces(frame, [v], tri, tex, landmarks=[lm], keep_target_eyes=True)
    for out in (full, kept):
        assert np.array_equal(out[47:50, 79:82], frame[47:50, 79:82])  # the inner eye: the target's own
        assert np.array_equal(out[80:83, 99:102], frame[80:83, 99:102])  # the inner mouth
    assert (full[brow] != frame[brow]).all(2).mean() > 0.5 and (full[below_eye] != frame[below_eye]).all()
    assert np.array_equal(kept[brow], frame[brow]) and np.array_equal(kept[in_ellipse], frame[in_ellipse])


def test_closed_target_eye_shows_the_source_lids(texture):
    """A blinking target has no inner eye to show: the source's lids cover it (no hole, no ring)."""
    tex, tri = texture
    frame = np.random.default_rng(7).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    v, _, _ = synthetic_face(100, 60, size=80)
    opened = swap_faces(frame, [v], tri, tex, landmarks=[_eyed_landmarks()])
    closed = swap_faces(frame, [v], tri, tex, landmarks=[_eyed_landmarks(closed=True)])
    assert np.array_equal(opened[47:50, 79:82], frame[47:50, 79:82])
    assert (closed[46:51, 76:85] != frame[46:51, 76:85]).any(2).all()
    assert np.array_equal(closed[47:50, 119:122], frame[47:50, 119:122])  # the other eye is still open


def test_hole_ramps_are_smooth():
    """Every hole gets a feather: the swap's share falls to 0 at the target's inner-eye edge over several pixels
    (``HOLE_FEATHER`` x the eye's width), without a step: the same smoothstep ramp as the face's contour."""
    tri = synthetic_face(0, 0)[1]
    v, _, _ = synthetic_face(100, 60, size=100)
    white = np.full((120, 200, 3), 255, np.uint8)
    tex = build_texture(white, v, tri, GRID, texture_size=64)
    frame = np.zeros((120, 200, 3), np.uint8)
    lm = synthetic_landmarks(100, 60, 100)
    lm[36:42, :2] = [[60, 50], [72, 44], [84, 44], [100, 50], [84, 56], [72, 56]]  # 40 px wide, centre (80, 50)
    lm[42:48, :2] = lm[36:42, :2] + [60, 0]
    lm[60:68, :2] = [[88, 85], [100, 82], [112, 85], [112, 85], [112, 85], [100, 90], [88, 85], [88, 85]]
    out = swap_faces(frame, [v], tri, tex, landmarks=[lm], color_match=False, relight=False, blend="alpha")
    profile = out[25:51, 80, 1].astype(float)  # down from the forehead into the eye's hole (its edge near y = 42)
    assert profile[-1] == 0 and profile[0] > 250
    ramp = np.nonzero((profile > 5) & (profile < 250))[0]
    feather = swap_module.HOLE_FEATHER * 40  # px: the eye is 40 px wide
    assert feather >= 3
    assert len(ramp) >= min(feather - 1, 4), f"the hole's edge ramps over {len(ramp)} px (feather {feather:.1f} px)"
    # no step: a smoothstep over the feather rises at most 1.5 / feather of the way a pixel (a cut edge: all of it)
    assert np.abs(np.diff(profile)).max() < 1.6 / feather * 255


def _reference_ramp(shape: tuple[int, int], poly: np.ndarray, feather: float) -> np.ndarray:
    """A hole's ramp from OpenCV's signed distance to the polygon (``cv2.pointPolygonTest``): 0 inside, min(distance /
    feather, 1) outside; NaN on the edge itself (either side is right)."""
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    r = np.empty(shape)
    for y in range(shape[0]):
        for x in range(shape[1]):
            d = cv2.pointPolygonTest(contour, (float(x), float(y)), True)
            r[y, x] = np.nan if abs(d) < 1e-3 else (0.0 if d > 0 else min(-d / feather, 1.0))
    return r


def test_hole_ramp_is_the_smoothstep_of_the_distance_to_the_polygon():
    """``swap_kernels.hole_ramp`` (the distance splatted segment by segment, inside by scanline parity) against
    OpenCV's point-polygon distance on every pixel: an eye-like hole, a concave one, one clipped by a second polygon
    (the larger ramp: 0 only where both overlap) and one reaching past the image."""
    from stream.render import swap_kernels

    t = np.linspace(0, 2 * np.pi, 26, endpoint=False)
    eye = np.stack([40 + 22 * np.cos(t), 30 + 8 * np.sin(t)], 1)
    concave = np.array([[10, 10], [60, 12], [35, 30], [62, 50], [8, 48]], np.float64)
    shifted = eye + [9.5, 3.2]
    edge = eye - [35, 0]  # partly left of the image
    smooth = lambda r: r * r * (3 - 2 * r)  # noqa: E731
    for poly, clip, feather in ((eye, None, 4.5), (concave, None, 6.0), (eye, shifted, 3.0), (edge, None, 5.0)):
        alpha = np.full((60, 80), 0.5, np.float32)
        swap_kernels.hole_ramp(alpha, poly, np.zeros((0, 2)) if clip is None else clip, feather)
        ref = _reference_ramp(alpha.shape, poly, feather)
        if clip is not None:
            ref = np.fmax(ref, _reference_ramp(alpha.shape, clip, feather))
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(alpha[ok], 0.5 * smooth(ref[ok]), atol=1e-4)
        assert (alpha == 0).sum() > 50 and (alpha[ok] < 0.5 - 1e-4).sum() > (alpha == 0).sum()


def _eyed_texture():
    """A full-swap texture of the synthetic face (70 px at (100, 60)) with :func:`_source_landmarks`' eyes."""
    v, tri, _ = synthetic_face(100, 60, size=70)
    lm = _source_landmarks()
    return build_texture(gradient_image(), v, tri, GRID, landmarks=lm, texture_size=64), v, tri, lm


def test_source_eyes_keep_the_source_outline_where_the_mesh_puts_it_and_blink_with_the_target():
    """The eyes the full swap shows are the source's own (its photo's eye landmarks) carried by the mesh: on a
    target mesh that is the source's moved and scaled, they are the source's eyes moved and scaled the same way,
    whatever the target's eye outline; the upper lid follows the target's opening over its open level."""
    tex, v, _, src_lm = _eyed_texture()
    scale, shift = 1.2, np.array([13.0, -4.0])
    target_v = v.copy()
    target_v[:, :2] = v[:, :2] * scale + shift
    expected = src_lm[36:48] * scale + shift
    lm = np.zeros((68, 2))
    lm[36:42] = [[88, 52], [94, 49], [100, 49], [106, 52], [100, 55], [94, 55]]  # a target eye 18 px wide, 6 open
    lm[42:48] = lm[36:42] + [42, 0]
    state: dict = {}
    shown = swap_module.source_eyes(target_v, tex, lm, state)
    assert np.abs(shown - expected).max() < 0.05
    assert np.allclose(state["eye_open"], 6 / 18)
    half = lm.copy()
    half[[37, 38, 43, 44], 1] += 3  # both upper lids half way down: opening 3 of 6
    shown = swap_module.source_eyes(target_v, tex, half, state)
    lower = expected[[5, 4, 11, 10]]
    assert np.abs(shown[[1, 2, 7, 8]] - (lower + 0.5 * (expected[[1, 2, 7, 8]] - lower))).max() < 0.05
    assert np.abs(shown[[0, 3, 4, 5, 6, 9, 10, 11]] - expected[[0, 3, 4, 5, 6, 9, 10, 11]]).max() < 0.05
    assert np.allclose(state["eye_open"], 6 / 18)  # a blink leaves the open level as it is
    wide = lm.copy()
    wide[[37, 38, 43, 44], 1] -= 1.8  # eyes opened wide: 7.8 of 6
    shown = swap_module.source_eyes(target_v, tex, wide, state)
    level = 6 / 18 + swap_module.OPEN_RATE * (7.8 / 18 - 6 / 18)  # the open level moves a little toward it
    assert np.allclose(state["eye_open"], level)
    k = (7.8 / 18) / level
    assert 1.2 < k < swap_module.OPEN_MAX
    assert np.abs(shown[[1, 2, 7, 8]] - (lower + k * (expected[[1, 2, 7, 8]] - lower))).max() < 0.05


def test_the_target_inner_eye_is_laid_into_the_shown_eye():
    """The target's iris moves with its eye coordinates into the eye the swap shows: a dot at the target's eye
    centre lands at the shown eye's centre, a dot on its upper lid on the shown upper lid; far from the eyes
    nothing changes."""
    frame = np.full((100, 160, 3), 200, np.uint8)
    lm = np.zeros((68, 2))
    lm[36:42] = [[40, 50], [46, 46], [54, 46], [60, 50], [54, 54], [46, 54]]  # 20 px wide, 8 open, centre (50, 50)
    lm[42:48] = lm[36:42] + [60, 0]
    frame[49:52, 49:52] = (0, 0, 255)  # the iris, at the target's eye centre
    shown = lm[36:48].copy() + [6, 3]  # the source's eyes: 6 px right, 3 down, 1.2x as open
    shown[[1, 2, 7, 8], 1] -= 0.8
    shown[[4, 5, 10, 11], 1] += 0.8
    out = frame.copy()
    swap_module.lay_target_eyes(out, frame, lm, shown)
    assert (out[53, 56] == (0, 0, 255)).all() and (out[50, 50] == 200).all()
    assert np.array_equal(out[:, :30], frame[:, :30]) and np.array_equal(out[70:], frame[70:])
    closed = lm.copy()
    closed[[37, 38, 40, 41], 1] = 50  # the target's right eye shut: no hole there, nothing laid
    out2 = frame.copy()
    swap_module.lay_target_eyes(out2, frame, closed, shown)
    assert np.array_equal(out2[:, :80], frame[:, :80])


def test_full_swap_shows_the_target_iris_inside_the_source_outline():
    """Through the product path (``swap_faces`` with a track's state): where the source's eye opening lies off the
    target's, the hole is the source's and shows the target's iris moved into it, not the target's own lids."""
    tex, v, tri, src_lm = _eyed_texture()
    frame = np.full((120, 200, 3), 180, np.uint8)
    lm = synthetic_landmarks(100, 60, 70)
    lm[36:42, :2] = src_lm[36:42] + [0, -3]  # the target's eyes 3 px above the source's outline on this mesh
    lm[42:48, :2] = src_lm[42:48] + [0, -3]
    lm[60:68, :2] = src_lm[60:68]
    c = lm[36:42, :2].mean(0).round().astype(int)
    frame[c[1] - 1:c[1] + 2, c[0] - 1:c[0] + 2] = (255, 0, 0)  # the target's iris
    state: dict = {}
    out = swap_faces(frame, [v], tri, tex, landmarks=[lm], color_states=[state])
    shown = state["shown_eyes"]
    assert np.abs(shown[:6] - src_lm[36:42]).max() < 0.5
    s = shown[:6].mean(0).round().astype(int)
    assert (out[s[1], s[0]] == (255, 0, 0)).all()
    ref = swap_module.holes_reference(frame, [lm], [shown])
    assert np.array_equal(out[s[1] - 1:s[1] + 2, s[0] - 1:s[0] + 2], ref[s[1] - 1:s[1] + 2, s[0] - 1:s[0] + 2])


def test_eye_opening_is_eye_aspect_ratio_for_one_eye():
    """The swap's per-eye opening and the expression model's vectorised eye aspect ratio are one measure."""
    from model.expression_ext import eye_aspect_ratio

    lm = np.random.default_rng(8).uniform(0, 100, (68, 2))
    assert np.allclose([swap_module.eye_opening(lm[36:42]), swap_module.eye_opening(lm[42:48])],
                       eye_aspect_ratio(lm[None])[0])
