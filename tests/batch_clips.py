"""Short video clips for the batch tests and bench/bench_batch.py: synthetic faces rendered to files, the first
seconds of the shared videos re-encoded, and a corrupt file. Nothing of this is committed: it is made in a temporary
folder from ``$DAMDNET_ASSETS``."""
from __future__ import annotations

import os
from pathlib import Path

SHARED = ["KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4",
          "KwaiVGI/LivePortrait/assets/examples/driving/d10.mp4",
          "KwaiVGI/LivePortrait/assets/examples/driving/d18.mp4",
          "KwaiVGI/LivePortrait/assets/examples/source/s18.mp4",
          "cleardusk/3DDFA/demo@obama/obama.mp4"]


def synthetic_clip(path: Path, seconds: float = 1.5, seed: int = 0, width: int = 320, height: int = 240,
                   fps: float = 20.0) -> Path:
    """The synthetic face (``stream.synthetic``) rendered into a video file."""
    from stream.sinks import VideoSink
    from stream.sources import open_source

    with open_source("synthetic", seconds=seconds, seed=seed, width=width, height=height, fps=fps) as src:
        with VideoSink(path, src.info) as sink:
            for frame in src:
                sink.write(frame.index, frame.time, frame.image)
    return path


def cut_clip(src_path: Path, path: Path, frames: int = 40, start: int = 0, max_side: int = 480) -> Path:
    """``frames`` frames of a video from frame ``start``, downscaled to ``max_side`` at most, re-encoded."""
    import cv2

    from stream.sinks import VideoSink
    from stream.sources import open_source

    with open_source(str(src_path), max_frames=start + frames) as src:
        with VideoSink(path, src.info) as sink:
            for frame in src:
                if frame.index < start:
                    continue
                img = frame.image
                scale = max_side / max(img.shape[:2])
                if scale < 1:
                    img = cv2.resize(img, (int(img.shape[1] * scale) // 2 * 2, int(img.shape[0] * scale) // 2 * 2),
                                     interpolation=cv2.INTER_AREA)
                sink.write(frame.index - start, frame.time, img)
    return path


def corrupt_clip(path: Path, size: int = 20000, seed: int = 1) -> Path:
    """Random bytes under a video name (no container FFmpeg can open)."""
    import numpy as np

    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def shared_videos(assets: Path | None = None) -> list[Path]:
    """The shared videos that are present under the assets root."""
    root = Path(assets or os.environ.get("DAMDNET_ASSETS", ""))
    return [root / s for s in SHARED if (root / s).is_file()]
