#!/usr/bin/env python3
"""ARKit blendshapes of our tracks against MediaPipe FaceMesh: the avatar issue's must-show figures, per video.

For each video, runs ``run_stream.py --tracks`` (a CSV: it has the 52 blendshape columns; default settings, extra
flags after ``--extra``) and compares its largest track with a MediaPipe reference made once per video with the
MediaPipe venv (``../shared/tools/expression_check.py``: per frame the subject's right eye, left eye and mouth
openness)::

    MPVENV/bin/python ../shared/tools/expression_check.py mediapipe VIDEO REFS/NAME.json
    python bench/blendshape_check.py [VIDEO ...] [--refs REFS] [--json OUT] [--extra --weights damdnet]
    python bench/blendshape_check.py --csv TRACKS.csv --ref REF.json      # a tracks CSV made already

Without videos it runs the four measurement videos (d6, d9, d10, d14 of the assets) against ``--refs`` (default
``../labels/refs``). Figures (MediaPipe's closure of an eye = 1 - its openness / its median; blink frames: MediaPipe's
mean eye openness under 0.5 x its median, open frames over 0.8 x, as ``expression_check`` defines them):

- ``blink_corr_l``, ``blink_corr_r``: correlation of eyeBlinkLeft / eyeBlinkRight with MediaPipe's closure of that
  eye (target >= 0.8); ``jaw_corr``: jawOpen with MediaPipe's mouth openness (>= 0.85);
- ``blink_hit``: share of (blink frame, eye) pairs with eyeBlink >= 0.5 (>= 0.9); ``open_ok``: share of (open
  frame, eye) pairs with eyeBlink <= 0.3 (>= 0.98).
The tuning videos are s20, s29, d11 (training data); these four only measure.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFS = ROOT.parent / "labels" / "refs"
MEASUREMENT = ("d6", "d9", "d10", "d14")
DRIVING = "KwaiVGI/LivePortrait/assets/examples/driving"
TARGETS = {"blink_corr_l": 0.8, "blink_corr_r": 0.8, "jaw_corr": 0.85, "blink_hit": 0.9, "open_ok": 0.98}


def run_tracks(video: str, out: Path, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--source", video, "--tracks", str(out),
           "--progress", "false", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"run failed on {video}: {res.stderr[-600:]}")


def read_blendshapes(tracks_csv: str | Path) -> dict[int, dict[str, float]]:
    """The largest track of a tracks CSV: {frame: {column: value}} for the blendshape columns we compare."""
    with open(tracks_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{tracks_csv}: no rows")
    if "eyeBlinkLeft" not in rows[0]:
        raise SystemExit(f"{tracks_csv}: no blendshape columns (written before the ARKit blendshapes?)")
    ids = [r["track_id"] for r in rows]
    top = max(set(ids), key=ids.count)
    cols = ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen")
    return {int(r["frame"]): {c: float(r[c]) for c in cols} for r in rows if r["track_id"] == top}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def compare(ref_json: str | Path, tracks_csv: str | Path) -> dict:
    """The must-show figures of one tracks CSV against its MediaPipe reference (see the module docstring)."""
    ref = json.loads(Path(ref_json).read_text())["frames"]
    ours = read_blendshapes(tracks_csv)
    idx = [i for i, r in enumerate(ref) if r is not None and i in ours]
    if len(idx) < 10:
        raise SystemExit(f"only {len(idx)} frames in common")
    m = np.array([ref[i] for i in idx], np.float64)  # right eye, left eye, mouth openness
    bl = np.array([ours[i]["eyeBlinkLeft"] for i in idx])
    br = np.array([ours[i]["eyeBlinkRight"] for i in idx])
    jaw = np.array([ours[i]["jawOpen"] for i in idx])
    close_r = 1 - m[:, 0] / np.median(m[:, 0])
    close_l = 1 - m[:, 1] / np.median(m[:, 1])
    me = m[:, :2].mean(1)
    blink = me < 0.5 * np.median(me)
    opened = me > 0.8 * np.median(me)
    res = {"frames": len(idx), "blink_frames": int(blink.sum()), "open_frames": int(opened.sum()),
           "blink_corr_l": _corr(bl, close_l), "blink_corr_r": _corr(br, close_r), "jaw_corr": _corr(jaw, m[:, 2]),
           "blink_hit": float(np.mean(np.r_[bl[blink], br[blink]] >= 0.5)) if blink.any() else float("nan"),
           "open_ok": float(np.mean(np.r_[bl[opened], br[opened]] <= 0.3)) if opened.any() else float("nan"),
           "rest_blink_p95": float(np.percentile(np.r_[bl[opened], br[opened]], 95)) if opened.any() else None,
           "jaw_max": float(jaw.max())}
    res["pass"] = {k: bool(res[k] >= v) for k, v in TARGETS.items() if res[k] == res[k]}
    return res


def _find_video(name: str) -> str:
    for root in (ROOT.parent / "shared" / "assets",):
        p = root / DRIVING / f"{name}.mp4"
        if p.is_file():
            return str(p)
    raise SystemExit(f"{name}.mp4 not found under ../shared/assets/{DRIVING}")


def table(rows: list[dict]) -> str:
    cols = ("frames", "blink_frames", "blink_corr_l", "blink_corr_r", "jaw_corr", "blink_hit", "open_ok")
    out = ["| video | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        vals = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        out.append(f"| {r['video']} | " + " | ".join(vals) + " |")
    out.append("| target | | | " + " | ".join(f">= {TARGETS[c]}" for c in cols[2:]) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", help="videos (default: the measurement videos d6, d9, d10, d14)")
    ap.add_argument("--refs", default=str(DEFAULT_REFS), help="folder of MediaPipe references, NAME.json per stem")
    ap.add_argument("--csv", default=None, help="compare this tracks CSV instead of running (needs --ref)")
    ap.add_argument("--ref", default=None, help="the MediaPipe reference of --csv")
    ap.add_argument("--keep", default=None, help="keep the tracks CSVs in this folder")
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more run_stream.py flags")
    a = ap.parse_args(argv)
    if a.csv:
        if not a.ref:
            ap.error("--csv needs --ref")
        print(json.dumps(compare(a.ref, a.csv), indent=1))
        return 0
    videos = a.videos or [_find_video(n) for n in MEASUREMENT]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.keep) if a.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for video in videos:
            name = Path(video).stem
            out = folder / f"{name}.csv"
            run_tracks(video, out, a.extra)
            rows.append({"video": name, **compare(Path(a.refs) / f"{name}.json", out)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
