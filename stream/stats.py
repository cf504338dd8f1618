"""Run-time statistics of the pipeline: per-stage latency p50/p95, end-to-end latency, throughput, drops."""
from __future__ import annotations

import time
from collections import defaultdict, deque

import numpy as np

STAGES = ("decode", "detect", "align", "smooth", "render", "sink")


class Stats:
    """Collects per-frame stage times (ms) and end-to-end latency (source capture -> sink written).

    Keeps the last ``window`` samples per stage for percentiles, and running totals for the whole run.
    """

    def __init__(self, window: int = 2000) -> None:
        self.window = window
        self.stage_ms: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self.e2e_ms: deque = deque(maxlen=window)
        self.frames_in = 0
        self.frames_out = 0
        self.dropped: dict[str, int] = defaultdict(int)
        self.faces = 0
        self.detections = 0
        self.cuts = 0  # scene cuts seen (the tracks re-detected on that frame)
        self.tracks_dropped: dict[str, int] = {"confidence": 0, "small": 0}  # tracks deleted, by reason
        self.confidence: deque = deque(maxlen=window)  # face confidence of the faces reported
        self.started = time.perf_counter()
        self._last_out: deque = deque(maxlen=120)

    def add_stage(self, stage: str, ms: float) -> None:
        self.stage_ms[stage].append(ms)

    def frame_done(self, capture_ns: int, faces: int) -> None:
        now = time.perf_counter_ns()
        self.e2e_ms.append((now - capture_ns) / 1e6)
        self.frames_out += 1
        self.faces = faces
        self._last_out.append(now)

    def note_confidence(self, tracks_dropped: dict[str, int], confidences: list) -> None:
        """After a frame: the tracker's running counts of tracks deleted (low confidence, collapsed box) and the
        confidence of each face reported on the frame (None entries are skipped)."""
        self.tracks_dropped = dict(tracks_dropped)
        self.confidence.extend(float(c) for c in confidences if c is not None)

    def drop(self, where: str, n: int = 1) -> None:
        self.dropped[where] += n

    @property
    def total_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def fps(self) -> float:
        """Output frames per second over the whole run."""
        dt = time.perf_counter() - self.started
        return self.frames_out / dt if dt > 0 else 0.0

    def recent_fps(self) -> float:
        """Output frames per second over the last ~120 frames."""
        if len(self._last_out) < 2:
            return 0.0
        return (len(self._last_out) - 1) / ((self._last_out[-1] - self._last_out[0]) / 1e9)

    @staticmethod
    def _pct(values, q: float) -> float | None:
        return float(np.percentile(np.fromiter(values, float), q)) if len(values) else None

    def summary(self) -> dict:
        """JSON-serialisable summary: per stage and end-to-end {p50, p95, mean} in ms, fps, counts, drops."""
        stages = {s: {"p50": self._pct(v, 50), "p95": self._pct(v, 95), "mean": float(np.mean(v))}
                  for s, v in self.stage_ms.items() if len(v)}
        return {"stages": stages,
                "e2e": {"p50": self._pct(self.e2e_ms, 50), "p95": self._pct(self.e2e_ms, 95)},
                "fps": self.fps(), "recent_fps": self.recent_fps(), "frames_in": self.frames_in,
                "frames_out": self.frames_out, "dropped": dict(self.dropped), "faces": self.faces,
                "detections": self.detections, "cuts": self.cuts, "seconds": time.perf_counter() - self.started,
                "confidence": {"p5": self._pct(self.confidence, 5), "p50": self._pct(self.confidence, 50),
                               "min": min(self.confidence) if self.confidence else None},
                "tracks_dropped": dict(self.tracks_dropped)}

    def line(self) -> str:
        """One human-readable line."""
        s = self.summary()
        parts = [f"{s['frames_out']} frames {s['fps']:.1f} fps"]
        for name in STAGES:
            if name in s["stages"]:
                st = s["stages"][name]
                parts.append(f"{name} {st['p50']:.1f}/{st['p95']:.1f}")
        if s["e2e"]["p50"] is not None:
            parts.append(f"e2e {s['e2e']['p50']:.1f}/{s['e2e']['p95']:.1f} ms (p50/p95)")
        parts.append(f"drops {self.total_dropped}")
        if s["confidence"]["p50"] is not None:
            parts.append(f"confidence p50 {s['confidence']['p50']:.2f} (tracks dropped: "
                         f"{self.tracks_dropped['confidence']} doubtful, {self.tracks_dropped['small']} small)")
        return " | ".join(parts)
