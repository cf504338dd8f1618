"""The blendshape bar chart overlay (``--blendshape-bars``, key b in ``--show``): drawn beside each face, bar length
follows the value, toggled on the renderer."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from model.blendshapes import ESTIMATED, INDEX
from stream.render.overlays import draw_blendshape_bars


def _face(values: dict[str, float], box=(100, 100, 220, 240)) -> SimpleNamespace:
    b = np.zeros(52, np.float32)
    for k, v in values.items():
        b[INDEX[k]] = v
    return SimpleNamespace(box=np.array(box, np.float32), blendshape_values=b)


def _bar_fill(img: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per row of the panel: how many pixels are bar-coloured (orange-ish: high red, low blue)."""
    diff = img.astype(int)
    orange = (diff[..., 2] > 200) & (diff[..., 0] < 120)
    return orange.sum(1)


def test_bars_beside_the_face_and_proportional() -> None:
    base = np.full((480, 640, 3), 40, np.uint8)
    img = draw_blendshape_bars(base.copy(), [_face({"eyeBlinkLeft": 1.0, "jawOpen": 0.5})])
    changed = np.abs(img.astype(int) - base).sum(2) > 0
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 220 and ys.min() >= 100  # right of the box, from its top
    fill = _bar_fill(img, base)
    rows = np.flatnonzero(fill)
    row_h = int(np.clip(480 / 60, 7, 14))
    first = 100 + 2  # eyeBlinkLeft is the first estimated name
    assert ESTIMATED[0] == "eyeBlinkLeft"
    jaw_row = 100 + 2 + ESTIMATED.index("jawOpen") * row_h
    full = fill[first + 2:first + row_h - 3].max()
    half = fill[jaw_row + 2:jaw_row + row_h - 3].max()
    assert full > 0 and abs(half / full - 0.5) < 0.1
    assert set(rows) <= set(range(first, first + row_h)) | set(range(jaw_row, jaw_row + row_h))


def test_bars_switch_sides_near_the_edge_and_skip_faces_without_values() -> None:
    base = np.full((480, 640, 3), 40, np.uint8)
    img = draw_blendshape_bars(base.copy(), [_face({"jawOpen": 1.0}, box=(500, 50, 630, 200))])
    xs = np.nonzero(np.abs(img.astype(int) - base).sum(2) > 0)[1]
    assert xs.max() < 500  # no room on the right: drawn on the left of the box
    none = SimpleNamespace(box=np.array([10, 10, 50, 50], np.float32), blendshape_values=None)
    assert np.array_equal(draw_blendshape_bars(base.copy(), [none]), base)


def test_renderer_and_window_toggle(monkeypatch) -> None:
    from stream.outputs import FrameRenderer
    from stream.window import Window

    class Morph:
        tri = np.zeros((1, 3), np.int32)
        grid_shape = None
        dense_basis = SimpleNamespace(u=np.zeros((3, 3), np.float32))

    r = FrameRenderer("none", Morph(), draw_ids=False)
    base = np.full((240, 320, 3), 40, np.uint8)
    face = _face({"jawOpen": 1.0}, box=(20, 20, 100, 120))
    face.confidence, face.track_id = None, 1
    assert np.array_equal(r.render(base, [face]), base)
    r.bars = True
    assert not np.array_equal(r.render(base, [face]), base)
    toggled = []
    w = Window.__new__(Window)  # the key handling only (no display here)
    w._toggle_bars, w.mode, w.hud = (lambda: toggled.append(1)), "landmarks", True
    w.key(ord("b"))
    assert toggled == [1]
