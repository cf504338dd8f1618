"""Test clips with sound, made with PyAV (nothing committed), and what a test measures of a video's sound."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def make_clip(path: Path, seconds: float = 2.0, fps: int = 25, audio: str | None = "aac", rate: int = 44100,
              onset: float = 0.5, video_start: float = 0.0, size: tuple[int, int] = (160, 120)) -> Path:
    """A clip of ``seconds``: grey frames (H.264), and unless ``audio`` is None a mono track in that codec from time 0,
    silent until ``onset`` s then a 440 Hz tone. ``video_start``: the first frame's time (the sound starts at 0)."""
    import av

    w, h = size
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = None
        if audio:
            a = c.add_stream(audio, rate=rate)
            a.layout = "mono"
        first = int(round(video_start * fps))
        for i in range(int(round(seconds * fps))):
            img = np.full((h, w, 3), 40 + (i * 7) % 180, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = first + i, Fraction(1, fps)
            c.mux(v.encode(frame))
        if a is not None:
            t = np.arange(int(round((seconds + video_start) * rate))) / rate
            wave = np.where(t >= onset, 0.4 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
            for k in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, k:k + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, k, Fraction(1, rate)
                c.mux(a.encode(frame))
            c.mux(a.encode(None))
        c.mux(v.encode(None))
    return path


def sound_of(path: Path) -> dict:
    """``codec`` of the first audio stream (None: no sound), ``seconds`` of decoded sound, ``onset``: time of its
    first loud sample from the first video frame (s), ``video_seconds``: from the first frame to the end of the last."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(vs)]
        fps = float(vs.average_rate or 25)
    out = {"codec": None, "seconds": 0.0, "onset": None, "video_seconds": times[-1] - times[0] + 1 / fps}
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return out
        out["codec"] = c.streams.audio[0].codec_context.name
        res = av.AudioResampler(format="flt", layout="mono", rate=16000)
        start, chunks = None, []
        for frame in c.decode(audio=0):
            if start is None:
                start = float(frame.pts * frame.time_base)
            for r in res.resample(frame):
                chunks.append(r.to_ndarray().reshape(-1))
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    out["seconds"] = len(samples) / 16000
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    if len(loud) and start is not None:
        out["onset"] = start + loud[0] / 16000 - times[0]
    return out
