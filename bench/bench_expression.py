#!/usr/bin/env python3
"""Cost of the expression stage (``model.expression_stage``) beside the aligner's network, on this CPU.

1. ms per face at batch 1 and 8: the aligner's network (crop + forward through its fast path) and the expression
   stage (patches + its network + the fit), on faces of a real video frame, for each model named.
2. File-mode frames/s of ``run_stream.py --tracks`` with ``--expression false`` (today) and ``true``, the runs
   interleaved (false, true, false, true, ...) so both see the same machine.

    python bench/bench_expression.py --video VIDEO [--weights 3ddfa-v2-mb05 damdnet] [--runs 2] [--md]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def first_face_frame(video: str):
    import cv2

    from model.detect import FaceDetector
    from model.roi import roi_from_box

    cap = cv2.VideoCapture(video)
    det = FaceDetector.create("auto", quiet=True)
    for _ in range(50):
        ok, frame = cap.read()
        if not ok:
            break
        boxes, scores = det(frame)
        if len(boxes):
            return frame, roi_from_box(boxes[np.argmax(scores)][None])
    raise SystemExit(f"no face in the first 50 frames of {video}")


def per_face_ms(weights: str, frame: np.ndarray, roi: np.ndarray, reps: int = 20, blocks: int = 9
                ) -> dict[str, float]:
    """ms per face of the network and of the stage at batch 1 and 8: ``blocks`` blocks of ``reps`` calls each, the
    two alternated block by block, and the fastest block of each kept (a shared box's neighbours only ever add
    time, so the fastest block is the closest to the work's own cost)."""
    import torch

    from model.aligner import Aligner

    torch.set_num_threads(1)
    al = Aligner.from_checkpoint(weights, device="cpu", expression=True)  # with its face scorer, as the product
    out = {}
    for b in (1, 8):
        rois = np.repeat(roi, b, axis=0)
        stage = al.expression
        al.expression = None
        for _ in range(5):
            res = al.align(frame, rois)
        job = [(frame, res.params, res.roi, res.landmarks)]
        for _ in range(5):
            stage.refine_many(job)
        net, expr = [], []
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(reps):
                al.align(frame, rois)
            net.append((time.perf_counter() - t0) / reps / b * 1e3)
            t0 = time.perf_counter()
            for _ in range(reps):
                stage.refine_many(job)
            expr.append((time.perf_counter() - t0) / reps / b * 1e3)
        al.expression = stage
        out[f"align_b{b}"], out[f"expr_b{b}"] = min(net), min(expr)
    return out


def file_fps(video: str, weights: str, expression: bool) -> float:
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--source", video, "--tracks", "/tmp/_bench_expr.csv",
           "--weights", weights, "--expression", "true" if expression else "false", "--progress", "false"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    m = re.search(r"\(([\d.]+) fps\)", res.stderr + res.stdout)
    if res.returncode or not m:
        raise SystemExit(f"run failed: {res.stderr[-500:]}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", required=True)
    ap.add_argument("--weights", nargs="+", default=["3ddfa-v2-mb05", "damdnet"])
    ap.add_argument("--runs", type=int, default=2, help="file-mode runs per setting (interleaved)")
    ap.add_argument("--md", action="store_true", help="print markdown tables")
    a = ap.parse_args(argv)
    frame, roi = first_face_frame(a.video)
    rows = []
    for w in a.weights:
        ms = per_face_ms(w, frame, roi)
        fps = {False: [], True: []}
        for _ in range(a.runs):
            for e in (False, True):
                fps[e].append(file_fps(a.video, w, e))
        rows.append((w, ms, statistics.median(fps[False]), statistics.median(fps[True])))
    print("| model | network ms/face b1 | stage ms/face b1 | stage/network b1 | network ms/face b8 | stage ms/face b8 "
          "| stage/network b8 | file fps off | file fps on | drop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w, ms, off, on in rows:
        print(f"| {w} | {ms['align_b1']:.2f} | {ms['expr_b1']:.2f} | {ms['expr_b1'] / ms['align_b1']:.0%} | "
              f"{ms['align_b8']:.2f} | {ms['expr_b8']:.2f} | {ms['expr_b8'] / ms['align_b8']:.0%} | {off:.1f} | "
              f"{on:.1f} | {1 - on / off:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
