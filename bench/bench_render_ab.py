"""Swap and mesh-mode timings of one tree of the code (run it once per tree, alternating, for a before/after A/B on
loaded cores): the face of bench/bench_render.py (640x480, ~253 px), median ms.

    python bench/bench_render_ab.py TREE     e.g. a `git worktree`/`git archive` of the commit before, then this one
"""
import os
import sys
import time
from pathlib import Path
tree=sys.argv[1]; sys.path.insert(0, tree)
import numpy as np, cv2
from model.morphable import MorphableModel, Whitening
try:
    from model.raster.zbuffer import RasterBuffers
except ImportError:  # a tree before the rename (model/render/raster.py)
    from model.render.raster import RasterBuffers
from stream.render.swap import build_texture, swap_faces
from stream.render.overlays import render_overlay
H,W=480,640
img=cv2.imread(str(__import__('pathlib').Path(os.environ.get('DAMDNET_ASSETS', Path(__file__).resolve().parents[2] / 'shared' / 'assets')) / 'LeiJiangJNU/DAMDNet/imgs/obama.jpg')); frame=cv2.resize(img,(W,H),interpolation=cv2.INTER_AREA)
morph=MorphableModel.load(); mean=Whitening.load('v1').mean[None].astype(np.float32)
rois=np.array([[125,40,515,430],[400,150,640,390]],np.float32); params=np.repeat(mean,2,0)
verts=morph.dense(params,rois).astype(np.float32); lms=morph.landmarks(params,rois).astype(np.float32)
kw = {'uv': morph.uv} if hasattr(morph,'uv') else {}
if not kw:
    from stream.render.swap import face_region; kw={'region': face_region(morph.dense_basis.u, morph.sparse.u)}
tex=build_texture(frame, verts[0], morph.tri, morph.grid_shape, landmarks=lms[0], **kw)
try:  # the full swap renders the source's 3DMM shape on each target (FrameRenderer): timed with the swap
    from stream.render.swap_shape import shape_swap
    tex.shape = (params[0, 12:52] * 0.5).astype(np.float32)  # a shape other than the targets'
    shaped = shape_swap(morph, tex)
except ImportError:
    shaped = None
def shape(i):
    return verts[i] if shaped is None else shaped.apply(verts[i], params[i], rois[i])
out=frame.copy(); buf=RasterBuffers.create(H,W,3)
def t(fn, n):
    fn(); fn(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); fn(); ts.append(time.perf_counter()-t0)
    return np.median(ts)*1e3
one=t(lambda: swap_faces(frame,[shape(0)],morph.tri,tex,landmarks=[lms[0]],out=out,buffers=buf),120)
two=t(lambda: swap_faces(frame,[shape(0), shape(1)],morph.tri,tex,landmarks=list(lms),out=out,buffers=buf),80)/2
faces=[{'vertices':verts[0]}]
mesh={m: t(lambda: render_overlay(frame,faces,m,morph.tri,out=out,buffers=buf,reference=morph.dense_basis.u,grid_shape=morph.grid_shape),60) for m in ('mesh','wireframe','depth','pncc')}
print(tree.split('/')[-1], f"swap1 {one:.2f} swap2/face {two:.2f} " + " ".join(f"{k} {v:.2f}" for k,v in mesh.items()), f"load {os.getloadavg()[0]:.1f}", flush=True)
