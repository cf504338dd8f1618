#!/usr/bin/env python3
"""Peer speed: our pipeline vs MediaPipe FaceMesh on the same frames, frames/s, alternating in one run.

    /work/venv/bin/python bench/bench_peer_speed.py [--videos d0.mp4 ...] [--rounds 3] [--mp-python PY] [--no-append]

Per video, ``--rounds`` rounds, each: (a) our pipeline in file mode, in-process (``bench_pipeline.run_case``: the
pipeline as ``run_stream.py --source V --tracks T.csv`` builds it, no video out), once with ``3ddfa-v2-mb05`` and once
with the shipped DAMDNet (``damdnet``), torch threads 1; frames/s as the pipeline's Stats
report it (model load excluded, decode/detect/track/align/smooth/sink included); (b) ``bench/bench_mediapipe.py``
(one warm-up pass + 1 timed pass of FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False) over
the pre-decoded RGB frames; decode not timed) as a subprocess of the MediaPipe venv's python (``--mp-python``; it is
kept out of the project venv because its dependencies replace our OpenCV). Medians over the rounds are reported,
with os.getloadavg() next to every figure, since the 2 cores are shared.

Faces found: ours = frames with >= 1 tracked face in the tracks file / frames; MediaPipe = frames with
``multi_face_landmarks`` / frames.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets"))

from bench_pipeline import run_case  # noqa: E402
from bench_pipeline_speed import DEFAULT_VIDEO, load  # noqa: E402
from bench_smoothing import append_results, machine  # noqa: E402
from stream.config import RunConfig  # noqa: E402

ASSETS = Path(os.environ["DAMDNET_ASSETS"])
MP_SCRIPT = HERE / "bench_mediapipe.py"
OPTIONAL = [ASSETS / "KwaiVGI/LivePortrait/assets/examples/driving/d13.mp4",
            ASSETS / "cleardusk/3DDFA/demo@obama/obama.mp4"]


def ours(engine, cfg: RunConfig, video: Path) -> dict:
    from stream.sinks import load_tracks

    with tempfile.TemporaryDirectory(prefix="bench_peer_") as tmp:
        tracks = Path(tmp) / "t.csv"
        s = run_case(engine, cfg, str(video), out=None, tracks=tracks)
        frames_with_face = set()
        for t in load_tracks(tracks).values():
            frames_with_face.update(int(f) for f in t["frames"])
    return {"fps": s["fps"], "frames": s["frames_out"], "face_frac": len(frames_with_face) / max(s["frames_out"], 1),
            "load": load(), "align_p50": s["stages"].get("align", {}).get("p50")}


def mediapipe(py: str, video: Path) -> dict:
    r = subprocess.run([py, str(MP_SCRIPT), str(video), "--passes", "1", "--json"], capture_output=True, text=True,
                       timeout=600)
    line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"bench_mediapipe.py failed ({r.returncode}): {r.stderr[-2000:]}")
    out = json.loads(line)
    out["load"] = load()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="+", default=None,
                    help="videos (default d0.mp4, plus d13.mp4 and obama.mp4 with --all)")
    ap.add_argument("--all", action="store_true", help="also d13.mp4 (720x1280) and obama.mp4 (1280x720)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per video (median reported)")
    ap.add_argument("--mp-python", default="/tmp/mpvenv/bin/python", help="python of the MediaPipe venv")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to bench/RESULTS.md")
    a = ap.parse_args(argv)

    videos = [Path(v) for v in a.videos] if a.videos else [DEFAULT_VIDEO] + (OPTIONAL if a.all else [])
    have_mp = Path(a.mp_python).exists()
    if not have_mp:
        print(f"MediaPipe side skipped: {a.mp_python} not found (create the venv: see bench/bench_mediapipe.py)",
              file=sys.stderr)

    import torch

    from stream.app import build_engine
    from stream.config import load_config

    weights = {"ours, 3DDFA_V2 mb05": "3ddfa-v2-mb05", "ours, DAMDNet (`damdnet`)": "damdnet"}
    engines = {}
    for name, w in weights.items():
        cfg = load_config(None, {"weights": w, "device": "cpu", "threads": a.threads, "progress": False})
        engine = build_engine(cfg)
        run_case(engine, cfg, str(videos[0]), out=None, tracks=None)  # warm-up
        engines[name] = (engine, cfg)
    torch.set_num_threads(a.threads)

    load_before = load()
    rows = []
    mp_meta = {}
    for video in videos:
        res: dict[str, list[dict]] = {n: [] for n in list(weights) + (["MediaPipe FaceMesh"] if have_mp else [])}
        for i in range(a.rounds):
            for name, (engine, cfg) in engines.items():
                r = ours(engine, cfg, video)
                res[name].append(r)
                print(f"[{video.name} round {i + 1}] {name}: {r['fps']:.1f} fps, face {100 * r['face_frac']:.0f}%, "
                      f"align p50 {r['align_p50']} ms, load {r['load']}", flush=True)
            if have_mp:
                r = mediapipe(a.mp_python, video)
                mp_meta = r
                res["MediaPipe FaceMesh"].append(r)
                print(f"[{video.name} round {i + 1}] MediaPipe FaceMesh: {r['fps']:.1f} fps, face "
                      f"{100 * r['face_frac']:.0f}%, load {r['load']}", flush=True)
        mp_fps = statistics.median(r["fps"] for r in res["MediaPipe FaceMesh"]) if have_mp else None
        for name, rs in res.items():
            fps = [r["fps"] for r in rs]
            med = statistics.median(fps)
            mid = sorted(rs, key=lambda r: r["fps"])[len(rs) // 2]
            ratio = "-" if name.startswith("MediaPipe") or not mp_fps else f"{med / mp_fps:.3f}"
            rows.append(f"| {video.name} | {name} | {med:.1f} ({', '.join(f'{v:.1f}' for v in fps)}) | "
                        f"{100 * mid['face_frac']:.0f}% | {ratio} | {mid['load']} |")

    first = engines[next(iter(engines))][1]
    lines = [f"## Peer: MediaPipe FaceMesh ({dt.datetime.now().strftime('%Y-%m-%d %H:%M')})", "",
             f"Machine: {machine()} (uname -m {platform.machine()}, nproc {len(os.sched_getaffinity(0))}); shared "
             "cores, so both sides ran in the same process run, alternating per round. Command: "
             f"`/work/venv/bin/python bench/bench_peer_speed.py {' '.join(sys.argv[1:])}`.", "",
             f"Ours: in-process file mode as `run_stream.py --source V --tracks T.csv` builds it (no video out; "
             f"detector {first['detector']} every {first['detect_every']} frames, Kalman on), torch threads "
             f"{a.threads}; frames/s from the pipeline's Stats (model load excluded; decode, detection, tracking, "
             "alignment, smoothing and the tracks sink included), through the CPU fast path (ONNX Runtime). MediaPipe: `bench/bench_mediapipe.py` "
             "in its own venv, `FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)` on every "
             "RGB frame, pre-decoded (decode not timed, which favours MediaPipe slightly), 1 warm-up + 1 timed pass "
             f"per round. {a.rounds} rounds per video; median frames/s (all rounds in brackets); faces found and load "
             "from the median round. Ratio = ours / MediaPipe (median fps).", "",
             "| video | system | frames/s median (rounds) | faces found | ratio ours/MP | loadavg (1, 5, 15 min) |",
             "|---|---|---:|---:|---:|---|", *rows, "",
             f"Load average before {load_before}, after {load()}.", "",
             f"Versions: Python {platform.python_version()}, torch {torch.__version__}"
             + (f"; MediaPipe venv: Python {mp_meta['python']}, mediapipe {mp_meta['mediapipe']}, opencv "
                f"{mp_meta['opencv']}" if mp_meta else "; MediaPipe: skipped (no venv)") + ".", ""]
    if not have_mp:
        lines.insert(2, f"MediaPipe side skipped: {a.mp_python} not found.\n")
    section = "\n".join(lines)
    print()
    print(section)
    for engine, _ in engines.values():
        engine.service.close()
    if not a.no_append:
        print(f"appended to {append_results(section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
