"""Contact sheet of face-profiled training samples (model.data.profile), label landmarks drawn in green.

    python bench/profile_samples.py [--cache ~/.cache/damdnet/photocache] [--png bench/profile_samples.png]
    python bench/profile_samples.py --human --cache ~/.cache/damdnet/humancache --png bench/_work/human_samples.jpg

Each row: the cached photo's centre crop (what the teacher fitted), then training crops re-rendered at target yaws
-75, -45, -20, +20, +45, +75 degrees with augmentation on (jitter, rotation, flips, colour), so a flip can show a
target yaw mirrored.

``--human`` (a human-fit cache, ``model.data.cache build-human``): the first tile shows the human landmarks (red)
and the fit's 68 model points (green) on the centre crop; the second a PLAIN training sample (augmented, maybe
flipped) with the human landmarks carried through its transforms (red) and its exact label (green); then the
profiled samples. Thumbnails (``--scale``), JPEG: the photos are research data, the sheet is our rendered samples.
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
    p.add_argument("--human", action="store_true", help="a human-fit cache: human landmarks and plain samples too")
    p.add_argument("--scale", type=float, default=1.5, help="tile scale (120 px crops)")
    a = p.parse_args(argv)
    cache = PhotoCache.load(a.cache)
    morph = MorphableModel.load()
    s = CacheSampler(cache, morph, Augment(), ProfileConfig())
    rng = np.random.default_rng(a.seed)
    pool = s.human_rows if a.human else s.profilable
    if a.human and not len(pool):
        print(f"error: {a.cache} has no human-fit rows (python -m model.data.cache build-human)", file=sys.stderr)
        return 2
    # human sheets: spread the picks over the fits' yaw so turned faces show too
    if a.human:
        yaw = np.abs(pose_from_params(cache.params[pool])[:, 0])
        order = pool[np.argsort(yaw)]
        picks = order[np.linspace(0, len(order) - 1, a.photos).round().astype(int)]
    else:
        picks = rng.choice(pool, a.photos, replace=False)
    rows = []
    for i in picks:
        real = cache.params[i]
        yaw0 = float(pose_from_params(real[None])[0, 0])
        tiles = [cache.image(int(i))[OFFSET:OFFSET + 120, OFFSET:OFFSET + 120].copy()]
        if a.human:
            draw(tiles[0], cache.landmarks[i] - OFFSET, (0, 0, 255))
            draw(tiles[0], label_landmarks(morph, real), (0, 255, 0))
            out = s.sample_full(int(i), rng, profiled=False)
            vis = out.crop.copy()
            draw(vis, out.landmarks, (0, 0, 255))
            draw(vis, label_landmarks(morph, out.label), (0, 255, 0))
            tiles.append(vis)
        for target in YAWS:
            s.target_pose = lambda _r, _g, t=target: (t - yaw0, float(rng.uniform(-10, 10)))
            crop, label, _ = s.sample(int(i), rng, profiled=True)
            vis = crop.copy()
            draw(vis, label_landmarks(morph, label), (0, 255, 0))
            tiles.append(vis)
        rows.append(np.concatenate(tiles, 1))
    sheet = np.concatenate(rows, 0)
    sheet = cv2.resize(sheet, None, fx=a.scale, fy=a.scale, interpolation=cv2.INTER_AREA if a.scale < 1 else
                       cv2.INTER_LINEAR)
    cv2.imwrite(a.png, sheet, [cv2.IMWRITE_JPEG_QUALITY, 80] if a.png.lower().endswith((".jpg", ".jpeg")) else [])
    kind = "human fit + plain sample + " if a.human else "source + "
    print(f"wrote {a.png}: {len(picks)} photos x ({kind}{len(YAWS)} profiled samples)")
    return 0


def label_landmarks(morph, label: np.ndarray) -> np.ndarray:
    """Crop image px (68, 2) of a label's 68 model landmarks."""
    lm = morph.landmarks_crop(label[None])[0]
    return np.stack([lm[:, 0], 121 - lm[:, 1]], 1)


def draw(img: np.ndarray, pts: np.ndarray, colour: tuple) -> None:
    for x, y in np.asarray(pts)[:, :2]:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(img, (int(round(x)), int(round(y))), 1, colour, -1)


if __name__ == "__main__":
    sys.exit(main())
