"""WebRTC server under load and churn, in process, on the product pipeline with per-peer recording.

    python bench/bench_webrtc_load.py [--peers 8] [--seconds 60] [--window 10] [--churn 50] [--sweep 1,2,4]
        [--sweep-seconds 15] [--size 320x240] [--weights 3ddfa-v2-mb05] [--no-append]

1. Sweep: for each peer count, that many aiortc clients (loopback, ICE pinned to 127.0.0.1) send d0.mp4 (looped,
   30 fps, latency probe stamped in each frame) for --sweep-seconds: processed frames per second per peer and the
   loop latency (client send -> processed frame back), to size ``serve.max_peers``.
2. Load: --peers clients for --seconds: per --window, latency p50/p95, frames back per peer per second, the
   server process's RSS, open file descriptors and threads (flat = no leak; latency flat = no growth).
3. Churn: --churn cycles of connect -> first processed frame -> abrupt leave (the client's UDP sockets closed
   under it: no DTLS close, no BYE; the server only sees the video stop): seconds until the server freed the peer
   and until its recordings (video + CSV) were committed, and the resources after all cycles.

Appends a "## WebRTC load and churn" section to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine_info import cpu_model, load_average  # noqa: E402
from tests import webrtc_load as L  # noqa: E402

D0 = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"


def pct(vals: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(vals, q)), 2) if vals else None


async def bench(args: argparse.Namespace) -> str:
    import aiohttp

    from stream.app import build_engine
    from stream.config import load_config
    from stream.webrtc.app_bridge import PipelinePeer
    from stream.webrtc.server_config import serve_config
    from stream.webrtc.server import PEERS

    L.pin_loopback_ice()
    rec = Path(tempfile.mkdtemp(prefix="webrtc-load-"))
    cfg = load_config(overrides={"weights": args.weights, "out": str(rec / "r.mp4"), "tracks": str(rec / "r.csv")})
    engine = build_engine(cfg)
    w, h = (int(v) for v in args.size.split("x"))
    frames = L.load_frames(Path(args.assets) / D0, (w, h), 150)
    lines: list[str] = []
    max_n = max([args.peers, *args.sweep])
    async with L.running_server(dataclasses.replace(serve_config(cfg), max_peers=max_n), lambda pid: PipelinePeer(engine, cfg, pid)) as (app, url):
        base = L.resources()
        sweep_rows = []
        for n in args.sweep:
            r = await L.run_load(url, frames, n, args.sweep_seconds, args.sweep_seconds)
            await L.wait_until(lambda: not app[PEERS], 60, "sweep peers freed")
            row = r.windows[-1]
            sweep_rows.append((n, row))
            print(f"sweep {n} peers: {row}", flush=True)
        load = await L.run_load(url, frames, args.peers, args.seconds, args.window)
        for row in load.windows:
            print(f"load: {row}", flush=True)
        await L.wait_until(lambda: not app[PEERS], 60, "load peers freed")
        after_load = L.resources()
        churn = []
        async with aiohttp.ClientSession() as session:
            for i in range(args.churn):
                c = await L.churn_once(url, frames, session, app, rec, timeout=60)
                churn.append(c)
                print(f"churn {i + 1}/{args.churn}: {c}", flush=True)
        await asyncio.sleep(1.0)
        after_churn = L.resources()
        peers_left = len(app[PEERS])
    engine.service.close()
    partial = [p.name for p in rec.iterdir() if ".partial" in p.name]

    final = [c["final_s"] for c in churn if c["final_s"] is not None]
    freed = [c["freed_s"] for c in churn if c["freed_s"] is not None]
    unfinished = len(churn) - len(final)
    machine = f"{cpu_model()}, {os.cpu_count()} cores (shared with other jobs; load average {load_average()})"
    lines += [
        "## WebRTC load and churn (in-process aiortc peers, product pipeline, recording on)",
        "",
        f"`python bench/bench_webrtc_load.py --peers {args.peers} --seconds {args.seconds:g} --churn {args.churn}`"
        f" on {machine}; {args.weights}, d0.mp4 at {w}x{h} 30 fps looped, every peer recorded (video + CSV). "
        "Clients and server share one process and event loop (so the clients' VP8 encode/decode is on the same "
        "2 cores). Latency: client send -> processed frame back (probe in the frame).",
        "",
        "Sizing sweep (last window of each run):",
        "",
        "| peers | frames back / peer / s | latency p50 ms | p95 ms |",
        "|---|---|---|---|",
        *[f"| {n} | {r['fps_per_peer']} | {r['p50']} | {r['p95']} |" for n, r in sweep_rows],
        "",
        f"Load: {args.peers} peers for {args.seconds:g} s:",
        "",
        "| window | samples | frames back / peer / s | latency p50 ms | p95 ms | RSS MiB | fds | threads |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['window']} | {r['n']} | {r['fps_per_peer']} | {r['p50']} | {r['p95']} | {r['rss_mb']} | {r['fds']} "
          f"| {r['threads']} |" for r in load.windows],
        "",
        f"Churn: {args.churn} connect / abrupt-leave cycles. Recording committed after the peer left: "
        f"p50 {pct(final, 50)} s, p95 {pct(final, 95)} s, max {max(final) if final else None:.2f} s; "
        f"{unfinished} unfinished after 60 s; peer freed: p50 {pct(freed, 50)} s, max "
        f"{max(freed) if freed else None:.2f} s. Peers left on the server: {peers_left}; `.partial` files left: "
        f"{len(partial)}.",
        "",
        f"Resources (server process): before {base}; after the load {after_load}; after the churn {after_churn}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--churn", type=int, default=50)
    p.add_argument("--sweep", default="1,2,4", help="peer counts of the sizing sweep ('' for none)")
    p.add_argument("--sweep-seconds", type=float, default=15.0)
    p.add_argument("--size", default="320x240")
    p.add_argument("--weights", default="3ddfa-v2-mb05")
    p.add_argument("--assets", default=os.environ.get("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets")))
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    args.sweep = [int(v) for v in args.sweep.split(",") if v.strip()]
    logging.basicConfig(level=logging.WARNING)
    t0 = time.monotonic()
    text = asyncio.run(bench(args))
    print(text)
    print(f"(bench took {time.monotonic() - t0:.0f} s)")
    if not args.no_append:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
