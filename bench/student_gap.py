"""Where the student lags the teacher (issue 12): on its own training data, by |yaw| bin.

    python bench/student_gap.py [--weights model/weights/damdnet.pth] [--n 60]

Two kinds of training sample, both from the photo cache (never evaluation images):

- **profiled renders** (``model.data.profile``, no augmentation): NME of the student and of the teacher against the
  exact label, and the teacher's mean signed landmark offset from the label (a slip in the render or the label
  transform shows as a bias, teacher noise does not);
- **real photos** (the centre crop of the cache, no augmentation): NME of the student against the cached
  flip-averaged teacher fit, and of the teacher's direct (not flip-averaged) fit on the stored (WebP) crop.

NME: mean landmark distance over sqrt(w * h) of the label's 68-point box, percent. If the student matches the teacher
on the renders but not on real turned photos, the gap is the synthetic-to-real gap of the large-pose data, not the
fit of what it was trained on. Prints a markdown table for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.data.cache import PhotoCache, centre_crop  # noqa: E402
from model.data.photos import Augment  # noqa: E402
from model.data.sampler import CacheSampler, ProfileConfig  # noqa: E402
from model.data.teacher import Teacher  # noqa: E402
from model.metrics import nme  # noqa: E402
from model.morphable import MorphableModel, pose_from_params  # noqa: E402

BINS = ((0, 30), (30, 60), (60, 91))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="model/weights/damdnet.pth", help="our checkpoint")
    p.add_argument("--cache", default="~/.cache/damdnet/photocache", help="the teacher-fitted photo cache")
    p.add_argument("--n", type=int, default=60, help="samples per bin and kind")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    morph = MorphableModel.load()
    cache = PhotoCache.load(Path(os.path.expanduser(a.cache)))
    ours = Teacher(a.weights, "cpu", flip=False)  # our network's real v1 params, one pass
    teacher = Teacher("3ddfa-v2-mb05", "cpu", flip=False)

    def lm(params: np.ndarray) -> np.ndarray:
        return morph.landmarks_crop(torch.as_tensor(np.asarray(params)[None]).float())[0].numpy()

    def student(crops: np.ndarray) -> np.ndarray:
        return ours.real_params(crops).cpu().numpy()

    rows = []
    # profiled renders: exact labels
    s = CacheSampler(cache, morph, Augment.off(), ProfileConfig(fraction=1.0))
    got: dict = {b: [] for b in BINS}
    k = 0
    while min(len(v) for v in got.values()) < a.n and k < 40 * a.n:
        i = int(s.profilable[(k * 7919) % len(s.profilable)])
        out = s.sample_full(i, np.random.default_rng(k), profiled=True)
        k += 1
        yaw = abs(float(pose_from_params(out.label[None])[0, 0]))
        b = next(b for b in BINS if b[0] <= yaw < b[1])
        if len(got[b]) < a.n:
            got[b].append(out)
    for b in BINS:
        crops = np.stack([o.crop for o in got[b]])
        sp, tp = student(crops), teacher.real_params(crops).cpu().numpy()
        es, et, bias = [], [], []
        for o, ps, pt in zip(got[b], sp, tp):
            la = lm(o.label)
            es.append(nme(lm(ps), la))
            et.append(nme(lm(pt), la))
            bias.append((lm(pt) - la)[:, :2] / np.sqrt(np.ptp(la[:, 0]) * np.ptp(la[:, 1])) * 100
                        * np.array([np.sign(pose_from_params(o.label[None])[0, 0]) or 1.0, 1.0]))
        rows.append(("profiled renders", b, len(es), np.median(es), np.median(et),
                     float(np.linalg.norm(np.mean(bias, 0), axis=1).mean())))
    # real photos: the cached teacher fit as the label
    yaw = np.abs(pose_from_params(cache.params)[:, 0])
    rng = np.random.default_rng(0)
    for b in BINS:
        pool = np.flatnonzero((yaw >= b[0]) & (yaw < b[1]) & ~cache.human)
        if not len(pool):
            continue
        idx = rng.choice(pool, min(a.n, len(pool)), replace=False)
        crops = np.stack([centre_crop(cache.image(int(i))) for i in idx])
        sp, tp = student(crops), teacher.real_params(crops).cpu().numpy()
        es = [nme(lm(ps), lm(cache.params[i])) for ps, i in zip(sp, idx)]
        et = [nme(lm(pt), lm(cache.params[i])) for pt, i in zip(tp, idx)]
        rows.append(("real photos", b, len(es), np.median(es), np.median(et), None))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "cpu")
    print(f"weights {a.weights}; cache {a.cache} ({len(cache)} rows); {name}")
    print("| samples | \\|yaw\\| | n | student NME vs label | teacher NME vs label | teacher bias |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, b, n, s_, t_, bias in rows:
        print(f"| {kind} | {b[0]}-{min(b[1], 90)} | {n} | {s_:.2f} | {t_:.2f} | "
              f"{'' if bias is None else f'{bias:.2f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
