"""Face/no-face crops of the product's synthetic source, for fine-tuning the face classifier (``model.confidence``):
the synthetic face is a 3DMM mesh cut at the face outline (no hair, ears or neck), which photos never look like.

    python -m stream.confidence_crops --out /tmp/synthetic_crops.npz
    python -m model.train_confidence finetune --weights W --data DATA.npz --extra /tmp/synthetic_crops.npz

Lives in ``stream`` because it renders with ``stream.synthetic`` (``model`` never imports ``stream``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from model.data.photos import crop_with_clutter, jitter_roi, photometric
from model.roi import crop_roi
from model.train_confidence import NEG_AUG, POS_AUG, pool_crop
from stream.synthetic import SyntheticSource

SYNTH_FACES = ("faces300w/helen_trainset/100032540_1.jpg", "faces300w/afw/1051618982_1.jpg",
               "faces300w/helen_trainset/100040721_1.jpg", "drawn")


def synthetic_set(assets: Path, n_per: int = 300, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of the product's synthetic source (``stream.synthetic``: a 3DMM face without hair or ears, textured from
    training photos of ``SYNTH_FACES`` or drawn; never its default obama texture, which the tests use): per face
    ``n_per`` jittered face crops (label 1) and ``n_per // 3`` crops shifted off the face (label 0), pooled."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, face in enumerate(SYNTH_FACES):
        src = SyntheticSource(seconds=8.0, fps=30.0, seed=k + 1, face=face if face == "drawn" else assets / face)
        for j in range(n_per + n_per // 3):
            i = int(rng.integers(len(src)))
            img = src.render(i)
            base = src.rois[i]
            if j < n_per:
                roi, angle = jitter_roi(base, POS_AUG, rng)
                crop = crop_with_clutter(img, None, roi, angle, rng)[0]
                if rng.random() < 0.5:
                    crop = np.ascontiguousarray(crop[:, ::-1])
                crop = photometric(crop, POS_AUG, rng)
                ys.append(1.0)
            else:
                side = base[2] - base[0]
                a = rng.uniform(0, 2 * np.pi)
                d = side / np.sqrt(2) * rng.uniform(0.6, 1.2)
                roi = base + np.array([np.cos(a), np.sin(a), np.cos(a), np.sin(a)], np.float32) * d
                crop = photometric(crop_roi(img, roi), NEG_AUG, rng)
                ys.append(0.0)
            xs.append(pool_crop(crop))
    return np.stack(xs), np.array(ys, np.float32), np.array(["synthetic"] * len(ys))


def main(argv: list[str] | None = None) -> int:
    from model.assets import resolve_root

    p = argparse.ArgumentParser(prog="python -m stream.confidence_crops", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per-face", type=int, default=300)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    x, y, _ = synthetic_set(resolve_root(), a.per_face)
    np.savez(a.out, x=x, y=y, seconds=np.array(time.perf_counter() - t0))
    print(f"{len(y)} crops ({int(y.sum())} faces) in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
