#!/usr/bin/env python3
"""Does the Kalman smoothing keep blinks? Blink depth and lag of the smoothed eyes against the unsmoothed ones.

Runs ``run_stream.py --tracks`` twice per video (``--smooth none`` and the default Kalman), reads the eye aspect ratio
of the 68 landmarks (mean of both eyes, largest track) and the ``eye_close_*`` columns, and reports, over the blink
frames of the unsmoothed track (eye aspect ratio under half its median):

- depth ratio: (median - mean over the blink frames) of the smoothed EAR over the same of the unsmoothed one
  (1.0 = the smoothing keeps the whole depth; the issue asks >= 0.9);
- lag: frames by which the smoothed eye closure trails the unsmoothed one (``tracking.jitter.estimate_lag``);
- jitter between blinks: std of the frame-to-frame change of the EAR outside blinks, smoothed / unsmoothed.

    python bench/blink_smoothing.py VIDEO [VIDEO ...] [--weights 3ddfa-v2-mb05]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.expression_ext import eye_aspect_ratio  # noqa: E402
from tracking.jitter import estimate_lag  # noqa: E402


def track(video: str, weights: str, smooth: str, out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--source", video, "--tracks", str(out), "--weights",
           weights, "--smooth", smooth, "--progress", "false"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(res.stderr[-400:])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["track_id"] for r in rows]
    top = max(set(ids), key=ids.count)
    rows = [r for r in rows if r["track_id"] == top]
    frames = np.array([int(r["frame"]) for r in rows])
    lm = np.array([[[float(r[f"{a}{i}"]) for a in "xy"] for i in range(68)] for r in rows])
    closure = np.array([(float(r["eye_close_r"]) + float(r["eye_close_l"])) / 2 for r in rows])
    return frames, eye_aspect_ratio(lm).mean(1), closure


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--weights", default="3ddfa-v2-mb05")
    a = ap.parse_args(argv)
    print("| video | blink frames | depth ratio smoothed / raw | lag (frames) | jitter between blinks, smoothed / raw |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for video in a.videos:
            f0, ear0, c0 = track(video, a.weights, "none", Path(tmp) / "raw.csv")
            f1, ear1, c1 = track(video, a.weights, "kalman", Path(tmp) / "kal.csv")
            common, i0, i1 = np.intersect1d(f0, f1, return_indices=True)
            ear0, ear1, c0, c1 = ear0[i0], ear1[i1], c0[i0], c1[i1]
            blink = ear0 < 0.5 * np.median(ear0)
            if not blink.any():
                print(f"| {Path(video).stem} | 0 | - | - | - |")
                continue
            d0 = np.median(ear0) - ear0[blink].mean()
            d1 = np.median(ear1) - ear1[blink].mean()
            calm = ~np.convolve(blink, np.ones(7), "same").astype(bool)
            jit = np.std(np.diff(ear1)[calm[1:]]) / np.std(np.diff(ear0)[calm[1:]])
            lag = estimate_lag(c1, c0, max_lag=5)
            print(f"| {Path(video).stem} | {int(blink.sum())} | {d1 / d0:.2f} | {lag:.2f} | {jit:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
