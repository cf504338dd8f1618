#!/usr/bin/env python3
"""MediaPipe FaceMesh throughput on a video's frames (the peer side of ``bench/bench_peer_speed.py``).

Run with the MediaPipe venv's python, never the project's (mediapipe's dependencies replace our OpenCV):

    python3 -m venv /tmp/mpvenv
    /tmp/mpvenv/bin/pip install --no-deps mediapipe==0.10.14 absl-py flatbuffers attrs 'protobuf>=4.25.3,<5' \\
        numpy==1.26.4 opencv-python-headless==4.10.0.84
    /tmp/mpvenv/bin/pip install matplotlib numpy==1.26.4    # mediapipe.solutions imports it
    /tmp/mpvenv/bin/python bench/bench_mediapipe.py VIDEO [--passes 3] [--json]

All frames are decoded with OpenCV up front (decode not timed), converted to RGB, then
``mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)`` runs on
every frame: one warm-up pass, then ``--passes`` timed passes, each with a fresh FaceMesh (so each pass starts by
detecting, like a new video). frames/s = frames / wall time of the pass; the median pass is reported, with the
fraction of frames where a face was found. ``--json`` prints one JSON line (what the driver parses).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def read_frames(path: str) -> list:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"no frames in {path}")
    return frames


def one_pass(frames: list) -> tuple[float, int]:
    import mediapipe as mp

    found = 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=False) as mesh:
        t0 = time.perf_counter()
        for rgb in frames:
            res = mesh.process(rgb)
            found += bool(res.multi_face_landmarks)
        wall = time.perf_counter() - t0
    return wall, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--passes", type=int, default=3, help="timed passes after one warm-up (median reported)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    a = ap.parse_args(argv)

    import cv2
    import mediapipe as mp

    frames = read_frames(a.video)
    one_pass(frames)  # warm-up: graph set-up, model load, first inferences
    passes = []
    for _ in range(a.passes):
        wall, found = one_pass(frames)
        passes.append({"wall_s": wall, "fps": len(frames) / wall, "found": found,
                       "load": list(os.getloadavg())})
    fps = [p["fps"] for p in passes]
    mid = sorted(passes, key=lambda p: p["fps"])[len(passes) // 2]
    out = {"video": a.video, "frames": len(frames), "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
           "fps": statistics.median(fps), "fps_all": fps, "face_frac": mid["found"] / len(frames),
           "passes": passes, "mediapipe": mp.__version__, "opencv": cv2.__version__,
           "python": sys.version.split()[0], "load": list(os.getloadavg())}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"MediaPipe FaceMesh {mp.__version__} on {a.video} ({out['size']}, {out['frames']} frames): "
              f"{out['fps']:.1f} frames/s (median of {a.passes}; {', '.join(f'{v:.1f}' for v in fps)}), "
              f"face in {100 * out['face_frac']:.0f}% of frames; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
