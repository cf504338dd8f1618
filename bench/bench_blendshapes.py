#!/usr/bin/env python3
"""What the ARKit blendshapes cost per face: ``tracking.blendshape_tracker.BlendshapeTracker.update`` (the analyzer's call:
two 68-point decodes, the measures, the neutral's update, the table) on a stream of frames with 1 and 4 faces.

    python bench/bench_blendshapes.py [--frames 3000] [--json OUT]

Prints ms per face (median and p95 over frames; the budget is 0.2 ms per face). Inputs are 3DMM parameters of a
face talking and blinking (random identity, moving expression), as the tracker gives them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from model.expression_ext import N_EXT
    from model.morphable import MorphableModel
    from stream.analyze import neutral_config
    from stream.config import load_config
    from tracking.blendshape_tracker import BlendshapeTracker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    basis = MorphableModel.load().sparse
    rng = np.random.default_rng(0)
    results = {}
    for n_faces in (1, 4):
        params = np.zeros((a.frames, n_faces, 62), np.float32)
        params[..., 0] = params[..., 5] = params[..., 10] = 6e-4
        params[..., 12:52] = rng.normal(0, 3e4, (1, n_faces, 40))
        params[..., 52:62] = rng.normal(0, 1.0, (a.frames, n_faces, 10))
        ext = rng.uniform(-0.2, 1.0, (a.frames, n_faces, N_EXT)).astype(np.float32)
        poses = np.zeros((n_faces, 6), np.float32)
        tracker = BlendshapeTracker(basis, neutral_config(load_config().blendshapes))
        ids = list(range(1, n_faces + 1))
        ms = np.empty(a.frames)
        for i in range(a.frames):
            t0 = time.perf_counter()
            tracker.update(ids, params[i], ext[i], poses, i / 30)
            ms[i] = (time.perf_counter() - t0) * 1e3
        ms = ms[100:]  # warm caches
        results[n_faces] = {"per_face_ms_p50": float(np.median(ms) / n_faces),
                            "per_face_ms_p95": float(np.percentile(ms, 95) / n_faces),
                            "per_frame_ms_p50": float(np.median(ms))}
        r = results[n_faces]
        print(f"{n_faces} face(s): {r['per_face_ms_p50']:.3f} ms per face (p50), {r['per_face_ms_p95']:.3f} (p95); "
              f"{r['per_frame_ms_p50']:.3f} ms per frame")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}"
    print(f"machine: {machine}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
