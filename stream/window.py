"""The ``--show`` window (OpenCV's GUI build, Qt): the rendered frame with a status bar of fps and per-stage latency.

Keys: ``q`` / Esc quit (closing the window does too), ``m`` / ``n`` next / previous overlay mode, ``1``..``7`` a
mode directly (in ``stream.config.RENDER_MODES`` order), ``h`` hides or shows the status bar.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from stream.config import RENDER_MODES

HUD_STAGES = ("decode", "detect", "align", "smooth", "render")


def display_problem() -> str | None:
    """None when ``cv2.imshow`` can open a window here, else the reason (one line)."""
    import os
    import sys

    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    gui = [line for line in cv2.getBuildInformation().splitlines() if "GUI:" in line]
    if gui and "NONE" in gui[0].upper():
        return ("this OpenCV build has no GUI (opencv-python-headless); "
                "pip uninstall -y opencv-python-headless && pip install -r requirements.txt")
    return None


def hud_lines(stats: Any, mode: str) -> list[str]:
    """Status text from a ``stream.stats.Stats``: fps and faces, then p50 latency (ms) per stage and end to end."""
    s = stats.summary()
    first = f"{s['recent_fps']:.1f} fps  faces {s['faces']}  mode {mode}  drops {stats.total_dropped}"
    parts = [f"{name} {s['stages'][name]['p50']:.1f}" for name in HUD_STAGES if name in s["stages"]]
    if s["e2e"]["p50"] is not None:
        parts.append(f"e2e {s['e2e']['p50']:.0f}")
    return [first, "p50 ms: " + "  ".join(parts), "q quit  m/n mode  b blendshapes  h hide"]


def draw_hud(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 BGR with ``lines`` on a dark band at the top."""
    import cv2

    out = image.copy()
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max((cv2.getTextSize(t, font, 1.0, 1)[0][0] for t in lines), default=1)
    scale = max(0.3, min(0.6, (image.shape[1] - 16) / widest))  # the longest line fits the width
    step = int(22 * scale / 0.5)
    band = out[: step * len(lines) + 8]
    band[:] = (band * 0.35).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(out, text, (8, step * (i + 1)), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class Window:
    """Shows each finished frame; keys switch the renderer's mode or stop the run.

    ``set_mode(mode)`` is called with the new mode (the app switches the renderer and, for mesh modes, turns on dense
    vertices); ``stop()`` ends the run. ``show(image, stats)`` is called once per output frame from the event loop.
    """

    def __init__(self, name: str, mode: str, set_mode: Callable[[str], None], stop: Callable[[], None],
                 hud_every: float = 0.5, toggle_bars: Callable[[], None] | None = None) -> None:
        import cv2

        self._toggle_bars = toggle_bars  # key b: the blendshape bar chart on/off
        self.name = name
        self.mode = mode
        self._set_mode = set_mode
        self._stop = stop
        self.hud = True
        self.hud_every = hud_every
        self._hud_lines: list[str] = []
        self._hud_time = 0.0
        self.closed = False
        self._sized = False
        cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)

    def key(self, code: int) -> None:
        """Act on one key code from ``cv2.waitKey`` (-1: none)."""
        if code < 0:
            return
        ch = chr(code & 0xFF) if code & 0xFF < 128 else ""
        if code & 0xFF == 27 or ch == "q":
            self.closed = True
            self._stop()
        elif ch in ("m", "n"):
            i = RENDER_MODES.index(self.mode) if self.mode in RENDER_MODES else 0
            self.switch(RENDER_MODES[(i + (1 if ch == "m" else -1)) % len(RENDER_MODES)])
        elif ch.isdigit() and 1 <= int(ch) <= len(RENDER_MODES):
            self.switch(RENDER_MODES[int(ch) - 1])
        elif ch == "h":
            self.hud = not self.hud
        elif ch == "b" and self._toggle_bars is not None:
            self._toggle_bars()

    def switch(self, mode: str) -> None:
        self.mode = mode
        self._set_mode(mode)
        self._hud_time = 0.0  # show the new mode at once

    def show(self, image: np.ndarray, stats: Any) -> None:
        import cv2

        if self.closed:
            return
        if self.hud:
            now = time.monotonic()
            if now - self._hud_time >= self.hud_every:
                self._hud_lines = hud_lines(stats, self.mode)
                self._hud_time = now
            image = draw_hud(image, self._hud_lines)
        if not self._sized:  # a normal (resizable) window opens at the frame's size
            cv2.resizeWindow(self.name, int(image.shape[1]), int(image.shape[0]))
            self._sized = True
        cv2.imshow(self.name, image)
        self.key(cv2.waitKey(1))
        if not self.closed and cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1:
            self.closed = True  # the user closed the window
            self._stop()

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)
        except cv2.error:
            pass
