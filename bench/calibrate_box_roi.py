"""Calibrate the detector-box crop rule (``model.roi.roi_from_box``) against the landmark crop rule (issue 12).

    python bench/calibrate_box_roi.py [--per-source 80] [--append]

The network is trained, evaluated (3DDFA protocol) and tracked on the landmark crop (``roi_from_landmarks``: the
square of side max(w, h) of the 68-point box, enlarged to its diagonal). A detector crop should be that crop, as
near as a box allows. 3DDFA's rule (side 1.58 x the box's mean side, centre 0.14 x lower) was made for FaceBoxes'
boxes; YuNet's are larger. This measures, on TRAINING photos (``faces/``, never evaluation images), per detector:

- the landmark crop of each face's largest detection (the teacher's fit, re-cropped twice from its own landmarks);
- its side / the box's mean side, and its centre's offset below and right of the box centre / the box's mean side.

The medians are the rule's constants (``BOX_SIDE``, ``BOX_DOWN``); Haar's boxes are mapped onto YuNet's (its scale
and offset, ``model.detect.HaarDetector``) so that one rule serves both. Prints a markdown table; ``--append`` adds
it to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SOURCES = ("lfw_imfdb_muxspace", "facemask_chandrikadeb7", "deepface_tests")


def photos(root: Path, per_source: int) -> list[str]:
    """Every k-th photo of each training source, ``per_source`` at most per source."""
    out = []
    for s in SOURCES:
        files = sorted(f for f in glob.glob(str(root / "faces" / s / "**" / "*"), recursive=True)
                       if f.lower().endswith((".jpg", ".jpeg", ".png")))
        step = max(1, len(files) // per_source)
        out += files[::step][:per_source]
    return out


def measure(files: list[str], detector, aligner) -> np.ndarray:
    """(M, 3): landmark crop side / box mean side, centre offset right and down / box mean side, per face found."""
    import cv2

    from model.align_images import align_boxes
    from model.roi import roi_from_landmarks

    rows = []
    for f in files:
        img = cv2.imread(f, cv2.IMREAD_COLOR)
        if img is None:
            continue
        boxes, _ = detector(img)
        if not len(boxes):
            continue
        b = boxes[:1].astype(np.float64)
        res = align_boxes(img, aligner, boxes[:1], dense=False, refine=2)
        lr = roi_from_landmarks(res.landmarks)[0].astype(np.float64)
        old = (b[0, 2] - b[0, 0] + b[0, 3] - b[0, 1]) / 2
        rows.append(((lr[2] - lr[0]) / old, ((lr[0] + lr[2]) - (b[0, 0] + b[0, 2])) / 2 / old,
                     ((lr[1] + lr[3]) - (b[0, 1] + b[0, 3])) / 2 / old))
    return np.array(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-source", type=int, default=80, help="photos per training source")
    p.add_argument("--weights", default="3ddfa-v2-mb05", help="the model whose fits place the landmark crop")
    p.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    a = p.parse_args(argv)
    import torch

    from model.aligner import Aligner
    from model.assets import AssetStore
    from model.detect import HaarDetector, YuNetDetector
    from model.roi import BOX_DOWN, BOX_SIDE

    torch.set_num_threads(1)
    store = AssetStore()
    files = photos(store.root, a.per_source)
    aligner = Aligner.from_checkpoint(a.weights, device="cpu", store=store)
    lines = [f"**Detector-box crop rule** (`bench/calibrate_box_roi.py`, {len(files)} training photos of "
             f"{', '.join(SOURCES)}; landmark crop from `{a.weights}`'s fit re-cropped twice; ratios to the box's mean "
             f"side; the rule in `model/roi.py` now: side {BOX_SIDE}, down {BOX_DOWN})", "",
             "| detector | faces | side: median (p5-p95) | right: median | down: median (p5-p95) |",
             "|---|---:|---|---:|---|"]
    for det in (YuNetDetector(str(store.path("yunet"))), HaarDetector()):
        m = measure(files, det, aligner)
        q = np.percentile(m, [5, 50, 95], axis=0)
        lines.append(f"| {det.kind} | {len(m)} | {q[1, 0]:.3f} ({q[0, 0]:.3f}-{q[2, 0]:.3f}) | {q[1, 1]:+.3f} | "
                     f"{q[1, 2]:+.3f} ({q[0, 2]:+.3f}-{q[2, 2]:+.3f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.append:
        with open(Path(__file__).resolve().parent / "RESULTS.md", "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
