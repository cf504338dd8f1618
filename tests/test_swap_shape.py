"""The full swap renders the source's 3DMM shape on the target's pose and expression (stream.render.swap_shape)."""
from __future__ import annotations

import numpy as np
import pytest

from model.dense_fit import landmark_vertices
from model.morphable import MorphableModel, Whitening
from stream.outputs import FrameRenderer
from stream.render.swap_shape import ShapeSwap, shape_swap, shape_weights
from stream.render.texture import FaceTexture, boundary_distance
from tracking.face import Face


@pytest.fixture(scope="module")
def morph():
    return MorphableModel.load()


def _params(seed: int) -> np.ndarray:
    """Real parameters (62,): the mean pose, a random shape and expression of about one standard deviation."""
    wh = Whitening.load("v1")
    rng = np.random.default_rng(seed)
    p = wh.mean.astype(np.float64).copy()
    p[12:] += rng.normal(0, 1, 50) * wh.std[12:]
    return p.astype(np.float32)


@pytest.mark.parametrize("convention", ["v1", "v2"])
def test_full_weight_gives_the_source_shape_on_the_target_pose_and_expression(morph, convention):
    tgt, src = _params(0), _params(1)
    roi = np.array([100, 50, 400, 350], np.float32)
    ext = np.zeros((1, morph.dense_basis.w_ext.shape[-1]), np.float32) if morph.dense_basis.w_ext is not None else None
    v = morph.dense(tgt[None], roi[None], convention, ext)[0]
    mixed = tgt.copy()
    mixed[12:52] = src[12:52]  # the target's pose and expression, the source's shape
    expect = morph.dense(mixed[None], roi[None], convention, ext)[0]
    n = len(v)
    swap = ShapeSwap(np.arange(n), np.ones(n, np.float32),
                     morph.dense_basis.w_shp.reshape(-1, 40).astype(np.float32), src[12:52])
    got = swap.apply(v, tgt, roi)
    assert np.abs(expect - v)[:, :2].max() > 3.0  # the shapes differ by pixels
    np.testing.assert_allclose(got[:, :2], expect[:, :2], atol=0.01)  # x, y exactly (z up to v2's shift)
    np.testing.assert_allclose(got[:, 2] - got[:, 2].min(), expect[:, 2] - expect[:, 2].min(), atol=0.5)


def test_weights_keep_the_contour_and_the_holes_where_the_target_has_them(morph):
    w = shape_weights(morph, boundary_distance(morph.uv, morph.tri))
    lv = landmark_vertices(morph)
    edge = boundary_distance(morph.uv, morph.tri)
    assert w[edge < 1e-6].max() == 0.0  # the face's contour
    assert w[lv[60:68]].max() == 0.0 and w[lv[36:48]].max() == 0.0  # the inner mouth and the eyes
    assert w[lv[30]] == pytest.approx(1.0)  # the nose tip: the source's
    assert (w > 0.99).mean() > 0.2


def test_renderer_uses_the_source_shape_unless_keeping_the_target_eyes(morph):
    """FrameRenderer moves the target's vertices by the texture's shape (a texture without one, or the kept target
    eyes, render the target's own mesh)."""
    tgt, src = _params(2), _params(3)
    roi = np.array([60, 20, 260, 220], np.float32)
    v = morph.dense(tgt[None], roi[None])[0].astype(np.float32)
    lm = morph.landmarks(tgt[None], roi[None])[0].astype(np.float32)
    face = Face(frame=0, time=0.0, track_id=1, box=np.zeros(4, np.float32), roi=roi, pose=np.zeros(6, np.float32),
                landmarks=lm, params=tgt, vertices=v)
    n = len(v)
    uv = morph.uv * 63
    tex = FaceTexture(np.full((n, 3), 128, np.float32), np.ones(n, bool), np.full(3, 128, np.float32))
    tex.image = np.full((64, 64, 3), 128, np.float32)
    tex.image[:, ::4] = 250  # stripes: where the mesh lies shows in the result
    import cv2

    tex.image_lab = cv2.cvtColor(tex.image / 255, cv2.COLOR_BGR2Lab)
    tex.image_valid = np.ones((64, 64), bool)
    tex.uv, tex.edge = uv.astype(np.float32), boundary_distance(morph.uv, morph.tri)
    frame = np.full((240, 320, 3), 90, np.uint8)
    r = FrameRenderer("swap", morph, False)
    r.set_swap_texture(tex)
    own = r.render(frame, [face])
    tex.shape = src[12:52]
    r.set_swap_texture(tex)
    shaped = r.render(frame, [face])
    assert shape_swap(morph, tex) is not None
    assert np.abs(shaped.astype(int) - own).max() > 50  # the stripes moved
    r.set_swap_texture(tex, keep_target_eyes=True)
    kept = r.render(frame, [face])
    tex.shape = None
    r.set_swap_texture(tex, keep_target_eyes=True)
    assert np.array_equal(kept, r.render(frame, [face]))


def test_keep_target_eyes_flag_reaches_the_renderer(morph):
    """``--swap-keep-target-eyes`` (config ``swap_keep_target_eyes``) sets the renderer's option; default off."""
    import types

    from stream.assemble import make_renderer
    from stream.cli import parse
    from stream.config import load_config

    engine = types.SimpleNamespace(aligner=types.SimpleNamespace(morph=morph))
    assert make_renderer(load_config(), engine, "swap").keep_target_eyes is False
    _, cfg = parse(["--source", "x.mp4", "--mode", "swap", "--swap-keep-target-eyes"])
    assert make_renderer(cfg, engine).keep_target_eyes is True
