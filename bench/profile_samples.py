"""Contact sheet of face-profiled training samples (model.data.profile), label landmarks drawn in green.

    python bench/profile_samples.py [--cache ~/.cache/damdnet/photocache] [--png bench/profile_samples.png]

Each row: the cached photo's centre crop (what the teacher fitted), then training crops re-rendered at target yaws
-75, -45, -20, +20, +45, +75 degrees with augmentation on (jitter, rotation, flips, colour), so a flip can show a
target yaw mirrored.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("DAMDNET_ASSETS", str(HERE.parent.parent / "shared" / "assets"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from model.data.cache import OFFSET, PhotoCache  # noqa: E402
from model.data.photos import Augment  # noqa: E402
from model.data.sampler import CacheSampler, ProfileConfig  # noqa: E402
from model.morphable import MorphableModel, pose_from_params  # noqa: E402

YAWS = (-75, -45, -20, 20, 45, 75)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="~/.cache/damdnet/photocache")
    p.add_argument("--png", default=str(HERE / "profile_samples.png"))
    p.add_argument("--photos", type=int, default=6)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args(argv)
    cache = PhotoCache.load(a.cache)
    morph = MorphableModel.load()
    s = CacheSampler(cache, morph, Augment(), ProfileConfig())
    rng = np.random.default_rng(a.seed)
    picks = rng.choice(s.profilable, a.photos, replace=False)
    rows = []
    for i in picks:
        real = cache.params[i]
        yaw0 = float(pose_from_params(real[None])[0, 0])
        tiles = [cache.image(int(i))[OFFSET:OFFSET + 120, OFFSET:OFFSET + 120]]
        for target in YAWS:
            s.target_pose = lambda _r, _g, t=target: (t - yaw0, float(rng.uniform(-10, 10)))
            crop, label, _ = s.sample(int(i), rng, profiled=True)
            lm = morph.landmarks_crop(label[None])[0]
            vis = crop.copy()
            for x, y in zip(lm[:, 0], 121 - lm[:, 1]):
                cv2.circle(vis, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1)
            tiles.append(vis)
        rows.append(np.concatenate(tiles, 1))
    sheet = np.concatenate(rows, 0)
    sheet = cv2.resize(sheet, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(a.png, sheet)
    print(f"wrote {a.png}: {len(picks)} photos x (source + {len(YAWS)} profiled samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
