#!/usr/bin/env python3
"""The expression stage's cost part by part at batch 1 (microseconds, the fastest of 5 blocks of many calls), and the
aligner's network beside it, on one face of a shared photo; ``TREE`` (env) picks the tree to time, so two trees can be
alternated on one machine::

    TREE=/path/to/tree python bench/stage_parts.py
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, os.environ.get("TREE", str(Path(__file__).resolve().parents[1])))


def best_us(f: Callable[[], object], reps: int = 2000, blocks: int = 5) -> float:
    """The fastest block's mean time of one call, microseconds (50 calls of warm-up first)."""
    for _ in range(50):
        f()
    best = np.inf
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps * 1e6)
    return best


def main() -> None:
    import cv2
    import torch

    import model.expression_stage as stage_mod
    from model.aligner import Aligner
    from model.assets import resolve_root
    from model.expression_fit import fit_expression
    from model.expression_patches import PARTS, frames_and_affines
    from model.morphable import frame_to_crop_xy

    torch.set_num_threads(1)
    al = Aligner.from_checkpoint("3ddfa-v2-mb05", device="cpu", expression=True)
    frame = cv2.imread(str(resolve_root(None) / "LeiJiangJNU/DAMDNet/imgs/jolie.jpg"))
    roi = np.array([[80, 60, 330, 310]], np.float32)
    st, al.expression = al.expression, None
    res = al.align(frame, roi)
    lm = res.landmarks.astype(np.float64)[..., :2]
    _, affines = frames_and_affines(lm)
    buf = stage_mod._PatchBuffer(1)

    def cut_all() -> tuple[np.ndarray, np.ndarray]:
        for part in range(len(PARTS)):
            buf.cut(frame, affines[part, 0], part, 0)
        return buf.normalised()

    eyes, mouths = (a.copy() for a in cut_all())
    crop = frame_to_crop_xy(lm, res.roi, st.convention)
    w = stage_mod.visibility_weights(res.params)
    _, ext = fit_expression(res.params, crop, w, st.fit_basis, st.exp_std, st.weights)
    job = [(frame, res.params, res.roi, res.landmarks)]
    rows = [
        ("frames_and_affines", lambda: frames_and_affines(lm), 2000),
        ("cut x3, gray, scale", cut_all, 2000),
        ("net (its fast path)", lambda: st._run(eyes, mouths), 500),
        ("points_many", lambda: st.points_many([(frame, res.landmarks)]), 500),
        ("frame_to_crop_xy", lambda: frame_to_crop_xy(lm, res.roi, st.convention), 2000),
        ("visibility_weights", lambda: stage_mod.visibility_weights(res.params), 2000),
        ("fit_expression", lambda: fit_expression(res.params, crop, w, st.fit_basis, st.exp_std, st.weights), 500),
        ("share_eye_closure", lambda: stage_mod.share_eye_closure(ext, w[:, 36], w[:, 42]), 2000),
        ("refine_many total", lambda: st.refine_many(job), 500),
        ("align (network) b1", lambda: al.align(frame, roi), 300),
    ]
    for name, f, reps in rows:
        print(f"{name:28s} {best_us(f, reps):8.1f} us")


if __name__ == "__main__":
    main()
