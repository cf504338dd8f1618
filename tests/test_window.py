"""``--show`` on an X display (Xvfb): the window opens, shows the rendered frame (found in a screenshot of the screen),
``m`` switches the overlay mode and ``q`` ends the run cleanly. Screenshots go to tmp_path (WINDOW_ARTIFACTS=DIR keeps
them)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.config import RENDER_MODES as MODES
from stream.window import draw_hud

TOOLS = ("Xvfb", "import", "xdotool")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="needs Xvfb, ImageMagick's import and xdotool (apt, see .ci/run)")]


def _wait(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got is not None and got is not False:
            return got
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _start_xvfb(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    for n in range(91, 140):
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x960x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "xvfb.log", "w"))
        try:
            _wait("Xvfb", lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), 20, proc)
            return proc, f":{n}"
        except AssertionError:
            proc.kill()
    raise RuntimeError("no free X display number")


def _screenshot(env: dict, path: Path) -> np.ndarray:
    subprocess.run(["import", "-window", "root", str(path)], env=env, check=True, timeout=30)
    return cv2.imread(str(path))


def _find(screen: np.ndarray, template: np.ndarray) -> tuple[float, tuple[int, int]]:
    res = cv2.matchTemplate(screen, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, at = cv2.minMaxLoc(res)
    return best, at


def test_hud_band_keeps_the_frame_below() -> None:
    img = np.full((240, 320, 3), 200, np.uint8)
    out = draw_hud(img, ["12.0 fps", "p50 ms: align 5.1"])
    assert out[:10].mean() < 120 and (out[:40] > 200).all(axis=2).any()  # dark band with white text
    np.testing.assert_array_equal(out[80:], img[80:])


def test_show_window_under_xvfb(tmp_path: Path, repo_root: Path) -> None:
    from stream.synthetic import SyntheticSource

    frame = SyntheticSource(seconds=1.0, seed=3, face="drawn").read().image  # our own drawn face, 640x480
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    for i in range(4000):  # one image, many frames: the run lasts until q
        os.symlink(tmp_path / "frame.png", folder / f"f{i:05d}.png")
    xvfb, display = _start_xvfb(tmp_path)
    env = {**os.environ, "DISPLAY": display}
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "run_stream.py", "--source", str(folder), "--show", "--mode", "none",
                             "--weights", "damdnet", "--progress", "false"], cwd=repo_root, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        def window_id() -> str | None:
            r = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "run_stream"], env=env,
                               capture_output=True, text=True)
            return r.stdout.split()[0] if r.returncode == 0 and r.stdout.split() else None

        wid = _wait("the window", window_id, 180, proc, log)
        body = frame[100:]  # below the status band: the frame as rendered (mode none: unchanged)

        def frame_shown() -> np.ndarray | None:
            shot = _screenshot(env, tmp_path / "window.png")
            return shot if _find(shot, body)[0] > 0.98 else None

        shot = _wait("the rendered frame in a screenshot", frame_shown, 120, proc, log)
        score, (x, y) = _find(shot, body)
        top = shot[y - 100:y - 100 + 60, x:x + 640]
        assert top.mean() < frame[:60].mean() * 0.6, "no status band above the frame"
        assert (top > 200).all(axis=2).sum() > 200, "no status text"

        subprocess.run(["xdotool", "windowfocus", "--sync", wid], env=env, check=True, timeout=30)
        subprocess.run(["xdotool", "key", "m"], env=env, check=True, timeout=30)
        nxt = MODES[(MODES.index("none") + 1) % len(MODES)]
        _wait(f"mode {nxt}", lambda: f"show: mode {nxt}" in log.read_text(), 60, proc, log)

        def overlay_drawn() -> np.ndarray | None:
            s = _screenshot(env, tmp_path / "window_mode.png")
            region = s[y:y + body.shape[0], x:x + 640].astype(int)
            return s if np.abs(region - body).max(axis=2).astype(bool).mean() > 0.002 else None

        _wait("the landmarks overlay", overlay_drawn, 60, proc, log)
        subprocess.run(["xdotool", "key", "q"], env=env, check=True, timeout=30)
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        xvfb.kill()
    text = log.read_text()
    done = [line for line in text.splitlines() if line.startswith("done:")]
    assert done and int(done[0].split()[1]) < 4000, text[-2000:]  # q ended it early, outputs closed
    assert "Traceback" not in text
    print(f"frame found in the screenshot at ({x}, {y}), match {score:.3f}; {done[0]}")
    if os.environ.get("WINDOW_ARTIFACTS"):
        for name in ("window.png", "window_mode.png"):
            shutil.copy(tmp_path / name, Path(os.environ["WINDOW_ARTIFACTS"]) / name)
