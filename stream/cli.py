"""Command line of run_stream.py: flags generated from configs/default.yaml (help text from its comments)."""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from model.cliparse import OneLineParser
from stream.config import DEFAULT_PATH, ConfigError, config_keys, load_config

USAGE = """Real-time 3D face alignment (DAMDNet) on webcams, video files, image folders and WebRTC.

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

COMMANDS = ("run", "serve", "batch")
# Flags of the run command that belong to the serve command only, and vice versa.
SERVE_ONLY = ("serve.",)
BATCH_ONLY = ("batch.",)
# Boolean keys that also get a --no-KEY flag (sets them to false), with its help.
NEGATABLE = {"audio": "drop the source's sound from the output video (same as --audio false)"}
# Keys of one run's I/O that batch replaces with its own (batch.out, batch.tracks, batch.meshes name per-file outputs).
NOT_IN_BATCH = ("source", "out", "tracks", "tracks_format", "meshes", "show", "serve", "webcam", "synthetic", "vmc",
                "vmc_vrm")


def _yaml_comments() -> dict[str, str]:
    """Dotted key -> the comment on its line in default.yaml, with the comment-only lines right below it whose ``#``
    is in the same column (a comment that goes on)."""
    comments, stack = {}, []
    last: tuple[str, int] | None = None  # (key, column of its '#') while its comment may go on
    for line in DEFAULT_PATH.read_text().splitlines():
        more = re.match(r"^(\s+)#\s*(.*)$", line)
        if more and last is not None and len(more.group(1)) == last[1]:
            comments[last[0]] += " " + more.group(2)
            continue
        last = None
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if not m:
            continue
        indent = len(m.group(1)) // 2
        stack = stack[:indent] + [m.group(2)]
        if m.group(4):
            key = ".".join(stack)
            comments[key] = m.group(4)
            last = (key, line.index("#", m.end(3)))
    return comments


def flag_of(key: str) -> str:
    return "--" + key.replace("_", "-")


def build_parser(command: str, prog: str = "run_stream.py") -> argparse.ArgumentParser:
    """The parser of ``command`` (run, serve, batch); errors are one line with the closest flag (``OneLineParser``)."""
    doc = USAGE
    if prog != "run_stream.py":  # the installed console command: its examples under its own name
        doc = (doc or "").replace("python run_stream.py", prog)
    p = OneLineParser(
        prog=f"{prog}{'' if command == 'run' else ' ' + command}",
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)  # a flag is a whole config key: a misspelt prefix is an error, not another key
    p.add_argument("--config", default=None, help="YAML file merged over configs/default.yaml")
    comments = _yaml_comments()
    if command == "batch":
        p.add_argument("batch.inputs", nargs="*", metavar="INPUT", help=comments.get("batch.inputs", ""))
    for key, default in config_keys():
        if command == "run" and key.startswith(SERVE_ONLY):
            continue
        if command != "batch" and key.startswith(BATCH_ONLY):
            continue
        if command == "batch" and (key == "batch.inputs" or key.split(".")[0] in NOT_IN_BATCH):
            continue
        # batch's and serve's own keys also go without the prefix: --outdir, --workers, --port, --host, ...
        names = [flag_of(key)] + ([flag_of(key.split(".", 1)[1])] if key.startswith(BATCH_ONLY + SERVE_ONLY) and
                                  command != "run" else [])
        kind = "flag" if isinstance(default, bool) else "value"
        help_text = comments.get(key, "")
        help_text = f"{help_text} (default: {default})".replace("%", "%%")
        if kind == "flag":
            p.add_argument(*names, dest=key, nargs="?", const="true", default=None, metavar="true|false",
                           help=help_text)
            if key in NEGATABLE:
                p.add_argument(flag_of("no_" + key), dest=key, action="store_const", const="false",
                               help=NEGATABLE[key])
        else:
            p.add_argument(*names, dest=key, default=None, metavar=key.split(".")[-1].upper(), help=help_text)
    return p


def parse(argv: list[str], prog: str = "run_stream.py") -> tuple[str, dict]:
    """-> (command, validated config). Raises ConfigError for bad keys/values; a bad flag exits 2 with one line."""
    command = "run"
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    args = build_parser(command, prog).parse_args(argv)
    overrides: dict[str, Any] = {}
    for key, _ in config_keys():
        value = getattr(args, key, None)
        if isinstance(value, list):
            if value:
                overrides[key] = value
        elif value is not None:
            overrides[key] = _parse_scalar(value)
    return command, load_config(args.config, overrides)


def _parse_scalar(text: str) -> Any:
    low = text.lower()
    if low == "null":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str], prog: str = "run_stream.py") -> int:
    """The command line (``prog``: the name shown in usage lines); returns the exit status."""
    try:
        command, cfg = parse(argv, prog)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        from stream.app import serve

        return serve(cfg)
    if command == "batch":
        from stream.batch.driver import batch

        return batch(cfg)
    from stream.app import run

    return run(cfg)
