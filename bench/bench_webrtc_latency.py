"""WebRTC soak: headless Chromium streams a face video to the server for 60 s; loop latency per 10 s window.

    sudo /work/venv/bin/python bench/bench_webrtc_latency.py [--seconds 60] [--window 10] [--size 384]
        [--processor tests.webrtc_helpers:make_processor] [--no-append]

Needs root (network namespace), /usr/bin/chromium and playwright (see tests/test_webrtc_browser.py). The
server (`python -m stream.webrtc.server`) and Chromium run inside a fresh namespace; the page's latency probe
(stream/webrtc/probe.py) measures, for every returned frame, browser draw of the sent frame -> browser
presentation of the processed frame. Reports p50/p95 per window and whether latency grows (last window's p50
vs the first's), and appends a "## WebRTC" table to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import webrtc_helpers as H  # noqa: E402
from bench.machine_info import cpu_model, load_average  # noqa: E402


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores visible (shared; load average {load_average()} at the end)"


def chromium_version() -> str:
    try:
        out = subprocess.run([H.CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.strip().splitlines()[-1] if out.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def windows(samples: list, t0: float, width: float, total: float) -> list[dict]:
    rows = []
    start = 0.0
    while start < total - 1e-6:
        vals = [lat for t, lat in samples if start <= (t - t0) / 1000.0 < start + width]
        rows.append({"window": f"{start:.0f}-{start + width:.0f} s", "n": len(vals), **H.percentiles(vals)})
        start += width
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--size", type=int, default=384, help="camera video side (square, from d0.mp4)")
    p.add_argument("--processor", default="tests.webrtc_helpers:make_processor")
    p.add_argument("--assets", default=os.environ.get("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets")))
    p.add_argument("--out", default=None, help="keep screenshots/logs here (default: a temp dir)")
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)

    reason = H.browser_skip_reason()
    if reason:
        print(f"error: cannot run the browser soak: {reason}", file=sys.stderr)
        return 2
    src = Path(args.assets) / H.FACE_VIDEO
    if not src.exists():
        print(f"error: {src} not found (set DAMDNET_ASSETS or --assets)", file=sys.stderr)
        return 2
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    work.mkdir(parents=True, exist_ok=True)
    y4m = H.make_y4m(src, work / "face.y4m", size=(args.size, args.size), max_seconds=5.0)
    token = secrets.token_urlsafe(12)
    with H.netns() as ns:
        port = H.free_port()
        server = H.start_server(ns, port, token, work / "server.log", processor=args.processor)
        try:
            t = time.monotonic()
            result = H.run_driver(ns, f"http://{ns.ns_addr}:{port}/?token={token}", y4m, work / "browser",
                                  seconds=args.seconds, timeout=args.seconds + 240, soak=True)
            wall = time.monotonic() - t
        finally:
            H.stop_process(server)
    if not result.get("ok"):
        print(f"error: the browser run failed: {result.get('error')} (logs in {work})", file=sys.stderr)
        return 1
    samples = result["latency_samples"]
    if not samples:
        print(f"error: no latency samples (probe misreads: {result.get('latency_misreads')})", file=sys.stderr)
        return 1
    t0 = samples[0][0]
    rows = windows(samples, t0, args.window, args.seconds)
    # the same stamp against the time the browser received the encoded frame (network + server, without the
    # browser's jitter buffer and decode); Chromium reports it in requestVideoFrameCallback's receiveTime
    recv_rows = windows(result.get("latency_receive_samples") or [], t0, args.window, args.seconds)
    for r, rr in zip(rows, recv_rows):
        r["recv_p50"], r["recv_p95"] = rr["p50"], rr["p95"]
    full = rows if rows[-1]["n"] else rows[:-1]
    # the first window includes the browser's jitter buffer settling; growth is judged after it
    ref = full[1] if len(full) > 2 else (full[0] if full else None)
    growth = (round(full[-1]["p50"] - ref["p50"], 1)
              if ref and ref["p50"] is not None and full[-1]["p50"] is not None else None)
    overall = H.percentiles([s[1] for s in samples])
    series = result.get("stats_series") or []
    server_p50 = [s["server"]["p50"] for s in series if s.get("server") and s["server"].get("p50") is not None]
    fps_out = [s["fps_out"] for s in series if s.get("fps_out")]
    last = series[-1] if series else {}
    summary = {"windows": rows, "overall": overall, "growth_p50_ms": growth, "samples": len(samples),
               "misreads": result.get("latency_misreads"), "rtt_ms": result.get("rtt_ms"),
               "server_p50_ms_median": H.percentiles(server_p50, (50,))["p50"],
               "fps_out_median": H.percentiles(fps_out, (50,))["p50"], "drops_in_total": last.get("drops_in"),
               "wall_s": round(wall, 1), "work": str(work)}
    print(json.dumps(summary, indent=1))

    if not args.no_append:
        results = REPO / "bench" / "RESULTS.md"
        lines = []
        if not results.exists():
            lines.append("# Benchmark results\n")
        lines += [
            "",
            "## WebRTC",
            "",
            f"Loop latency (p50/p95: presented; \"to browser receive\": when the encoded frame arrived) measured in headless {chromium_version()} by the page's probe (browser draws the "
            f"sent frame -> browser presents the processed frame), {args.size}x{args.size} fake camera "
            f"(d0.mp4, 25 fps, ping-pong loop), VP8 both ways, server and browser in one network namespace on "
            f"{machine()}; processor `{args.processor}`; {time.strftime('%Y-%m-%d %H:%M')}, "
            f"`bench/bench_webrtc_latency.py --seconds {args.seconds:g}`.",
            "",
            "| window | frames | p50 (ms) | p95 (ms) | to browser receive p50 (ms) | p95 (ms) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(f"| {r['window']} | {r['n']} | {r['p50']} | {r['p95']} | {r['recv_p50']} | {r['recv_p95']} |")
        rall = H.percentiles([s[1] for s in result.get("latency_receive_samples") or []])
        lines.append(f"| **all** | {len(samples)} | {overall['p50']} | {overall['p95']} | {rall['p50']} | {rall['p95']} |")
        lines += [
            "",
            f"Growth (p50 of the last full window - p50 of the second; the first includes the browser's jitter "
            f"buffer settling): {growth} ms. Server-side latency (decoded -> handed to the "
            f"encoder) p50 {summary['server_p50_ms_median']} ms; output {summary['fps_out_median']} fps; "
            f"{summary['drops_in_total']} frames dropped by latest-frame-wins; data-channel RTT "
            f"{round(result.get('rtt_ms') or 0, 1)} ms; probe misreads {result.get('latency_misreads')}.",
            "",
        ]
        with open(results, "a") as f:
            f.write("\n".join(lines))
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
