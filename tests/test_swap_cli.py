"""End to end: `run_stream.py --mode swap` on a real video swaps the face and leaves the background untouched.

Both the swapped and a plain (`--mode none`) run go through the same H.264 encoder, so pixels away from the face
must agree between the two up to coding noise, while the face region must change.
"""
from __future__ import annotations

import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from model.morphable import MorphableModel
from model.raster.zbuffer import rasterize
from stream.render.texture import brow_polygons, feature_polygons

pytestmark = pytest.mark.slow

N_FRAMES = 24


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _run(repo_root, args: list[str]) -> None:
    r = subprocess.run([sys.executable, "run_stream.py", *args, "--weights", "3ddfa-v2-mb05", "--max-frames",
                        str(N_FRAMES), "--progress", "false"], cwd=repo_root, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr


def test_swap_changes_face_only(repo_root, assets_dir, tmp_path):
    video = assets_dir / "KwaiVGI/LivePortrait/assets/examples/driving/d9.mp4"
    swap_src = assets_dir / "LeiJiangJNU/DAMDNet/imgs/jolie.jpg"
    _run(repo_root, ["--source", str(video), "--mode", "swap", "--swap-source", str(swap_src),
                     "--out", str(tmp_path / "swap.mp4"), "--meshes", str(tmp_path / "meshes")])
    _run(repo_root, ["--source", str(video), "--mode", "none", "--out", str(tmp_path / "plain.mp4")])
    swapped, plain = _frames(tmp_path / "swap.mp4"), _frames(tmp_path / "plain.mp4")
    assert len(swapped) == len(plain) == N_FRAMES
    meshes = np.load(tmp_path / "meshes" / "track1.npz")
    morph = MorphableModel.load()
    tri = morph.tri
    h, w = plain[0].shape[:2]
    inside_diffs, outside_diffs = [], []
    for k, fi in enumerate(meshes["frames"]):
        buf = rasterize(meshes["vertices"][k], tri, None, h, w)
        face = (buf.tri_id >= 0).astype(np.uint8)
        near = cv2.dilate(face, np.ones((41, 41), np.uint8)) > 0  # face + coding spill-over margin
        diff = np.abs(swapped[fi].astype(int) - plain[fi].astype(int)).mean(axis=2)
        # the swapped skin: the face less its feathered rim and the target's own eyes, brows and mouth
        lm = meshes["vertices"][k][morph.landmark_vertices]
        kept = np.zeros_like(face)
        polys = feature_polygons(lm) + brow_polygons(lm) + [lm[48:60, :2]]
        cv2.fillPoly(kept, [np.round(p).astype(np.int32) for p in polys], 1)
        core = (cv2.erode(face, np.ones((15, 15), np.uint8)) > 0) & (cv2.dilate(kept, np.ones((9, 9), np.uint8)) == 0)
        inside_diffs.append(diff[core].mean())
        outside_diffs.append(diff[~near].mean())
    assert len(inside_diffs) >= N_FRAMES - 2, "the face should be tracked in (nearly) every frame"
    assert np.median(inside_diffs) > 8.0, f"face region barely changed: {np.median(inside_diffs):.2f}"
    assert max(outside_diffs) < 1.5, f"background changed: {max(outside_diffs):.2f}"
