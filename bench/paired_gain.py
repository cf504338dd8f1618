"""Is checkpoint B better than A on the validation set, beyond the noise of 300 images? (issue 12)

    python bench/paired_gain.py A B [--crop gt|detector] [--images DIR] [--boots 4000]

Both are evaluated on the same images (``model.evaluate``, 3DDFA protocol); the mean-of-bins NME difference B - A
gets a paired bootstrap: images are resampled within each yaw bin, the same draw for both models, so what the images
share cancels. Prints both means, the difference with its standard error and 95% interval, and each bin's difference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VALIDATION = "XgTu/2DASL/test_codes/test.data/AFLW-2000-3D"


def mean_of_bins(v: np.ndarray, bins: np.ndarray) -> float:
    """Mean over the non-empty bins of each bin's mean of ``v``."""
    return float(np.mean([v[bins == b].mean() for b in np.unique(bins)]))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, bins: np.ndarray, boots: int = 4000,
                     seed: int = 0) -> np.ndarray:
    """(boots,) mean-of-bins differences b - a, resampling images within each bin, the same draw for both."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(bins == k) for k in np.unique(bins)]
    out = np.empty(boots)
    for i in range(boots):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        out[i] = mean_of_bins(b[idx], bins[idx]) - mean_of_bins(a[idx], bins[idx])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="model name or checkpoint (the reference)")
    p.add_argument("b", help="model name or checkpoint (the candidate)")
    p.add_argument("--crop", choices=["gt", "detector"], default="gt")
    p.add_argument("--images", default=None, help=f"labelled images (default ASSETS/{VALIDATION})")
    p.add_argument("--boots", type=int, default=4000)
    a = p.parse_args(argv)
    import torch

    from model.aligner import Aligner
    from model.assets import AssetStore
    from model.detect import FaceDetector
    from model.evaluate import evaluate
    from model.groundtruth import find_labels
    from model.metrics import yaw_bin

    torch.set_num_threads(1)
    store = AssetStore()
    labels = find_labels(Path(a.images) if a.images else store.root / VALIDATION)
    det = FaceDetector.create("auto", store) if a.crop == "detector" else None
    reports = [evaluate(Aligner.from_checkpoint(w, device="cpu", store=store), labels, a.crop, det) for w in (a.a, a.b)]
    names = sorted(set(reports[0].per_image) & set(reports[1].per_image))
    va, vb = (np.array([r.per_image[n] for n in names]) for r in reports)
    bins = np.array([yaw_bin(reports[0].yaw[n]) for n in names])
    d = paired_bootstrap(va, vb, bins, a.boots)
    diff = mean_of_bins(vb, bins) - mean_of_bins(va, bins)
    lo, hi = np.percentile(d, [2.5, 97.5])
    print(f"{len(names)} images, {a.crop} crops")
    print(f"A {a.a}: mean of bins {mean_of_bins(va, bins):.3f}")
    print(f"B {a.b}: mean of bins {mean_of_bins(vb, bins):.3f}")
    print(f"B - A: {diff:+.3f} (paired bootstrap SE {d.std():.3f}, 95% {lo:+.3f} to {hi:+.3f})")
    for k in np.unique(bins):
        m = bins == k
        print(f"  bin {k}: {m.sum()} images, B - A {vb[m].mean() - va[m].mean():+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
