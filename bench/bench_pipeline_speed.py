"""Pipeline speed: model latency table, file-mode throughput and simulated live mode, appended to bench/RESULTS.md.

    python bench/bench_pipeline_speed.py [--video d0.mp4] [--repeats 3] [--live-seconds 60] [--skip-model]
                                         [--threads N] [--no-append]

1. Model latency (batch 1/8/32; authors' structure eager vs ours eager / fast path vs the mobilenet_v1 peer, one
   process, round-robin, median of >= 50 calls): runs ``bench/bench_model.py``, which appends its own section.
2. File mode: ``run_stream.py --source VIDEO --tracks T.csv`` (no video out, no progress bar), once per case
   (the shipped ``damdnet`` and the ``3ddfa-v2-mb05`` peer, each through the ONNX Runtime and the TorchScript fast
   path), ``--repeats`` times each in fresh processes, alternating; the pipeline's own frames/s (model loading
   excluded) and per-stage p50/p95.
3. Simulated live mode: the synthetic source paced at 30 fps for ``--live-seconds`` with ``--live true --mode mesh``
   and an annotated video out, in this process; drops and end-to-end (capture -> sink) p50/p95 per 10-s window.

Load averages are printed next to the figures: the 2 cores are shared, so compare within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets"))

RESULTS = HERE / "RESULTS.md"
ASSETS = Path(os.environ["DAMDNET_ASSETS"])
DEFAULT_VIDEO = ASSETS / "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
DONE = re.compile(r"done: (\d+) frames in ([\d.]+) s \(([\d.]+) fps\), (\d+) dropped")


def load() -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in os.getloadavg()) + ")"


def file_mode(video: Path, args: list[str], threads: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "run_stream.py"), "--source", str(video), "--tracks", f"{tmp}/t.csv",
               *args, "--stats", "true", "--stats-every", "0", "--progress", "false"]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        wall = time.perf_counter() - t0
    m = DONE.search(r.stderr)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"run_stream failed ({r.returncode}): {r.stderr[-2000:]}")
    stats = [line for line in r.stderr.splitlines() if line.startswith("stats:")]
    return {"frames": int(m.group(1)), "seconds": float(m.group(2)), "fps": float(m.group(3)),
            "dropped": int(m.group(4)), "stats": stats[-1][len("stats: "):] if stats else "", "wall": wall}


def live_mode(seconds: float, mode: str, weights: str, extra: tuple[str, ...] = ()) -> dict:
    """The synthetic source paced at its 30 fps, live (latest frame wins), in this process; per-frame records."""
    from stream import app
    from stream.cli import parse
    from stream.stats import Stats

    done: list[tuple[float, float]] = []
    drops: list[float] = []

    class RecordingStats(Stats):
        def frame_done(self, capture_ns: int, faces: int) -> None:
            super().frame_done(capture_ns, faces)
            done.append((time.perf_counter(), self.e2e_ms[-1]))

        def drop(self, where: str, n: int = 1) -> None:
            super().drop(where, n)
            drops.extend([time.perf_counter()] * n)

    real_open = app.open_source

    def paced_open(spec, **options):
        if str(spec).startswith("synthetic"):
            options["live"] = True  # the synthetic source paces itself at its fps when live
        return real_open(spec, **options)

    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = parse(["--source", f"synthetic:{seconds:g}", "--live", "true", "--mode", mode, "--weights", weights,
                        "--out", f"{tmp}/live.mp4", "--progress", "false", *extra])
        app.Stats, app.open_source = RecordingStats, paced_open
        try:
            t0 = time.perf_counter()
            rc = asyncio.run(app.run_source(cfg))
        finally:
            app.Stats, app.open_source = Stats, real_open
    if rc != 0:
        raise RuntimeError(f"live run failed ({rc})")
    start = done[0][0] - done[0][1] / 1e3 if done else t0
    return {"done": [(t - start, e) for t, e in done], "drops": [t - start for t in drops]}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--repeats", type=int, default=3, help="file-mode runs per weights (median reported)")
    p.add_argument("--live-seconds", type=float, default=60.0)
    p.add_argument("--live-mode", default="mesh")
    p.add_argument("--live-weights", default="damdnet", help="weights of the live run (default: the shipped DAMDNet)")
    p.add_argument("--model-runs", type=int, default=60)
    p.add_argument("--skip-model", action="store_true", help="skip the model latency table (bench_model.py)")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads everywhere (model table, OMP_NUM_THREADS of the file runs, the live run); on "
                        "2 shared cores 1 thread measured 1.5-9x faster than 2 under load")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to bench/RESULTS.md")
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if not a.skip_model:
        import bench_model

        rc = bench_model.main(["--runs", str(a.model_runs)] + (["--no-append"] if a.no_append else [])
                              + (["--threads", str(a.threads)] if a.threads else []))
        if rc:
            return rc

    lines = [f"## Pipeline speed ({dt.datetime.now().strftime('%Y-%m-%d %H:%M')})", ""]
    video = Path(a.video)
    cases = {f"{label}, fast path {kind}": ["--weights", w, "--fast-path", kind]
             for label, w in (("DAMDNet (`damdnet`)", "damdnet"), ("3DDFA_V2 MobileNetV1 x0.5 (`3ddfa-v2-mb05`)",
                                                                   "3ddfa-v2-mb05"))
             for kind in ("onnxruntime", "torchscript")}
    runs: dict[str, list[dict]] = {k: [] for k in cases}
    load_before = load()
    for _ in range(a.repeats):
        for name, args in cases.items():
            r = file_mode(video, args, a.threads)
            runs[name].append(r)
            print(f"file mode {name}: {r['fps']:.1f} fps ({r['frames']} frames); {r['stats']}; load {load()}",
                  flush=True)
    lines += [f"Threads: {a.threads or 'torch default'}.", ""]
    lines += [f"File mode: `run_stream.py --source {video.name} --tracks T.csv --stats true --progress false` (no "
              f"video out, default detector/tracker), {a.repeats} runs "
              "per case in fresh processes, alternating; frames/s as the pipeline reports it (model loading "
              "excluded). Stages p50/p95 ms from the median run.", "",
              "| case | frames | frames/s (median; min-max) | stages p50/p95 ms (median run) |", "|---|---:|---:|---|"]
    for name, rs in runs.items():
        fps = [r["fps"] for r in rs]
        mid = sorted(rs, key=lambda r: r["fps"])[len(rs) // 2]
        lines.append(f"| {name} | {mid['frames']} | {statistics.median(fps):.1f} ({min(fps):.1f}-{max(fps):.1f}) | "
                     f"{mid['stats']} |")
    lines += ["", f"Load average before {load_before}, after {load()}.", ""]

    if not a.skip_live:
        lb = load()
        rec = live_mode(a.live_seconds, a.live_mode, a.live_weights)
        done, drops = rec["done"], rec["drops"]
        lines += [f"Simulated live mode: synthetic source paced at 30 fps for {a.live_seconds:g} s, `--live true "
                  f"--mode {a.live_mode}`, annotated video out, weights `{Path(a.live_weights).name}`, in one "
                  "process; end-to-end = capture timestamp -> sink written; drops are frames discarded by "
                  "latest-frame-wins.", "",
                  "| window | frames out | drops | e2e p50 ms | e2e p95 ms |", "|---|---:|---:|---:|---:|"]
        p50s = []
        nwin = int(max(t for t, _ in done) // 10) + 1 if done else 0
        for w in range(nwin):
            es = [e for t, e in done if 10 * w <= t < 10 * (w + 1)]
            ds = sum(1 for t in drops if 10 * w <= t < 10 * (w + 1))
            if es:
                p50s.append(pct(es, 50))
                lines.append(f"| {10 * w}-{10 * (w + 1)} s | {len(es)} | {ds} | {pct(es, 50):.1f} | "
                             f"{pct(es, 95):.1f} |")
        es = [e for _, e in done]
        lines.append(f"| **all** | {len(es)} | {len(drops)} | {pct(es, 50):.1f} | {pct(es, 95):.1f} |")
        growth = (p50s[-2] - p50s[1]) if len(p50s) >= 4 else float("nan")
        lines += ["", f"Growth (p50 of the last full window - p50 of the second): {growth:+.1f} ms. Load average "
                  f"before {lb}, after {load()}.", ""]
    import torch

    lines += [f"Machine: {platform.machine()}, nproc {len(os.sched_getaffinity(0))}; Python "
              f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads in this "
              "process).", ""]
    section = "\n".join(lines)
    print()
    print(section)
    if not a.no_append:
        with open(RESULTS, "a") as f:
            f.write("\n" + section)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
