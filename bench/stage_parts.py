#!/usr/bin/env python3
"""The expression stage's cost part by part at batch 1 (microseconds, the fastest of 5 blocks of many calls), and the
aligner's network beside it, on one face of a shared photo; ``TREE`` (env) picks the tree to time, so two trees can be
alternated on one machine::

    TREE=/path/to/tree python bench/stage_parts.py
"""
import sys, time, numpy as np, cv2
import os; sys.path.insert(0, os.environ.get("TREE", str(__import__("pathlib").Path(__file__).resolve().parents[1])))
from model.aligner import Aligner
import model.expression_stage as S
from model.expression_patches import PARTS, RIGHT_EYE, LEFT_EYE, MOUTH, cut, frames_and_affines, units_to_frame
from model.expression_fit import fit_expression
from model.morphable import frame_to_crop_xy
import torch; torch.set_num_threads(1)
al = Aligner.from_checkpoint("3ddfa-v2-mb05", device="cpu", expression=True)
fr = cv2.imread(str(__import__("model.assets", fromlist=["resolve_root"]).resolve_root(None) / "LeiJiangJNU/DAMDNet/imgs/jolie.jpg"))
roi = np.array([[80, 60, 330, 310]], np.float32)
st = al.expression; al.expression = None
res = al.align(fr, roi)
lm = res.landmarks.astype(np.float64)[..., :2]; n = 1
T = {}
def tm(name, f, reps=2000):
    for _ in range(50): f()
    best = 1e9
    for b in range(5):
        t = time.perf_counter()
        for _ in range(reps): f()
        best = min(best, (time.perf_counter() - t) / reps * 1e6)
    print(f"{name:28s} {best:8.1f} us")
bases, affines = frames_and_affines(lm)
aff = {p.name: affines[i] for i, p in enumerate(PARTS)}
tm("frames_and_affines", lambda: frames_and_affines(lm))
tm("cut x3 + gray", lambda: [S._gray(cut(fr, aff[s.name][0], s)) for s in (RIGHT_EYE, LEFT_EYE, MOUTH)])
eyes = np.stack([S._gray(cut(fr, aff[s.name][0], s)) for s in (RIGHT_EYE, LEFT_EYE)]); mouths = S._gray(cut(fr, aff[MOUTH.name][0], MOUTH))[None]
e = (eyes[:, None] / 255.0 - 0.5).astype(np.float32); m = (mouths[:, None] / 255.0 - 0.5).astype(np.float32)
tm("net (ort)", lambda: st._run(e, m), 500)
pe, pm = st._run(e, m)
tm("units_to_frame x3", lambda: [units_to_frame(u, *bases[i].transpose(1, 0, 2)) for i, u in enumerate((pe[:1], pe[1:], pm))])
tm("points_many", lambda: st.points_many([(fr, res.landmarks)]), 500)
targets = lm.copy()
tm("frame_to_crop_xy", lambda: frame_to_crop_xy(targets, res.roi, st.convention))
crop = frame_to_crop_xy(targets, res.roi, st.convention)
tm("visibility_weights", lambda: S.visibility_weights(res.params))
w = S.visibility_weights(res.params)
tm("fit_expression", lambda: fit_expression(res.params, crop, w, st.fit_basis, st.exp_std, st.weights), 500)
p_fit, ext = fit_expression(res.params, crop, w, st.fit_basis, st.exp_std, st.weights)
tm("share_eye_closure", lambda: S.share_eye_closure(ext, w[:, 36], w[:, 42]))
job = [(fr, res.params, res.roi, res.landmarks)]
tm("refine_many total", lambda: st.refine_many(job), 500)
tm("align (network) b1", lambda: al.align(fr, roi), 300)
