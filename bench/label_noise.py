"""How noisy the teacher's on-the-fly labels of real training photos are, by cached |yaw| (issue 12).

    python bench/label_noise.py [--weights model/weights/damdnet.pth] [--n 80] [--max-flip-gap 0.08]
                                [--sheet 45,60 --sheet-out bench/turned_pool_sheet.jpg]

For photos of the teacher-fitted cache (training photos only, never evaluation images) the training sampler makes
the augmented plain crop exactly as a run does (``CacheSampler``, the config's default augmentation). On that one
crop it compares three labels:

- **teacher on the fly**: the flip-averaged teacher on the augmented crop (what ``cached_labels: false`` trains on);
- **cached**: the cached flip-averaged teacher fit of the photo carried through the crop's transforms exactly
  (``cached_labels: true``);
- **student**: our network on the crop.

NME (``model.metrics.nme``): mean 2D distance of the 68 landmarks over sqrt(w * h) of the reference's landmark box,
percent (median and mean
over the photos). ``--max-flip-gap`` keeps only photos whose cached fit agrees with its mirror (``data.turned``'s
filter); ``--sheet LO,HI`` draws 24 crops of that |yaw| range with the cached (green) and on-the-fly (red)
landmarks. Prints a markdown table for bench/RESULTS.md.
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

from model.data.cache import PhotoCache  # noqa: E402
from model.data.photos import Augment  # noqa: E402
from model.data.sampler import CacheSampler, ProfileConfig  # noqa: E402
from model.data.teacher import Teacher  # noqa: E402
from model.metrics import nme  # noqa: E402
from model.morphable import CROP_SIZE, MorphableModel, pose_from_params  # noqa: E402

BINS = ((0, 30), (30, 45), (45, 60), (60, 91))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="model/weights/damdnet.pth", help="our checkpoint (the student column)")
    p.add_argument("--cache", default="~/.cache/damdnet/photocache", help="the teacher-fitted photo cache")
    p.add_argument("--n", type=int, default=80, help="photos per |yaw| bin")
    p.add_argument("--max-flip-gap", type=float, default=None, help="only photos whose cached flip gap is at most this")
    p.add_argument("--sheet", default=None, help="LO,HI: draw a contact sheet of that cached |yaw| range")
    p.add_argument("--sheet-out", default="bench/_work/label_noise_sheet.jpg")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    morph = MorphableModel.load()
    cache = PhotoCache.load(Path(os.path.expanduser(a.cache)))
    student = Teacher(a.weights, "cpu", flip=False)  # our network's real v1 params, one pass
    teacher = Teacher("3ddfa-v2-mb05", "cpu", flip=True)
    sampler = CacheSampler(cache, morph, Augment(), ProfileConfig(fraction=0.0), cached_labels=True)
    yaw = np.abs(pose_from_params(cache.params)[:, 0])
    keep = ~cache.human
    if a.max_flip_gap is not None:
        keep &= np.nan_to_num(cache.flip_gap, nan=np.inf) <= a.max_flip_gap

    def landmarks(params: np.ndarray) -> np.ndarray:
        return morph.landmarks_crop(torch.as_tensor(np.asarray(params)).float()).numpy()

    def labelled(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augmented crops of photos ``idx`` (the same crop per photo on every call), cached and on-the-fly labels."""
        outs = [sampler.sample_full(int(i), np.random.default_rng([7, int(i)]), profiled=False) for i in idx]
        crops = np.stack([o.crop for o in outs])
        return crops, np.stack([o.label for o in outs]), teacher.real_params(crops).cpu().numpy()

    rng = np.random.default_rng(1)
    rows = []
    for lo, hi in BINS:
        pool = np.flatnonzero(keep & (yaw >= lo) & (yaw < hi))
        if not len(pool):
            continue
        idx = rng.choice(pool, min(a.n, len(pool)), replace=False)
        crops, cached, fly = labelled(idx)
        lc, lt, ls = landmarks(cached), landmarks(fly), landmarks(student.real_params(crops).cpu().numpy())
        rows.append((lo, min(hi, 90), len(pool), len(idx), nme(lt, lc), nme(ls, lc), nme(ls, lt)))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "cpu")
    print(f"weights {a.weights}; cache {a.cache} ({len(cache)} rows); max flip gap {a.max_flip_gap}; {name}")
    print("| cached \\|yaw\\| | photos | n | teacher on the fly vs cached: median (mean) | student vs cached | "
          "student vs teacher on the fly |\n|---|---:|---:|---|---|---|")
    for lo, hi, total, n, tc, sc, st in rows:
        cells = " | ".join(f"{np.median(v):.2f} ({v.mean():.2f})" for v in (tc, sc, st))
        print(f"| {lo}-{hi} | {total} | {n} | {cells} |")
    if a.sheet:
        import cv2

        lo, hi = (float(v) for v in a.sheet.split(","))
        pool = np.flatnonzero(keep & (yaw >= lo) & (yaw < hi))
        idx = np.random.default_rng(2).choice(pool, min(24, len(pool)), replace=False)
        crops, cached, fly = labelled(idx)
        tiles = []
        for crop, lc, lt, i in zip(crops, landmarks(cached), landmarks(fly), idx):
            im = cv2.resize(crop, (240, 240))
            for pts, colour in ((lc, (0, 255, 0)), (lt, (0, 0, 255))):
                for x, y in pts[:, :2]:  # crop coordinates before the y flip -> image px, 2x
                    cv2.circle(im, (int(x * 2), int((CROP_SIZE + 1 - y) * 2)), 2, colour, -1)
            cv2.putText(im, f"{yaw[i]:.0f} deg gap {cache.flip_gap[i]:.2f}", (3, 14), 0, 0.4, (255, 255, 0), 1)
            tiles.append(im)
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 6)
        sheet = np.vstack([np.hstack(tiles[k:k + 6]) for k in range(0, len(tiles), 6)])
        cv2.imwrite(a.sheet_out, sheet, [cv2.IMWRITE_JPEG_QUALITY, 80])
        print(f"sheet: {a.sheet_out} ({len(idx)} crops, cached |yaw| {lo:g}-{hi:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
