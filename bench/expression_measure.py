#!/usr/bin/env python3
"""Eyes and mouths of our tracks against MediaPipe FaceMesh: the expression issue's table, before and after.

For each video and model, runs ``run_stream.py --tracks`` (default settings) with ``--expression false`` (the network's
expression alone: before) and ``true`` (the expression stage: after), then ``../shared/tools/expression_check.py
compare`` against a MediaPipe reference made once per video with the MediaPipe venv:

    MPVENV/bin/python ../shared/tools/expression_check.py mediapipe VIDEO REFS/NAME.json
    python bench/expression_measure.py --refs REFS VIDEO [VIDEO ...] [--weights 3ddfa-v2-mb05 damdnet] [--json OUT]

Prints a markdown table (blink depth ratio, eye corr, false_closed, mouth slope, mouth corr, wink corr).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT.parent / "shared" / "tools" / "expression_check.py"
COLS = ("blink_frames", "blink_depth_ratio", "eye_corr", "false_closed", "mouth_slope", "mouth_corr", "wink_corr")


def tracks(video: str, weights: str, expression: bool, out: Path, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "run_stream.py"), "--source", video, "--tracks", str(out), "--weights", weights,
           "--expression", "true" if expression else "false", "--progress", "false", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"run failed on {video}: {res.stderr[-400:]}")


def compare(ref: Path, csv: Path) -> dict:
    res = subprocess.run([sys.executable, str(CHECK), "compare", str(ref), str(csv), "--json"], capture_output=True,
                         text=True)
    if res.returncode:
        raise SystemExit(f"compare failed: {res.stderr[-400:]}")
    return json.loads(res.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--refs", required=True, help="folder of MediaPipe references, NAME.json per video stem")
    ap.add_argument("--weights", nargs="+", default=["3ddfa-v2-mb05", "damdnet"])
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more run_stream.py flags")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for video in a.videos:
            name = Path(video).stem
            ref = Path(a.refs) / f"{name}.json"
            for w in a.weights:
                for e in (False, True):
                    out = Path(tmp) / f"{name}_{w}_{e}.csv"
                    tracks(video, w, e, out, a.extra)
                    r = compare(ref, out)
                    rows.append({"video": name, "weights": w, "expression": e, **r})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| video | model | stage | " + " | ".join(COLS) + " |")
    print("|---|---|---|" + "---:|" * len(COLS))
    for r in rows:
        vals = [f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in COLS]
        print(f"| {r['video']} | {r['weights']} | {'after' if r['expression'] else 'before'} | " + " | ".join(vals)
              + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
