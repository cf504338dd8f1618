"""Ctrl-C in the middle of a file run: exit code 130, a playable video and a complete CSV of the frames done."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.test_cli_helpers import PEER, count_video_frames, read_csv_rows, start_cli

pytestmark = pytest.mark.slow


def _partial_rows(folder: Path) -> int:
    """Data rows in the hidden, still-growing temporary CSV (the sink flushes after every frame)."""
    for p in folder.glob(".o.csv.partial-*"):
        try:
            return max(p.read_text().count("\n") - 1, 0)
        except OSError:
            return 0
    return 0


def test_sigint_leaves_playable_video_and_complete_csv(tmp_path: Path) -> None:
    proc = start_cli(["--source", "synthetic:20", "--out", "o.mp4", "--tracks", "o.csv", *PEER], tmp_path)
    try:
        deadline = time.monotonic() + 120
        while _partial_rows(tmp_path) < 25:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no frames written in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping" in err and "Traceback" not in err
    n = count_video_frames(tmp_path / "o.mp4")  # PyAV decodes it: the container was finalised
    assert 25 <= n < 600  # stopped in the middle
    text = (tmp_path / "o.csv").read_text()
    assert text.endswith("\n")  # no partial line
    header, rows = read_csv_rows(tmp_path / "o.csv")
    assert all(len(r) == len(header) for r in rows)
    frames = [int(r[0]) for r in rows]
    assert frames == list(range(n))  # one row per frame in the video (one face), nothing missing
    assert not list(tmp_path.glob(".*partial*"))  # temporary files renamed or removed
