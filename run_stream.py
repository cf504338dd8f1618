#!/usr/bin/env python3
"""Real-time 3D face alignment (DAMDNet) on webcams, video files, image folders and WebRTC.

Uses:
  python run_stream.py                                   the built-in demo: a synthetic face -> out/demo.mp4 + CSV
  python run_stream.py --source webcam:0 --show          live alignment on a webcam
  python run_stream.py --source talk.mp4 --tracks talk.csv --out talk_overlay.mp4
                                                         every frame of a video -> landmark tracks + overlay video
  python run_stream.py --source talk.mp4 --mode swap --swap-source face.jpg --out swapped.mp4
  python run_stream.py --source talk.mp4 --meshes meshes/ record the dense mesh per frame and track
  python run_stream.py serve [--port 8080]               WebRTC: open http://127.0.0.1:8080 in a browser
  python run_stream.py batch videos/ --outdir out/       many files on Ray (local, or --ray-address): docs/SCALING.md

Every flag is a key of configs/default.yaml (a dotted key such as kalman.gate is --kalman.gate); --config FILE merges
a YAML file over the defaults first, then the flags apply.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from stream.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
