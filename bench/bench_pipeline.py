#!/usr/bin/env python3
"""Pipeline throughput and per-stage latency, in-process, built as ``run_stream.py`` builds it (file mode).

Cases (each run ``--repeat`` times; the table shows the median run by fps):

- ``d0 tracks``: d0.mp4 (512x512, 78 frames, one face) -> tracks CSV, no video out (no render stage work);
- ``d0 tracks + video``: the same plus the annotated H.264 video in mode ``landmarks`` (and ``mesh`` with ``--mesh``);
- ``2 faces``: an image sequence cut from 3DDFA's ``samples/test1.jpg`` (two faces) by a sliding window, -> tracks;
- ``synthetic``: the synthetic face video (640x480) -> tracks (includes rendering the source frames).

Stage latencies come from ``Stats.summary()`` (what ``--stats`` prints): decode, detect (only on detector frames),
align (network + decode, awaited through the batching service), smooth (tracker + Kalman + landmark decode), render,
sink; e2e is source read -> sink written. fps is frames out over the run's wall time (model load excluded). The CLI
wall time of the first case (``python run_stream.py ...``, start-up and model load included) is measured once too.

    python bench/bench_pipeline.py                  # prints the table
    python bench/bench_pipeline.py --mesh --write   # also mode mesh; append to bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets"))

from bench_smoothing import append_results, machine  # noqa: E402
from stream.app import Engine, build_engine  # noqa: E402
from stream.config import RunConfig, load_config  # noqa: E402
from stream.outputs import TracksOut  # noqa: E402
from stream.assemble import build_run  # noqa: E402
from stream.sources import open_source  # noqa: E402
from stream.stats import STAGES  # noqa: E402

D0 = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
TEST1 = "cleardusk/3DDFA/samples/test1.jpg"


def sliding_crops(image_path: Path, out_dir: Path, n: int, width: int = 1280, height: int = 600) -> Path:
    """Write ``n`` PNG crops of ``image_path`` whose window slides left to right (every face moves); -> the folder."""
    import cv2

    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(image_path)
    h, w = img.shape[:2]
    width, height = min(width, w), min(height, h)
    out_dir.mkdir(parents=True, exist_ok=True)
    y0 = (h - height) // 2
    for i in range(n):
        x0 = int(round((w - width) * i / max(n - 1, 1)))
        cv2.imwrite(str(out_dir / f"frame{i:04d}.png"), img[y0:y0 + height, x0:x0 + width])
    return out_dir


def run_case(engine: Engine, cfg: RunConfig, spec: str, *, out: Path | None, tracks: Path | None, mode: str = "landmarks",
             source_options: dict | None = None) -> dict:
    """One file-mode run like ``stream.app.run_source`` (``build_run``); -> Stats.summary() plus wall time and rows."""
    source = open_source(spec, **(source_options or {}))
    info = source.info
    run_cfg = cfg.replace(out=str(out) if out else None, tracks=str(tracks) if tracks else None, meshes=None,
                          mode=mode)
    pipeline = build_run(run_cfg, engine, source, live=False)
    sinks = pipeline.sinks
    t0 = time.perf_counter()
    stats = asyncio.run(pipeline.run())
    summary = stats.summary()
    summary["wall_s"] = time.perf_counter() - t0
    summary["rows"] = sum(getattr(s.sink, "rows_written", 0) for s in sinks if isinstance(s, TracksOut))
    summary["size"] = f"{info.width}x{info.height}"
    return summary


def median_run(runs: list[dict]) -> dict:
    order = np.argsort([r["fps"] for r in runs])
    best = dict(runs[int(order[len(order) // 2])])
    best["fps_all"] = [round(r["fps"], 1) for r in runs]
    return best


def cli_wall(d0: Path, tmp: Path) -> float:
    cmd = [sys.executable, str(REPO / "run_stream.py"), "--source", str(d0), "--tracks", str(tmp / "cli.csv"),
           "--weights", "3ddfa-v2-mb05", "--progress", "false"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
    return time.perf_counter() - t0


def table(results: dict[str, dict]) -> str:
    head = "| case | frames | faces | fps | " + " | ".join(f"{s} p50/p95 ms" for s in STAGES) + " | e2e p50/p95 ms |"
    lines = [head, "|" + "---|" * (5 + len(STAGES))]
    for name, r in results.items():
        cells = []
        for s in STAGES:
            st = r["stages"].get(s)
            cells.append(f"{st['p50']:.1f} / {st['p95']:.1f}" if st else "-")
        e2e = r["e2e"]
        lines.append(f"| {name} ({r['size']}) | {r['frames_out']} | {r['faces']} | {r['fps']:.1f} "
                     f"({', '.join(str(v) for v in r['fps_all'])}) | " + " | ".join(cells)
                     + f" | {e2e['p50']:.0f} / {e2e['p95']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (default 3; the median is shown)")
    ap.add_argument("--weights", default="3ddfa-v2-mb05")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mesh", action="store_true", help="also d0 with video out in mode mesh")
    ap.add_argument("--multi-frames", type=int, default=100, help="frames of the two-face sequence (default 100)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI wall-time run")
    ap.add_argument("--json", help="write the raw figures to this file")
    ap.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    args = ap.parse_args(argv)

    assets = Path(os.environ["DAMDNET_ASSETS"])
    d0 = assets / D0
    cfg = load_config(None, {"weights": args.weights, "device": args.device, "progress": False})
    engine = build_engine(cfg)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp_name:
        tmp = Path(tmp_name)
        multi = sliding_crops(assets / TEST1, tmp / "two_faces", args.multi_frames)
        cases = [
            ("d0 tracks", str(d0), {"tracks": tmp / "d0.csv", "out": None}),
            ("d0 tracks + video (landmarks)", str(d0), {"tracks": tmp / "d0.csv", "out": tmp / "d0.mp4"}),
        ]
        if args.mesh:
            cases.append(("d0 tracks + video (mesh)", str(d0),
                          {"tracks": tmp / "d0.csv", "out": tmp / "d0m.mp4", "mode": "mesh"}))
        cases += [
            (f"2 faces, {args.multi_frames} images, tracks", str(multi), {"tracks": tmp / "multi.csv", "out": None}),
            ("synthetic 8 s, tracks", "synthetic",
             {"tracks": tmp / "syn.csv", "out": None, "source_options": dataclasses.asdict(cfg.synthetic)}),
        ]
        run_case(engine, cfg, str(d0), out=None, tracks=None)  # warm-up (JIT, first convolutions)
        for name, spec, kw in cases:
            runs = [run_case(engine, cfg, spec, **kw) for _ in range(args.repeat)]
            results[name] = median_run(runs)
            print(f"{name}: {results[name]['fps']:.1f} fps {results[name]['fps_all']}", file=sys.stderr)
        cli_s = None if args.no_cli else cli_wall(d0, tmp)
    engine.service.close()
    text = table(results)
    print(text)
    if cli_s is not None:
        print(f"\nCLI wall time, d0 -> tracks (start-up and model load included): {cli_s:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": results, "cli_wall_s": cli_s}, indent=1))
    if args.write:
        load = os.getloadavg()[0]
        body = (
            "## Pipeline throughput\n\n"
            f"Machine: {machine()}; {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; load average "
            f"{load:.2f} at the end (the cores are shared with other work); model {engine.aligner.name} "
            f"({engine.aligner.backbone}) on {engine.aligner.device}, detector {engine.detector.kind} every "
            f"{cfg.detect_every} frames, Kalman on. Command: `python bench/bench_pipeline.py "
            f"{' '.join(sys.argv[1:])}`.\n\n"
            "In-process runs built as `run_stream.py` builds them, file mode (nothing dropped), model load excluded; "
            f"fps = frames out / wall time of the run, median of {args.repeat} runs (all runs in brackets). "
            "Stage latencies from `Stats.summary()` (`--stats`): detect only counts detector frames; align = the "
            "batched network call + decode; smooth = tracker + Kalman + landmark decode; e2e = source read -> sink "
            "written (includes queueing behind earlier frames). Our DAMDNet weights do not exist yet, so the "
            "pipeline runs the 3DDFA_V2 mb05 peer (model latency of both networks: section 'Model latency').\n\n"
            + text + "\n"
            + (f"\nCLI wall time for d0.mp4 -> tracks CSV, start-up and model load included: {cli_s:.2f} s.\n"
               if cli_s is not None else ""))
        print(f"appended to {append_results(body)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
