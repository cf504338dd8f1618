#!/usr/bin/env python3
"""MediaPipe FaceMesh (``refine_landmarks=True``, 478 points) on videos or images: the eyelid and lip teacher.

Run with the MediaPipe venv's python (recipe in ``bench/bench_mediapipe.py``), never the project's:

    /tmp/mpvenv/bin/python bench/mediapipe_labels.py OUT.npz VIDEO_OR_IMAGE [...]

Writes ``OUT.npz`` with, per input, ``{key}`` = (T, 478, 3) float32 frame pixels (x, y; z in x's scale, MediaPipe's
relative depth), NaN rows where no face was found; ``names`` lists the keys (file stems, or stem/frame for images are
one row each). Videos are tracked (``static_image_mode=False``, one face); images are stills. MediaPipe is a tool for
labels and measurement only: never a runtime dependency of the product.
"""
from __future__ import annotations

import sys
from pathlib import Path

VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm"}


def _points(res, w: int, h: int):
    import numpy as np

    if not res.multi_face_landmarks:
        return np.full((478, 3), np.nan, np.float32)
    return np.array([[q.x * w, q.y * h, q.z * w] for q in res.multi_face_landmarks[0].landmark], np.float32)


def label_video(path: str):
    import cv2
    import mediapipe as mp
    import numpy as np

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    rows = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            rows.append(_points(mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), w, h))
    return np.stack(rows)


def label_images(paths: list[str]):
    import cv2
    import mediapipe as mp
    import numpy as np

    rows = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        for p in paths:
            bgr = cv2.imread(p)
            if bgr is None:
                rows.append(np.full((478, 3), np.nan, np.float32))
                continue
            h, w = bgr.shape[:2]
            rows.append(_points(mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), w, h))
    return np.stack(rows)


def main(argv: list[str]) -> None:
    import numpy as np

    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, inputs = argv[0], argv[1:]
    arrays: dict[str, np.ndarray] = {}
    images = [p for p in inputs if Path(p).suffix.lower() not in VIDEO_EXT]
    for p in inputs:
        if Path(p).suffix.lower() in VIDEO_EXT:
            arrays[Path(p).stem] = label_video(p)
            found = int(np.isfinite(arrays[Path(p).stem][:, 0, 0]).sum())
            print(f"{p}: {len(arrays[Path(p).stem])} frames, face in {found}", flush=True)
    if images:
        arrays["images"] = label_images(images)
        arrays["image_paths"] = np.array(images)
        print(f"{len(images)} images, face in {int(np.isfinite(arrays['images'][:, 0, 0]).sum())}", flush=True)
    np.savez_compressed(out, names=np.array(list(arrays)), **arrays)


if __name__ == "__main__":
    main(sys.argv[1:])
