#!/usr/bin/env python3
"""Which quantile of a track's lip gap is its neutral mouth: jawOpen against MediaPipe's mouth opening per quantile.

Replays the blendshape neutral (``tracking.blendshape_tracker.NeutralAdapter``) with the lip gap's and chin's
quantile set to each value on tracks NPZ files (``run_stream.py --tracks NAME_MODEL.npz``, default settings) and
compares jawOpen with a MediaPipe reference (``../shared/tools/expression_check.py mediapipe``)::

    python bench/neutral_quantile.py NPZ_DIR REFS_DIR VIDEO,VIDEO,... 0.5,0.2,0.1

Per model and quantile: jawOpen's correlation with MediaPipe's mouth opening per video, the 95th percentile of
jawOpen on MediaPipe's closed-mouth frames (its lowest fifth), the mean jawOpen. Choose on training videos only.
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import blendshapes as B  # noqa: E402
from model.morphable import MorphableModel  # noqa: E402
from stream.analyze import neutral_config  # noqa: E402
from stream.config import load_config  # noqa: E402
from tracking.blendshape_tracker import NeutralAdapter  # noqa: E402

if len(sys.argv) != 5:
    raise SystemExit(__doc__)
NPZ, REFS, VIDS, QS = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), [float(x) for x in sys.argv[4].split(",")]
basis = MorphableModel.load().sparse
cfg = neutral_config(load_config(None).blendshapes)  # configs/default.yaml's blendshapes.warmup, .adapt


def refs(v: str) -> list:
    return json.loads((REFS / f"{v}.json").read_text())["frames"]


for m in ("3ddfa-v2-mb05", "damdnet"):
    for q in QS:
        quant = B.QUANTILES.copy(); quant[B.SIG['gap']] = q; quant[B.SIG['jaw']] = q
        res = []
        for v in VIDS:
            z = np.load(NPZ / f'{v}_{m}.npz')
            tid = max(z['track_ids'], key=lambda t: len(z[f'track{t}_frames']))
            fr, t, P, E, pose = (z[f'track{tid}_{k}'] for k in ('frames', 'times', 'params', 'ext', 'pose'))
            pts, ppts = B.model_points(basis, P, E)
            sig, prior = B.raw_signals(pts), B.raw_signals(ppts)
            a = NeutralAdapter(cfg, quant); out = []
            for i in range(len(fr)):
                a.update(sig[i], prior[i], t[i], pose[i]); out.append(a.offset.copy())
            co = B.coefficients(B.activations(sig, prior + np.array(out)))
            ref = refs(v); keep = [i for i, f in enumerate(fr) if f < len(ref) and ref[f] is not None]
            mo = np.array([ref[fr[i]][2] for i in keep]); jaw = co[keep, B.INDEX['jawOpen']]
            rest = mo <= np.percentile(mo, 20)
            res.append((np.corrcoef(jaw, mo)[0, 1] if jaw.std() > 0 else 0, np.percentile(jaw[rest], 95), jaw.mean()))
        r = np.array(res)
        print(m, 'q', q, 'jaw corr', np.round(r[:, 0], 2), 'mean %.3f' % r[:, 0].mean(), 'rest p95', np.round(r[:, 1], 2), 'mean jaw', np.round(r[:, 2], 2))
