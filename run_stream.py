#!/usr/bin/env python3
"""Real-time 3D face alignment (DAMDNet) on webcams, video files, image folders and WebRTC.

Uses:
  python run_stream.py                                   the built-in demo: a synthetic face -> out/demo.mp4 + CSV
  python run_stream.py --source webcam:0 --show          live alignment on a webcam
  python run_stream.py --source talk.mp4 --tracks talk.csv --out talk_overlay.mp4
                                                         every frame of a video -> landmark tracks + overlay video
  python run_stream.py --source talk.mp4 --mode swap --swap-source face.jpg --out swapped.mp4
                                                         the face of face.jpg swapped onto every face of the video
  python run_stream.py --source talk.mp4 --meshes meshes/
                                                         record the dense mesh per frame and track
  python run_stream.py serve --port 8080                 WebRTC: open http://127.0.0.1:8080 in a browser
  python run_stream.py batch videos/ --outdir out/       many files on Ray (local, or --ray-address): docs/SCALING.md

Every flag is a key of configs/default.yaml (a dotted key such as kalman.pose_gate is --kalman.pose-gate; serve's and
batch's own keys also go without their prefix: --port is --serve.port); --config FILE merges a YAML file over the
defaults first, then the flags apply. `run_stream.py serve --help` and `run_stream.py batch --help` list their flags.
"""
from __future__ import annotations

import signal
import sys


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) before the run installs its own handlers: ends start-up with one line."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """The CLI; a signal during start-up (the imports take seconds) exits 128 + signal with one line."""
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            handlers[sig] = signal.signal(sig, _raise_interrupted)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        from stream.cli import main as cli_main

        if signal.SIGINT in handlers:  # Python's own again: asyncio turns it into a clean stop of the run
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return cli_main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}) during start-up; nothing was written", file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
