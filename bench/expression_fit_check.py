#!/usr/bin/env python3
"""The expression fit alone: give it MediaPipe's eyelid and lip points as the stage's targets, and see how much of
their eye and mouth signal the fitted 68 landmarks keep (training and validation videos only).

For each video: ``run_stream.py --tracks --tracks-params`` gives the largest track's crop boxes; the aligner's network
runs on those crops; MediaPipe's points of the same frame (``bench/mediapipe_labels.py`` output, mapped to our
convention by ``LABELS/mpmap.npz``) replace points 36-67; ``model.expression_fit.fit_expression`` fits them with each
``--part-slack`` value; the figures compare the fitted landmarks' eye and mouth openness (as
``../shared/tools/expression_check.py`` defines them) with MediaPipe's:

    python bench/expression_fit_check.py --labels LABELS --weights 3ddfa-v2-mb05 --part-slack none,0.01,1 VIDEO ...

``LABELS/train_videos.npz`` holds MediaPipe's 478 points per frame under each video's stem.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.aligner import Aligner  # noqa: E402
from model.data.mediapipe_map import MediaPipeMap  # noqa: E402
from model.expression_ext import eye_aspect_ratio, mouth_openness  # noqa: E402
from model.expression_fit import FitWeights, fit_expression  # noqa: E402
from model.expression_stage import share_eye_closure, visibility_weights  # noqa: E402
from model.morphable import frame_to_crop_xy  # noqa: E402
from model.roi import crop_roi, rounded_roi  # noqa: E402


def openness_68(p: np.ndarray) -> np.ndarray:
    """(N, 68, 2) -> (N, 3): right eye, left eye, mouth openness (expression_check's definitions)."""
    return np.concatenate([eye_aspect_ratio(p), mouth_openness(p)[:, None]], axis=1)


def openness_mp(p: np.ndarray) -> np.ndarray:
    """(N, 478, 2+) MediaPipe points -> (N, 3) as ``openness_68``."""
    d = lambda a, b: np.linalg.norm(p[:, a, :2] - p[:, b, :2], axis=1)  # noqa: E731
    return np.stack([d(159, 145) / d(33, 133), d(386, 374) / d(362, 263), d(13, 14) / d(78, 308)], 1)


def figures(ours: np.ndarray, mp: np.ndarray) -> dict[str, float]:
    """Eye corr and slope (mean of both eyes), mouth corr and slope, blink depth ratio against MediaPipe."""
    eo, em = ours[:, :2].mean(1), mp[:, :2].mean(1)
    blink = em < 0.5 * np.median(em)
    depth = lambda x: (np.median(x) - x[blink].mean()) / np.median(x)  # noqa: E731
    return {"eye_corr": float(np.corrcoef(eo, em)[0, 1]), "eye_slope": float(np.polyfit(em, eo, 1)[0]),
            "mouth_corr": float(np.corrcoef(ours[:, 2], mp[:, 2])[0, 1]),
            "mouth_slope": float(np.polyfit(mp[:, 2], ours[:, 2], 1)[0]),
            "blink_depth_ratio": float(depth(eo) / depth(em)) if blink.any() else float("nan")}


def collect(aligner: Aligner, video: str, mp_points: np.ndarray, weights: str) -> tuple[np.ndarray, ...]:
    """(params (N, 62), rois (N, 4), MediaPipe points (N, 478, 3)) of the frames where both found the face."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.csv"
        subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--source", video, "--tracks", str(out),
                        "--tracks-params", "--weights", weights, "--progress", "false"], check=True,
                       capture_output=True, cwd=ROOT)
        rows = list(csv.DictReader(open(out, newline="")))
    ids = [r["track_id"] for r in rows]
    top = max(set(ids), key=ids.count)
    by_frame = {int(r["frame"]): r for r in rows if r["track_id"] == top}
    cap = cv2.VideoCapture(video)
    params, rois, mps, i = [], [], [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        r = by_frame.get(i)
        if r is not None and i < len(mp_points) and np.isfinite(mp_points[i]).all():
            roi = rounded_roi(np.array([[float(r[f"roi_{k}"]) for k in ("x1", "y1", "x2", "y2")]], np.float32))
            params.append(aligner.predict_params(crop_roi(frame, roi[0])[None])[0])
            rois.append(roi[0])
            mps.append(mp_points[i])
        i += 1
    return np.array(params), np.array(rois), np.array(mps)


def fitted_openness(aligner: Aligner, params, rois, mp, mmap: MediaPipeMap, weights: FitWeights) -> np.ndarray:
    stage = aligner.expression
    lm = aligner.morph.landmarks(params, rois, aligner.convention)[..., :2].astype(np.float64)
    lm[:, 36:68] = mmap.map(mp)
    w = visibility_weights(params)
    p_fit, ext = fit_expression(params, frame_to_crop_xy(lm, rois, aligner.convention), w, stage.fit_basis,
                                stage.exp_std, weights)
    ext = share_eye_closure(ext, w[:, 36], w[:, 42])
    return openness_68(aligner.morph.landmarks(p_fit, rois, aligner.convention, ext)[..., :2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+", help="training or validation videos (their stems name the labels)")
    ap.add_argument("--labels", required=True, help="folder with train_videos.npz and mpmap.npz")
    ap.add_argument("--weights", default="3ddfa-v2-mb05")
    ap.add_argument("--part-slack", default="none,1.0", help="ridges to compare, comma-separated (none: no slack)")
    a = ap.parse_args(argv)
    labels = Path(a.labels)
    mp_all = np.load(labels / "train_videos.npz")
    z = np.load(labels / "mpmap.npz")
    mmap = MediaPipeMap(z["index"], z["weight"])
    aligner = Aligner.from_checkpoint(a.weights, device="cpu", confidence=False, expression=True)
    data = {Path(v).stem: collect(aligner, v, mp_all[Path(v).stem], a.weights) for v in a.videos}
    print("| part_slack | video | eye corr | eye slope | mouth corr | mouth slope | blink depth ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for slack in a.part_slack.split(","):
        fw = FitWeights(part_slack=None if slack == "none" else float(slack))
        rows = []
        for name, (params, rois, mp) in data.items():
            f = figures(fitted_openness(aligner, params, rois, mp, mmap, fw), openness_mp(mp))
            rows.append(f)
            print(f"| {slack} | {name} | " + " | ".join(f"{v:.3f}" for v in f.values()) + " |")
        mean = {k: np.nanmean([r[k] for r in rows]) for k in rows[0]}
        print(f"| {slack} | **mean** | " + " | ".join(f"{v:.3f}" for v in mean.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
