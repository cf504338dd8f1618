"""Batch jobs on Ray against `run` one file after another: aggregate frames/s over ~50 short files, Ray's fixed costs.

    python bench/bench_batch.py [--files 50] [--weights auto] [--results bench/RESULTS.md]

Makes the clips (synthetic faces and cuts of the shared videos under $DAMDNET_ASSETS, in a temporary folder), then
times, each as the command a user would type, on the same files:
  1. `run_stream.py --source F --tracks F.csv` for every file, one after another (a process each: imports, model
     load, the file);
  2. `run_stream.py batch DIR --outdir OUT --workers 1` (one command: a local Ray, one actor, every file);
  3. the same with `--workers 2`.
Reports aggregate frames/s (frames over the whole command's wall time, start-up included), the ratios, Ray's start-up
and worker start-up (from the batch command's own lines), and the per-file overhead of the batch path: the driver's
round trip of a file minus the worker's time on it, and the gaps between files on one worker. The load averages
before and after each step are recorded: the machine is shared, so only ratios measured side by side mean much.
Checks that batch writes the same tracks as `run` (byte-identical CSVs). Writes a `## Batch jobs on Ray` section.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine_info import cpu_model  # noqa: E402
from tests.batch_clips import cut_clip, shared_videos, synthetic_clip  # noqa: E402

SECTION = "## Batch jobs on Ray (bench_batch.py)"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_clips(folder: Path, n: int) -> list[Path]:
    """``n`` clips: one in five synthetic (1.5 s, 320x240, 20 fps), the others 40-frame cuts of the shared videos
    at several offsets (longest side 480)."""
    from stream.sources import open_source

    videos = shared_videos()
    if not videos:
        raise SystemExit("error: no shared videos under $DAMDNET_ASSETS")
    clips = []
    for i in range(n):
        if i % 5 == 4:
            clips.append(synthetic_clip(folder / f"syn{i:02d}.mp4", seconds=1.5, seed=i))
        else:
            j = i - i // 5  # the j-th cut
            src = videos[j % len(videos)]
            with open_source(str(src)) as video:
                total = int(video.info.frame_count or 40)  # frames presented (an edit list may hide some)
            start = ((j // len(videos)) * 20) % max(total - 40, 1)  # cuts at several offsets within the video
            clips.append(cut_clip(src, folder / f"{src.stem}_{i:02d}.mp4", frames=40, start=start))
    return clips


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, DAMDNET_OFFLINE="1", PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, res


def run_sequential(clips: list[Path], out: Path, weights: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    load0, total = loadavg(), 0.0
    for clip in clips:
        dt, res = timed([sys.executable, str(REPO / "run_stream.py"), "--source", str(clip), "--tracks",
                         str(out / f"{clip.stem}.csv"), "--weights", weights, "--progress", "false"], out)
        if res.returncode != 0:
            raise SystemExit(f"run failed on {clip}: {res.stderr.strip().splitlines()[-1]}")
        total += dt
    return {"wall": total, "load": (load0, loadavg())}


def run_batch_cmd(folder: Path, out: Path, workers: int, weights: str) -> dict:
    load0 = loadavg()
    dt, res = timed([sys.executable, str(REPO / "run_stream.py"), "batch", str(folder), "--outdir", str(out),
                     "--workers", str(workers), "--weights", weights, "--progress", "false"], out.parent)
    if res.returncode != 0:
        raise SystemExit(f"batch failed ({res.returncode}): {res.stderr[-2000:]}")
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    ray_s = float(re.search(r"local Ray started in ([\d.]+) s", res.stderr).group(1))
    ready_s = float(re.search(r"worker\(s\) ready in ([\d.]+) s", res.stderr).group(1))
    job_s = float(re.search(r"frames in ([\d.]+) s", res.stderr).group(1))
    by_worker: dict[int, list[dict]] = {}
    for r in recs:
        by_worker.setdefault(r["worker"], []).append(r)
    # per file on a worker: busy time it could not spend on files = job time - its files' worker seconds
    idle = [(job_s - sum(r["seconds"] for r in rs)) / len(rs) for rs in by_worker.values()]
    return {"wall": dt, "ray_start": ray_s, "workers_ready": ready_s, "job": job_s, "records": recs,
            "frames": sum(r["frames"] for r in recs), "done": sum(r["status"] == "done" for r in recs),
            "roundtrip_overhead": sum(r["wall"] - r["seconds"] for r in recs) / len(recs),
            "gap_per_file": sum(idle) / len(idle), "worker_s": sum(r["seconds"] for r in recs) / len(recs),
            "fps_file": sum(r["frames"] for r in recs) / sum(r["seconds"] for r in recs),
            "load": (load0, loadavg())}


def same_tracks(seq_out: Path, batch_out: Path, clips: list[Path]) -> int:
    return sum((seq_out / f"{c.stem}.csv").read_bytes() == (batch_out / f"{c.stem}.csv").read_bytes() for c in clips)


def write_section(results: Path, text: str) -> None:
    old = results.read_text() if results.is_file() else ""
    if SECTION in old:
        start = old.index(SECTION)
        nxt = old.find("\n## ", start + len(SECTION))
        old = old[:start] + (old[nxt + 1:] if nxt >= 0 else "")
    results.write_text(old.rstrip("\n") + "\n\n" + text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    ap.add_argument("--keep", default=None, help="folder to keep the clips and outputs in (default: a temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets"))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-batch-"))
    clips_dir = work / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    clips = make_clips(clips_dir, args.files)
    print(f"{len(clips)} clips in {clips_dir}; load {load_start}", file=sys.stderr)
    seq = run_sequential(clips, work / "seq", args.weights)
    print(f"sequential run: {seq['wall']:.1f} s", file=sys.stderr)
    b1 = run_batch_cmd(clips_dir, work / "b1", 1, args.weights)
    print(f"batch 1 worker: {b1['wall']:.1f} s", file=sys.stderr)
    b2 = run_batch_cmd(clips_dir, work / "b2", 2, args.weights)
    print(f"batch 2 workers: {b2['wall']:.1f} s", file=sys.stderr)
    frames = b2["frames"]
    assert b1["done"] == b2["done"] == len(clips), (b1["done"], b2["done"])
    identical = min(same_tracks(work / "seq", work / "b1", clips), same_tracks(work / "seq", work / "b2", clips))
    model = next((r for r in b2["records"]), {})
    clip10 = 10 * 25 / b1["fps_file"]  # seconds a worker spends on a 10 s, 25 fps clip, at the measured rate
    lines = [
        SECTION, "",
        f"{os.cpu_count()}-core {cpu_model()} VM ({platform.machine()}), busy with other jobs (load averages "
        "1/5/15 min below), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {len(clips)} clips ({frames} frames: 40-frame cuts "
        f"of the shared videos, longest side 480, and 1.5 s synthetic faces at 320x240), `--weights {args.weights}`, "
        "tracks as CSV. Each row is one command as a user types it; wall time includes every start-up. "
        "Command: `python bench/bench_batch.py --files %d`." % len(clips), "",
        "| command | wall s | frames/s (all in) | vs `run` one after another | load before -> after |",
        "|---|---|---|---|---|",
        f"| `run` per file, one after another | {seq['wall']:.1f} | {frames / seq['wall']:.1f} | 1.00x | "
        f"{seq['load'][0]} -> {seq['load'][1]} |",
    ]
    for name, b in (("`batch --workers 1`", b1), ("`batch --workers 2`", b2)):
        lines.append(f"| {name} | {b['wall']:.1f} | {frames / b['wall']:.1f} | {seq['wall'] / b['wall']:.2f}x | "
                     f"{b['load'][0]} -> {b['load'][1]} |")
    lines += [
        "",
        "| Ray's fixed and per-file costs | 1 worker | 2 workers |",
        "|---|---|---|",
        f"| local Ray start-up (`ray.init`) s | {b1['ray_start']:.1f} | {b2['ray_start']:.1f} |",
        f"| workers ready (actor start + model load) s | {b1['workers_ready']:.1f} | {b2['workers_ready']:.1f} |",
        f"| the files, first handed out to last result s | {b1['job']:.1f} | {b2['job']:.1f} |",
        f"| frames/s over the files alone | {b1['frames'] / b1['job']:.1f} | {b2['frames'] / b2['job']:.1f} |",
        f"| worker time per file s (mean) | {b1['worker_s']:.2f} | {b2['worker_s']:.2f} |",
        f"| per-file round trip minus worker time ms | {1e3 * b1['roundtrip_overhead']:.1f} | "
        f"{1e3 * b2['roundtrip_overhead']:.1f} |",
        f"| per-file gap on a worker (job time / files - worker time) ms | {1e3 * b1['gap_per_file']:.1f} | "
        f"{1e3 * b2['gap_per_file']:.1f} |",
        "",
        f"Per-file overhead of the batch path (round trip + gap, 1 worker): "
        f"{1e3 * (b1['roundtrip_overhead'] + max(b1['gap_per_file'], 0)):.0f} ms, "
        f"{100 * (b1['roundtrip_overhead'] + max(b1['gap_per_file'], 0)) / clip10:.2f}% of the {clip10:.1f} s a "
        f"worker spends on a 10 s 25 fps clip at the measured {b1['fps_file']:.1f} frames/s per worker "
        "(target < 5%). "
        f"Tracks byte-identical to `run`'s: {identical} of {len(clips)} files. "
        f"Worker node: {model.get('node', '?')}. GPU actors (one per GPU, several files at once): not measured "
        "here (no GPU on this machine).",
        "",
    ]
    text = "\n".join(lines)
    write_section(Path(args.results), text)
    print(text)
    print(f"load at the start {load_start}, at the end {loadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
