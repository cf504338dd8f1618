#!/usr/bin/env python3
"""Contact sheet of blink, wink and open-mouth frames: landmark and mesh overlays before and after the expression stage.

Frames are chosen from a MediaPipe reference (``expression_check.py mediapipe`` JSON): the deepest blink (both eyes
under half their median openness), the strongest wink (one eye much more closed than the other), the widest mouth,
and a calm frame. For each, four crops around the face: landmarks before / after, mesh before / after.

    python bench/expression_sheet.py VIDEO REF.json OUT.jpg [--weights 3ddfa-v2-mb05]

The sheet shows research footage: keep it out of the repository.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def pick_frames(ref: dict) -> dict[str, int]:
    rows = ref["frames"]
    ok = [i for i, r in enumerate(rows) if r is not None]
    m = np.array([rows[i] for i in ok], np.float64)
    eye = m[:, :2].mean(1)
    med = np.median(eye)
    out = {"blink": ok[int(np.argmin(eye))], "mouth": ok[int(np.argmax(m[:, 2]))],
           "calm": ok[int(np.argmin(np.abs(eye - med) + m[:, 2]))]}
    wink = np.abs(m[:, 0] - m[:, 1]) / med
    out["wink"] = ok[int(np.argmax(wink))]
    return out


def render(video: str, weights: str, mode: str, expression: bool, out: Path, tracks: Path) -> None:
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--source", video, "--out", str(out), "--mode", mode,
           "--weights", weights, "--expression", "true" if expression else "false", "--progress", "false",
           "--no-audio", "--draw-ids", "false", "--tracks", str(tracks)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(res.stderr[-400:])


def frames_of(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    got, i = {}, 0
    while len(got) < len(wanted):
        ok, f = cap.read()
        if not ok:
            break
        if i in wanted:
            got[i] = f
        i += 1
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("ref")
    ap.add_argument("out")
    ap.add_argument("--weights", default="3ddfa-v2-mb05")
    ap.add_argument("--size", type=int, default=220, help="side of each cell, px")
    a = ap.parse_args(argv)
    picks = pick_frames(json.loads(Path(a.ref).read_text()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cells: dict[tuple[str, bool], dict[int, np.ndarray]] = {}
        box = None
        for mode in ("landmarks", "mesh"):
            for e in (False, True):
                vid, tr = Path(tmp) / f"{mode}_{e}.mp4", Path(tmp) / f"{mode}_{e}.csv"
                render(a.video, a.weights, mode, e, vid, tr)
                cells[(mode, e)] = frames_of(vid, set(picks.values()))
                if box is None:
                    import csv

                    with open(tr, newline="") as f:
                        r = [x for x in csv.DictReader(f)]
                    b = np.median([[float(x[k]) for k in ("box_x1", "box_y1", "box_x2", "box_y2")] for x in r], 0)
                    c, s = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]).max() * 0.75
                    box = np.array([c[0] - s, c[1] - s, c[0] + s, c[1] + s]).astype(int)
        for label, fi in picks.items():
            row = []
            for key in (("landmarks", False), ("landmarks", True), ("mesh", False), ("mesh", True)):
                f = cells[key][fi]
                x1, y1, x2, y2 = np.clip(box, 0, [f.shape[1], f.shape[0], f.shape[1], f.shape[0]])
                cell = cv2.resize(f[y1:y2, x1:x2], (a.size, a.size))
                text = f"{label} f{fi} {key[0]} {'after' if key[1] else 'before'}"
                cv2.putText(cell, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
                row.append(cell)
            rows.append(np.concatenate(row, 1))
    cv2.imwrite(a.out, np.concatenate(rows, 0), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"{a.out}: {picks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
