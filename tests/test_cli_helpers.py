"""Helpers of the end-to-end CLI tests (``tests/test_cli_*.py``): run ``run_stream.py`` in a subprocess, read what it
wrote. Imported by the other CLI test modules; the tests here check the helpers themselves."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import av

REPO = Path(__file__).resolve().parent.parent
RUN_STREAM = REPO / "run_stream.py"
D0 = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
TEST1 = "cleardusk/3DDFA/samples/test1.jpg"
PEER = ["--weights", "3ddfa-v2-mb05"]  # the model the pipeline runs until our own DAMDNet weights exist


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DAMDNET_OFFLINE"] = "1"  # tests never touch the network
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_STREAM), *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RUN_STREAM), *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count_video_frames(path: Path) -> int:
    """Frames PyAV decodes from a video file (raises if it cannot be opened)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_helpers_read_a_real_video(assets_dir: Path) -> None:
    d0 = assets_dir / D0
    if not d0.is_file():
        import pytest

        pytest.skip("d0.mp4 not in the assets")
    with av.open(str(d0)) as c:
        declared = int(c.streams.video[0].frames)
    assert count_video_frames(d0) == declared > 0
    assert error_lines("\n a\n\n b \n") == [" a", " b "]
